#!/usr/bin/env bash
# Installs the comparison peers used by bench/compare.sh and bench/fleet.sh
# when they are missing:
#   - postfix's smtp-source (load generator) and smtp-sink (discarding server);
#   - PostgreSQL 15 and redis-server (Debian packages) for the seed
#     architecture reproduction (bench/seed/seed.py); their system services
#     are kept stopped: the benches start throwaway instances of their own;
#   - aiosmtpd, asyncpg, redis, FastAPI and uvicorn in a venv at bench/.venv.
# Idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

"$here/../.ci/install-postfix"

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
if [ -z "$(pg_bin)" ] || ! command -v redis-server >/dev/null 2>&1; then
  echo "installing postgresql and redis-server" >&2
  policy_added=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    # Keep the system instances from starting: the benches run their own.
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    postgresql redis-server >/dev/null
  if [ "$policy_added" = 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now postgresql redis-server >/dev/null 2>&1 || true
fi

venv="$here/.venv"
modules="aiosmtpd asyncpg redis fastapi uvicorn"
if [ ! -x "$venv/bin/python" ] ||
  ! "$venv/bin/python" -c "import ${modules// /, }" 2>/dev/null; then
  echo "installing $modules into $venv" >&2
  python3 -m venv "$venv"
  # shellcheck disable=SC2086 # a word list on purpose
  "$venv/bin/pip" install -q $modules
fi
echo "peers ready: $(command -v smtp-source || echo /usr/sbin/smtp-source), $(pg_bin), $(command -v redis-server), $venv/bin/python" >&2
