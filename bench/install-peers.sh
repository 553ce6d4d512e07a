#!/usr/bin/env bash
# Installs the comparison peers used by bench/compare.sh when they are missing:
#   - postfix's smtp-source (load generator) and smtp-sink (discarding server);
#   - aiosmtpd in a venv at bench/.venv (for bench/aiosmtpd_fsync.py).
# Idempotent. The postfix daemon itself is kept stopped so it never holds port 25.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

if ! command -v smtp-source >/dev/null 2>&1 && [ ! -x /usr/sbin/smtp-source ]; then
  echo "installing postfix (for smtp-source / smtp-sink)" >&2
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  echo "postfix postfix/mailname string bench.invalid" | $SUDO debconf-set-selections
  # Keep the package's init script from starting a daemon during install.
  policy_added=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postfix >/dev/null
  if [ "$policy_added" = 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi
# Never leave postfix's own daemon running (port 25).
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now postfix >/dev/null 2>&1 || true
fi
$SUDO postfix stop >/dev/null 2>&1 || true

venv="$here/.venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
  echo "installing aiosmtpd into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q aiosmtpd
fi
echo "peers ready: $(command -v smtp-source || echo /usr/sbin/smtp-source), $venv/bin/python" >&2
