#!/usr/bin/env bash
# Runs quotad on a fresh Debian machine with Rust: starts a local redis-server (with
# appendonly, so no admitted request loses its audit record) when none answers at
# QUOTAD_REDIS_URL, installing it when missing, then builds and runs `quotad serve`
# (the binary is target/release/quotad). Extra arguments go to `quotad serve`
# (e.g. --config quotad.toml). A redis-server this script started is stopped when
# quotad stops; its data stays in .quotad/ for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."

export QUOTAD_REDIS_URL="${QUOTAD_REDIS_URL:-redis://127.0.0.1:6379}"
state=".quotad"
mkdir -p "$state"

if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi

started_redis=""
stop_redis() {
  if [ -n "$started_redis" ]; then
    echo "== stopping the redis-server this script started (data kept in $state/)"
    redis-cli -p "$started_redis" shutdown >/dev/null 2>&1 || true
  fi
}
trap stop_redis EXIT

if ! redis-cli -u "$QUOTAD_REDIS_URL" ping >/dev/null 2>&1; then
  # The port of redis://[user:pass@]host[:port][/db], without python or other tools.
  hostport="${QUOTAD_REDIS_URL#*://}"
  hostport="${hostport#*@}"
  hostport="${hostport%%/*}"
  port=6379
  [[ "$hostport" == *:* ]] && port="${hostport##*:}"
  echo "== starting redis-server on 127.0.0.1:$port (data in $state/)"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$PWD/$state" \
    --appendonly yes --daemonize yes --logfile "$PWD/$state/redis.log" \
    --pidfile "$PWD/$state/redis.pid"
  started_redis="$port"
  for _ in $(seq 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

export QUOTAD_AUDIT_DB="${QUOTAD_AUDIT_DB:-$state/quotad-audit.db}"
echo "== building quotad (target/release/quotad)"
cargo build --release --quiet
# Not exec: the trap above stops Redis after quotad exits. Signals reach quotad, which
# drains and exits 0.
./target/release/quotad serve "$@" &
quotad_pid=$!
trap 'kill -TERM "$quotad_pid" 2>/dev/null || true' INT TERM
status=0
wait "$quotad_pid" || status=$?
# A signal interrupts the first wait; wait again for the drain to finish.
if kill -0 "$quotad_pid" 2>/dev/null; then
  wait "$quotad_pid" || status=$?
fi
exit "$status"
