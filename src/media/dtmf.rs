//! DTMF from RFC 4733 telephone-event packets.
//!
//! Callers type account numbers and IVR choices; the CTI layer needs each key
//! press exactly once, with its start time, even though RFC 4733 makes
//! senders repeat themselves on purpose: the first packet of an event
//! carries the RTP marker bit and may be sent up to three times (§2.5.1.2),
//! updates repeat the same timestamp with growing durations, and the final
//! packet with the E bit is sent three times (§2.5.1.4). All packets of one
//! event share the RTP timestamp of its start (§2.3.1), which is what
//! identifies a key press here.
//!
//! Events longer than the 16-bit duration field (~8.2 s at 8 kHz) are sent
//! as consecutive segments with new timestamps and no marker bit
//! (§2.5.1.3); they are merged back into one press.

use std::fmt;

/// Length of one telephone-event block (RFC 4733 §2.3).
pub(crate) const EVENT_LEN: usize = 4;
/// Largest value of the 6-bit volume field (−63 dBm0).
pub(crate) const MAX_VOLUME: u8 = 63;
/// Clock rate of telephone-event for narrowband calls (RFC 4733 §2.1).
pub(crate) const CLOCK_RATE: u32 = 8000;

/// Errors decoding or encoding a telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    #[error("telephone-event payload truncated: {len} of 4 bytes")]
    Truncated { len: usize },
    #[error("telephone-event payload has {len} bytes; only single 4-byte events are supported")]
    TrailingBytes { len: usize },
    #[error("volume {0} out of range 0..=63")]
    VolumeOutOfRange(u8),
    #[error("output buffer of {len} bytes cannot hold a 4-byte event")]
    BufferTooSmall { len: usize },
}

/// One RFC 4733 §2.3 event block:
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// |     event     |E|R| volume    |          duration             |
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TelephoneEvent {
    /// Event code (§3.2: 0-9, 10 = `*`, 11 = `#`, 12-15 = A-D).
    pub event: u8,
    /// E bit: this is (a retransmission of) the final packet of the event.
    pub end: bool,
    /// Power level in −dBm0, 0..=63.
    pub volume: u8,
    /// Duration so far, in RTP timestamp units, from the event's timestamp.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses a payload. The reserved R bit is ignored as §2.3 requires of
    /// receivers. Payloads packing several events (§2.5.1.5, rare in
    /// practice) are rejected with [`DtmfError::TrailingBytes`] rather than
    /// silently reading only the first.
    pub fn parse(payload: &[u8]) -> Result<Self, DtmfError> {
        match *payload {
            [event, flags, d0, d1] => Ok(TelephoneEvent {
                event,
                end: flags & 0x80 != 0,
                volume: flags & 0x3F,
                duration: u16::from_be_bytes([d0, d1]),
            }),
            _ if payload.len() < EVENT_LEN => Err(DtmfError::Truncated { len: payload.len() }),
            _ => Err(DtmfError::TrailingBytes { len: payload.len() }),
        }
    }

    /// Encodes into the first 4 bytes of `out`; returns 4.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, DtmfError> {
        let bytes = self.to_bytes()?;
        let len = out.len();
        let dst = out
            .get_mut(..EVENT_LEN)
            .ok_or(DtmfError::BufferTooSmall { len })?;
        dst.copy_from_slice(&bytes);
        Ok(EVENT_LEN)
    }

    /// Encodes to the 4-byte wire form (R bit zero).
    pub fn to_bytes(&self) -> Result<[u8; EVENT_LEN], DtmfError> {
        if self.volume > MAX_VOLUME {
            return Err(DtmfError::VolumeOutOfRange(self.volume));
        }
        let flags = if self.end { 0x80 } else { 0 } | self.volume;
        let [d0, d1] = self.duration.to_be_bytes();
        Ok([self.event, flags, d0, d1])
    }
}

/// The DTMF character of an event code (RFC 4733 §3.2 Table 3), `None` for
/// non-DTMF events (flash, fax tones, ...).
pub(crate) fn event_char(event: u8) -> Option<char> {
    Some(match event {
        0..=9 => char::from(b'0' + event),
        10 => '*',
        11 => '#',
        12 => 'A',
        13 => 'B',
        14 => 'C',
        15 => 'D',
        _ => return None,
    })
}

/// One key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Digit {
    pub ch: char,
    /// RTP timestamp of the start of the press.
    pub rtp_ts: u32,
    /// Length of the press in RTP timestamp units (may exceed 16 bits for
    /// merged long-duration segments).
    pub duration: u32,
    /// `false` when no end packet arrived and the press was closed because a
    /// new event started, or by [`DtmfDetector::flush`]/[`DtmfDetector::expire`].
    pub ended: bool,
}

