#!/usr/bin/env bash
# Runs every test. The SIP tests send RFC 4475 messages whose Vias and Contacts name foreign
# hosts, so they run inside a network namespace that has only loopback: nothing can leave the
# machine even if the code under test is wrong. Build first: the namespace has no registry.
# The store tests need this machine's PostgreSQL (127.0.0.1:5432), which the namespace cannot
# reach; they send no SIP and run outside it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
cargo test --release --no-run
cargo test --release --test store
if [ "$(id -u)" != 0 ] || ! unshare -n true 2>/dev/null; then
  echo "tests/run.sh: cannot create a network namespace (need root and unshare)" >&2
  exit 1
fi
targets=(--lib --bins)
for t in tests/*.rs; do
  name=$(basename "$t" .rs)
  [ "$name" = store ] || targets+=(--test "$name")
done
exec unshare -n sh -c 'ip link set lo up && exec cargo test --release --offline "$@" -- --test-threads=2' sh "${targets[@]}"
