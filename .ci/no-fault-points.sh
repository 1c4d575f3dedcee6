#!/usr/bin/env bash
# No binary a user runs may contain a fault point: the test-only `fault-injection` feature of
# shm-sync and shm-ring must not be resolved for the examples, the benches or `shmring`
# built on their own (as `cargo run -p ...` and `cargo bench -p ...` build them, dev
# dependencies included). The library crates turn it on only for their own tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bad=0
for pkg in shmring-examples shmring-benches shm-cli; do
    for dep in shm-sync shm-ring; do
        if cargo tree -q -p "$pkg" -e features -i "$dep" | grep -q 'feature "fault-injection"'; then
            echo "$pkg builds $dep with the test-only feature fault-injection:"
            cargo tree -q -p "$pkg" -e features -i "$dep"
            bad=1
        fi
    done
done
[ "$bad" = 0 ] && echo "no example, bench or shmring build resolves fault-injection"
exit "$bad"
