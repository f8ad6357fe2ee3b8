//! SIPp's message log (`-trace_msg`), read back: the tests check a call's SIP flow and timing
//! with it, and `benches/pop_latency.rs` (which includes this file by path) takes the pop's
//! latency from outside with it.

use std::time::{SystemTime, UNIX_EPOCH};

/// One entry of a SIPp `-trace_msg` log.
#[derive(Clone, Debug)]
pub struct LoggedMessage {
    /// Seconds since midnight (SIPp's local time); only differences matter.
    pub time: f64,
    pub sent: bool,
    pub first_line: String,
    pub text: String,
}

impl LoggedMessage {
    pub fn status(&self) -> Option<u16> {
        status_code(&self.first_line)
    }
    /// The message as it went on the wire: CRLF line ends, and a Content-Length that fits the
    /// body as the log gives it back (a test replays it byte for byte).
    pub fn wire(&self) -> Vec<u8> {
        let (head, body) = self.text.split_once("\n\n").unwrap_or((&self.text, ""));
        let body: Vec<&str> = body.lines().collect();
        let body = match body.iter().rposition(|l| !l.trim().is_empty()) {
            Some(last) => body[..=last].join("\r\n") + "\r\n",
            None => String::new(),
        };
        let head: Vec<String> = head
            .lines()
            .map(|l| match l.split_once(':') {
                Some((name, _)) if name.eq_ignore_ascii_case("Content-Length") => {
                    format!("Content-Length: {}", body.len())
                }
                _ => l.to_string(),
            })
            .collect();
        format!("{}\r\n\r\n{body}", head.join("\r\n")).into_bytes()
    }
    pub fn sdp_audio_port(&self) -> Option<u16> {
        self.text
            .lines()
            .find_map(|l| l.trim().strip_prefix("m=audio "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
    }
}

/// Parses SIPp's message log: entries start with a dashed line carrying a
/// timestamp, then `UDP message sent (N bytes):` or `UDP message received
/// [N] bytes :`, a blank line and the message. Untimed entries (the
/// "Unexpected UDP message received" echoes) are skipped.
pub fn parse_message_log(text: &str) -> Vec<LoggedMessage> {
    let mut out = vec![];
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("-----------------------------------------------")
        else {
            continue;
        };
        let Some(time) = rest.split_whitespace().nth(1).and_then(parse_clock) else {
            continue;
        };
        let Some(kind) = lines.next() else { break };
        let sent = kind.contains("message sent");
        if !sent && !kind.contains("message received") {
            continue;
        }
        let mut body = vec![];
        while let Some(l) = lines.peek() {
            if l.starts_with("-----------------------------------------------") {
                break;
            }
            body.push(lines.next().unwrap_or_default());
        }
        let msg: Vec<&str> = body
            .into_iter()
            .skip_while(|l| l.trim().is_empty())
            .collect();
        let first_line = msg
            .first()
            .map(|l| l.trim().to_string())
            .unwrap_or_default();
        out.push(LoggedMessage {
            time,
            sent,
            first_line,
            text: msg.join("\n"),
        });
    }
    out
}

fn parse_clock(hms: &str) -> Option<f64> {
    let mut it = hms.split(':');
    let h: f64 = it.next()?.parse().ok()?;
    let m: f64 = it.next()?.parse().ok()?;
    let s: f64 = it.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The status code of a response's first line (`SIP/2.0 180 Ringing` → 180).
pub fn status_code(first_line: &str) -> Option<u16> {
    let rest = first_line.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok()
}

/// Seconds since midnight, UTC, as SIPp's message log (run with TZ=UTC) tells time.
pub fn clock_of(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() % 86_400.0)
        .unwrap_or(0.0)
}
