#!/usr/bin/env bash
# One command, one run on this machine: a load campaign in `count` mode
# (issue #18) against uncorreo, and the SAME load from the same client against
# postfix's smtp-sink (stores nothing), so the ratio survives a noisy machine:
#   uncorreo-bench campaign --store count --messages 100000 --connections 100 \
#     --size 1024 --duplicate-every 100
#   (a) uncorreo, release build, durability = always (250 only after fdatasync),
#       spawned with the bench config (bench/src/spawn.rs: connection limits
#       raised, big plan); the campaign is created over the API, then its
#       report is checked against what was sent (accepted, unique and
#       duplicate Message-IDs, distinct recipients);
#   (b) smtp-sink, driven by `uncorreo-bench campaign --domain ...` (same
#       recipients, same messages, no API).
# Per run and server it prints msg/s (client side: first connect to last 250),
# and for uncorreo its peak RSS (VmHWM) and the data dir's bytes per message:
# log bytes committed (the engine's uncorreo_disk_bytes, before/after), the
# files' apparent size and their allocated blocks (du), plus `uptime` load
# before and after each run. Exits non-zero when any report does not match.
#
# Environment: MESSAGES (100000) CONNECTIONS (100) SIZE (1024)
# DUPLICATE_EVERY (100) RUNS (1) SERVERS ("uncorreo sink") CORES (uncorreo
# cores, 0 = all) DATA_PARENT (temp dir parent; its filesystem is what
# uncorreo syncs to) RESULTS (file to append one JSON line per run to).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
MESSAGES="${MESSAGES:-100000}"
CONNECTIONS="${CONNECTIONS:-100}"
SIZE="${SIZE:-1024}"
DUPLICATE_EVERY="${DUPLICATE_EVERY:-100}"
RUNS="${RUNS:-1}"
SERVERS="${SERVERS:-uncorreo sink}"
CORES="${CORES:-0}"
DATA_PARENT="${DATA_PARENT:-${TMPDIR:-/tmp}}"

"$root/.ci/install-postfix"
SMTP_SINK="$(command -v smtp-sink || echo /usr/sbin/smtp-sink)"

echo "building release binaries (uncorreo, uncorreo-bench)" >&2
(cd "$root" && cargo build --release -q -p uncorreo --bin uncorreo -p uncorreo-bench --bin uncorreo-bench)
BENCH="${CARGO_TARGET_DIR:-$root/target}/release/uncorreo-bench"
UNCORREO="${CARGO_TARGET_DIR:-$root/target}/release/uncorreo"

work="$(mktemp -d "$DATA_PARENT/uncorreo-campaign.XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# shellcheck source=lib.sh
source "$here/lib.sh"


load() { cut -d' ' -f1-3 /proc/loadavg; }

# A field of the JSON line the campaign command printed.
field() { # FILE KEY
  python3 -c 'import json,sys; v=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])[sys.argv[2]]; print(json.dumps(v) if isinstance(v,(list,dict)) else v)' "$1" "$2"
}

# What the campaign's report counted for this run, and its arrival latency.
summary() { # FILE
  python3 - "$1" <<'EOF'
import json, sys
v = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
r, l = v["report"], v["latency"] or {}
print("report: accepted %s, unique Message-IDs %s, duplicates %s, recipients %s;"
      " sent->commit p50 %s ms, p99 %s ms, max %s ms"
      % (r["accepted"], r["unique_message_ids"], r["duplicate_messages"],
         r["distinct_recipients"], l.get("p50_ms"), l.get("p99_ms"), l.get("max_ms")))
EOF
}

# "DISK_BYTES BATCHES RECORDS": committed log bytes, and log batches (one
# write + one fdatasync each) with the records they held, from /metrics.
engine_counts() { # HTTP
  python3 - "$1" <<'EOF'
import sys, urllib.request
body = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=30).read().decode()
def value(name):
    return sum(int(float(l.split()[-1])) for l in body.splitlines() if l.split(" ")[0].split("{")[0] == name)
print(value("uncorreo_disk_bytes"), value("uncorreo_batch_records_count"), value("uncorreo_batch_records_sum"))
EOF
}

# Runs a command and writes the CPU seconds (user + system) it used to FILE.
timed() { # FILE COMMAND...
  local file=$1; shift
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f '%U %S' -o "$file" "$@"
  else
    echo '0 0' >"$file"; "$@"
  fi
}
client_cpu() { # FILE
  awk 'END{printf "%.1f", $1 + $2}' "$1"
}

# CPU seconds (user + system) a process has used so far.
cpu_seconds() { # PID
  python3 -c "import os,sys; f=open(f'/proc/{sys.argv[1]}/stat').read().rsplit(')',1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))" "$1"
}

load_args=(--messages "$MESSAGES" --connections "$CONNECTIONS" --size "$SIZE" --duplicate-every "$DUPLICATE_EVERY")
mismatches=0

