//! SMS to an operator's SMS center over SMPP 3.4, as an ESME. The session is sans-IO: it is
//! fed the connection's bytes and `now` and says what to write, when to wake and what
//! happened (PDUs are encoded and decoded by `rusmpp`). It binds as transmitter or
//! transceiver, splits each text into parts (GSM 7-bit or UCS-2, concatenated with a UDH,
//! [`super::sms`]), keeps at most `window` submits outstanding, slows down when the SMS center
//! says `ESME_RTHROTTLED`, keeps the link alive with `enquire_link`, answers `deliver_sm`, and
//! reports delivery receipts and customers' texts. [`link`] runs it on a TCP connection with
//! reconnects.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rusmpp::pdus::{BindTransceiver, BindTransmitter, DeliverSmResp, SubmitSm};
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{DataCoding, EsmClass, InterfaceVersion, Npi, RegisteredDelivery, Ton};
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use super::sms::{self, Coding};

/// How the session binds and paces itself.
#[derive(Debug, Clone)]
pub struct SmppSettings {
    pub system_id: String,
    pub password: String,
    pub system_type: String,
    /// Transceiver (submits, receipts and customers' texts on one link), else transmitter.
    pub transceiver: bool,
    /// The sender shown on the phone.
    pub source_addr: String,
    /// Submits awaiting their response, at most.
    pub window: usize,
    /// Idle time before an `enquire_link`.
    pub enquire_link: Duration,
    /// How long a response may take before the request counts as lost.
    pub response_timeout: Duration,
}

/// One text to send; `id` comes back in its [`SmppEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submit {
    pub id: u64,
    /// The number, E.164 with or without `+`.
    pub to: String,
    pub text: String,
}

/// What the session reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmppEvent {
    Bound,
    /// The SMS center refused the bind (wrong password, too many binds…): `status` is its
    /// command status. The link closes and binds again later.
    BindRefused {
        status: u32,
    },
    /// Every part of the text was taken; `message_id` is the first part's (its receipt
    /// decides delivery).
    Accepted {
        id: u64,
        message_id: String,
    },
    /// Not taken; `temporary` when another try may work.
    Refused {
        id: u64,
        why: String,
        temporary: bool,
    },
    /// A delivery receipt.
    Receipt {
        message_id: String,
        delivered: bool,
        stat: String,
    },
    /// A text from a customer (an MO `deliver_sm`).
    Received {
        from: String,
        text: String,
    },
    /// The link is unusable (no answer, an unbind, bytes that do not decode): close it.
    Broken {
        why: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Binding { since: Instant },
    Bound,
}

#[derive(Debug, Clone)]
struct Part {
    id: u64,
    /// Which part of its text (0 first): only the first asks for a delivery receipt, and its
    /// message id is the one the attempt keeps.
    index: usize,
    to: String,
    coding: Coding,
    udh: bool,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct Job {
    parts_left: usize,
    first_message_id: Option<String>,
}

/// ESME_RTHROTTLED.
const THROTTLED: u32 = 0x58;
/// Statuses worth another try: queue full, system error, throttled (when given up on),
/// submit failed, "try later" ranges an SMS center uses for congestion.
const TEMPORARY: [u32; 4] = [0x14, 0x08, THROTTLED, 0x45];

pub struct Session {
    cfg: SmppSettings,
    state: State,
    seq: u32,
    codec: CommandCodec,
    rx: BytesMut,
    out: BytesMut,
    queue: VecDeque<Part>,
    outstanding: HashMap<u32, (Part, Instant)>,
    jobs: HashMap<u64, Job>,
    throttled_until: Option<Instant>,
    throttle_wait: Duration,
    last_activity: Instant,
    enquire: Option<(u32, Instant)>,
    events: VecDeque<SmppEvent>,
    reference: u8,
}

impl Session {
    pub fn new(cfg: SmppSettings, now: Instant) -> Session {
        Session {
            cfg,
            state: State::Idle,
            seq: 0,
            codec: CommandCodec::new(),
            rx: BytesMut::new(),
            out: BytesMut::new(),
            queue: VecDeque::new(),
            outstanding: HashMap::new(),
            jobs: HashMap::new(),
            throttled_until: None,
            throttle_wait: Duration::from_millis(250),
            last_activity: now,
            enquire: None,
            events: VecDeque::new(),
            reference: 0,
        }
    }

    pub fn is_bound(&self) -> bool {
        self.state == State::Bound
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq % 0x7FFF_FFFF + 1;
        self.seq
    }

