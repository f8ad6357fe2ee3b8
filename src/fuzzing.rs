//! Entry points for the coverage-guided fuzz targets in `fuzz/` (`cargo fuzz`), one per kind of
//! peer input: SIP messages (datagram and stream), SDP with our offer/answer on top, RTP and
//! RTCP through the relay, SRTP/SRTCP, RFC 4733 events and the crash repair of a recording.
//!
//! Each takes arbitrary bytes and panics only when an invariant breaks, so the same functions
//! serve the fuzzer and the unit tests that replay its seeds and past findings
//! (`fuzz/seeds/<target>/`). They live in the library, not in `fuzz/`, because most of what
//! they drive is crate-private; they are compiled always so they cannot rot.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use crate::media::dtmf::{DtmfDetector, TelephoneEvent};
use crate::media::recorder::{repair_partial, RecorderHandle, RepairedRecording};
use crate::media::srtp::{MasterKey, SrtpContext, Suite};
use crate::sip::framing::{Framer, Item};
use crate::sip::sdp::{self, Codec, LocalMedia, LocalSrtp, SessionDescription};
use crate::sip::{HeaderName, Headers, Message};

/// A scratch folder of this process for the targets that need files.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("screenpop-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        dir
    })
}

/// The serializer writes one Content-Length of its own, last: compare messages without it.
pub fn without_length(m: Message) -> Message {
    let strip = |h: &mut Headers| h.remove(&HeaderName::ContentLength);
    match m {
        Message::Request(mut r) => {
            strip(&mut r.headers);
            Message::Request(r)
        }
        Message::Response(mut r) => {
            strip(&mut r.headers);
            Message::Response(r)
        }
    }
}

/// A SIP datagram: parsing never panics, a message that parses survives serialize → parse
/// unchanged, and what the call layer reads from a request (typed headers, caller ID,
/// credentials, session timer) copes with whatever the parser let through.
pub fn sip_message(data: &[u8]) {
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    let again = Message::parse(&msg.to_bytes()).expect("a parsed message re-parses");
    assert_eq!(without_length(again), without_length(msg.clone()));
    let h = msg.headers();
    for name in [HeaderName::Authorization, HeaderName::ProxyAuthorization] {
        for v in h.get_all(&name) {
            let _ = crate::sip::digest::parse_authorization(v);
        }
    }
    for name in [HeaderName::WwwAuthenticate, HeaderName::ProxyAuthenticate] {
        let _ = crate::sip::digest::best_challenge(h.get_all(&name));
    }
    if let Message::Request(req) = &msg {
        let _ = (
            req.top_via(),
            req.cseq(),
            req.from(),
            req.to(),
            req.contact(),
        );
        let _ = crate::sip::caller_id::extract(
            req,
            &[
                "P-Asserted-Identity".to_owned(),
                "Remote-Party-ID".to_owned(),
                "From".to_owned(),
            ],
        );
        let _ = crate::sip::session_timer::supports(req, "timer");
        if let Some(v) = req.headers.get(&HeaderName::SessionExpires) {
            let _ = crate::sip::session_timer::SessionExpires::parse(v);
        }
        let _ = Message::from(req.response(200, Some("fuzz"))).to_bytes();
    }
}