impl fmt::Display for Digit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.ch)
    }
}

/// Up to two digits produced by one packet (a press whose end packets were
/// all lost is closed when the next press's end packet arrives).
#[derive(Debug, Clone, Default)]
pub(crate) struct Detected {
    digits: [Option<Digit>; 2],
    next: usize,
}

impl Detected {
    fn push(&mut self, d: Option<Digit>) {
        let Some(d) = d else { return };
        if let Some(slot) = self.digits.iter_mut().find(|s| s.is_none()) {
            *slot = Some(d);
        }
    }
}

impl Iterator for Detected {
    type Item = Digit;

    fn next(&mut self) -> Option<Digit> {
        while let Some(slot) = self.digits.get_mut(self.next) {
            self.next += 1;
            if let Some(d) = slot.take() {
                return Some(d);
            }
        }
        None
    }
}

/// A press in progress.
#[derive(Debug, Clone, Copy)]
struct Pending {
    event: u8,
    /// Timestamp of the first segment: the press's start.
    start_ts: u32,
    /// Timestamp of the current segment (differs only for long events).
    seg_ts: u32,
    /// Duration covered by segments before the current one.
    prior: u32,
    /// Duration reported in the current segment.
    seg_duration: u16,
}

impl Pending {
    fn digit(&self, ended: bool) -> Option<Digit> {
        Some(Digit {
            ch: event_char(self.event)?,
            rtp_ts: self.start_ts,
            duration: self.prior.saturating_add(u32::from(self.seg_duration)),
            ended,
        })
    }
}

/// How close to the 16-bit limit a segment must have got, and how far past
/// its reported end the next one may start, to count as a continuation
/// (§2.5.1.3) rather than a new press whose start packets were lost: 200 ms.
const SEGMENT_SLACK: u32 = 1600;

/// Turns telephone-event packets into one [`Digit`] per key press.
///
/// Feed it every telephone-event packet of one RTP stream (one SSRC) in
/// arrival order; create a new detector when the SSRC changes.
#[derive(Debug, Clone, Default)]
pub(crate) struct DtmfDetector {
    pending: Option<Pending>,
    /// Timestamp of the last segment closed, so its redundant end packets and
    /// stragglers are recognised.
    last_closed: Option<u32>,
}