    fn send(&mut self, status: CommandStatus, seq: u32, pdu: impl Into<Pdu>) {
        let cmd = Command::new(status, seq, pdu);
        // Encoding into memory cannot fail.
        let _ = self.codec.encode(cmd, &mut self.out);
    }

    /// The TCP connection is up: bind.
    pub fn connected(&mut self, now: Instant) {
        self.rx.clear();
        self.out.clear();
        self.codec = CommandCodec::new();
        self.throttled_until = None;
        let seq = self.next_seq();
        let c = &self.cfg;
        let system_id = c
            .system_id
            .parse()
            .unwrap_or_else(|_| COctetString::empty());
        let password = c.password.parse().unwrap_or_else(|_| COctetString::empty());
        let system_type = c
            .system_type
            .parse()
            .unwrap_or_else(|_| COctetString::empty());
        if c.transceiver {
            let b = BindTransceiver::new(
                system_id,
                password,
                system_type,
                InterfaceVersion::Smpp3_4,
                Ton::Unknown,
                Npi::Unknown,
                COctetString::empty(),
            );
            self.send(CommandStatus::EsmeRok, seq, Pdu::BindTransceiver(b));
        } else {
            let b = BindTransmitter::new(
                system_id,
                password,
                system_type,
                InterfaceVersion::Smpp3_4,
                Ton::Unknown,
                Npi::Unknown,
                COctetString::empty(),
            );
            self.send(CommandStatus::EsmeRok, seq, Pdu::BindTransmitter(b));
        }
        self.state = State::Binding { since: now };
        self.last_activity = now;
    }

    /// The connection is gone: what was in flight is refused as temporary (the runner tries
    /// again later), what waited for the window too.
    pub fn closed(&mut self) {
        let ids: Vec<u64> = self.jobs.keys().copied().collect();
        for id in ids {
            self.events.push_back(SmppEvent::Refused {
                id,
                why: "the link to the SMS center was lost".into(),
                temporary: true,
            });
        }
        self.jobs.clear();
        self.queue.clear();
        self.outstanding.clear();
        self.enquire = None;
        self.throttled_until = None;
        self.state = State::Idle;
    }

    /// Queues a text; refused at once (temporary) while not bound.
    pub fn submit(&mut self, now: Instant, s: Submit) {
        if self.state != State::Bound {
            self.events.push_back(SmppEvent::Refused {
                id: s.id,
                why: "not bound to the SMS center".into(),
                temporary: true,
            });
            return;
        }
        self.reference = self.reference.wrapping_add(1);
        let encoded = sms::encode(&s.text, self.reference);
        let udh = encoded.has_udh();
        let to = s.to.trim_start_matches('+').to_string();
        self.jobs.insert(
            s.id,
            Job {
                parts_left: encoded.parts.len(),
                first_message_id: None,
            },
        );
        for (index, bytes) in encoded.parts.into_iter().enumerate() {
            self.queue.push_back(Part {
                id: s.id,
                index,
                to: to.clone(),
                coding: encoded.coding,
                udh,
                bytes,
            });
        }
        self.pump(now);
    }

    fn pump(&mut self, now: Instant) {
        if self.state != State::Bound || self.throttled_until.is_some_and(|t| now < t) {
            return;
        }
        self.throttled_until = None;
        while self.outstanding.len() < self.cfg.window.max(1) {
            let Some(part) = self.queue.pop_front() else {
                break;
            };
            if !self.jobs.contains_key(&part.id) {
                continue; // its message already failed
            }
            let seq = self.next_seq();
            let (ton, npi, source) = source_address(&self.cfg.source_addr);
            let submit = SubmitSm::builder()
                .source_addr_ton(ton)
                .source_addr_npi(npi)
                .source_addr(source.parse().unwrap_or_else(|_| COctetString::empty()))
                .dest_addr_ton(Ton::International)
                .dest_addr_npi(Npi::Isdn)
                .destination_addr(part.to.parse().unwrap_or_else(|_| COctetString::empty()))
                .esm_class(EsmClass::from(if part.udh { 0x40 } else { 0x00 }))
                .registered_delivery(RegisteredDelivery::from(u8::from(part.index == 0)))
                .data_coding(DataCoding::from(part.coding.data_coding()))
                .short_message(OctetString::from_vec(part.bytes.clone()).unwrap_or_default())
                .build();
            self.send(CommandStatus::EsmeRok, seq, Pdu::SubmitSm(submit));
            self.outstanding.insert(seq, (part, now));
            self.last_activity = now;
        }
    }

