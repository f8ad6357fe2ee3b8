//! A test SMS center on SMPP 3.4, built on `rusmpp`'s codec: takes binds (refusing the first
//! `refuse_binds` with ESME_RINVPASWD), answers submits (the first `throttle` parts of
//! concatenated texts with ESME_RTHROTTLED, the rest with a message id and at once a delivery
//! receipt for each that asked), answers
//! enquire_link, and sends customers' texts (MO `deliver_sm`) on request. Everything it took
//! is kept for the test to check.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rusmpp::pdus::{BindTransceiverResp, DeliverSm, SubmitSmResp};
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::OctetString;
use rusmpp::values::{DataCoding, EsmClass, Ton};
use rusmpp::{Command, CommandStatus, Pdu};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

/// One submit_sm as taken.
#[derive(Debug, Clone)]
pub struct Taken {
    pub to: String,
    pub from: String,
    pub data_coding: u8,
    pub esm_class: u8,
    pub short_message: Vec<u8>,
    pub message_id: String,
}

#[derive(Default)]
pub struct Log {
    /// (system_id, password, accepted).
    pub binds: Vec<(String, String, bool)>,
    pub submits: Vec<Taken>,
    pub throttled: usize,
    pub enquire_links: usize,
}

pub struct Smsc {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Log>>,
    mo: mpsc::UnboundedSender<(String, String)>,
    _thread: std::thread::JoinHandle<()>,
}

fn encode(cmd: Command) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let _ = CommandCodec::new().encode(cmd, &mut buf);
    buf.to_vec()
}

impl Smsc {
    pub fn start(password: &str, refuse_binds: usize, throttle: usize) -> Smsc {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the SMS center");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Mutex::new(Log::default()));
        let (mo, mo_rx) = mpsc::unbounded_channel();
        let (log2, password) = (log.clone(), password.to_string());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(serve(
                listener,
                password,
                refuse_binds,
                throttle,
                log2,
                mo_rx,
            ));
        });
        Smsc {
            addr,
            log,
            mo,
            _thread: thread,
        }
    }

    /// A customer's text to the bound ESME, from `from` (E.164 without `+`).
    pub fn send_text(&self, from: &str, text: &str) {
        let _ = self.mo.send((from.to_string(), text.to_string()));
    }

    /// The texts taken for `to`, each reassembled from its parts.
    pub fn texts_to(&self, to: &str) -> Vec<String> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let mut texts: Vec<(u8, Vec<(u8, String)>)> = Vec::new();
        for t in log.submits.iter().filter(|t| t.to == to) {
            let ucs2 = t.data_coding == 8;
            let (body, reference, seq) = if t.esm_class & 0x40 != 0 && t.short_message.len() > 6 {
                let h = &t.short_message;
                (h[6..].to_vec(), h[3], h[5])
            } else {
                (t.short_message.clone(), 0, 1)
            };
            let text = if ucs2 {
                let units: Vec<u16> = body
                    .chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                    .collect();
                String::from_utf16_lossy(&units)
            } else {
                gsm7_unpacked(&body)
            };
            match texts
                .iter_mut()
                .find(|(r, parts)| *r == reference && reference != 0 && !parts.is_empty())
            {
                Some((_, parts)) => parts.push((seq, text)),
                None => texts.push((reference, vec![(seq, text)])),
            }
        }
        texts
            .into_iter()
            .map(|(_, mut parts)| {
                parts.sort_by_key(|p| p.0);
                parts.into_iter().map(|p| p.1).collect::<String>()
            })
            .collect()
    }
}

/// The GSM 7-bit default alphabet's printable ASCII subset, unpacked (enough for the tests'
/// English texts: letters, digits, punctuation and space map to themselves, '@' is 0).
fn gsm7_unpacked(b: &[u8]) -> String {
    b.iter()
        .map(|&c| match c {
            0x00 => '@',
            0x20..=0x3F | 0x41..=0x5A | 0x61..=0x7A => c as char,
            0x0A => '\n',
            _ => '?',
        })
        .collect()
}