/// `a` is before `b` in RTP timestamp order (RFC 3550 §5.1 wrap-around).
fn ts_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl DtmfDetector {
    /// Processes one packet: its RTP timestamp, parsed payload and marker
    /// bit. Returns the presses that completed.
    pub fn push(&mut self, rtp_ts: u32, ev: &TelephoneEvent, marker: bool) -> Detected {
        let mut out = Detected::default();

        if let Some(last) = self.last_closed {
            if rtp_ts == last || ts_before(rtp_ts, last) {
                // Redundant end packet, or a straggler of a finished press.
                return out;
            }
        }

        if let Some(p) = self.pending.as_mut() {
            if rtp_ts == p.seg_ts {
                // Update or retransmitted start of the press in progress.
                p.seg_duration = p.seg_duration.max(ev.duration);
                if ev.end {
                    out.push(self.close(true));
                }
                return out;
            }
            if ts_before(rtp_ts, p.seg_ts) {
                return out;
            }
            let gap = rtp_ts.wrapping_sub(p.seg_ts);
            let continuation = !marker
                && ev.event == p.event
                && u32::from(p.seg_duration) + SEGMENT_SLACK >= u32::from(u16::MAX)
                && gap <= u32::from(p.seg_duration) + SEGMENT_SLACK;
            if continuation {
                p.prior = p.prior.saturating_add(gap);
                p.seg_ts = rtp_ts;
                p.seg_duration = ev.duration;
                if ev.end {
                    out.push(self.close(true));
                }
                return out;
            }
            // A new press began before the old one's end packets arrived.
            out.push(self.close(false));
        }

        self.pending = Some(Pending {
            event: ev.event,
            start_ts: rtp_ts,
            seg_ts: rtp_ts,
            prior: 0,
            seg_duration: ev.duration,
        });
        if ev.end {
            // All earlier packets of this press were lost.
            out.push(self.close(true));
        }
        out
    }

    /// Closes a press whose end packets never came once the stream has moved
    /// `now_ts` more than one second past its last reported duration.
    /// `now_ts` is any timestamp of the same RTP clock (e.g. of audio packets
    /// sharing the SSRC).
    pub fn expire(&mut self, now_ts: u32) -> Option<Digit> {
        let p = self.pending?;
        let reported_end = p.seg_ts.wrapping_add(u32::from(p.seg_duration));
        let idle = now_ts.wrapping_sub(reported_end) as i32;
        if idle > CLOCK_RATE as i32 {
            self.close(false)
        } else {
            None
        }
    }

    /// Closes any press in progress (end of call).
    pub fn flush(&mut self) -> Option<Digit> {
        self.close(false)
    }

    fn close(&mut self, ended: bool) -> Option<Digit> {
        let p = self.pending.take()?;
        self.last_closed = Some(p.seg_ts);
        p.digit(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(bytes: [u8; 4]) -> TelephoneEvent {
        TelephoneEvent::parse(&bytes).unwrap()
    }

    #[test]
    fn parse_known_vectors() {
        // Digit 5, start, volume 10 (-10 dBm0), duration 160.
        assert_eq!(
            ev([0x05, 0x0A, 0x00, 0xA0]),
            TelephoneEvent {
                event: 5,
                end: false,
                volume: 10,
                duration: 160
            }
        );
        // '#', end bit, volume 63, duration 0x0640 (200 ms).
        assert_eq!(
            ev([0x0B, 0xBF, 0x06, 0x40]),
            TelephoneEvent {
                event: 11,
                end: true,
                volume: 63,
                duration: 1600
            }
        );
        // R bit set by a sloppy sender is ignored.
        assert_eq!(ev([0x01, 0x40 | 0x07, 0xFF, 0xFF]).volume, 7);
        assert!(!ev([0x01, 0x40, 0, 0]).end);
        assert_eq!(ev([0x01, 0x40, 0xFF, 0xFF]).duration, u16::MAX);
    }

    #[test]
    fn parse_rejects_bad_lengths() {
        assert_eq!(
            TelephoneEvent::parse(&[]),
            Err(DtmfError::Truncated { len: 0 })
        );
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(DtmfError::Truncated { len: 3 })
        );
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3, 4, 5]),
            Err(DtmfError::TrailingBytes { len: 5 })
        );
        assert_eq!(
            TelephoneEvent::parse(&[0; 8]),
            Err(DtmfError::TrailingBytes { len: 8 })
        );
    }

    #[test]
    fn write_round_trips() {
        for bytes in [
            [0x05u8, 0x0A, 0x00, 0xA0],
            [0x0B, 0xBF, 0x06, 0x40],
            [15, 0x80, 0, 1],
        ] {
            let e = ev(bytes);
            let mut out = [0u8; 6];
            assert_eq!(e.write(&mut out), Ok(4));
            assert_eq!(out[..4], bytes);
            assert_eq!(e.to_bytes(), Ok(bytes));
        }
        let e = TelephoneEvent {
            event: 1,
            end: false,
            volume: 64,
            duration: 0,
        };
        assert_eq!(e.to_bytes(), Err(DtmfError::VolumeOutOfRange(64)));
        let ok = TelephoneEvent { volume: 0, ..e };
        assert_eq!(
            ok.write(&mut [0u8; 3]),
            Err(DtmfError::BufferTooSmall { len: 3 })
        );
        // R bit is cleared on write.
        assert_eq!(ev([1, 0x45, 0, 0]).to_bytes(), Ok([1, 0x05, 0, 0]));
    }

    #[test]
    fn event_chars() {
        let s: String = (0..=15).filter_map(event_char).collect();
        assert_eq!(s, "0123456789*#ABCD");
        assert_eq!(event_char(16), None); // flash
        assert_eq!(event_char(255), None);
    }

    /// A typical sender: marker start sent 3 times, updates every 50 ms, end
    /// sent 3 times.
    fn press(event: u8, ts: u32, dur: u16) -> Vec<(u32, [u8; 4], bool)> {
        let mut pkts = Vec::new();
        for _ in 0..3 {
            pkts.push((ts, [event, 10, 0, 0], true));
        }
        let mut d = 400u16;
        while d < dur {
            pkts.push((ts, [event, 10, (d >> 8) as u8, d as u8], false));
            d += 400;
        }
        for _ in 0..3 {
            pkts.push((ts, [event, 0x80 | 10, (dur >> 8) as u8, dur as u8], false));
        }
        pkts
    }

    fn run(det: &mut DtmfDetector, pkts: &[(u32, [u8; 4], bool)]) -> Vec<Digit> {
        pkts.iter()
            .flat_map(|(ts, b, m)| det.push(*ts, &ev(*b), *m).collect::<Vec<_>>())
            .collect()
    }

    #[test]
    fn one_digit_per_press_despite_redundancy() {
        let mut det = DtmfDetector::default();
        let mut pkts = press(1, 1000, 1600);
        pkts.extend(press(2, 4000, 800));
        pkts.extend(press(1, 6000, 1200)); // same digit again is a new press
        let digits = run(&mut det, &pkts);
        let s: String = digits.iter().map(|d| d.ch).collect();
        assert_eq!(s, "121");
        assert_eq!(
            digits[0],
            Digit {
                ch: '1',
                rtp_ts: 1000,
                duration: 1600,
                ended: true
            }
        );
        assert_eq!(digits[1].duration, 800);
        assert_eq!(digits[2].rtp_ts, 6000);
        assert_eq!(det.flush(), None);
    }

    #[test]
    fn lost_end_packets_close_on_next_press() {
        let mut det = DtmfDetector::default();
        let mut pkts: Vec<_> = press(9, 100, 1200)
            .into_iter()
            .filter(|(_, b, _)| b[1] & 0x80 == 0)
            .collect();
        // Second press: only its end packets survive.
        pkts.extend(
            press(0x0B, 3000, 800)
                .into_iter()
                .filter(|(_, b, _)| b[1] & 0x80 != 0),
        );
        let digits = run(&mut det, &pkts);
        assert_eq!(digits.len(), 2);
        assert_eq!(
            (digits[0].ch, digits[0].ended, digits[0].duration),
            ('9', false, 800)
        );
        assert_eq!(
            (digits[1].ch, digits[1].ended, digits[1].duration),
            ('#', true, 800)
        );
    }

    #[test]
    fn reordered_and_stale_packets_are_ignored() {
        let mut det = DtmfDetector::default();
        let mut out = Vec::new();
        out.extend(det.push(500, &ev([3, 10, 0, 0]), true));
        out.extend(det.push(500, &ev([3, 0x8A, 0x03, 0x20]), false));
        // A delayed update of the same press after its end.
        out.extend(det.push(500, &ev([3, 10, 0x01, 0x90]), false));
        // A straggler from an earlier press.
        out.extend(det.push(100, &ev([7, 0x8A, 0x01, 0x90]), false));
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].ch, out[0].duration), ('3', 800));
    }

    #[test]
    fn timestamps_wrap() {
        let mut det = DtmfDetector::default();
        let mut pkts = press(4, u32::MAX - 100, 800);
        pkts.extend(press(5, 700, 800));
        let s: String = run(&mut det, &pkts).iter().map(|d| d.ch).collect();
        assert_eq!(s, "45");
    }

    #[test]
    fn long_event_segments_merge() {
        let mut det = DtmfDetector::default();
        let ts = 10_000u32;
        let mut out = Vec::new();
        out.extend(det.push(ts, &ev([0, 10, 0, 0]), true));
        out.extend(det.push(ts, &ev([0, 10, 0xFF, 0xFF]), false));
        // Second segment starts 0xFFFF later, no marker.
        let ts2 = ts + 0xFFFF;
        out.extend(det.push(ts2, &ev([0, 10, 0x03, 0x20]), false));
        for _ in 0..3 {
            out.extend(det.push(ts2, &ev([0, 0x8A, 0x06, 0x40]), false));
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rtp_ts, ts);
        assert_eq!(out[0].duration, 0xFFFF + 1600);
        assert!(out[0].ended);
    }

    #[test]
    fn expire_and_flush_close_abandoned_presses() {
        let mut det = DtmfDetector::default();
        assert_eq!(det.push(0, &ev([14, 10, 0x01, 0x90]), true).count(), 0);
        assert_eq!(det.expire(400 + 8000), None);
        let d = det.expire(400 + 8001).unwrap();
        assert_eq!((d.ch, d.duration, d.ended), ('C', 400, false));
        assert_eq!(det.flush(), None);

        let _ = det.push(20_000, &ev([15, 10, 0, 160]), true).count();
        assert_eq!(det.flush().map(|d| d.ch), Some('D'));
    }

    #[test]
    fn non_dtmf_events_are_tracked_but_not_reported() {
        let mut det = DtmfDetector::default();
        let mut pkts = press(16, 0, 800); // flash
        pkts.extend(press(8, 2000, 800));
        let s: String = run(&mut det, &pkts).iter().map(|d| d.ch).collect();
        assert_eq!(s, "8");
    }
}
