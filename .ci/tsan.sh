#!/usr/bin/env bash
# ThreadSanitizer over the cross-thread tests: the rings and locks between threads of one
# process (std rebuilt with the sanitizer). Needs the nightly toolchain; adds rust-src.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup component add --toolchain nightly rust-src >/dev/null
target=$(rustc +nightly -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Zsanitizer=thread" RUSTDOCFLAGS="-Zsanitizer=thread"
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1 second_deadlock_stack=1}"
export CARGO_TERM_COLOR=never
tsan() {
    cargo +nightly test -Zbuild-std --target "$target" --target-dir target/tsan \
        -p shm-ring "$@"
}
tsan --test threads
tsan --test mpmc -- four_producer_and_four_consumer_threads matches_a_vecdeque
tsan --test spsc -- matches_a_vecdeque dropping_the_producer timeouts_return
tsan --test broadcast -- threads_ a_sleeping_subscriber untether
tsan --test log -- threads_ aborted_and_shortened consumer_close
# The async waiter: tasks woken from other threads, a future dropped mid-wait.
tsan --test aio -- mpmc_tasks writers_wait a_dropped_future
echo "=== tsan: all passed"
