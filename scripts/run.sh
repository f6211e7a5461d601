#!/usr/bin/env bash
# Runs quotad on a fresh Debian machine with Rust: starts a local redis-server (with
# appendonly, so no admitted request loses its audit record) when none answers at
# QUOTAD_REDIS_URL, installing it when missing, then builds and starts `quotad serve`.
# Extra arguments go to `quotad serve` (e.g. --config quotad.toml).
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

if ! redis-cli -u "$QUOTAD_REDIS_URL" ping >/dev/null 2>&1; then
  port=$(python3 -c 'import sys, urllib.parse as u; print(u.urlparse(sys.argv[1]).port or 6379)' "$QUOTAD_REDIS_URL")
  echo "== starting redis-server on 127.0.0.1:$port (data in $state/)"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$PWD/$state" \
    --appendonly yes --daemonize yes --logfile "$PWD/$state/redis.log" \
    --pidfile "$PWD/$state/redis.pid"
  for _ in $(seq 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

export QUOTAD_AUDIT_DB="${QUOTAD_AUDIT_DB:-$state/quotad-audit.db}"
cargo build --release --quiet
exec ./target/release/quotad serve "$@"
