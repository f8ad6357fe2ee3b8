#!/usr/bin/env bash
# Runs every test. The SIP tests send RFC 4475 messages whose Vias and Contacts name foreign
# hosts, so the suite runs inside a network namespace that has only loopback: nothing can leave
# the machine even if the code under test is wrong. Build first: the namespace has no registry.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
cargo test --release --no-run
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
  exec unshare -n sh -c 'ip link set lo up && cargo test --release --offline -- --test-threads=2 "$@"' sh "$@"
else
  echo "tests/run.sh: cannot create a network namespace (need root and unshare)" >&2
  exit 1
fi
