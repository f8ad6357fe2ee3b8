#!/usr/bin/env bash
# Scripted SIPp load: N concurrent bridged, relayed and recorded calls with RTP both ways for a
# fixed hold time, on loopback. SIPp plays the trunk (caller, 600 Hz) and the agent phone
# (1500 Hz, answering every call); screenpop sits between them with media anchored.
#
#   bash bench/load.sh N [HOLD_SECONDS]      (default HOLD_SECONDS=60)
#
# Reports: calls completed, RTP packets lost inside screenpop (received but not forwarded, and
# kernel socket drops), screenpop CPU seconds per call-minute over the window in which every
# call is up, peak RSS, recordings produced, and the load generator's own CPU.
set -euo pipefail
N=${1:?usage: bench/load.sh N [HOLD_SECONDS]}
HOLD=${2:-60}
RATE=${RATE:-50}
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${SCREENPOP_BIN:-$ROOT/target/release/screenpop}
[ -x "$BIN" ] || cargo build --release --bins
command -v sipp >/dev/null || { echo "sipp (sip-tester) is required" >&2; exit 1; }
command -v sox >/dev/null || { echo "sox is required" >&2; exit 1; }
WORK=$(mktemp -d /tmp/screenpop-bench.XXXXXX)
cd "$WORK"
sox -n -r 8000 -c 1 -e u-law -t raw caller_600hz.ulaw synth 10 sine 600 vol 0.5
sox -n -r 8000 -c 1 -e u-law -t raw agent_1500hz.ulaw synth 10 sine 1500 vol 0.5
cp "$ROOT"/tests/sipp/uac_call.xml "$ROOT"/tests/sipp/uas_answer.xml .
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
"$BIN" serve --sip 127.0.0.1:$SIP --http off --recordings rec --profile bench.toml --rtp-ports 20000-39999 2> server.log &
SRV=$!
cleanup() { kill $SRV 2>/dev/null || true; pkill -P $$ sipp 2>/dev/null || true; }
trap cleanup EXIT
sleep 0.5
cpu_of() { awk '{print $14+$15}' /proc/$1/stat 2>/dev/null || echo 0; }   # clock ticks
TCK=$(getconf CLK_TCK)
sipp -sf uas_answer.xml -i 127.0.0.1 -p $AGENT -mi 127.0.0.1 -mp 44000 -m "$N" \
  -max_socket 65000 -trace_err -nostdin > uas.out 2>&1 &
UAS=$!
sleep 0.3
sipp 127.0.0.1:$SIP -sf uac_call.xml -i 127.0.0.1 -p $TRUNK -mi 127.0.0.1 -mp 52000 \
  -m "$N" -l "$N" -r "$RATE" -d $((HOLD * 1000)) -max_socket 65000 -trace_err -trace_stat \
  -nostdin > uac.out 2>&1 &
UAC=$!
# Every call is up once the ramp is over (N / RATE seconds, plus ringing); measure from then
# until shortly before the first hang-ups.
RAMP=$(( (N + RATE - 1) / RATE + 2 ))
WINDOW=$(( HOLD - RAMP - 2 ))
if [ "$WINDOW" -lt 5 ]; then echo "HOLD too short for N=$N at RATE=$RATE" >&2; exit 1; fi
sleep "$RAMP"
s0=$(cpu_of $SRV); g0=$(( $(cpu_of $UAC) + $(cpu_of $UAS) ))
sleep "$WINDOW"
s1=$(cpu_of $SRV); g1=$(( $(cpu_of $UAC) + $(cpu_of $UAS) ))
RSS=$(awk '/VmHWM/{print $2}' /proc/$SRV/status)
# Kernel drops on screenpop's own sockets (its SIP port and RTP range), not SIPp's.
DROPS=$(awk -v sip=$SIP 'NR>1 { split($2, a, ":"); p = strtonum("0x" a[2]);
  if (p == sip || (p >= 20000 && p <= 39999)) d += $NF } END { print d+0 }' /proc/$SRV/net/udp)
wait $UAC || true
wait $UAS || true
sleep 3   # recordings are finished and their call records written at hang-up
python3 - "$N" "$HOLD" "$WINDOW" "$TCK" "$s0" "$s1" "$g0" "$g1" "$RSS" "$DROPS" <<'PY'
import glob, json, sys
n, hold, window, tck, s0, s1, g0, g1, rss, drops = map(int, sys.argv[1:])
recs = [json.load(open(p)) for p in glob.glob('rec/**/*.json', recursive=True)]
answered = [r for r in recs if r['disposition'] == 'answered']
rx = sum(sum(r['media']['received']) for r in recs if r.get('media'))
fw = sum(sum(r['media']['forwarded']) for r in recs if r.get('media'))
foreign = sum(sum(r['media']['foreign_source']) for r in recs if r.get('media'))
wavs = len(glob.glob('rec/**/*.wav', recursive=True))
parts = len(glob.glob('rec/**/*.part', recursive=True))
cpu = (s1 - s0) / tck
gen = (g1 - g0) / tck
call_minutes = n * window / 60
print(json.dumps({
    "concurrent_calls": n, "hold_s": hold, "window_s": window,
    "calls_completed": len(answered),
    "rtp_received": rx, "rtp_forwarded": fw, "rtp_lost_inside": rx - fw - foreign,
    "kernel_udp_drops": drops,
    "cpu_s_per_call_minute": round(cpu / call_minutes, 4),
    "server_cpu_s": round(cpu, 2), "server_cpu_pct": round(100 * cpu / window, 1),
    "loadgen_cpu_pct": round(100 * gen / window, 1),
    "peak_rss_mb": round(rss / 1024, 1), "rss_kb_per_call": round(rss / n, 1),
    "recordings": wavs, "unfinished_recordings": parts,
}, indent=1))
PY
echo "work dir: $WORK (SIPp logs, server.log, recordings)" >&2
