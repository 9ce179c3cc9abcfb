#!/usr/bin/env bash
# koubo's two entry points on a fresh machine with only Python 3.11+:
#   ./koubo.sh start   install everything, then start the service (web UI + API on 127.0.0.1:7860, job worker)
#   ./koubo.sh test    install everything, then run the whole test suite
# Extra arguments go to koubo (start) or pytest (test).
set -euo pipefail
cd "$(dirname "$0")"

VENV=${KOUBO_VENV:-.venv}
PY=${PYTHON:-python3}

system_packages() {
  # libgl1: OpenCV (pulled by MediaPipe) links libGL. espeak-ng: real speech for tests;
  # chromium: the real browser the UI tests drive through Playwright (never a downloaded one).
  # fonts-noto-cjk: so the Chinese UI screenshots the tests take are readable.
  # redis-server, postgresql: the multi-machine tests (and the schema upgrade tests on PostgreSQL);
  # nginx: the link server behind nginx;
  # apache2-utils: the real htpasswd tool, to make password files in every format it writes.
  local wanted=(libgl1 libglib2.0-0 "$@") missing=()
  command -v dpkg >/dev/null || return 0
  for p in "${wanted[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing system packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "warning: missing system packages (install them as root): ${missing[*]}" >&2
  fi
}

python_packages() {
  local target=${1:-.}
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -c constraints.txt -e "$target"
}

case "${1:-}" in
  start)
    shift
    system_packages
    python_packages .
    exec "$VENV/bin/koubo" serve "$@"
    ;;
  test)
    shift
    system_packages espeak-ng chromium fonts-noto-cjk redis-server postgresql nginx apache2-utils
    python_packages ".[test,wav2lip]"
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: ./koubo.sh start | test" >&2
    exit 2
    ;;
esac
