#!/usr/bin/env bash
# One command, one run on this machine: the SAME postfix smtp-source load
#   smtp-source -s 50 -m 20000 -l 4096 -d -t rcpt@bench.test -f sender@example.com 127.0.0.1:PORT
# against
#   (a) uncorreo, release build, durability = always (250 only after fdatasync),
#   (b) postfix smtp-sink (stores nothing),
#   (c) bench/aiosmtpd_fsync.py (aiosmtpd, one file + fsync per message),
#   (d) the seed architecture reproduced (bench/seed/seed.py: aiosmtpd ->
#       asyncpg INSERT into a throwaway PostgreSQL cluster with fsync and
#       synchronous_commit on -> Redis PUBLISH, one process),
# timed by wall clock around smtp-source. After each server's run it checks
# that the server stored every message smtp-source had acknowledged (mailbox
# count over uncorreo's API, files on disk, rows in PostgreSQL) and exits
# non-zero on any shortfall; then it prints msg/s per server and the ratios.
#
# Environment: SESSIONS (50) MESSAGES (20000) LENGTH (4096) RUNS (1; the best
# run per server is reported, every run is printed),
# SERVERS ("uncorreo sink aiosmtpd seed"),
# DATA_PARENT (temp dir parent; its filesystem is what the durable servers sync to),
# CORES (uncorreo cores, 0 = all), SINK_FLAGS (extra smtp-sink flags, e.g. -c),
# RESULTS (file to append a JSON line to).
# smtp-source exits non-zero on any refused message, so every timed run had all acked.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
SESSIONS="${SESSIONS:-50}"
MESSAGES="${MESSAGES:-20000}"
LENGTH="${LENGTH:-4096}"
RUNS="${RUNS:-1}"
SERVERS="${SERVERS:-uncorreo sink aiosmtpd seed}"
DATA_PARENT="${DATA_PARENT:-${TMPDIR:-/tmp}}"
CORES="${CORES:-0}"
# smtp-sink's -c (live counters on stdout) costs it ~30% here; off by default so
# the discarding peer runs at full speed. SINK_FLAGS=-c to count.
SINK_FLAGS="${SINK_FLAGS:-}"

bash "$here/install-peers.sh"
# shellcheck source=seed/services.sh
source "$here/seed/services.sh"
SMTP_SOURCE="$(command -v smtp-source || echo /usr/sbin/smtp-source)"
SMTP_SINK="$(command -v smtp-sink || echo /usr/sbin/smtp-sink)"
PY="$here/.venv/bin/python"

if [[ " $SERVERS " == *" uncorreo "* ]]; then
  echo "building release binaries (uncorreo, uncorreo-bench)" >&2
  (cd "$root" && cargo build --release -q -p uncorreo --bin uncorreo -p uncorreo-bench --bin uncorreo-bench)
fi
BENCH="${CARGO_TARGET_DIR:-$root/target}/release/uncorreo-bench"
UNCORREO="${CARGO_TARGET_DIR:-$root/target}/release/uncorreo"

work="$(mktemp -d "$DATA_PARENT/uncorreo-compare.XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  seed_services_stop
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=lib.sh
source "$here/lib.sh"

# Runs smtp-source against 127.0.0.1:$1 and prints the elapsed seconds.
drive() {
  local start end
  start=$(date +%s.%N)
  "$SMTP_SOURCE" -s "$SESSIONS" -m "$MESSAGES" -l "$LENGTH" -d \
    -t rcpt@bench.test -f sender@example.com "127.0.0.1:$1" >"$work/source.out" 2>&1 || {
      echo "smtp-source failed:" >&2; cat "$work/source.out" >&2; return 1; }
  end=$(date +%s.%N)
  python3 -c "print(f'{$end - $start:.3f}')"
}

# Every acknowledged message must be stored: smtp-source exits non-zero on
# any refusal, so a finished run acknowledged all MESSAGES.
mismatches=0
verify() { # NAME STORED_COUNT
  if [ "$2" != "$MESSAGES" ]; then
    echo "  MISMATCH $1: $MESSAGES acknowledged, $2 stored" >&2
    mismatches=$((mismatches + 1))
  fi
}

declare -A best stored
record() { # NAME SECONDS STORED
  local rate
  rate=$(python3 -c "print(f'{$MESSAGES / $2:.0f}')")
  echo "  $1: $MESSAGES messages in $2 s = $rate msg/s (stored/counted: $3)" >&2
  if [ -z "${best[$1]:-}" ] || python3 -c "import sys; sys.exit(0 if $rate > ${best[$1]} else 1)"; then
    best[$1]=$rate
    stored[$1]=$3
  fi
}

