# Shell helpers shared by bench/compare.sh and bench/campaign.sh (sourced).

# A TCP port free on 127.0.0.1 right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits until FILE has a line matching PATTERN; fails after SECONDS.
wait_for() { # FILE PATTERN SECONDS
  local i=0
  until grep -q "$2" "$1" 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -gt $(($3 * 10)) ]; then echo "timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; return 1; fi
    sleep 0.1
  done
}

# Terminates a child and reaps it.
stop() { # PID
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
