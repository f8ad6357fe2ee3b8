#!/usr/bin/env bash
# Scripted SIPp load: N concurrent bridged, relayed and recorded calls with RTP both ways for a
# fixed hold time, on loopback. SIPp plays the trunk (caller, 600 Hz) and the agent phone
# (1500 Hz, answering every call); screenpop sits between them with media anchored.
#
#   bash bench/load.sh N [HOLD_SECONDS]      (default HOLD_SECONDS=60)
#
# Then, in the same run, the same SIPp load through the bare relay floor (bench/floor.c: one
# epoll thread that only forwards RTP and writes PCM, no SIP; FLOOR=0 skips it), so screenpop's
# CPU is reported as a ratio to the floor's, not only in seconds.
#
# Reports: calls completed, RTP packets lost inside screenpop (received but not forwarded, and
# kernel socket drops), screenpop CPU seconds per call-minute over the window in which every
# call is up, peak RSS, recordings produced, the load generator's own CPU; and for the floor the
# same CPU figure, its packets forwarded and PCM written, and screenpop's CPU over the floor's.
set -euo pipefail
N=${1:?usage: bench/load.sh N [HOLD_SECONDS]}
HOLD=${2:-60}
RATE=${RATE:-50}
FLOOR=${FLOOR:-1}
. "$(dirname "$0")/lib.sh"
bench_setup bench
cp "$ROOT"/tests/sipp/uac_call.xml "$ROOT"/tests/sipp/uas_answer.xml .
cp "$ROOT"/bench/floor_uac.xml "$ROOT"/bench/floor_uas.xml .
cpu_of() { awk '{print $14+$15}' /proc/$1/stat 2>/dev/null || echo 0; }   # clock ticks
TCK=$(getconf CLK_TCK)
# Every call is up once the ramp is over (N / RATE seconds, plus ringing); measure from then
# until shortly before the first hang-ups.
RAMP=$(( (N + RATE - 1) / RATE + 2 ))
WINDOW=$(( HOLD - RAMP - 2 ))
if [ "$WINDOW" -lt 5 ]; then echo "HOLD too short for N=$N at RATE=$RATE" >&2; exit 1; fi
SRV=
cleanup() { [ -n "$SRV" ] && kill $SRV 2>/dev/null || true; pkill -P $$ sipp 2>/dev/null || true; }
trap cleanup EXIT

# Runs SIPp's agent ($1 scenario) and trunk ($2 scenario, towards $3, extra args after) against
# the process $SRV and measures it over the window: sets s0 s1 g0 g1 RSS.
measure() {
  local uas=$1 uac=$2 target=$3
  shift 3
  sipp -sf "$uas" -i 127.0.0.1 -p $AGENT -mi 127.0.0.1 -mp 44000 -m "$N" \
    -max_socket 65000 -trace_err -nostdin > "${uas%.xml}.out" 2>&1 &
  local UAS=$!
  sleep 0.3
  sipp "$target" -sf "$uac" -i 127.0.0.1 -p $TRUNK -mi 127.0.0.1 -mp 52000 \
    -m "$N" -l "$N" -r "$RATE" -d $((HOLD * 1000)) -max_socket 65000 -trace_err -trace_stat \
    -nostdin "$@" > "${uac%.xml}.out" 2>&1 &
  local UAC=$!
  sleep "$RAMP"
  s0=$(cpu_of $SRV); g0=$(( $(cpu_of $UAC) + $(cpu_of $UAS) ))
  sleep "$WINDOW"
  s1=$(cpu_of $SRV); g1=$(( $(cpu_of $UAC) + $(cpu_of $UAS) ))
  RSS=$(awk '/VmHWM/{print $2}' /proc/$SRV/status)
  wait $UAC || true
  wait $UAS || true
}

"$BIN" serve --sip 127.0.0.1:$SIP --http off --recordings rec --profile bench.toml --rtp-ports 20000-39999 2> server.log &
SRV=$!
sleep 0.5
measure uas_answer.xml uac_call.xml 127.0.0.1:$SIP
# Kernel drops on screenpop's own sockets (its SIP port and RTP range), not SIPp's.
DROPS=$(awk -v sip=$SIP 'NR>1 { split($2, a, ":"); p = strtonum("0x" a[2]);
  if (p == sip || (p >= 20000 && p <= 39999)) d += $NF } END { print d+0 }' /proc/$SRV/net/udp)