    fn fail(&mut self, id: u64, why: String, temporary: bool) {
        if self.jobs.remove(&id).is_some() {
            self.events
                .push_back(SmppEvent::Refused { id, why, temporary });
        }
    }

    /// Bytes from the SMS center.
    pub fn receive(&mut self, now: Instant, bytes: &[u8]) {
        self.rx.extend_from_slice(bytes);
        loop {
            match self.codec.decode(&mut self.rx) {
                Ok(Some(cmd)) => {
                    self.last_activity = now;
                    self.handle(now, cmd);
                }
                Ok(None) => break,
                Err(e) => {
                    self.events.push_back(SmppEvent::Broken {
                        why: format!("undecodable PDU from the SMS center: {e}"),
                    });
                    self.rx.clear();
                    break;
                }
            }
        }
        self.pump(now);
    }

    fn handle(&mut self, now: Instant, cmd: Command) {
        let seq = cmd.sequence_number();
        let status = u32::from(cmd.status());
        // A response with an error status has no body (SMPP 3.4 §4.1, §4.4.2): the command
        // id and the status decide, the body only adds the message id.
        match cmd.id() {
            CommandId::BindTransceiverResp | CommandId::BindTransmitterResp => {
                if status == 0 {
                    self.state = State::Bound;
                    self.throttle_wait = Duration::from_millis(250);
                    self.events.push_back(SmppEvent::Bound);
                } else {
                    self.state = State::Idle;
                    self.events.push_back(SmppEvent::BindRefused { status });
                }
            }
            CommandId::SubmitSmResp | CommandId::GenericNack => {
                let Some((part, _)) = self.outstanding.remove(&seq) else {
                    return;
                };
                let message_id = match cmd.pdu() {
                    Some(Pdu::SubmitSmResp(r)) => r.message_id().as_str().to_string(),
                    _ => String::new(),
                };
                match status {
                    0 if cmd.id() == CommandId::SubmitSmResp => {
                        self.throttle_wait = Duration::from_millis(250);
                        let done = match self.jobs.get_mut(&part.id) {
                            Some(job) => {
                                if part.index == 0 {
                                    job.first_message_id = Some(message_id);
                                }
                                job.parts_left -= 1;
                                job.parts_left == 0
                            }
                            None => false,
                        };
                        if done {
                            if let Some(job) = self.jobs.remove(&part.id) {
                                self.events.push_back(SmppEvent::Accepted {
                                    id: part.id,
                                    message_id: job.first_message_id.unwrap_or_default(),
                                });
                            }
                        }
                    }
                    THROTTLED => {
                        // Slow down: the part goes back first in line after a pause that
                        // doubles while the SMS center keeps saying so (at most 8 s).
                        self.queue.push_front(part);
                        self.throttled_until = Some(now + self.throttle_wait);
                        self.throttle_wait = (self.throttle_wait * 2).min(Duration::from_secs(8));
                    }
                    s => {
                        let temporary = TEMPORARY.contains(&s);
                        self.fail(part.id, format!("SMPP status 0x{s:08X}"), temporary);
                    }
                }
            }
            _ => self.handle_request(cmd, seq),
        }
    }

    /// Requests from the SMS center: each is answered, an unknown one with `generic_nack`.
    fn handle_request(&mut self, cmd: Command, seq: u32) {
        match cmd.pdu() {
            Some(Pdu::DeliverSm(d)) => {
                self.send(
                    CommandStatus::EsmeRok,
                    seq,
                    Pdu::DeliverSmResp(DeliverSmResp::default()),
                );
                let esm = u8::from(d.esm_class);
                let body = d.short_message().clone().into_vec();
                if esm & 0x3C == 0x04 {
                    // An SMS center delivery receipt (SMPP 3.4 appendix B).
                    if let Some(r) = parse_receipt(&String::from_utf8_lossy(&body)) {
                        self.events.push_back(r);
                    }
                } else {
                    let coding = if u8::from(d.data_coding) == 8 {
                        Coding::Ucs2
                    } else {
                        Coding::Gsm7
                    };
                    let text = sms::decode(&body, coding, esm & 0x40 != 0);
                    // An international number comes without its `+`.
                    let addr = d.source_addr.as_str();
                    let from = if d.source_addr_ton == Ton::International && !addr.starts_with('+')
                    {
                        format!("+{addr}")
                    } else {
                        addr.to_string()
                    };
                    self.events.push_back(SmppEvent::Received { from, text });
                }
            }
            Some(Pdu::EnquireLink) => {
                self.send(CommandStatus::EsmeRok, seq, Pdu::EnquireLinkResp);
            }
            Some(Pdu::EnquireLinkResp) if self.enquire.is_some_and(|(s, _)| s == seq) => {
                self.enquire = None;
            }
            Some(Pdu::Unbind) => {
                self.send(CommandStatus::EsmeRok, seq, Pdu::UnbindResp);
                self.events.push_back(SmppEvent::Broken {
                    why: "the SMS center unbound".into(),
                });
            }
            _ if cmd.id().is_operation() => {
                self.send(CommandStatus::EsmeRinvcmdid, seq, Pdu::GenericNack);
            }
            _ => {}
        }
    }

