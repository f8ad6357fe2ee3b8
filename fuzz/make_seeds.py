#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs into fuzz/seeds/<target>/ (committed; rerun after a
change of an input's shape, see src/fuzzing.rs). sip_message is seeded from the RFC 4475
corpus in tests/vectors/rfc4475 directly."""
import os, struct

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "..", "tests", "vectors", "rfc4475")


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def rtp(pt, seq, ts, ssrc, payload, marker=False):
    return struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq, ts, ssrc) + payload


OFFER = (
    "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)
SRTP_OFFER = (
    "v=0\r\no=phone 7 9 IN IP4 10.0.0.2\r\ns=call\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n"
    "m=audio 5000 RTP/SAVP 8 96\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:96 telephone-event/8000\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\r\n"
    "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj\r\n"
    "a=rtcp:5001 IN IP4 10.0.0.2\r\na=sendonly\r\n"
)
HOLD_TWO_STREAMS = (
    "v=0\r\no=- 3 4 IN IP6 ::1\r\ns=-\r\nt=0 0\r\nm=video 6000 RTP/AVP 96\r\nc=IN IP6 ::1\r\n"
    "a=rtpmap:96 H264/90000\r\nm=audio 6002 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\na=inactive\r\n"
)


def main():
    for name, sdp in [("offer", OFFER), ("srtp_offer", SRTP_OFFER), ("hold", HOLD_TWO_STREAMS)]:
        write("sdp", name, sdp.encode())
    msgs = []
    for f in sorted(os.listdir(VECTORS)):
        if f.endswith(".dat"):
            with open(os.path.join(VECTORS, f), "rb") as fh:
                msgs.append(fh.read())
    invite = (
        "INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK1\r\n"
        "From: <sip:+15551234567@10.0.0.1>;tag=a\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: c1\r\n"
        "CSeq: 1 INVITE\r\nContact: <sip:a@10.0.0.1;transport=tcp>\r\nMax-Forwards: 70\r\n"
        "Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s" % (len(OFFER), OFFER)
    ).encode()
    write("sip_stream", "invite_ping_invite", bytes([7]) + invite + b"\r\n\r\n" + invite)
    write("sip_stream", "one_read", bytes([255]) + invite)
    write("sip_stream", "byte_at_a_time", bytes([1]) + invite[: len(invite) // 2])
    for i, m in enumerate(msgs[:6]):
        write("sip_stream", "rfc4475_%d" % i, bytes([13]) + m)

    # rtp_rtcp: config byte (bit0/1 caller/agent PCMA, bit2/3 events on, bit4 record), then
    # (head, len, bytes) records: head bit0 agent, bit1 RTCP, bit2 stranger, bits3.. step*4 ms.
    recs = b""
    for i in range(40):
        for leg in (0, 1):
            pkt = rtp(0 if leg == 0 else 8, i, 1000 + i * 160, 11 + leg, bytes([0x55 + leg]) * 160)
            recs += bytes([(5 << 3) | leg, len(pkt)]) + pkt
    for k in range(6):  # one key press: start, updates, three ends
        end = 0x80 if k >= 3 else 0
        pkt = rtp(101, 40 + k, 7400, 11, bytes([5, end | 10]) + struct.pack("!H", 160 * (k + 1)), k == 0)
        recs += bytes([(5 << 3), len(pkt)]) + pkt
    sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, 11, 0, 0, 0, 0, 0)
    recs += bytes([(1 << 3) | 2, len(sr)]) + sr + bytes([(1 << 3) | 4, 12]) + rtp(0, 99, 0, 3, b"")
    write("rtp_rtcp", "two_legs_recorded", bytes([0x1E]) + recs)
    write("rtp_rtcp", "two_legs_plain", bytes([0x0C]) + recs[: 40 * 180])

    # srtp: mode byte (bit0 32-bit tag, bits1-4 round trip per packet), then (len, bytes).
    pk = b""
    for i in range(8):
        p = rtp(0, 65530 + i & 0xFFFF, i * 160, 7, bytes(range(40)))
        pk += bytes([len(p)]) + p
    pk += bytes([len(sr)]) + sr
    write("srtp", "round_trips", bytes([0x1E]) + pk)
    write("srtp", "forged", bytes([0x01]) + pk)

    # rfc4733: (step, flags, 4-byte event) records; flags bit0 marker, the byte the expiry's ts.
    ev = b""
    for digit, reps in [(1, 5), (11, 4), (3, 1)]:
        for k in range(reps):
            end = 0x80 if k >= reps - 2 else 0
            ev += bytes([0 if k else 5, 1 if k == 0 else 0, digit, end | 10]) + struct.pack("!H", 160 * (k + 1))
    ev += bytes([250, 200, 0, 0x0A, 0xFF, 0xFF, 0, 0, 0, 0x0A, 0x00, 0xA0])
    write("rfc4733", "presses", ev)

    # wav_repair: what hound writes for a recording (stereo 16-bit 8 kHz), cut at odd places.
    def wav(frames, extra=b""):
        data = struct.pack("<%dh" % (frames * 2), *([1000, -1000] * frames))
        fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 2, 8000, 32000, 4, 16)
        body = b"WAVE" + fmt + extra + b"data" + struct.pack("<I", 0) + data
        return b"RIFF" + struct.pack("<I", 0) + body

    w = wav(64)
    write("wav_repair", "zero_sizes", w)
    write("wav_repair", "cut_mid_frame", w[:-3])
    write("wav_repair", "header_only", w[:44])
    write("wav_repair", "list_chunk", wav(16, b"LIST" + struct.pack("<I", 4) + b"INFO"))
    write("wav_repair", "odd_chunk", wav(16, b"LIST" + struct.pack("<I", 5) + b"INFOx\x00"))
    write("wav_repair", "no_data_yet", w[:40])


if __name__ == "__main__":
    main()