run_uncorreo() {
  local out="$work/uncorreo.out"
  # A stale "ready" from the previous round must not be read before the new
  # process truncates the file.
  rm -f "$out"
  "$BENCH" spawn --uncorreo-bin "$UNCORREO" --durability always --cores "$CORES" \
    --data-parent "$work" --mailbox rcpt >"$out" 2>"$work/uncorreo.err" &
  local pid=$!
  pids+=("$pid")
  wait_for "$out" '^ready' 120
  local smtp_port data
  smtp_port=$(sed -n 's/^smtp .*:\([0-9]*\)$/\1/p' "$out")
  data=$(sed -n 's/^data //p' "$out")
  local secs
  secs=$(drive "$smtp_port")
  local bytes
  bytes=$(du -sb "$data" | cut -f1)
  stop "$pid"
  local count
  count=$(sed -n 's/^count [^ ]* //p' "$out")
  verify uncorreo "${count:-?}"
  record uncorreo "$secs" "${count:-?} in the mailbox, log $(numfmt --to=iec "$bytes")"
}

run_sink() {
  local port; port=$(free_port)
  # shellcheck disable=SC2086 # SINK_FLAGS is a word list on purpose.
  "$SMTP_SINK" $SINK_FLAGS -u nobody "127.0.0.1:$port" 1000 >"$work/sink.out" 2>&1 &
  local pid=$!
  pids+=("$pid")
  sleep 0.3
  local secs; secs=$(drive "$port")
  stop "$pid"
  local counted
  counted=$(tr '\r' '\n' <"$work/sink.out" | grep -o 'mesg=[0-9]*' | tail -1 || true)
  record smtp-sink "$secs" "${counted:-all acked by smtp-source} (discarded)"
}

run_aiosmtpd() {
  local port; port=$(free_port)
  rm -rf "$work/aio" "$work/aio.out"
  "$PY" "$here/aiosmtpd_fsync.py" "$work/aio" "127.0.0.1:$port" >"$work/aio.out" 2>&1 &
  local pid=$!
  pids+=("$pid")
  wait_for "$work/aio.out" '^ready' 30
  local secs; secs=$(drive "$port")
  stop "$pid"
  local files; files=$(find "$work/aio" -type f | wc -l)
  verify aiosmtpd+fsync "$files"
  record aiosmtpd+fsync "$secs" "$files files"
}

seed_runs=0
run_seed() {
  if [ -z "$SEED_PG_DATA" ]; then seed_services_start "$work/seed"; fi
  seed_runs=$((seed_runs + 1))
  local dsn; dsn=$(seed_new_database "seed$seed_runs")
  rm -f "$work/seed.out"
  "$PY" "$here/seed/seed.py" --dsn "$dsn" --redis "$SEED_REDIS" --mailbox rcpt \
    >"$work/seed.out" 2>"$work/seed.err" &
  local pid=$!
  pids+=("$pid")
  wait_for "$work/seed.out" '^ready' 60
  local port; port=$(sed -n 's/^ready smtp [^ ]*:\([0-9]*\) .*/\1/p' "$work/seed.out")
  local secs; secs=$(drive "$port")
  stop "$pid"
  local rows; rows=$(sed -n 's/^count [^ ]* //p' "$work/seed.out")
  verify seed "${rows:-?}"
  record seed "$secs" "${rows:-?} rows in PostgreSQL"
}

echo "machine: $(nproc) cores, $(uname -r), data on $(df -T "$work" | awk 'NR==2{print $2" "$1}'), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "load: smtp-source -s $SESSIONS -m $MESSAGES -l $LENGTH -d (x$RUNS per server)" >&2
for _ in $(seq 1 "$RUNS"); do
  for s in $SERVERS; do
    case "$s" in
      uncorreo) run_uncorreo ;;
      sink) run_sink ;;
      aiosmtpd) run_aiosmtpd ;;
      seed) run_seed ;;
      *) echo "unknown server $s" >&2; exit 2 ;;
    esac
  done
done

echo
printf '%-16s %10s  %s\n' server msg/s stored
for s in uncorreo smtp-sink aiosmtpd+fsync seed; do
  [ -n "${best[$s]:-}" ] && printf '%-16s %10s  %s\n' "$s" "${best[$s]}" "${stored[$s]}"
done
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
if [ -n "${best[uncorreo]:-}" ]; then
  [ -n "${best[smtp-sink]:-}" ] && echo "uncorreo / smtp-sink      = $(ratio "${best[uncorreo]}" "${best[smtp-sink]}")"
  [ -n "${best[aiosmtpd+fsync]:-}" ] && echo "uncorreo / aiosmtpd+fsync = $(ratio "${best[uncorreo]}" "${best[aiosmtpd+fsync]}")"
  [ -n "${best[seed]:-}" ] && echo "uncorreo / seed           = $(ratio "${best[uncorreo]}" "${best[seed]}")  (P6 target >= 20)"
fi
if [ -n "${RESULTS:-}" ]; then
  printf '{"date":"%s","sessions":%s,"messages":%s,"length":%s,"uncorreo":%s,"smtp_sink":%s,"aiosmtpd_fsync":%s,"seed":%s,"mismatches":%s}\n' \
    "$(date -u +%FT%TZ)" "$SESSIONS" "$MESSAGES" "$LENGTH" "${best[uncorreo]:-null}" \
    "${best[smtp-sink]:-null}" "${best[aiosmtpd+fsync]:-null}" "${best[seed]:-null}" \
    "$mismatches" >>"$RESULTS"
fi
if [ "$mismatches" != 0 ]; then
  echo "FAILED: $mismatches run(s) stored fewer messages than were acknowledged" >&2
  exit 1
fi