    /// Timers: a bind or a submit without an answer, the keep-alive, the end of a throttle.
    pub fn handle_timeout(&mut self, now: Instant) {
        let limit = self.cfg.response_timeout;
        if let State::Binding { since } = self.state {
            if now >= since + limit {
                self.state = State::Idle;
                self.events.push_back(SmppEvent::Broken {
                    why: "no answer to the bind".into(),
                });
                return;
            }
        }
        let late: Vec<u32> = self
            .outstanding
            .iter()
            .filter(|(_, (_, at))| now >= *at + limit)
            .map(|(s, _)| *s)
            .collect();
        for seq in late {
            if let Some((part, _)) = self.outstanding.remove(&seq) {
                self.fail(part.id, "no answer from the SMS center".into(), true);
            }
        }
        if let Some((_, at)) = self.enquire {
            if now >= at + limit {
                self.events.push_back(SmppEvent::Broken {
                    why: "no answer to enquire_link".into(),
                });
                self.enquire = None;
                return;
            }
        }
        if self.state == State::Bound
            && self.enquire.is_none()
            && now >= self.last_activity + self.cfg.enquire_link
        {
            let seq = self.next_seq();
            self.send(CommandStatus::EsmeRok, seq, Pdu::EnquireLink);
            self.enquire = Some((seq, now));
            self.last_activity = now;
        }
        self.pump(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let limit = self.cfg.response_timeout;
        let mut at: Vec<Instant> = Vec::new();
        match self.state {
            State::Binding { since } => at.push(since + limit),
            State::Bound => {
                if self.enquire.is_none() {
                    at.push(self.last_activity + self.cfg.enquire_link);
                }
            }
            State::Idle => {}
        }
        at.extend(self.outstanding.values().map(|(_, t)| *t + limit));
        at.extend(self.enquire.map(|(_, t)| t + limit));
        if self.state == State::Bound && !self.queue.is_empty() {
            at.extend(self.throttled_until);
        }
        at.into_iter().min()
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.out.is_empty()).then(|| self.out.split().to_vec())
    }

    pub fn poll_event(&mut self) -> Option<SmppEvent> {
        self.events.pop_front()
    }
}

/// The sender's TON and NPI from how it is written: `+` and digits an international number
/// (sent without the `+`), digits alone a short code, anything else an alphanumeric name.
fn source_address(s: &str) -> (Ton, Npi, String) {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    match s.strip_prefix('+') {
        Some(d) if digits(d) => (Ton::International, Npi::Isdn, d.to_string()),
        _ if digits(s) => (Ton::Unknown, Npi::Unknown, s.to_string()),
        _ => (
            Ton::Alphanumeric,
            Npi::Unknown,
            s.chars().take(11).collect(),
        ),
    }
}

/// Reads `id:… sub:… dlvrd:… submit date:… done date:… stat:DELIVRD err:… text:…`.
fn parse_receipt(text: &str) -> Option<SmppEvent> {
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_string)
    };
    let message_id = field("id:")?;
    let stat = field("stat:")?;
    Some(SmppEvent::Receipt {
        delivered: stat.eq_ignore_ascii_case("DELIVRD"),
        message_id,
        stat,
    })
}

