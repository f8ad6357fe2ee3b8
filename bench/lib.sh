# Shared by the SIPp benches (load.sh, setup_rate.sh, soak.sh); sourced, not run.
#
# bench_setup NAME: checks for SIPp and sox, builds screenpop unless SCREENPOP_BIN names a
# binary, makes a work directory /tmp/screenpop-NAME.XXXXXX and enters it, writes the two tones
# SIPp loops (caller 600 Hz, agent 1500 Hz) and the bench profile (the SIPp trunk on 127.0.0.0/8,
# its calls to the SIPp agent), and raises the file limit. Sets ROOT, BIN, WORK, SIP, AGENT and
# TRUNK (screenpop's, the agent's and the trunk's SIP ports).
bench_setup() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  ROOT=$(pwd)
  BIN=${SCREENPOP_BIN:-$ROOT/target/release/screenpop}
  [ -x "$BIN" ] || cargo build --release --bins
  command -v sipp >/dev/null || { echo "sipp (sip-tester) is required" >&2; exit 1; }
  command -v sox >/dev/null || { echo "sox is required" >&2; exit 1; }
  WORK=$(mktemp -d "/tmp/screenpop-$1.XXXXXX")
  cd "$WORK"
  sox -n -r 8000 -c 1 -e u-law -t raw caller_600hz.ulaw synth 10 sine 600 vol 0.5
  sox -n -r 8000 -c 1 -e u-law -t raw agent_1500hz.ulaw synth 10 sine 1500 vol 0.5
  SIP=5560; AGENT=5590; TRUNK=5570
  cat > bench.toml <<TOML
name = "bench"
ring_timeout_secs = 30
[trust]
cidrs = ["127.0.0.0/8"]
[[trunks]]
name = "sipp"
cidrs = ["127.0.0.0/8"]
agent = "sip:agent@127.0.0.1:$AGENT"
TOML
  ulimit -n 65536 2>/dev/null || true
}
