//! SIP over a stream (RFC 3261 §18.3): where one message ends and the next begins.
//!
//! Bytes are pushed as they are read; each byte is looked at once for the end of the header
//! section and the Content-Length read once per message, so a peer that sends a message a
//! byte at a time costs linear time, not a re-parse of everything so far on every read (the
//! parser only ever sees whole messages). The framer also says since when a message has been
//! incomplete, for the transport to close a connection that dribbles one out for too long.
//! A sans-IO state machine: fed bytes and `now`, tested with byte vectors.

use std::time::Instant;

use super::error::ParseError;
use super::message::{MAX_HEADERS, MAX_MESSAGE};

/// A keep-alive ping on a stream (RFC 5626 §3.5.1), answered with a CRLF.
const PING: &[u8] = b"\r\n\r\n";

/// What the stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// One whole message (headers and the body its Content-Length says), to be parsed.
    Message(Vec<u8>),
    /// A double-CRLF keep-alive (RFC 5626 §3.5.1): answer with a CRLF.
    Ping,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Where the message being assembled starts (bytes before it are consumed).
    start: usize,
    /// How far the end of its header section has been looked for.
    scanned: usize,
    /// Where it ends, once its header section is complete.
    end: Option<usize>,
    /// When its first byte arrived.
    since: Option<Instant>,
    /// When bytes last arrived.
    last: Option<Instant>,
    /// Bytes looked at for the end of a header section, in all (the work done: each byte once,
    /// give or take the two before where the last look stopped).
    examined: usize,
}

impl Framer {
    /// Bytes read from the stream.
    pub fn push(&mut self, data: &[u8], now: Instant) {
        if data.is_empty() {
            return;
        }
        // Consumed bytes go once they are at least half the buffer: each byte is moved at most
        // a bounded number of times.
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.end = self.end.map(|e| e - self.start);
            self.start = 0;
        }
        // The clock starts with the first byte of a message: line ends waiting before it (a
        // lone keep-alive CRLF, one left after the last message) do not start it.
        if self.partial_since().is_none() {
            self.since = Some(now);
        }
        self.last = Some(now);
        self.buf.extend_from_slice(data);
    }

    /// When the bytes still waiting to make a message began to arrive: `None` when nothing is
    /// waiting.
    pub fn partial_since(&self) -> Option<Instant> {
        let waiting = self.buf[self.start..]
            .iter()
            .any(|b| *b != b'\r' && *b != b'\n');
        self.since.filter(|_| waiting)
    }

    /// The bytes of the message being assembled (to answer it when it cannot be framed).
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The next message or ping, `Ok(None)` when more bytes are needed, or the error that
    /// loses the framing (the connection must be closed: RFC 3261 §18.3).
    pub fn next_item(&mut self) -> Result<Option<Item>, ParseError> {
        if self.end.is_none() && self.scanned <= self.start {
            // Keep-alives (RFC 5626 §3.5.1: each CRLFCRLF is one) and stray line ends before
            // a message, the same however the reads fall.
            let rest = &self.buf[self.start..];
            let lead = rest
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            if let Some(at) = rest[..lead].windows(4).position(|w| w == PING) {
                self.consume(self.start + at + PING.len());
                return Ok(Some(Item::Ping));
            }
            if lead == rest.len() {
                // Only line ends so far: keep what the next read could make a ping of.
                let keep = (1..PING.len())
                    .rev()
                    .find(|&k| k <= lead && PING.starts_with(&rest[lead - k..]))
                    .unwrap_or(0);
                if lead > keep {
                    self.consume(self.start + lead - keep);
                }
                return Ok(None);
            }
            if lead > 0 {
                self.start += lead;
                self.scanned = self.start;
            }
        }
        let end = match self.end {
            Some(end) => end,
            None => {
                let from = self.scanned.saturating_sub(2).max(self.start);
                let found = header_end(&self.buf, from);
                self.examined += found.map_or(self.buf.len(), |(h, _)| h + 1) - from;
                let Some((head_end, body_start)) = found else {
                    self.scanned = self.buf.len();
                    if self.buf.len() - self.start > MAX_HEADERS {
                        return Err(ParseError::HeadersTooLarge(MAX_HEADERS));
                    }
                    return Ok(None);
                };
                if head_end - self.start > MAX_HEADERS {
                    return Err(ParseError::HeadersTooLarge(MAX_HEADERS));
                }
                let length = content_length(&self.buf[self.start..head_end])?;
                if body_start - self.start + length > MAX_MESSAGE {
                    return Err(ParseError::TooLarge(MAX_MESSAGE));
                }
                self.scanned = body_start;
                self.end = Some(body_start + length);
                body_start + length
            }
        };
        if self.buf.len() < end {
            return Ok(None);
        }
        let message = self.buf[self.start..end].to_vec();
        self.consume(end);
        Ok(Some(Item::Message(message)))
    }

    /// The message (or line ends) up to `end` is taken: what follows, if anything, arrived
    /// with the last read.
    fn consume(&mut self, end: usize) {
        self.start = end;
        self.scanned = end;
        self.end = None;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.scanned = 0;
            self.since = None;
        } else {
            self.since = self.last;
        }
    }
}