pub mod link;

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SmppSettings {
        SmppSettings {
            system_id: "screenpop".into(),
            password: "secret".into(),
            system_type: String::new(),
            transceiver: true,
            source_addr: "95555".into(),
            window: 2,
            enquire_link: Duration::from_secs(30),
            response_timeout: Duration::from_secs(10),
        }
    }

    /// The SMS center's side of the test: decodes what the session wrote.
    fn decode_all(bytes: &[u8]) -> Vec<Command> {
        let mut codec = CommandCodec::new();
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Ok(Some(c)) = codec.decode(&mut buf) {
            out.push(c);
        }
        out
    }

    fn encode(cmd: Command) -> Vec<u8> {
        let mut codec = CommandCodec::new();
        let mut buf = BytesMut::new();
        codec.encode(cmd, &mut buf).expect("encodes");
        buf.to_vec()
    }

    fn bound(now: Instant) -> Session {
        let mut s = Session::new(settings(), now);
        s.connected(now);
        let bind = decode_all(&s.poll_transmit().expect("bind"));
        assert!(
            matches!(bind[0].pdu(), Some(Pdu::BindTransceiver(b)) if b.system_id.as_str() == "screenpop")
        );
        let resp = Command::new(
            CommandStatus::EsmeRok,
            bind[0].sequence_number(),
            Pdu::BindTransceiverResp(Default::default()),
        );
        s.receive(now, &encode(resp));
        assert_eq!(s.poll_event(), Some(SmppEvent::Bound));
        s
    }

    #[test]
    fn a_long_chinese_text_goes_as_ucs2_parts_within_the_window_and_is_accepted() {
        let t0 = Instant::now();
        let mut s = bound(t0);
        let text = "生日快乐！".repeat(20); // 100 characters: two UCS-2 parts
        s.submit(
            t0,
            Submit {
                id: 7,
                to: "+8613800138000".into(),
                text: text.clone(),
            },
        );
        let sent = decode_all(&s.poll_transmit().expect("submits"));
        assert_eq!(sent.len(), 2, "both parts fit the window of 2");
        let mut parts = Vec::new();
        for c in &sent {
            let Some(Pdu::SubmitSm(sm)) = c.pdu() else {
                panic!("submit_sm")
            };
            assert_eq!(u8::from(sm.data_coding), 8);
            assert_eq!(u8::from(sm.esm_class) & 0x40, 0x40, "UDHI");
            assert_eq!(sm.destination_addr.as_str(), "8613800138000");
            parts.push(sm.short_message().clone().into_vec());
        }
        let joined = sms::reassemble(&sms::Encoded {
            coding: Coding::Ucs2,
            parts,
        });
        assert_eq!(joined, text);
        // The first answer says throttled: that part waits, then goes again.
        let throttled = Command::new(
            CommandStatus::EsmeRthrottled,
            sent[0].sequence_number(),
            Pdu::SubmitSmResp(Default::default()),
        );
        s.receive(t0, &encode(throttled));
        assert!(s.poll_transmit().is_none(), "held back while throttled");
        let ok = rusmpp::pdus::SubmitSmResp::builder()
            .message_id("m-2".parse().expect("id"))
            .build();
        s.receive(
            t0,
            &encode(Command::new(
                CommandStatus::EsmeRok,
                sent[1].sequence_number(),
                Pdu::SubmitSmResp(ok),
            )),
        );
        let later = s.poll_timeout().expect("throttle timer");
        s.handle_timeout(later);
        let again = decode_all(&s.poll_transmit().expect("resubmitted"));
        assert_eq!(again.len(), 1);
        let ok = rusmpp::pdus::SubmitSmResp::builder()
            .message_id("m-1".parse().expect("id"))
            .build();
        s.receive(
            later,
            &encode(Command::new(
                CommandStatus::EsmeRok,
                again[0].sequence_number(),
                Pdu::SubmitSmResp(ok),
            )),
        );
        assert_eq!(
            s.poll_event(),
            Some(SmppEvent::Accepted {
                id: 7,
                message_id: "m-1".into()
            })
        );
    }

    #[test]
    fn error_responses_without_a_body_are_understood() {
        let t0 = Instant::now();
        let mut s = bound(t0);
        s.submit(
            t0,
            Submit {
                id: 3,
                to: "+12015550123".into(),
                text: "hi".into(),
            },
        );
        let sent = decode_all(&s.poll_transmit().expect("submit"));
        let header_only = |status: u32, seq: u32| {
            let mut b = Vec::new();
            for v in [16u32, 0x8000_0004, status, seq] {
                b.extend_from_slice(&v.to_be_bytes());
            }
            b
        };
        // Throttled, as a real SMS center says it: 16 bytes, no body.
        s.receive(t0, &header_only(0x58, sent[0].sequence_number()));
        assert!(s.poll_event().is_none());
        let later = s.poll_timeout().expect("throttle timer");
        s.handle_timeout(later);
        let again = decode_all(&s.poll_transmit().expect("resubmitted"));
        // Invalid destination: final.
        s.receive(later, &header_only(0x0B, again[0].sequence_number()));
        assert!(matches!(
            s.poll_event(),
            Some(SmppEvent::Refused {
                id: 3,
                temporary: false,
                ..
            })
        ));
        // An unknown request gets generic_nack.
        let mut unknown = Vec::new();
        for v in [16u32, 0x0000_0103, 0, 77] {
            unknown.extend_from_slice(&v.to_be_bytes());
        }
        s.receive(later, &unknown);
        let nack = decode_all(&s.poll_transmit().expect("generic_nack"));
        assert_eq!(nack[0].sequence_number(), 77);
        assert_eq!(u32::from(nack[0].status()), 0x03);
        assert_eq!(source_address("+12015550100").0, Ton::International);
        assert_eq!(source_address("95555").0, Ton::Unknown);
        assert_eq!(source_address("ACME Bank").0, Ton::Alphanumeric);
    }

    #[test]
    fn receipts_and_customers_texts_are_reported_and_answered() {
        let t0 = Instant::now();
        let mut s = bound(t0);
        let receipt = rusmpp::pdus::DeliverSm::builder()
            .source_addr("8613800138000".parse().expect("addr"))
            .esm_class(EsmClass::from(0x04))
            .short_message(
                OctetString::from_vec(
                    b"id:m-9 sub:001 dlvrd:001 submit date:2612020900 done date:2612020901 stat:DELIVRD err:000 text:".to_vec(),
                )
                .expect("sm"),
            )
            .build();
        s.receive(
            t0,
            &encode(Command::new(
                CommandStatus::EsmeRok,
                41,
                Pdu::DeliverSm(receipt),
            )),
        );
        assert_eq!(
            s.poll_event(),
            Some(SmppEvent::Receipt {
                message_id: "m-9".into(),
                delivered: true,
                stat: "DELIVRD".into()
            })
        );
        let mo = rusmpp::pdus::DeliverSm::builder()
            .source_addr_ton(Ton::International)
            .source_addr("8613800138000".parse().expect("addr"))
            .data_coding(DataCoding::from(8))
            .short_message(
                OctetString::from_vec("退订".encode_utf16().flat_map(u16::to_be_bytes).collect())
                    .expect("sm"),
            )
            .build();
        s.receive(
            t0,
            &encode(Command::new(CommandStatus::EsmeRok, 42, Pdu::DeliverSm(mo))),
        );
        assert_eq!(
            s.poll_event(),
            Some(SmppEvent::Received {
                from: "+8613800138000".into(),
                text: "退订".into()
            })
        );
        let answers = decode_all(&s.poll_transmit().expect("deliver_sm_resp"));
        let seqs: Vec<u32> = answers.iter().map(|c| c.sequence_number()).collect();
        assert_eq!(seqs, [41, 42]);
    }

    #[test]
    fn a_refused_bind_and_a_silent_link_are_reported() {
        let t0 = Instant::now();
        let mut s = Session::new(settings(), t0);
        s.connected(t0);
        let bind = decode_all(&s.poll_transmit().expect("bind"));
        s.receive(
            t0,
            &encode(Command::new(
                CommandStatus::EsmeRinvpaswd,
                bind[0].sequence_number(),
                Pdu::BindTransceiverResp(Default::default()),
            )),
        );
        assert_eq!(
            s.poll_event(),
            Some(SmppEvent::BindRefused { status: 0x0E })
        );
        let mut s = bound(t0);
        let idle = t0 + Duration::from_secs(30);
        s.handle_timeout(idle);
        let ping = decode_all(&s.poll_transmit().expect("enquire_link"));
        assert!(matches!(ping[0].pdu(), Some(Pdu::EnquireLink)));
        s.handle_timeout(idle + Duration::from_secs(10));
        assert!(matches!(s.poll_event(), Some(SmppEvent::Broken { .. })));
        // Submits while not bound are refused as temporary.
        let mut idle = Session::new(settings(), t0);
        idle.submit(
            t0,
            Submit {
                id: 1,
                to: "+1".into(),
                text: "x".into(),
            },
        );
        assert!(matches!(
            idle.poll_event(),
            Some(SmppEvent::Refused {
                temporary: true,
                ..
            })
        ));
    }
}