# Both runners set a global (never run in a $(...) subshell: the children
# they start must stay in `pids` for cleanup).
# Sets u="MSG_PER_S|RSS_KIB|LOG_BYTES|APPARENT_BYTES|ALLOCATED_BYTES|MISMATCHES|REPORT|CPU_S|BATCHES|RECORDS|CLIENT_CPU_S".
run_uncorreo() {
  local out="$work/uncorreo.out"
  rm -f "$out"
  "$BENCH" spawn --uncorreo-bin "$UNCORREO" --durability always --cores "$CORES" \
    --data-parent "$work" >"$out" 2>"$work/uncorreo.err" &
  local holder=$!
  pids+=("$holder")
  wait_for "$out" '^ready' 120
  local pid smtp http key data
  pid=$(sed -n 's/^pid //p' "$out")
  smtp=$(sed -n 's/^smtp //p' "$out")
  http=$(sed -n 's/^http //p' "$out")
  key=$(sed -n 's/^key //p' "$out")
  data=$(sed -n 's/^data //p' "$out")
  local before cpu_before
  read -r before b_before r_before <<<"$(engine_counts "$http")"
  cpu_before=$(cpu_seconds "$pid")
  local rc=0
  timed "$work/client.time" "$BENCH" campaign --smtp "$smtp" --http "$http" --key "$key" --store count "${load_args[@]}" \
    >"$work/campaign.json" 2>"$work/campaign.err" || rc=$?
  local rss after apparent allocated cpu
  rss=$(awk '/^VmHWM:/{print $2}' "/proc/$pid/status")
  cpu=$(python3 -c "print(f'{$(cpu_seconds "$pid") - $cpu_before:.1f}')")
  read -r after b_after r_after <<<"$(engine_counts "$http")"
  apparent=$(du -sb --apparent-size "$data" | cut -f1)
  allocated=$(du -sB1 "$data" | cut -f1)
  stop "$holder"
  if [ "$rc" != 0 ]; then
    echo "  uncorreo: campaign exited $rc:" >&2
    cat "$work/campaign.json" "$work/campaign.err" >&2
    mismatches=$((mismatches + 1))
  fi
  [ -s "$work/campaign.json" ] || { echo "  uncorreo: no result" >&2; return 1; }
  u="$(field "$work/campaign.json" msg_per_s)|$rss|$((after - before))|$apparent|$allocated|$(field "$work/campaign.json" mismatches)|$(summary "$work/campaign.json")|$cpu|$((b_after - b_before))|$((r_after - r_before))|$(client_cpu "$work/client.time")"
}

# Sets s=MSG_PER_S, s_client=CLIENT_CPU_S.
run_sink() {
  local port; port=$(free_port)
  "$SMTP_SINK" -u nobody "127.0.0.1:$port" 1000 >"$work/sink.out" 2>&1 &
  local pid=$!
  pids+=("$pid")
  local i=0
  until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),1).close()" 2>/dev/null; do
    i=$((i + 1)); [ "$i" -lt 100 ] || { echo "smtp-sink did not listen" >&2; return 1; }
    sleep 0.1
  done
  local rc=0
  timed "$work/client.time" "$BENCH" campaign --smtp "127.0.0.1:$port" --domain campaign.bench.test "${load_args[@]}" \
    >"$work/sink.json" 2>"$work/sink.err" || rc=$?
  stop "$pid"
  if [ "$rc" != 0 ]; then echo "  smtp-sink: load failed:" >&2; cat "$work/sink.json" "$work/sink.err" >&2; return 1; fi
  s=$(field "$work/sink.json" msg_per_s)
  s_client=$(client_cpu "$work/client.time")
}

per() { python3 -c "print(f'{$1 / $2:.0f}')"; }
echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(uname -r), data on $(df -T "$work" | awk 'NR==2{print $2" "$1}')" >&2
echo "load: uncorreo-bench campaign ${load_args[*]} (count mode; x$RUNS)" >&2
for run in $(seq 1 "$RUNS"); do
  load_before=$(load)
  u="" s=""
  for server in $SERVERS; do
    case "$server" in
      uncorreo) run_uncorreo ;;
      sink) run_sink ;;
      *) echo "unknown server $server" >&2; exit 2 ;;
    esac
  done
  load_after=$(load)
  line="run $run: load before $load_before, after $load_after"
  json="{\"date\":\"$(date -u +%FT%TZ)\",\"run\":$run,\"messages\":$MESSAGES,\"connections\":$CONNECTIONS,\"size\":$SIZE,\"load_before\":\"$load_before\",\"load_after\":\"$load_after\""
  if [ -n "$u" ]; then
    IFS='|' read -r rate rss log apparent allocated mm report cpu batches records client <<<"$u"
    line+=$'\n'"  uncorreo:  $(printf '%.0f' "$rate") msg/s, peak RSS $((rss / 1024)) MiB, log $(per "$log" "$MESSAGES") B/msg (apparent $(per "$apparent" "$MESSAGES"), allocated $(per "$allocated" "$MESSAGES")), mismatches $mm"
    line+=$'\n'"    $report"
    line+=$'\n'"    client CPU $client s, server CPU $cpu s ($(python3 -c "print(f'{$cpu * 1e6 / $MESSAGES:.0f}')") us/msg), $batches log batches (fdatasyncs) holding $records records ($(python3 -c "print(f'{$records / max($batches, 1):.1f}')") per batch)"
    json+=",\"uncorreo_msg_per_s\":$rate,\"rss_kib\":$rss,\"log_bytes\":$log,\"apparent_bytes\":$apparent,\"allocated_bytes\":$allocated,\"mismatches\":$mm,\"client_cpu_s\":$client,\"server_cpu_s\":$cpu,\"batches\":$batches,\"records\":$records"
  fi
  if [ -n "$s" ]; then
    line+=$'\n'"  smtp-sink: $(printf '%.0f' "$s") msg/s, client CPU $s_client s"
    json+=",\"sink_msg_per_s\":$s,\"sink_client_cpu_s\":$s_client"
  fi
  if [ -n "$u" ] && [ -n "$s" ]; then
    line+=$'\n'"  uncorreo / smtp-sink = $(python3 -c "print(f'{$rate / $s:.2f}')")"
  fi
  echo "$line"
  if [ -n "${RESULTS:-}" ]; then echo "$json}" >>"$RESULTS"; fi
done

if [ "$mismatches" != 0 ]; then
  echo "FAILED: $mismatches campaign report(s) did not match what was sent" >&2
  exit 1
fi
