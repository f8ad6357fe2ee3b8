//! Property tests over everything that reads peer input: the SIP parser (datagram and stream),
//! mutated RFC 4475 messages, SDP, RFC 4733 events and the recorder's timeline. None may panic,
//! and a message that parses must survive serialize → parse unchanged (hickory-dns style).

use proptest::prelude::*;
use screenpop::fuzzing::without_length;
use screenpop::media::dtmf::TelephoneEvent;
use screenpop::media::recorder::{Channel, StereoTimeline};
use screenpop::sip::sdp::SessionDescription;
use screenpop::sip::Message;

fn corpus() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/rfc4475");
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "dat"))
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    v.sort();
    v
}

fn round_trip(bytes: &[u8]) {
    if let Ok(m) = Message::parse(bytes) {
        let again = Message::parse(&m.to_bytes()).expect("serialized message must parse");
        assert_eq!(without_length(m), without_length(again));
    }
    let _ = Message::parse_stream(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn sip_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        round_trip(&bytes);
    }

    #[test]
    fn sip_mutated_corpus(
        pick in 0usize..64,
        edits in proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 1..12),
    ) {
        let c = corpus();
        let mut m = c[pick % c.len()].clone();
        for (pos, byte, op) in edits {
            if m.is_empty() { break; }
            let p = pos as usize % m.len();
            match op {
                0 => m[p] = byte,
                1 => m.insert(p, byte),
                _ => { m.remove(p); }
            }
        }
        round_trip(&m);
    }

    #[test]
    fn sip_arbitrary_unicode_lines(head in "\\PC{0,40}", rest in "\\PC{0,200}") {
        let msg = format!("{head}\r\n{rest}\r\n\r\n");
        round_trip(msg.as_bytes());
        let _ = screenpop::transport::error_response(msg.as_bytes(), 400);
    }

    #[test]
    fn sdp_arbitrary(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = SessionDescription::parse(&bytes);
    }

    #[test]
    fn telephone_event_arbitrary(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
        if let Ok(ev) = TelephoneEvent::parse(&bytes) {
            let out = ev.to_bytes().unwrap();
            prop_assert_eq!(TelephoneEvent::parse(&out).unwrap(), ev);
        }
    }

    #[test]
    fn timeline_arbitrary_packets(
        pkts in proptest::collection::vec((any::<bool>(), any::<u32>(), any::<u32>(), 0u64..1_000_000, 0usize..400), 0..200),
        end in 0u64..1_000_000,
    ) {
        let mut t = StereoTimeline::new();
        let pcm = vec![1000i16; 400];
        let mut out = Vec::new();
        for (left, ssrc, ts, arrival, n) in pkts {
            let ch = if left { Channel::Caller } else { Channel::Agent };
            t.push(ch, ssrc % 3, ts, arrival, &pcm[..n]);
            t.drain(arrival.saturating_sub(1600), &mut out);
        }
        let drained = t.drained();
        out.clear();
        if end >= drained {
            t.finish(end, &mut out);
            prop_assert_eq!(out.len() as u64, (end - drained) * 2);
        }
    }
}

#[test]
fn whole_corpus_round_trips() {
    for m in corpus() {
        round_trip(&m);
    }
}
