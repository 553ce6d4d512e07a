#!/usr/bin/env bash
# Instructions and context switches per SMTP message of `uncorreo serve`
# (BENCHMARKS.md, "Profile"): one core, durability `always`, one mailbox;
# smtp-source sends 200 messages to warm up, the counters are zeroed, then
# 2,000 messages of 4 KiB are counted. callgrind counts instructions, which
# stay the same on a loaded machine; the context switches are read from
# /proc, since callgrind does not see the kernel.
#
#   bench/callgrind-smtp.sh [BINARY] [WORKDIR]     (BINARY: target/release/uncorreo)
#   MODE=plain bench/callgrind-smtp.sh            (no valgrind: switches only)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/uncorreo}
DIR=${2:-$(mktemp -d)}
MODE=${MODE:-callgrind}
SMTP_PORT=${SMTP_PORT:-32525}
HTTP_PORT=${HTTP_PORT:-38080}
MESSAGES=${MESSAGES:-2000}
command -v smtp-source >/dev/null || .ci/install-postfix
mkdir -p "$DIR/data"
cat > "$DIR/uncorreo.toml" <<EOT
cores = 1
[engine]
data_dir = "$DIR/data"
domains = ["uncorreo.test"]
durability = "always"
min_free_bytes = 0
queue_depth = 65536
[smtp]
listen = "127.0.0.1:$SMTP_PORT"
max_connections_per_ip = 100000
max_connections = 100000
[http]
listen = "127.0.0.1:$HTTP_PORT"
max_connections_per_ip = 100000
max_connections = 100000
[plans.bench]
max_mailboxes = 1000000
max_messages_per_mailbox = 1000000
max_ttl_minutes = 1440
requests_per_minute = 4000000000
[limits]
anonymous_plan = "bench"
ip_requests_per_minute = 4000000000
EOT
VALGRIND=()
[ "$MODE" = callgrind ] && VALGRIND=(valgrind --tool=callgrind "--callgrind-out-file=$DIR/callgrind.out")
RUST_LOG=warn "${VALGRIND[@]}" "$BIN" serve --config "$DIR/uncorreo.toml" >"$DIR/serve.out" 2>"$DIR/serve.err" &
SERVER=$!
trap 'kill -INT $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do curl -sf -o /dev/null "127.0.0.1:$HTTP_PORT/ready" && break; sleep 1; done
curl -sf -o /dev/null "127.0.0.1:$HTTP_PORT/ready" || {
    echo "the server did not become ready (an older binary may refuse this config):" >&2
    cat "$DIR/serve.out" "$DIR/serve.err" >&2
    exit 1
}
curl -sf -XPOST "127.0.0.1:$HTTP_PORT/api/v1/mailboxes" -H 'content-type: application/json' \
    -d '{"local_part":"rcpt"}' >/dev/null
source_load() { smtp-source -s 10 -m "$1" -l 4096 -d -f a@b.test -t rcpt@uncorreo.test "127.0.0.1:$SMTP_PORT"; }
switches() { grep -h ctxt_switches /proc/$SERVER/task/*/status | awk '{s+=$2} END{print s}'; }
source_load 200
[ "$MODE" = callgrind ] && callgrind_control -z "$SERVER" >/dev/null
before=$(switches)
source_load "$MESSAGES"
after=$(switches)
[ "$MODE" = callgrind ] && callgrind_control -d "$SERVER" >/dev/null
echo "context switches per message: $(echo "scale=2; ($after - $before) / $MESSAGES" | bc)"
kill -INT "$SERVER"; wait "$SERVER" || true
trap - EXIT
if [ "$MODE" = callgrind ]; then
    total=0
    for f in "$DIR"/callgrind.out.*; do
        n=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
        total=$((total + ${n:-0}))
    done
    echo "instructions per message: $((total / MESSAGES))  (profiles in $DIR)"
fi
