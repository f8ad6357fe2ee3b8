#!/usr/bin/env bash
# Soak: CALLS concurrent relayed and recorded calls for MINUTES, with churn: each call is held
# HOLD_SECONDS and a new one replaces it as it ends (SIPp -l CALLS at CALLS/HOLD calls a
# second), on loopback, SIPp as trunk and agent phone as in bench/load.sh.
#
#   bash bench/soak.sh [CALLS] [MINUTES] [HOLD_SECONDS]      (defaults 300 60 60)
#
# Reports RSS once the calls are all up, the last time they all are and after the last has
# ended (and the largest), calls placed,
# completed and failed, RTP packets lost inside screenpop, and recordings lost: answered calls without a finished WAV as long as
# the call (within 40 ms), or with a .part left behind. Lost must be 0.
set -euo pipefail
CALLS=${1:-300}
MINUTES=${2:-60}
HOLD=${3:-60}
. "$(dirname "$0")/lib.sh"
bench_setup soak
cp "$ROOT"/tests/sipp/uac_call.xml "$ROOT"/tests/sipp/uas_answer.xml .
"$BIN" serve --sip 127.0.0.1:$SIP --http off --recordings rec --profile bench.toml --rtp-ports 20000-39999 2> server.log &
SRV=$!
cleanup() { kill $SRV 2>/dev/null || true; pkill -P $$ sipp 2>/dev/null || true; }
trap cleanup EXIT
sleep 0.5
# A rate that keeps CALLS up: one call ends, on average, every HOLD / CALLS seconds.
RATE=$(python3 -c "print(max(1, round($CALLS / $HOLD, 2)))")
SECS=$((MINUTES * 60))
TOTAL=$(python3 -c "print(int($RATE * ($SECS - $HOLD)))")
sipp -sf uas_answer.xml -i 127.0.0.1 -p $AGENT -mi 127.0.0.1 -mp 44000 \
  -max_socket 65000 -trace_err -nostdin > uas.out 2>&1 &
UAS=$!
sleep 0.3
sipp 127.0.0.1:$SIP -sf uac_call.xml -i 127.0.0.1 -p $TRUNK -mi 127.0.0.1 -mp 52000 \
  -m "$TOTAL" -l "$CALLS" -r "$RATE" -d $((HOLD * 1000)) -max_socket 65000 -trace_err \
  -trace_stat -fd 10 -nostdin > uac.out 2>&1 &
UAC=$!
rss() { awk '/VmRSS/{print $2}' /proc/$SRV/status; }
T0=$(date +%s)
sleep $((HOLD + 5))
RSS_START=$(rss)
echo "calls up; RSS ${RSS_START} kB" >&2
while kill -0 $UAC 2>/dev/null; do
  sleep 10
  echo "$(( $(date +%s) - T0 )) $(rss)" >> rss.log   # seconds since the first call, kB
done
RSS_END=$(rss)
RSS_PEAK=$(awk '/VmHWM/{print $2}' /proc/$SRV/status)
kill $UAS 2>/dev/null || true
sleep 5   # the last recordings are finished and their call records written
python3 - "$TOTAL" "$RSS_START" "$RSS_END" "$RSS_PEAK" "$RATE" <<'PY'
import csv, glob, json, sys, wave
total, start, end, peak = map(int, sys.argv[1:5])
rate = float(sys.argv[5])
# The last sample while every call was still up: before the last call was placed.
samples = [tuple(map(int, l.split())) for l in open('rss.log') if l.strip()]
full = [kb for t, kb in samples if t <= total / rate]
last_full = full[-1] if full else end
rows = list(csv.reader(open(glob.glob('uac_call_*_.csv')[0]), delimiter=';'))
st = dict(zip(rows[0], rows[-1]))
recs = [json.load(open(p)) for p in glob.glob('rec/**/*.json', recursive=True)]
answered = [r for r in recs if r['disposition'] == 'answered']
lost = 0
for r in answered:
    try:
        with wave.open(r['path']) as w:
            ms = w.getnframes() / 8
        if abs(ms - (r['ended_at_ms'] - r['answered_at_ms'])) > 40:
            lost += 1
    except (KeyError, TypeError, OSError, wave.Error):
        lost += 1
parts = len(glob.glob('rec/**/*.part', recursive=True))
media = [r['media'] for r in recs if r.get('media')]
rx = sum(sum(m['received']) for m in media)
lost_rtp = rx - sum(sum(m['forwarded']) for m in media) - sum(sum(m['foreign_source']) for m in media)
print(json.dumps({
    "calls_placed": total,
    "calls_completed": int(st.get('SuccessfulCall(C)', 0)),
    "calls_failed": int(st.get('FailedCall(C)', 0)),
    "answered_records": len(answered),
    "recordings_lost": lost + parts,
    "rtp_received": rx, "rtp_lost_inside": lost_rtp,
    "rss_mb_all_up": round(start / 1024, 1),
    "rss_mb_all_up_at_the_end": round(last_full / 1024, 1),
    "rss_mb_after_the_last_call": round(end / 1024, 1),
    "rss_mb_peak": round(peak / 1024, 1),
}, indent=1))
PY
echo "work dir: $WORK (SIPp logs, server.log, rss.log, recordings)" >&2
