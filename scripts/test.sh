#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with Rust: installs what the tests
# need (redis-server, nginx-light) when missing, then checks format and lints and runs
# every test. Each test spawns its own redis-server, so nothing else has to be running.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
# promtool and prometheus, for the deploy kit tests (tests/deploy.rs).
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --no-fail-fast 2>&1 | tee target/test-output.txt
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' target/test-output.txt | awk '{s += $4} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed' target/test-output.txt | awk '{s += $1} END {print s + 0}')
echo "$passed passed, $failed failed"
[ "$passed" -gt 0 ] || { echo "no test ran"; exit 1; }
