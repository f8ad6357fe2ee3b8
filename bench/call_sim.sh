#!/usr/bin/env bash
# The long run of the call simulation (tests/call_sim.rs): 100,000 seeded whole calls over a lossy,
# duplicating, reordering network on fake time, with the outcome of each flow counted. `cargo
# test` runs the first 3,000 seeds; this runs many more. CALL_SIM_SEEDS=N changes the count.
set -euo pipefail
cd "$(dirname "$0")/.."
export CALL_SIM_SEEDS="${CALL_SIM_SEEDS:-100000}"
exec cargo test --release --test call_sim whole_calls -- --nocapture