/// A SIP byte stream (TCP/TLS), cut into reads where the first byte says: the framer yields
/// exactly the messages and pings that one read of the whole stream yields, and each message
/// it yields is one [`Message::parse_stream`] accepts or rejects, never panics on.
pub fn sip_stream(data: &[u8]) {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(cut).max(1);
    let now = Instant::now();
    let drain = |f: &mut Framer, out: &mut Vec<Item>| -> bool {
        loop {
            match f.next_item() {
                Ok(Some(item)) => out.push(item),
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    };
    let (mut whole, mut pieces) = (Framer::default(), Framer::default());
    let (mut a, mut b) = (Vec::new(), Vec::new());
    whole.push(stream, now);
    let whole_ok = drain(&mut whole, &mut a);
    let mut pieces_ok = true;
    for chunk in stream.chunks(step) {
        pieces.push(chunk, now);
        if !drain(&mut pieces, &mut b) {
            pieces_ok = false;
            break;
        }
    }
    assert_eq!(
        whole_ok, pieces_ok,
        "framing does not depend on how reads fall"
    );
    assert_eq!(a, b, "framing does not depend on how reads fall");
    for item in a {
        if let Item::Message(m) = item {
            if let Ok((msg, used)) = Message::parse_stream(&m) {
                assert!(used <= m.len());
                let _ = msg.to_bytes();
            }
        }
    }
}

/// An SDP offer: parsing never panics, what parses survives print → parse unchanged, and our
/// answer to it (plain and SRTP, every codec preference) is SDP we can read back ourselves.
pub fn sdp(data: &[u8]) {
    let Ok(offer) = SessionDescription::parse(data) else {
        return;
    };
    let printed = offer.to_string();
    let again = SessionDescription::parse(printed.as_bytes()).expect("printed SDP re-parses");
    assert_eq!(
        again.to_string(),
        printed,
        "print → parse → print is stable"
    );
    let _ = sdp::offers_srtp(&offer);
    for i in 0..offer.media.len() {
        let _ = (offer.media_direction(i), offer.media_connection(i));
    }
    let key = MasterKey::new([7; 16], [9; 14]);
    for srtp in [None, Some(LocalSrtp::new(key))] {
        let local = LocalMedia {
            addr: IpAddr::from([127, 0, 0, 1]),
            port: 40000,
            session_id: 1,
            session_version: 1,
            username: "screenpop".to_owned(),
            srtp,
        };
        for prefs in [&[Codec::Pcmu, Codec::Pcma][..], &[Codec::Pcma][..]] {
            if let Ok(neg) = sdp::answer(&offer, &local, prefs) {
                let text = neg.answer.to_string();
                let back = SessionDescription::parse(text.as_bytes()).expect("our answer parses");
                assert_eq!(
                    back.media.len(),
                    offer.media.len(),
                    "one answer stream per offer"
                );
            }
        }
    }
}

/// RTP and RTCP through the relay: the first byte configures the legs (codecs, events,
/// recording); then records of a head byte (leg, RTP or RTCP, from the peer or a stranger,
/// time step) and a length byte. A recorded call's WAV holds exactly the call's frames.
pub fn rtp_rtcp(data: &[u8]) {
    static RECORDER: OnceLock<Option<RecorderHandle>> = OnceLock::new();
    let Some((&config, mut rest)) = data.split_first() else {
        return;
    };
    let mut packets = Vec::new();
    while let [head, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        packets.push((*head, &tail[..n]));
        rest = &tail[n..];
    }
    let recorder = if config & 16 != 0 {
        RECORDER
            .get_or_init(|| crate::media::recorder::Recorder::spawn(scratch().join("rec")).ok())
            .as_ref()
    } else {
        None
    };
    let Some(rec) = crate::media::relay::feed_packets(config, &packets, recorder) else {
        return;
    };
    let finished = rec
        .finish()
        .recv()
        .expect("recorder answers")
        .expect("recording written");
    let mut wav = hound::WavReader::open(&finished.path).expect("recording opens");
    let spec = wav.spec();
    assert_eq!((spec.channels, spec.sample_rate), (2, 8000));
    assert_eq!(u64::from(wav.duration()), finished.frames);
    assert!(
        wav.samples::<i16>().all(|s| s.is_ok()),
        "every sample reads"
    );
    let _ = std::fs::remove_file(&finished.path);
    let _ = std::fs::remove_file(finished.path.with_extension("json"));
}

/// SRTP and SRTCP with fixed keys: the first byte picks, per packet, unprotect or a protect →
/// unprotect round trip, RTP or RTCP. Forged input is an error, never a panic, and what we
/// protect comes back unchanged.
pub fn srtp(data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let suite = if mode & 1 == 0 {
        Suite::AesCm128HmacSha1_80
    } else {
        Suite::AesCm128HmacSha1_32
    };
    let key = MasterKey::new([1; 16], [2; 14]);
    let (mut tx, mut rx) = (SrtpContext::new(&key, suite), SrtpContext::new(&key, suite));
    let (mut sealed, mut opened) = (Vec::new(), Vec::new());
    let mut k = 0u32;
    while let [len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let pkt = &tail[..n];
        rest = &tail[n..];
        let (roundtrip, rtcp) = ((mode >> (1 + k % 4)) & 1 != 0, k % 3 == 2);
        k += 1;
        match (roundtrip, rtcp) {
            (false, false) => {
                let _ = rx.unprotect(pkt, &mut opened);
            }
            (false, true) => {
                let _ = rx.unprotect_rtcp(pkt, &mut opened);
            }
            (true, false) => {
                if tx.protect(pkt, &mut sealed).is_ok()
                    && rx.unprotect(&sealed, &mut opened).is_ok()
                {
                    assert_eq!(opened, pkt, "SRTP round trip");
                }
            }
            (true, true) => {
                if tx.protect_rtcp(pkt, &mut sealed).is_ok()
                    && rx.unprotect_rtcp(&sealed, &mut opened).is_ok()
                {
                    assert_eq!(opened, pkt, "SRTCP round trip");
                }
            }
        }
    }
}

/// RFC 4733 events as a sender repeats them: 4-byte payloads with a timestamp and marker taken
/// from the two bytes before each. A payload that parses encodes back to itself (R bit aside),
/// and the detector reports each press at most once.
pub fn rfc4733(data: &[u8]) {
    let mut det = DtmfDetector::default();
    let mut seen = std::collections::HashSet::new();
    let mut ts = 0u32;
    for rec in data.chunks(6) {
        let [step, flags, payload @ ..] = rec else {
            continue;
        };
        ts = ts.wrapping_add(u32::from(*step) * 40);
        let Ok(ev) = TelephoneEvent::parse(payload) else {
            continue;
        };
        let mut back = ev.to_bytes().expect("a parsed volume is in range").to_vec();
        back[1] |= payload[1] & 0x40;
        assert_eq!(back, payload, "event encodes back");
        let digits: Vec<_> = det
            .push(ts, &ev, flags & 1 != 0)
            .chain(det.expire(ts.wrapping_add(u32::from(*flags))))
            .collect();
        for d in digits {
            assert!(
                seen.insert(d.rtp_ts),
                "press at {} reported twice",
                d.rtp_ts
            );
        }
    }
    if let Some(d) = det.flush() {
        assert!(
            seen.insert(d.rtp_ts),
            "press at {} reported twice",
            d.rtp_ts
        );
    }
}

/// A recording left by a crash (`<id>.wav.part` with whatever a dying process wrote): the
/// repair either makes it a WAV a player reads to the end, or moves it aside untouched.
pub fn wav_repair(data: &[u8]) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = scratch().join("repair");
    let _ = std::fs::create_dir_all(&dir);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let part = dir.join(format!("{n}.wav.part"));
    std::fs::write(&part, data).expect("scratch file written");
    match repair_partial(&part) {
        RepairedRecording::Recovered {
            path,
            frames,
            size_bytes,
            truncated_bytes,
            ..
        } => {
            assert_eq!(size_bytes + truncated_bytes, data.len() as u64);
            let mut wav = hound::WavReader::open(&path).expect("a recovered WAV opens");
            let spec = wav.spec();
            assert_eq!(u64::from(wav.duration()), frames, "frames as reported");
            let read = match (spec.sample_format, spec.bits_per_sample) {
                (hound::SampleFormat::Float, _) => {
                    wav.samples::<f32>().filter(Result::is_ok).count()
                }
                (_, 8) => wav.samples::<i8>().filter(Result::is_ok).count(),
                (_, 9..=16) => wav.samples::<i16>().filter(Result::is_ok).count(),
                _ => wav.samples::<i32>().filter(Result::is_ok).count(),
            };
            assert_eq!(
                read as u64,
                frames * u64::from(spec.channels),
                "every sample reads"
            );
            // Only the two size fields change: RIFF's, and data's somewhere after the header.
            let written = std::fs::read(&path).expect("recovered file reads");
            assert_eq!(written.len() as u64, size_bytes);
            let riff = u32::from_le_bytes([written[4], written[5], written[6], written[7]]);
            assert_eq!(u64::from(riff), size_bytes - 8, "RIFF size from the length");
            let changed: Vec<usize> = (8..written.len())
                .filter(|&i| written[i] != data[i])
                .collect();
            if let (Some(first), Some(last)) = (changed.first(), changed.last()) {
                assert!(last - first < 4, "only the data size changed: {changed:?}");
            }
            let _ = std::fs::remove_file(&path);
        }
        RepairedRecording::MovedAside { to, .. } => {
            let kept = std::fs::read(&to).expect("moved-aside file reads");
            assert_eq!(kept, data, "a file moved aside is untouched");
            let _ = std::fs::remove_file(&to);
        }
        RepairedRecording::Failed { path, error } => {
            let _ = std::fs::remove_file(&path);
            panic!("repair failed on a scratch file: {error}");
        }
    }
    let _ = std::fs::remove_file(&part);
}

#[cfg(test)]
mod tests {
    /// Every seed and every past finding of each fuzz target (`fuzz/seeds/<target>/`, the RFC
    /// 4475 corpus for `sip_message`) still holds its invariants.
    #[test]
    fn seeds_and_past_findings_replay() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        type Target = (&'static str, fn(&[u8]));
        let targets: [Target; 7] = [
            ("sip_message", super::sip_message),
            ("sip_stream", super::sip_stream),
            ("sdp", super::sdp),
            ("rtp_rtcp", super::rtp_rtcp),
            ("srtp", super::srtp),
            ("rfc4733", super::rfc4733),
            ("wav_repair", super::wav_repair),
        ];
        for (name, run) in targets {
            let dir = match name {
                "sip_message" => root.join("tests/vectors/rfc4475"),
                _ => root.join("fuzz/seeds").join(name),
            };
            let mut n = 0;
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                run(&std::fs::read(&path).unwrap());
                n += 1;
            }
            assert!(n >= 1, "{name}: {n} seeds in {}", dir.display());
        }
    }
}