async fn serve(
    listener: std::net::TcpListener,
    password: String,
    refuse_binds: usize,
    throttle: usize,
    log: Arc<Mutex<Log>>,
    mut mo: mpsc::UnboundedReceiver<(String, String)>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    let mut refused = 0;
    let mut throttled = 0;
    let mut next_id = 0u32;
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let mut codec = CommandCodec::new();
        let mut rx = BytesMut::new();
        let mut buf = vec![0u8; 8192];
        let mut seq = 1_000_000u32;
        let (late_tx, mut late_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        'conn: loop {
            tokio::select! {
                r = sock.read(&mut buf) => {
                    let n = match r { Ok(0) | Err(_) => break 'conn, Ok(n) => n };
                    rx.extend_from_slice(&buf[..n]);
                    while let Ok(Some(cmd)) = codec.decode(&mut rx) {
                        let s = cmd.sequence_number();
                        let reply = match cmd.pdu() {
                            Some(Pdu::BindTransceiver(b)) => {
                                let ok = b.password.as_str() == password && refused >= refuse_binds;
                                if !ok { refused += 1; }
                                log.lock().unwrap_or_else(|e| e.into_inner()).binds.push((
                                    b.system_id.as_str().to_string(),
                                    b.password.as_str().to_string(),
                                    ok,
                                ));
                                let status = if ok { CommandStatus::EsmeRok } else { CommandStatus::EsmeRinvpaswd };
                                let resp = BindTransceiverResp::builder()
                                    .system_id("test-smsc".parse().expect("id"))
                                    .build();
                                Command::new(status, s, Pdu::BindTransceiverResp(resp))
                            }
                            Some(Pdu::SubmitSm(sm)) => {
                                // The first part of a concatenated text is the one throttled: the
                                // rest of it is taken first, so the parts come back out of order.
                                if throttled < throttle && u8::from(sm.esm_class) & 0x40 != 0 {
                                    throttled += 1;
                                    log.lock().unwrap_or_else(|e| e.into_inner()).throttled += 1;
                                    Command::new(CommandStatus::EsmeRthrottled, s, Pdu::SubmitSmResp(SubmitSmResp::default()))
                                } else {
                                    next_id += 1;
                                    let id = format!("smsc-{next_id}");
                                    log.lock().unwrap_or_else(|e| e.into_inner()).submits.push(Taken {
                                        to: sm.destination_addr.as_str().to_string(),
                                        from: sm.source_addr.as_str().to_string(),
                                        data_coding: u8::from(sm.data_coding),
                                        esm_class: u8::from(sm.esm_class),
                                        short_message: sm.short_message().clone().into_vec(),
                                        message_id: id.clone(),
                                    });
                                    // The receipt follows a little later, as from the network.
                                    seq += 1;
                                    let receipt = DeliverSm::builder()
                                        .source_addr(sm.destination_addr.clone())
                                        .destination_addr(sm.source_addr.clone())
                                        .esm_class(EsmClass::from(0x04))
                                        .short_message(OctetString::from_vec(format!(
                                            "id:{id} sub:001 dlvrd:001 submit date:2612020900 done date:2612020900 stat:DELIVRD err:000 text:"
                                        ).into_bytes()).expect("receipt"))
                                        .build();
                                    let bytes = encode(Command::new(CommandStatus::EsmeRok, seq, Pdu::DeliverSm(receipt)));
                                    let tx = late_tx.clone();
                                    // At once: it may overtake the ESME's own bookkeeping.
                                    if u8::from(sm.registered_delivery) & 0x03 != 0 {
                                        let _ = tx.send(bytes);
                                    }
                                    let resp = SubmitSmResp::builder().message_id(id.parse().expect("id")).build();
                                    Command::new(CommandStatus::EsmeRok, s, Pdu::SubmitSmResp(resp))
                                }
                            }
                            Some(Pdu::EnquireLink) => {
                                log.lock().unwrap_or_else(|e| e.into_inner()).enquire_links += 1;
                                Command::new(CommandStatus::EsmeRok, s, Pdu::EnquireLinkResp)
                            }
                            Some(Pdu::Unbind) => Command::new(CommandStatus::EsmeRok, s, Pdu::UnbindResp),
                            _ => continue,
                        };
                        if sock.write_all(&encode(reply)).await.is_err() {
                            break 'conn;
                        }
                    }
                }
                Some(bytes) = late_rx.recv() => {
                    if sock.write_all(&bytes).await.is_err() { break 'conn; }
                }
                Some((from, text)) = mo.recv() => {
                    seq += 1;
                    let body: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
                    let d = DeliverSm::builder()
                        .source_addr_ton(Ton::International)
                        .source_addr(from.parse().expect("from"))
                        .destination_addr("95555".parse().expect("to"))
                        .data_coding(DataCoding::from(8))
                        .short_message(OctetString::from_vec(body).expect("text"))
                        .build();
                    if sock.write_all(&encode(Command::new(CommandStatus::EsmeRok, seq, Pdu::DeliverSm(d)))).await.is_err() {
                        break 'conn;
                    }
                }
            }
        }
    }
}