/// The end of the header section at or after `from`: (where its last line ends, where the body
/// starts). A bare LF ends a line as well as CRLF does (RFC 3261 §7.5 tolerance).
fn header_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some((i, i + 2));
            }
            if buf[i + 1] == b'\r' {
                match buf.get(i + 2) {
                    Some(b'\n') => return Some((i, i + 3)),
                    Some(_) => {}
                    None => return None,
                }
            }
        }
        i += 1;
    }
    None
}

/// The first Content-Length (or `l`) of a header section, folded lines unfolded; on a stream
/// it is required (RFC 3261 §18.3), digits only and within the message limit.
fn content_length(head: &[u8]) -> Result<usize, ParseError> {
    let text = String::from_utf8_lossy(head);
    let mut value: Option<String> = None;
    let mut in_length = false;
    for line in text.split('\n').skip(1) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            if in_length {
                if let Some(v) = value.as_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
            }
            continue;
        }
        if value.is_some() {
            break;
        }
        let Some((name, rest)) = line.split_once(':') else {
            in_length = false;
            continue;
        };
        let name = name.trim_end_matches([' ', '\t']);
        in_length = name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l");
        if in_length {
            value = Some(rest.trim().to_string());
        }
    }
    let Some(v) = value else {
        return Err(ParseError::MissingContentLength);
    };
    let v = v.trim();
    if v.starts_with('-') {
        return Err(ParseError::BadContentLength("is negative"));
    }
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadContentLength(
            "is not a number within the size limit",
        ));
    }
    let digits = v.trim_start_matches('0');
    match digits.parse::<usize>() {
        Ok(n) if n <= MAX_MESSAGE => Ok(n),
        Err(_) if digits.is_empty() => Ok(0),
        _ => Err(ParseError::BadContentLength(
            "is not a number within the size limit",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const OPTIONS: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\
        From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\
        Content-Length: 4\r\n\r\nbody";

    fn all(f: &mut Framer) -> Result<Vec<Item>, ParseError> {
        let mut out = vec![];
        while let Some(i) = f.next_item()? {
            out.push(i);
        }
        Ok(out)
    }

    #[test]
    fn whole_messages_come_out_however_the_bytes_are_cut() {
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(OPTIONS);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(OPTIONS);
        let want = vec![
            Item::Ping,
            Item::Message(OPTIONS.to_vec()),
            Item::Message(OPTIONS.to_vec()),
        ];
        for cut in [1, 2, 3, 7, 64, stream.len()] {
            let (f, got) = framed(&stream, cut);
            assert_eq!(got, want, "read {cut} bytes at a time");
            assert!(f.partial_since().is_none());
            // Every parsed frame is a message the parser takes whole.
            for i in &got {
                if let Item::Message(m) = i {
                    let (_, used) = crate::sip::Message::parse_stream(m).expect("parses");
                    assert_eq!(used, m.len());
                }
            }
        }
    }

    /// Found by `fuzz/` (sip_stream): line ends after a message, "\n\r\n\r" in one read and
    /// "\n" in the next, were dropped as four strays, though read at once they hold a ping.
    /// Every CRLFCRLF is one ping, however the reads fall, and strays around them are dropped.
    #[test]
    fn pings_do_not_depend_on_where_reads_end() {
        let mut stream = OPTIONS.to_vec();
        stream.extend_from_slice(b"\n\r\n\r\n\r\n\r\n\n\r");
        stream.extend_from_slice(OPTIONS);
        let want = vec![
            Item::Message(OPTIONS.to_vec()),
            Item::Ping,
            Item::Ping,
            Item::Message(OPTIONS.to_vec()),
        ];
        for cut in 1..=stream.len() {
            let (_, got) = framed(&stream, cut);
            assert_eq!(got, want, "read {cut} bytes at a time");
        }
    }

    /// `stream` read `cut` bytes at a time: the framer, and every item it gave.
    fn framed(stream: &[u8], cut: usize) -> (Framer, Vec<Item>) {
        let mut f = Framer::default();
        let now = Instant::now();
        let mut got = vec![];
        for chunk in stream.chunks(cut) {
            f.push(chunk, now);
            got.extend(all(&mut f).expect("frames"));
        }
        (f, got)
    }

    #[test]
    fn a_lone_crlf_waits_for_its_pair_and_compact_and_folded_lengths_frame() {
        let mut f = Framer::default();
        let now = Instant::now();
        f.push(b"\r\n", now);
        assert_eq!(f.next_item(), Ok(None));
        f.push(b"\r\n", now);
        assert_eq!(f.next_item(), Ok(Some(Item::Ping)));
        let msg = b"MESSAGE sip:a@b SIP/2.0\nl:\n  3\n\nabcNEXT";
        f.push(msg, now);
        assert_eq!(
            f.next_item(),
            Ok(Some(Item::Message(msg[..msg.len() - 4].to_vec())))
        );
        assert_eq!(f.next_item(), Ok(None));
        assert_eq!(f.pending(), b"NEXT");
    }

    #[test]
    fn framing_errors_are_typed() {
        let cases: [(&[u8], ParseError); 4] = [
            (
                b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n",
                ParseError::MissingContentLength,
            ),
            (
                b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n",
                ParseError::BadContentLength("is negative"),
            ),
            (
                b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                ParseError::BadContentLength("is not a number within the size limit"),
            ),
            (
                b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 65530\r\nX: y\r\n\r\n",
                ParseError::TooLarge(MAX_MESSAGE),
            ),
        ];
        for (bytes, want) in cases {
            let mut f = Framer::default();
            f.push(bytes, Instant::now());
            assert_eq!(
                f.next_item(),
                Err(want),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        let mut f = Framer::default();
        f.push(&vec![b'a'; MAX_HEADERS + 1], Instant::now());
        assert_eq!(f.next_item(), Err(ParseError::HeadersTooLarge(MAX_HEADERS)));
    }

    /// A keep-alive CRLF (or one left after a message) long ago does not count against the
    /// next message: its clock starts with its own first byte.
    #[test]
    fn line_ends_waiting_do_not_start_the_clock() {
        let mut f = Framer::default();
        let t0 = Instant::now();
        f.push(b"\r\n", t0);
        assert_eq!(f.next_item(), Ok(None));
        assert_eq!(f.partial_since(), None);
        let t1 = t0 + Duration::from_secs(60);
        f.push(&OPTIONS[..20], t1);
        assert_eq!(f.next_item(), Ok(None));
        assert_eq!(f.partial_since(), Some(t1));
        let mut tail = OPTIONS[20..].to_vec();
        tail.extend_from_slice(b"\r\n");
        f.push(&tail, t1);
        assert!(matches!(f.next_item(), Ok(Some(Item::Message(_)))));
        assert_eq!(f.next_item(), Ok(None));
        let t2 = t1 + Duration::from_secs(60);
        f.push(&OPTIONS[..20], t2);
        assert_eq!(f.partial_since(), Some(t2));
    }

    #[test]
    fn partial_since_is_when_the_waiting_bytes_began() {
        let mut f = Framer::default();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(3);
        f.push(&OPTIONS[..10], t0);
        assert_eq!(f.next_item(), Ok(None));
        f.push(&OPTIONS[10..], t1);
        assert_eq!(f.partial_since(), Some(t0));
        assert!(matches!(f.next_item(), Ok(Some(Item::Message(_)))));
        assert_eq!(f.partial_since(), None);
        // What follows a message in the same read waits from that read on.
        let mut two = OPTIONS.to_vec();
        two.extend_from_slice(&OPTIONS[..5]);
        f.push(&two, t1);
        assert!(matches!(f.next_item(), Ok(Some(Item::Message(_)))));
        assert_eq!(f.partial_since(), Some(t1));
    }

    /// A peer sending a long message a byte at a time costs each byte one look: the work done
    /// (bytes scanned for the header end) grows linearly with the message, not quadratically.
    #[test]
    fn a_byte_at_a_time_costs_linear_work() {
        let mut msg = b"MESSAGE sip:a@b SIP/2.0\r\n".to_vec();
        while msg.len() < 15_000 {
            msg.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        msg.extend_from_slice(b"Content-Length: 40000\r\n\r\n");
        msg.extend(std::iter::repeat_n(b'b', 40_000));
        let mut f = Framer::default();
        let now = Instant::now();
        let mut got = None;
        for b in &msg {
            f.push(std::slice::from_ref(b), now);
            if let Some(Item::Message(m)) = f.next_item().expect("frames") {
                got = Some(m);
            }
        }
        assert_eq!(got.as_deref(), Some(&msg[..]));
        // The header section is 15 kB: each of its bytes looked at about three times (the
        // two before the last stop, and itself), the body's never.
        assert!(
            f.examined < 15_100 * 3,
            "{} looks for {} bytes",
            f.examined,
            msg.len()
        );
    }
}
