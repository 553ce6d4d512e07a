#!/usr/bin/env bash
# Installs the comparison peers used by bench/compare.sh when they are missing:
#   - postfix's smtp-source (load generator) and smtp-sink (discarding server);
#   - aiosmtpd in a venv at bench/.venv (for bench/aiosmtpd_fsync.py).
# Idempotent. The postfix daemon itself is kept stopped so it never holds port 25.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

"$here/../.ci/install-postfix"

venv="$here/.venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
  echo "installing aiosmtpd into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q aiosmtpd
fi
echo "peers ready: $(command -v smtp-source || echo /usr/sbin/smtp-source), $venv/bin/python" >&2
