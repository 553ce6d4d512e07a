# shellcheck shell=bash
# Throwaway PostgreSQL and Redis for the seed architecture reproduction,
# sourced by bench/compare.sh and bench/fleet.sh. Needs bench/install-peers.sh.
#
#   seed_services_start DIR   # cluster + redis under DIR; sets SEED_REDIS
#   seed_new_database NAME    # prints the DSN of a new, empty database NAME
#   seed_services_stop        # stops both (call from the EXIT trap)
#
# PostgreSQL runs with fsync=on, synchronous_commit=on, full_page_writes=on
# (its durable defaults, spelled out so no local config changes them): a
# commit returns only after its WAL is flushed, like uncorreo's 250. It
# refuses to run as root, so as root the cluster belongs to the `postgres`
# user (or `nobody`). Redis keeps nothing on disk (the seed uses it for
# pub/sub only).

SEED_PG_DATA=""
SEED_PG_USER=""
SEED_PG_PORT=""
SEED_REDIS_PID=""

seed_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

seed_as_pg() {
  if [ -n "$SEED_PG_USER" ]; then runuser -u "$SEED_PG_USER" -- "$@"; else "$@"; fi
}

seed_services_start() { # DIR
  local dir="$1" pgbin port redis_port
  pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [ -x "$pgbin/initdb" ] || { echo "PostgreSQL not installed (run bench/install-peers.sh)" >&2; return 1; }
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    if id postgres >/dev/null 2>&1; then SEED_PG_USER=postgres; else SEED_PG_USER=nobody; fi
    # The cluster's owner must reach its directory: DIR and its parent (the
    # run's mktemp dir, 0700) become traversable, not readable.
    chmod o+x "$dir" "$(dirname "$dir")"
  fi
  mkdir -p "$dir/pg"
  [ -n "$SEED_PG_USER" ] && chown "$SEED_PG_USER" "$dir/pg"
  seed_as_pg "$pgbin/initdb" -D "$dir/pg/data" -U bench --auth=trust -E UTF8 \
    --no-instructions >"$dir/pg-initdb.log" 2>&1 ||
    { echo "initdb failed:" >&2; cat "$dir/pg-initdb.log" >&2; return 1; }
  SEED_PG_DATA="$dir/pg/data"
  port="$(seed_free_port)"
  seed_as_pg "$pgbin/pg_ctl" -D "$SEED_PG_DATA" -l "$dir/pg/server.log" -w -t 60 \
    -o "-p $port -k $dir/pg -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c full_page_writes=on -c max_connections=200" \
    start >/dev/null ||
    { echo "postgres did not start:" >&2; cat "$dir/pg/server.log" >&2; return 1; }
  SEED_PG_PORT="$port"
  redis_port="$(seed_free_port)"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$dir" >"$dir/redis.log" 2>&1 &
  SEED_REDIS_PID=$!
  local i=0
  until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 100 ]; then echo "redis did not start:" >&2; cat "$dir/redis.log" >&2; return 1; fi
    sleep 0.1
  done
  SEED_REDIS="redis://127.0.0.1:$redis_port/0"
  echo "seed services: PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') (fsync on, synchronous_commit on) on port $SEED_PG_PORT, redis $(redis-server --version | awk '{print $3}') at $SEED_REDIS" >&2
}

seed_new_database() { # NAME
  psql -q -h 127.0.0.1 -p "$SEED_PG_PORT" -U bench -d postgres -c "CREATE DATABASE $1" >/dev/null
  echo "postgresql://bench@127.0.0.1:$SEED_PG_PORT/$1"
}

seed_services_stop() {
  if [ -n "$SEED_PG_DATA" ] && [ -f "$SEED_PG_DATA/postmaster.pid" ]; then
    local pgbin
    pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
    seed_as_pg "$pgbin/pg_ctl" -D "$SEED_PG_DATA" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  SEED_PG_DATA=""
  if [ -n "$SEED_REDIS_PID" ]; then
    kill "$SEED_REDIS_PID" 2>/dev/null || true
    wait "$SEED_REDIS_PID" 2>/dev/null || true
    SEED_REDIS_PID=""
  fi
}
