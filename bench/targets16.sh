#!/usr/bin/env bash
# Every issue #16 target in one run, back to back, on one machine (run it on
# a quiet one): compare.sh (P1, P6), the engine append bench twice (P7),
# the 10k burst three times and the 100k burst twice (P2), reads under the
# 100k burst (P3), and the CI fleet. Each output goes to
# bench/results/<UTC stamp>-<TAG>-<name>.txt with the commit and the load
# average before each run (BENCHMARKS.md, "Where each target stands").
#
#   bench/targets16.sh [TAG]        (TAG: a label for the file names, default "targets")
set -uo pipefail
cd "$(dirname "$0")/.."
tag=${1:-targets}
stamp=$(date -u +%Y-%m-%dT%H%MZ)
out=bench/results
commit=$(git rev-parse --short HEAD)
cargo build --release -q -p uncorreo --bin uncorreo -p uncorreo-bench --bin uncorreo-bench
# The burst's --spawn builds `--bin uncorreo` alone (other features): built here, not mid-run.
cargo build --release -q --bin uncorreo
cargo bench -q -p uncorreo-engine --bench append_latency --no-run
bench=target/release/uncorreo-bench
note() { echo "# $(date -u +%FT%TZ) commit $commit load: $(cut -d' ' -f1-3 /proc/loadavg)"; }
{ note; RUNS=3 bench/compare.sh; note; } >"$out/$stamp-$tag-compare.txt" 2>&1
{ for _ in 1 2; do note; cargo bench -q -p uncorreo-engine --bench append_latency 2>&1 | grep -v '^$'; done; } >"$out/$stamp-$tag-append.txt" 2>&1
{ for _ in 1 2 3; do note; "$bench" burst --spawn 2>&1 | tail -15; done; } >"$out/$stamp-$tag-burst10k.txt" 2>&1
{ for _ in 1 2; do note; "$bench" burst --spawn -n 250 -m 400 -k 1000 2>&1 | tail -15; done; } >"$out/$stamp-$tag-burst100k.txt" 2>&1
{ note; "$bench" read --spawn --burst-connections 250 --burst-messages 400 --burst-mailboxes 1000 2>&1 | tail -25; } >"$out/$stamp-$tag-read.txt" 2>&1
{ note; bench/fleet.sh 2>&1 | tail -30; note; } >"$out/$stamp-$tag-fleet.txt" 2>&1
echo "outputs: $out/$stamp-$tag-*.txt"
