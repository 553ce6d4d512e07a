#!/usr/bin/env bash
# First render of a 1,000-message inbox in headless Chromium against a
# release build, RUNS times (default 3), each on a fresh data directory.
# Prints the browser script's BENCH lines. Needs .ci/deps (chromium,
# tests/browser/node_modules). Run it on a quiet machine. UNCORREO_BIN
# times another binary (e.g. a copy of an older build, for an A/B run on
# the same load); it implies NO_BUILD. UI_LOADS=N makes N first visits
# (fresh browser contexts) per run and prints their medians.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-3}
binary=${UNCORREO_BIN:-$root/target/release/uncorreo}
[ -n "${NO_BUILD:-}${UNCORREO_BIN:-}" ] || (cd "$root" && cargo build --release -q --locked --bin uncorreo)
for run in $(seq 1 "$runs"); do
  dir=$(mktemp -d)
  http_port=$((20000 + RANDOM % 20000))
  smtp_port=$((http_port + 1))
  echo "== run $run of $binary ($(cut -d' ' -f1-3 /proc/loadavg) load)"
  UNCORREO__ENGINE__DATA_DIR="$dir/data" \
  UNCORREO__HTTP__LISTEN="127.0.0.1:$http_port" \
  UNCORREO__SMTP__LISTEN="127.0.0.1:$smtp_port" \
  UNCORREO__PLANS__ANONYMOUS__MAX_MAILBOXES=20 \
  UNCORREO__PLANS__ANONYMOUS__MAX_MESSAGES_PER_MAILBOX=2000 \
  UNCORREO__PLANS__ANONYMOUS__REQUESTS_PER_MINUTE=6000 \
    "$binary" serve >"$dir/server.log" 2>&1 &
  server=$!
  trap 'kill $server 2>/dev/null || true; rm -rf "$dir"' EXIT
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$http_port/health" >/dev/null && break
    sleep 0.1
  done
  (cd "$root/tests/browser" && UI_STEPS=timing \
    UNCORREO_HTTP="http://127.0.0.1:$http_port" UNCORREO_SMTP="127.0.0.1:$smtp_port" \
    node ui.mjs | grep -E 'BENCH|DOMContentLoaded|page files')
  kill "$server"
  wait "$server" 2>/dev/null || true
  rm -rf "$dir"
done
