//! `screenpop dial`: a real UAC on the same stack as the server — the same codec, client
//! transactions, dialog, SDP offer/answer and digest client — for demos and tests. It places one
//! call, answers 401/407 challenges, plays a WAV as G.711 RTP, sends RFC 4733 digits, hangs up
//! after a set time (or when the far end does) and prints a JSON summary.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tokio::net::UdpSocket;
use tracing::{debug, info};

use super::dialog::{target_peer, Dialog, LocalContact};
use crate::media::dtmf::TelephoneEvent;
use crate::media::g711::G711;
use crate::sip::digest;
use crate::sip::headers::{HeaderName, NameAddr};
use crate::sip::message::{Message, Method};
use crate::sip::sdp::{self, Codec, Direction, LocalMedia, SessionDescription};
use crate::sip::transaction::{ClientTransaction, TimerConfig, TxOutput};
use crate::sip::Uri;
use crate::transport::{Inbound, Peer, SipSocket, Transport};

/// What to dial.
#[derive(Debug, Clone)]
pub struct DialOptions {
    pub to: Uri,
    pub from: String,
    pub play: Option<PathBuf>,
    pub hangup_after: Duration,
    pub dtmf: String,
    pub bind: SocketAddr,
    pub transport: Transport,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Printed as JSON when the call is over.
#[derive(Debug, Default, serde::Serialize)]
pub struct DialSummary {
    pub final_status: u16,
    pub answered: bool,
    pub talk_ms: u64,
    pub rtp_sent: u64,
    pub rtp_received: u64,
    pub dtmf_sent: String,
    pub ended_by: &'static str,
}

/// Parses `10s`, `500ms`, `2m` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unit must be ms, s or m")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub async fn dial(opts: DialOptions) -> anyhow::Result<DialSummary> {
    let audio = match &opts.play {
        // Any common WAV (PCM at any rate, mono or stereo, G.711), as 8 kHz mono.
        Some(p) => crate::media::player::Clip::load(p)?.pcm().to_vec(),
        None => Vec::new(),
    };
    let (sock, mut inbound) = SipSocket::bind(opts.bind, None, Default::default()).await?;
    let local = sock.local_addr();
    let me = LocalContact {
        host: local.ip().to_string(),
        port: local.port(),
        tls_port: None,
    };
    let rtp = UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await?;
    let rtp_port = rtp.local_addr()?.port();
    let fallback = Peer {
        addr: SocketAddr::new(local.ip(), 5060),
        transport: opts.transport,
    };
    if opts
        .to
        .host
        .trim_matches(['[', ']'])
        .parse::<IpAddr>()
        .is_err()
    {
        bail!("--to must name an IP address (dial does no DNS)");
    }
    let peer = target_peer(&opts.to, fallback);
    let mut from = NameAddr::new(Uri::sip(Some(&opts.from), &me.host, Some(me.port)));
    from.set_param("tag", Some(&format!("{:08x}", rand::random::<u32>())));
    let mut dialog = Dialog {
        call_id: format!("{:024x}@{}", rand::random::<u128>(), me.host),
        local: from,
        remote: NameAddr::new(opts.to.clone()),
        remote_target: opts.to.clone(),
        route_set: Vec::new(),
        local_cseq: 0,
        remote_cseq: None,
        peer,
        secure: false,
    };
    let mut local_media = LocalMedia {
        addr: local.ip(),
        port: rtp_port,
        session_id: rand::random::<u32>() as u64,
        session_version: 1,
        username: "dial".into(),
        srtp: None,
    };
    local_media.bump_version();
    let offer = sdp::offer(
        &local_media,
        &[Codec::Pcmu, Codec::Pcma],
        Some(101),
        Direction::SendRecv,
    );
    let timers = TimerConfig::default();
    let mut summary = DialSummary::default();
    let mut auth: Option<(HeaderName, String)> = None;
    let mut attempts = 0;
    // INVITE (again with credentials after a 401/407) until a final response.
    let (ok, invite) = loop {
        attempts += 1;
        let mut inv = dialog.request(Method::Invite, &me, None);
        if let Some((h, v)) = &auth {
            inv.headers.push(h.clone(), v.clone());
        }
        inv.headers.push(HeaderName::ContentType, "application/sdp");
        inv.body = offer.to_string().into_bytes();
        let mut tx = ClientTransaction::new(
            Instant::now(),
            inv.clone(),
            peer.transport.reliable(),
            timers,
        );
        let resp = run_client(&sock, &mut inbound, &mut tx, peer).await?;
        info!(status = resp.status, "INVITE answered");
        summary.final_status = resp.status;
        if (resp.status == 401 || resp.status == 407) && attempts < 3 {
            let (Some(user), Some(pw)) = (&opts.username, &opts.password) else {
                bail!("{} without --username/--password", resp.status);
            };
            let (ch_name, auth_name) = if resp.status == 401 {
                (HeaderName::WwwAuthenticate, HeaderName::Authorization)
            } else {
                (
                    HeaderName::ProxyAuthenticate,
                    HeaderName::ProxyAuthorization,
                )
            };
            let ch = digest::best_challenge(resp.headers.get_all(&ch_name))?;
            let value = digest::respond(
                &ch,
                user,
                pw,
                "INVITE",
                &opts.to.to_string(),
                &digest::new_cnonce(),
                1,
            )?;
            auth = Some((auth_name, value));
            continue;
        }
        if resp.status / 100 != 2 {
            return Ok(summary);
        }
        break (resp, inv);
    };
    // Dialog established (RFC 3261 §12.1.2).
    dialog.establish_from(&ok);
    let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
    let ack = dialog.request(Method::Ack, &me, Some(seq));
    let ack_bytes = Message::Request(ack).to_bytes();
    let in_dialog_peer = target_peer(&dialog.remote_target, peer);
    sock.send(in_dialog_peer, ack_bytes.clone());
    summary.answered = true;
    let answer = SessionDescription::parse(&ok.body).context("answer SDP")?;
    let acc = sdp::accept_answer(&offer, &answer).map_err(|e| anyhow!("answer: {e}"))?;
    let codec = match acc.codec {
        Codec::Pcmu => G711::Pcmu,
        Codec::Pcma => G711::Pcma,
    };
    let remote = acc.remote_rtp;
    let answered = Instant::now();

