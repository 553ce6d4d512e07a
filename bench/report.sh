#!/usr/bin/env bash
# Everything BENCHMARKS.md quotes, in one go: machine facts, the 10k burst
# (RUNS times, durability always), 10k idle WebSockets, REST reads under a
# burst, and bench/compare.sh. Output: stdout (and the JSON of each burst).
# Run it on a quiet machine; it prints the load average before each step.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
RUNS="${RUNS:-3}"

(cd "$root" && cargo build --release -q -p uncorreo --bin uncorreo -p uncorreo-bench)
BENCH="${CARGO_TARGET_DIR:-$root/target}/release/uncorreo-bench"
UNCORREO="${CARGO_TARGET_DIR:-$root/target}/release/uncorreo"
load() { echo "--- load average: $(cut -d' ' -f1-3 /proc/loadavg)"; }

echo "=== machine ($(date -u +%FT%TZ))"
echo "nproc: $(nproc)"
lscpu | head -20
echo "kernel: $(uname -r)"
df -hT "${TMPDIR:-/tmp}" | cat
echo "commit: $(git -C "$root" rev-parse --short HEAD)"

echo "=== burst: 100 connections x 100 messages x 4 KiB -> 100 mailboxes with WebSocket subscribers, durability always"
for _ in $(seq 1 "$RUNS"); do
  load
  "$BENCH" burst --spawn --uncorreo-bin "$UNCORREO" -n 100 -m 100 -s 4096 -k 100
done

echo "=== ws-idle: 10,000 idle WebSocket subscribers over 100 mailboxes"
load
"$BENCH" ws-idle --spawn --uncorreo-bin "$UNCORREO" -n 10000 -k 100

echo "=== read: list a 1,000-message mailbox / get one message, during a 50x400 burst"
load
"$BENCH" read --spawn --uncorreo-bin "$UNCORREO"

echo "=== compare: smtp-source -s 50 -m 20000 -l 4096 -d"
load
bash "$here/compare.sh"