sleep 3   # recordings are finished and their call records written at hang-up
kill $SRV 2>/dev/null || true
wait $SRV 2>/dev/null || true
SRV=
echo "$s0 $s1 $g0 $g1 $RSS $DROPS" > screenpop.figures

if [ "$FLOOR" = 1 ]; then
  gcc -O2 -o floor "$ROOT"/bench/floor.c
  mkdir -p floor_pcm
  python3 - "$N" > floor.csv <<'PY'
import sys
print("SEQUENTIAL")
for i in range(int(sys.argv[1])):
    print(f"{20000 + 4 * i + 2};{20000 + 4 * i};")
PY
  ./floor 20000 "$N" floor_pcm > floor.out &
  SRV=$!
  sleep 0.5
  measure floor_uas.xml floor_uac.xml 127.0.0.1:$AGENT -inf floor.csv
  FDROPS=$(awk 'NR>1 { split($2, a, ":"); p = strtonum("0x" a[2]);
    if (p >= 20000 && p <= 39999) d += $NF } END { print d+0 }' /proc/$SRV/net/udp)
  kill -TERM $SRV
  wait $SRV || true
  SRV=
  echo "$s0 $s1 $g0 $g1 $RSS $FDROPS" > floor.figures
fi

python3 - "$N" "$HOLD" "$WINDOW" "$TCK" <<'PY'
import glob, json, os, sys
n, hold, window, tck = map(int, sys.argv[1:])
call_minutes = n * window / 60
s0, s1, g0, g1, rss, drops = map(int, open('screenpop.figures').read().split())
recs = [json.load(open(p)) for p in glob.glob('rec/**/*.json', recursive=True)]
answered = [r for r in recs if r['disposition'] == 'answered']
rx = sum(sum(r['media']['received']) for r in recs if r.get('media'))
fw = sum(sum(r['media']['forwarded']) for r in recs if r.get('media'))
foreign = sum(sum(r['media']['foreign_source']) for r in recs if r.get('media'))
wavs = len(glob.glob('rec/**/*.wav', recursive=True))
parts = len(glob.glob('rec/**/*.part', recursive=True))
cpu = (s1 - s0) / tck
out = {
    "concurrent_calls": n, "hold_s": hold, "window_s": window,
    "calls_completed": len(answered),
    "rtp_received": rx, "rtp_forwarded": fw, "rtp_lost_inside": rx - fw - foreign,
    "kernel_udp_drops": drops,
    "cpu_s_per_call_minute": round(cpu / call_minutes, 4),
    "server_cpu_s": round(cpu, 2), "server_cpu_pct": round(100 * cpu / window, 1),
    "loadgen_cpu_pct": round(100 * (g1 - g0) / tck / window, 1),
    "peak_rss_mb": round(rss / 1024, 1), "rss_kb_per_call": round(rss / n, 1),
    "recordings": wavs, "unfinished_recordings": parts,
}
if os.path.exists('floor.figures'):
    f0, f1, h0, h1, frss, fdrops = map(int, open('floor.figures').read().split())
    counters = json.loads(open('floor.out').read().split('\n', 1)[1])
    fcpu = (f1 - f0) / tck
    pcm_calls = [p for p in glob.glob('floor_pcm/*.pcm') if os.path.getsize(p) > 0]
    out["floor"] = {
        "cpu_s_per_call_minute": round(fcpu / call_minutes, 4),
        "server_cpu_pct": round(100 * fcpu / window, 1),
        "loadgen_cpu_pct": round(100 * (h1 - h0) / tck / window, 1),
        "peak_rss_mb": round(frss / 1024, 1),
        "kernel_udp_drops": fdrops, **counters,
        "calls_recorded": len(pcm_calls),
    }
    out["cpu_ratio_to_floor"] = round(cpu / fcpu, 2) if fcpu > 0 else None
print(json.dumps(out, indent=1))
PY
echo "work dir: $WORK (SIPp logs, server.log, recordings, floor_pcm)" >&2
