#!/usr/bin/env bash
# Miri over the heap-backed paths (rings in-process, locks on the heap, between threads):
# undefined behaviour, data races and bad atomics in the algorithms themselves. Miri cannot
# follow a second process or a mapping's other users, so the cross-process tests stay out.
# Needs the nightly toolchain; adds its miri and rust-src components if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup component add --toolchain nightly miri rust-src >/dev/null
# /proc (liveness checks) and the monotonic clock need the host: disable isolation.
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"
export CARGO_TERM_COLOR=never
miri() { cargo +nightly miri test -p shm-ring "$@"; }
miri --test threads
# The same with long runs between preemptions, under a few fixed seeds: a thread then often
# reads a word another thread wrote long ago, which is how Miri found `tail` loaded older
# than `head` passing a previous lap for a later one (a lost MPMC item; 3 of 3 seeds failed
# before the fix; 1 seed is kept to hold the run under its limit: with 2, a clean-clone CI run reached 880 s of 900 on 2026-12-02).
for seed in 1; do
  MIRIFLAGS="$MIRIFLAGS -Zmiri-preemption-rate=0.0003 -Zmiri-seed=$seed" miri --test threads
done
# The model-based proptests with a fixed seed: random lengths made their time vary 4x.
PROPTEST_RNG_SEED=1 miri --test spsc -- matches_a_vecdeque
PROPTEST_RNG_SEED=1 miri --test mpmc -- matches_a_vecdeque endpoints_are_limited
# Broadcast's in-process tests (its threads test is in `threads` above): laps, history,
# hostile sequence words and records, the record table.
miri --test broadcast -- lagged_reports late_join hostile_sequence subscriber_records
# The log's bytes are written by producers through `&mut [u8]` and rewritten by the
# consumer's release with atomic stores; Miri's weak-memory emulation (nightly 2026-05-19)
# panics on that mix ("cannot have empty store buffer when previous write was atomic"), so
# these run without it. Data-race detection stays on.
MIRIFLAGS="$MIRIFLAGS -Zmiri-disable-weak-memory-emulation" \
    miri --test log -- threads_ aborted_and_shortened hostile_words
echo "=== miri: all passed"
