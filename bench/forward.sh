#!/usr/bin/env bash
# The cost of the internal hop (issue #20, SCALE.md "Cost"): the SAME
# smtp-source load, in one run, against host A for a mailbox A owns, and
# against host B for that same mailbox (B forwards each message to A over
# the hop and answers 250 only after A's fdatasync). Both hosts and a
# nats-server with JetStream run on this machine (127.0.0.1), so the hop's
# network is loopback: this measures the hop's CPU and round trip, not a
# datacenter link.
#
#   RUNS=3 bench/forward.sh
#
# Knobs: SESSIONS, MESSAGES, LENGTH, RUNS, CORES (per host; default 1, so the
# two hosts do not fight over the 2 cores more than one host would), UNCORREO
# (a prebuilt binary).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
SESSIONS="${SESSIONS:-50}"
MESSAGES="${MESSAGES:-20000}"
LENGTH="${LENGTH:-4096}"
RUNS="${RUNS:-3}"
CORES="${CORES:-1}"
# shellcheck source=lib.sh
source "$here/lib.sh"
command -v smtp-source >/dev/null || bash "$root/.ci/install-postfix"
command -v nats-server >/dev/null || { echo "needs nats-server (.ci/deps installs it)" >&2; exit 1; }
SMTP_SOURCE="$(command -v smtp-source || echo /usr/sbin/smtp-source)"
# UNCORREO=path runs that binary instead of building this tree (to compare
# two builds in one session).
if [ -z "${UNCORREO:-}" ]; then
  (cd "$root" && cargo build --release -q -p uncorreo --bin uncorreo)
  UNCORREO="${CARGO_TARGET_DIR:-$root/target}/release/uncorreo"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/uncorreo-forward.XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

nats_port=$(free_port)
mkdir -p "$work/nats"
nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$work/nats" >"$work/nats.log" 2>&1 &
pids+=($!)
wait_for "$work/nats.log" 'Server is ready' 30
head -c 48 /dev/urandom | base64 >"$work/cluster.key"

# host NAME CLAIM_FREE: writes its config, starts it, sets NAME_smtp/NAME_http.
host() {
  local name=$1 claim=$2 smtp http hop
  smtp=$(free_port); http=$(free_port); hop=$(free_port)
  mkdir -p "$work/$name/data"
  cat >"$work/$name/uncorreo.toml" <<EOT
cores = $CORES
[engine]
data_dir = "$work/$name/data"
domains = ["bench.test"]
durability = "always"
min_free_bytes = 0
[smtp]
listen = "127.0.0.1:$smtp"
max_connections_per_ip = 100000
max_connections = 100000
[http]
listen = "127.0.0.1:$http"
max_connections_per_ip = 100000
max_connections = 100000
[plans.bench]
max_mailboxes = 1000000
max_messages_per_mailbox = 10000000
max_ttl_minutes = 1440
requests_per_minute = 4000000000
[limits]
anonymous_plan = "bench"
ip_requests_per_minute = 4000000000
[cluster]
nats_url = "nats://127.0.0.1:$nats_port"
node_id = "$name"
claim_free = $claim
listen = "127.0.0.1:$hop"
secret_file = "$work/cluster.key"
EOT
  RUST_LOG=warn "$UNCORREO" serve --config "$work/$name/uncorreo.toml" >"$work/$name/out" 2>&1 &
  pids+=($!)
  local i
  for i in $(seq 1 300); do curl -sf -o /dev/null "127.0.0.1:$http/ready" && break; sleep 0.2; done
  curl -sf -o /dev/null "127.0.0.1:$http/ready" || { echo "$name did not start:" >&2; cat "$work/$name/out" >&2; exit 1; }
  printf -v "${name}_smtp" '%s' "$smtp"
  printf -v "${name}_http" '%s' "$http"
}

# A first: it claims every partition; B claims none, so A owns the mailbox.
host a true
host b false
curl -sf -XPOST "127.0.0.1:$b_http/api/v1/mailboxes" -H 'content-type: application/json' \
  -d '{"local_part":"rcpt"}' >"$work/mailbox.json"
token=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["session_token"])' "$work/mailbox.json")

count() { # stored in the mailbox, read through A
  curl -sf "127.0.0.1:$a_http/api/v1/mailboxes/rcpt@bench.test" -H "authorization: Bearer $token" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["message_count"])'
}
drive() { # PORT -> seconds
  local start end
  start=$(date +%s.%N)
  "$SMTP_SOURCE" -s "$SESSIONS" -m "$MESSAGES" -l "$LENGTH" -d \
    -t rcpt@bench.test -f sender@example.com "127.0.0.1:$1" >"$work/source.out" 2>&1 || {
      echo "smtp-source failed:" >&2; cat "$work/source.out" >&2; exit 1; }
  end=$(date +%s.%N)
  python3 -c "print(f'{$end - $start:.3f}')"
}

echo "load: smtp-source -s $SESSIONS -m $MESSAGES -l $LENGTH -d, $RUNS rounds; hosts with cores=$CORES; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
expected=0
for round in $(seq 1 "$RUNS"); do
  for target in a b; do
    port_var="${target}_smtp"
    secs=$(drive "${!port_var}")
    expected=$((expected + MESSAGES))
    stored=$(count)
    [ "$stored" = "$expected" ] || { echo "MISMATCH: $expected acknowledged, $stored stored" >&2; exit 1; }
    rate=$(python3 -c "print(f'{$MESSAGES / $secs:.0f}')")
    case $target in a) what="A (owner, local)";; b) what="B (forwards to A)";; esac
    echo "round $round $what: $MESSAGES in $secs s = $rate msg/s; stored $stored of $expected acked so far"
  done
done
