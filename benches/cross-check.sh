#!/usr/bin/env bash
# Cross-checks `shmring bench` throughput rows against the independent plain loops of
# `benches/examples/loops.rs`, interleaved: each round runs a bench row (1 s) and then its
# loop, so both see the VM in the same state as often as it allows. Prints every pair with
# the floor the bench measured just before its row, then the median ratio per floor band.
#
#   bash benches/cross-check.sh [ROUNDS]      (default 6; about 4 s per pair)
#
# The loop example is built with LOOPS_CAP set, so its rings hold 4096 like the bench's.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-6}
cargo build --release -q -p shm-cli
LOOPS_CAP=1 cargo build --release -q -p shmring-benches --example loops
bench=target/release/shmring
loops=target/release/examples/loops
pairs=(
  "spsc-throughput-8B-try spsc-try-2p"
  "spsc-throughput-8B spsc-block-spin-2p"
  "spsc-throughput-8B-park spsc-block-park-2p"
  "mpmc-throughput mpmc-block-2p"
  "rtrb-8B rtrb"
  "arrayqueue-1p1c arrayqueue"
)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for ((r = 1; r <= rounds; r++)); do
  for p in "${pairs[@]}"; do
    set -- $p
    # The row's line: name, calls..., M msg/s, "M", x columns, floor ns (last field).
    line=$("$bench" bench --only "floor,$1" --no-idle 2>/dev/null | grep -E "^$1 ")
    b=$(awk '{for (i = 1; i <= NF; i++) if ($i == "M") print $(i-1)}' <<<"$line")
    floor=$(awk '{print $NF}' <<<"$line")
    l=$("$loops" "$2" | awk '{print $2}')
    echo "$1 $2 $b $l $floor" | tee -a "$out"
  done
done
echo
echo "median bench/loop by floor band (S: floor < 250 ns, the vCPUs share a core; X: above)"
python3 - "$out" <<'PY'
import sys, statistics
rows = {}
for l in open(sys.argv[1]):
    row, _, b, lo, fl = l.split()
    band = "S" if float(fl) < 250 else "X"
    rows.setdefault((row, band), []).append(float(b) / float(lo))
for (row, band), v in sorted(rows.items()):
    print(f"{row:26} {band}  n={len(v):2}  median {statistics.median(v):.2f}  "
          f"range {min(v):.2f}-{max(v):.2f}")
PY
