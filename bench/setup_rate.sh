#!/usr/bin/env bash
# Scripted SIPp set-up rate: RATE new bridged, relayed and recorded calls a second for SECONDS,
# each held HOLD_MS with RTP both ways, on loopback. SIPp plays the trunk and the agent phone
# (which rings 200 ms, then answers); screenpop sits between them with media anchored.
#
#   bash bench/setup_rate.sh [RATE] [SECONDS] [HOLD_MS]     (defaults 500 10 2000)
#
# Reports: calls placed, completed and failed, SIP retransmissions (a sign of a server that fell
# behind), the set-up rate SIPp achieved (over its whole run; and from the first INVITE to the
# last 180, beside the rate its INVITEs were sent at), INVITE -> 180 (screenpop's part of a set-up: the
# trunk's INVITE in, the agent phone's INVITE out, its 180 relayed back) as p50/p99/max,
# screenpop's CPU over the run, peak RSS, and the recordings: one finished WAV per call whose
# length is the call's answered length within 40 ms.
set -euo pipefail
RATE=${1:-500}
SECS=${2:-10}
HOLD_MS=${3:-2000}
N=$((RATE * SECS))
. "$(dirname "$0")/lib.sh"
bench_setup setup
cp "$ROOT"/tests/sipp/uas_answer.xml .
# The trunk scenario with a response-time mark from its INVITE to the 180.
sed -e '0,/<send retrans="500">/s//<send retrans="500" start_rtd="1">/' \
    -e 's|<recv response="180" optional="true"/>|<recv response="180" optional="true" rtd="1"/>|' \
    "$ROOT"/tests/sipp/uac_call.xml > uac_call.xml
grep -q 'rtd="1"' uac_call.xml || { echo "could not mark the scenario's 180" >&2; exit 1; }
"$BIN" serve --sip 127.0.0.1:$SIP --http off --recordings rec --profile bench.toml --rtp-ports 20000-39999 2> server.log &
SRV=$!
cleanup() { kill $SRV 2>/dev/null || true; pkill -P $$ sipp 2>/dev/null || true; }
trap cleanup EXIT
sleep 0.5
cpu_of() { awk '{print $14+$15}' /proc/$1/stat 2>/dev/null || echo 0; }   # clock ticks
TCK=$(getconf CLK_TCK)
LIMIT=$((RATE * (HOLD_MS / 1000 + 3)))
sipp -sf uas_answer.xml -i 127.0.0.1 -p $AGENT -mi 127.0.0.1 -mp 44000 -m "$N" \
  -max_socket 65000 -trace_err -nostdin > uas.out 2>&1 &
UAS=$!
sleep 0.3
s0=$(cpu_of $SRV)
t0=$(date +%s.%N)
sipp 127.0.0.1:$SIP -sf uac_call.xml -i 127.0.0.1 -p $TRUNK -mi 127.0.0.1 -mp 52000 \
  -m "$N" -l "$LIMIT" -r "$RATE" -d "$HOLD_MS" -max_socket 65000 -trace_err -trace_stat -fd 1 \
  -trace_rtt -rtt_freq 1 -nostdin > uac.out 2>&1 || true
t1=$(date +%s.%N)
s1=$(cpu_of $SRV)
wait $UAS || true
sleep 3   # recordings are finished and their call records written at hang-up
RSS=$(awk '/VmHWM/{print $2}' /proc/$SRV/status)
python3 - "$N" "$RATE" "$HOLD_MS" "$TCK" "$s0" "$s1" "$t0" "$t1" "$RSS" <<'PY'
import csv, glob, json, sys, wave
n, rate, hold_ms, tck, s0, s1 = map(int, sys.argv[1:7])
t0, t1 = float(sys.argv[7]), float(sys.argv[8])
rss = int(sys.argv[9])

def last_stats(path):
    rows = list(csv.reader(open(path), delimiter=';'))
    head, last = rows[0], rows[-1]
    return dict(zip(head, last))

st = last_stats(glob.glob('uac_call_*_.csv')[0])
def num(k):
    return int(float(st.get(k, '0') or 0))
rtt = []
sent, got = [], []   # ms since SIPp started: each INVITE sent, each 180 received
for p in glob.glob('uac_call_*_rtt.csv'):
    for row in csv.reader(open(p), delimiter=';'):
        if len(row) >= 2 and row[0][:1].isdigit():
            rtt.append(float(row[1]))
            got.append(float(row[0]))
            sent.append(float(row[0]) - float(row[1]))
rtt.sort()
# The rate SIPp offered (its INVITEs' span) and the rate screenpop completed its part of the
# set-ups at (first INVITE to last 180): equal when it keeps up, lower when a backlog grows.
offered = (len(sent) - 1) * 1000 / max(max(sent) - min(sent), 1) if len(sent) > 1 else None
completed = len(got) * 1000 / max(max(got) - min(sent), 1) if got else None
def pct(q):
    return round(rtt[min(len(rtt) - 1, int(q * len(rtt)))], 2) if rtt else None

recs = [json.load(open(p)) for p in glob.glob('rec/**/*.json', recursive=True)]
answered = [r for r in recs if r['disposition'] == 'answered']
short = 0
for r in answered:
    try:
        with wave.open(r['path']) as w:
            ms = w.getnframes() / 8
    except (KeyError, TypeError, OSError, wave.Error):
        short += 1
        continue
    if abs(ms - (r['ended_at_ms'] - r['answered_at_ms'])) > 40:
        short += 1
wavs = len(glob.glob('rec/**/*.wav', recursive=True))
parts = len(glob.glob('rec/**/*.part', recursive=True))
elapsed = t1 - t0
print(json.dumps({
    "rate_asked": rate, "calls_placed": n, "hold_ms": hold_ms,
    "calls_completed": num('SuccessfulCall(C)'), "calls_failed": num('FailedCall(C)'),
    "retransmissions": num('Retransmissions(C)'),
    "setups_per_s": round(n / max(elapsed - hold_ms / 1000 - 0.3, 0.001), 1),
    "invites_per_s_offered": round(offered, 1) if offered else None,
    "setups_per_s_to_180": round(completed, 1) if completed else None,
    "invite_to_180_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": rtt[-1] if rtt else None,
                         "samples": len(rtt)},
    "server_cpu_pct": round(100 * (s1 - s0) / tck / elapsed, 1),
    "peak_rss_mb": round(rss / 1024, 1),
    "answered_records": len(answered), "recordings": wavs, "unfinished_recordings": parts,
    "recordings_not_matching_call_length": short,
}, indent=1))
PY
echo "work dir: $WORK (SIPp logs, server.log, recordings)" >&2
