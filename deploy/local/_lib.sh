# shellcheck shell=bash
# Shared helpers for deploy/local/* (sourced, not executed).
# All state lives under $REPO/.local (git-ignored, disposable). Progress goes to stderr.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${SIGNALBOX_LOCAL_STATE:-$REPO/.local}"
CREDENTIALS="$STATE/credentials.json"
DEPLOY="$REPO/deploy/local"

if [[ -n "${SIGNALBOX_PYTHON:-}" ]]; then
  PY="$SIGNALBOX_PYTHON"
elif [[ -x "$REPO/.venv/bin/python" ]]; then
  PY="$REPO/.venv/bin/python"
else
  PY="$(command -v python3)"
fi

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ensure_credentials() {
  mkdir -p "$STATE"
  chmod 711 "$STATE"
  "$PY" "$DEPLOY/_creds.py" ensure "$CREDENTIALS"
}

# cred <section> <user>  -> prints the password
cred() { "$PY" "$DEPLOY/_creds.py" get "$CREDENTIALS" "$1" "$2"; }

# pid_alive <pidfile> <cmdline-substring>: true when the pid in the file is alive *and* is our process
# (guards against pid reuse: the command line must contain the given marker, e.g. our config path).
pid_alive() {
  local pidfile="$1" marker="$2" pid
  [[ -s "$pidfile" ]] || return 1
  pid="$(cat "$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$marker"
}

# stop_pid <pidfile> <marker> <name>: SIGTERM, wait up to 30 s, then SIGKILL. Only our own pid.
stop_pid() {
  local pidfile="$1" marker="$2" name="$3" pid i
  if ! pid_alive "$pidfile" "$marker"; then
    log "$name: not running"
    rm -f "$pidfile"
    return 0
  fi
  pid="$(cat "$pidfile")"
  log "$name: stopping pid $pid (SIGTERM)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pidfile"
      log "$name: stopped"
      return 0
    fi
    sleep 0.1
  done
  log "$name: still alive after 30 s, SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  sleep 0.5
  rm -f "$pidfile"
}
