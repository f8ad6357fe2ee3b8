#!/usr/bin/env bash
# Runs every fuzz target (or those in $TARGETS) for SECONDS each (default 600, issue 13's ten
# minutes), from its seeds (fuzz/seeds/<target>, the RFC 4475 corpus for sip_message) and the
# corpus it grew before (fuzz/corpus/<target>, not committed). A crash stops the script with
# libFuzzer's report; its input is in fuzz/artifacts/<target>/ and, once fixed, belongs in
# fuzz/seeds/<target>/ (replayed by `cargo test`, see src/fuzzing.rs) and in a unit test.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
targets=${TARGETS:-"sip_message sip_stream sdp rtp_rtcp srtp rfc4733 wav_repair"}
cargo +nightly fuzz build
for t in $targets; do
    seeds=seeds/$t
    [ "$t" = sip_message ] && seeds=../tests/vectors/rfc4475
    mkdir -p "corpus/$t"
    echo "== $t: ${secs}s"
    cargo +nightly fuzz run "$t" "corpus/$t" "$seeds" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
        -print_final_stats=1 2>&1 | grep -E "^(#[0-9]+.*DONE|stat::|==|SUMMARY|.*panicked)" || true
    if find "artifacts/$t" \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' \) 2>/dev/null | grep -q .; then
        echo "$t: findings in fuzz/artifacts/$t" >&2
        exit 1
    fi
done
