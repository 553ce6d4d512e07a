#!/usr/bin/env bash
# One command: the CI-fleet benchmark against uncorreo and against the seed
# architecture reproduced (bench/seed/seed.py over a throwaway PostgreSQL with
# fsync and synchronous_commit on, and a throwaway Redis), for each N in
# TESTS. Each of N tests at once: create a mailbox (REST), receive one sign-up
# mail (SMTP), wait for it (uncorreo: long-poll `wait`; seed: poll the listing
# every POLL_MS as its clients must), read the code, delete the mailbox.
# Every flow must read back the code it was sent, else this exits non-zero.
#
# Environment: TESTS ("100 1000"), POLL_MS (1000), RUNS (1),
# DATA_PARENT (temp dir parent), CORES (uncorreo cores, 0 = all).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
TESTS="${TESTS:-100 1000}"
POLL_MS="${POLL_MS:-1000}"
RUNS="${RUNS:-1}"
DATA_PARENT="${DATA_PARENT:-${TMPDIR:-/tmp}}"
CORES="${CORES:-0}"

bash "$here/install-peers.sh"
# shellcheck source=seed/services.sh
source "$here/seed/services.sh"
PY="$here/.venv/bin/python"
echo "building release binaries (uncorreo, uncorreo-bench)" >&2
(cd "$root" && cargo build --release -q -p uncorreo --bin uncorreo -p uncorreo-bench --bin uncorreo-bench)
BENCH="${CARGO_TARGET_DIR:-$root/target}/release/uncorreo-bench"
UNCORREO="${CARGO_TARGET_DIR:-$root/target}/release/uncorreo"

work="$(mktemp -d "$DATA_PARENT/uncorreo-fleet.XXXXXX")"
seed_pid=""
cleanup() {
  if [ -n "$seed_pid" ]; then kill "$seed_pid" 2>/dev/null || true; wait "$seed_pid" 2>/dev/null || true; fi
  seed_services_stop
  rm -rf "$work"
}
trap cleanup EXIT

# Prints "FLOWS_PER_S P50_MS P99_MS" of one fleet run; fails if any flow failed.
fleet() { # N ARGS...
  local n="$1"; shift
  "$BENCH" fleet -n "$n" --json "$@" >"$work/fleet.json" 2>"$work/fleet.err" || {
    echo "fleet -n $n $* failed:" >&2; cat "$work/fleet.err" "$work/fleet.json" >&2; return 1; }
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%.1f %.1f %.1f" % (r["flows_per_s"], r["flow"]["p50_ms"], r["flow"]["p99_ms"]))' "$work/fleet.json"
}

seed_services_start "$work/seed"
echo "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); seed clients poll every ${POLL_MS} ms" >&2
printf '%-6s %-10s %10s %9s %9s\n' N server flows/s p50_ms p99_ms
db=0
for _ in $(seq 1 "$RUNS"); do
  for n in $TESTS; do
    out=$(fleet "$n" --spawn --uncorreo-bin "$UNCORREO" --cores "$CORES" --data-parent "$work")
    read -r u_rate u_p50 u_p99 <<<"$out"
    printf '%-6s %-10s %10s %9s %9s\n' "$n" uncorreo "$u_rate" "$u_p50" "$u_p99"
    db=$((db + 1))
    dsn=$(seed_new_database "fleet$db")
    "$PY" "$here/seed/seed.py" --dsn "$dsn" --redis "$SEED_REDIS" >"$work/seed.out" 2>"$work/seed.err" &
    seed_pid=$!
    i=0
    until grep -q '^ready' "$work/seed.out"; do
      i=$((i + 1))
      if [ "$i" -gt 600 ] || ! kill -0 "$seed_pid" 2>/dev/null; then
        echo "seed did not start:" >&2; cat "$work/seed.err" >&2; exit 1; fi
      sleep 0.1
    done
    smtp=$(sed -n 's/^ready smtp \([^ ]*\) http .*/\1/p' "$work/seed.out")
    http=$(sed -n 's/^ready smtp [^ ]* http \(.*\)$/\1/p' "$work/seed.out")
    out=$(fleet "$n" --api seed --poll-ms "$POLL_MS" --smtp "$smtp" --http "$http")
    read -r s_rate s_p50 s_p99 <<<"$out"
    kill "$seed_pid"; wait "$seed_pid" 2>/dev/null || true; seed_pid=""
    printf '%-6s %-10s %10s %9s %9s\n' "$n" seed "$s_rate" "$s_p50" "$s_p99"
    python3 -c "print(f'N=$n uncorreo / seed: flows/s {$u_rate / $s_rate:.1f}x, p50 latency {$s_p50 / $u_p50:.1f}x lower, p99 {$s_p99 / $u_p99:.1f}x lower')"
  done
done