    // Media and signalling until hang-up.
    let ssrc: u32 = rand::random();
    let mut seqno: u16 = rand::random();
    let mut ts: u32 = rand::random();
    let mut pos = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut pkt = [0u8; 12 + 160];
    let mut rbuf = [0u8; 2048];
    let digits: Vec<u8> = opts
        .dtmf
        .chars()
        .filter_map(|c| match c {
            '0'..='9' => Some(c as u8 - b'0'),
            '*' => Some(10),
            '#' => Some(11),
            'A'..='D' => Some(12 + (c as u8 - b'A')),
            _ => None,
        })
        .collect();
    // Each digit: 100 ms of events (5 packets) plus 3 end packets, then 100 ms of audio.
    let mut dtmf_plan: Vec<(usize, u8)> = Vec::new();
    let start_frame = 50; // 1 s after answer
    for (i, d) in digits.iter().enumerate() {
        dtmf_plan.push((start_frame + i * 13, *d));
    }
    let mut frame = 0usize;
    let deadline = answered + opts.hangup_after;
    let ended_by;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() >= deadline {
                    ended_by = "us";
                    break;
                }
                let Some(dest) = remote else { continue };
                let digit = dtmf_plan.iter().find(|(f, _)| frame >= *f && frame < *f + 8);
                let (pt, payload_len, marker) = match digit {
                    Some((f, d)) => {
                        let k = frame - f;
                        let end = k >= 5;
                        let ev = TelephoneEvent { event: *d, end, volume: 10, duration: (((k.min(4)) + 1) * 160) as u16 };
                        let n = ev.write(&mut pkt[12..]).unwrap_or(0);
                        if k == 7 {
                            summary.dtmf_sent.push(crate::media::dtmf::event_char(*d).unwrap_or('?'));
                        }
                        (101u8, n, k == 0)
                    }
                    None => {
                        let mut pcm = [0i16; 160];
                        for s in pcm.iter_mut() {
                            *s = audio.get(pos).copied().unwrap_or(0);
                            pos += 1;
                        }
                        codec.encode_into(&pcm, &mut pkt[12..]);
                        (codec.payload_type(), 160, false)
                    }
                };
                // An event keeps the timestamp of its start (RFC 4733 §2.5.1.2).
                let pkt_ts = match digit { Some((f, _)) => ts.wrapping_sub(((frame - f) * 160) as u32), None => ts };
                pkt[0] = 0x80;
                pkt[1] = (if marker { 0x80 } else { 0 }) | pt;
                pkt[2..4].copy_from_slice(&seqno.to_be_bytes());
                pkt[4..8].copy_from_slice(&pkt_ts.to_be_bytes());
                pkt[8..12].copy_from_slice(&ssrc.to_be_bytes());
                if rtp.send_to(&pkt[..12 + payload_len], dest).await.is_ok() {
                    summary.rtp_sent += 1;
                }
                seqno = seqno.wrapping_add(1);
                ts = ts.wrapping_add(160);
                frame += 1;
            }
            r = rtp.recv_from(&mut rbuf) => if r.is_ok() { summary.rtp_received += 1 },
            m = inbound.recv() => {
                let Some(Inbound { msg, peer: from, .. }) = m else { bail!("transport closed") };
                match msg {
                    Message::Request(req) if req.method == Method::Bye => {
                        let r = req.response(200, None);
                        sock.send(from, Message::Response(r).to_bytes());
                        ended_by = "them";
                        break;
                    }
                    Message::Request(req) if req.method != Method::Ack => {
                        let status = if req.method == Method::Options { 200 } else { 501 };
                        sock.send(from, Message::Response(req.response(status, None)).to_bytes());
                    }
                    Message::Response(r) if r.status / 100 == 2 => {
                        // Retransmitted 2xx: our ACK was lost.
                        debug!("re-ACK");
                        sock.send(in_dialog_peer, ack_bytes.clone());
                    }
                    _ => {}
                }
            }
        }
    }
    summary.talk_ms = answered.elapsed().as_millis() as u64;
    summary.ended_by = ended_by;
    if ended_by == "us" {
        let bye = dialog.request(Method::Bye, &me, None);
        let mut tx = ClientTransaction::new(
            Instant::now(),
            bye,
            in_dialog_peer.transport.reliable(),
            timers,
        );
        let r = run_client(&sock, &mut inbound, &mut tx, in_dialog_peer).await?;
        info!(status = r.status, "BYE answered");
    }
    Ok(summary)
}

/// Drives one client transaction to its final response.
async fn run_client(
    sock: &SipSocket,
    inbound: &mut tokio::sync::mpsc::Receiver<Inbound>,
    tx: &mut ClientTransaction,
    peer: Peer,
) -> anyhow::Result<crate::sip::Response> {
    loop {
        while let Some(o) = tx.poll_output() {
            match o {
                TxOutput::Transmit(b) => sock.send(peer, b),
                TxOutput::Response(r) if r.status >= 200 => return Ok(r),
                TxOutput::Timeout => bail!("no answer from {}", peer.addr),
                _ => {}
            }
        }
        let wake = tx
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            m = inbound.recv() => match m {
                Some(Inbound { msg: Message::Response(r), .. }) if tx.matches(&r) => tx.handle_response(Instant::now(), r),
                Some(Inbound { msg: Message::Request(req), peer: from, .. }) => {
                    // Nothing but responses is expected before the dialog exists.
                    if req.method != Method::Ack {
                        sock.send(from, Message::Response(req.response(481, None)).to_bytes());
                    }
                }
                Some(_) => {}
                None => bail!("transport closed"),
            },
            _ = tokio::time::sleep_until(wake.into()) => tx.handle_timeout(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
