//! The media relay of one call: symmetric RTP between the caller leg and the agent leg
//! (RFC 3550; latching as in RFC 4961 / common SBC practice), RTCP forwarded, RFC 4733 events
//! relayed and collected, and both directions fed to the recorder's timeline.
//!
//! One task owns both legs' sockets. Per packet it does one `recv_from`, one header read
//! (rtp-rs, zero-copy), at most one table decode into a reused buffer and one `try_send_to`:
//! no allocation, no lock, no channel hop. File I/O happens on the recorder thread, which gets
//! a chunk about once a second.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info_span, Instrument};

use super::dtmf::{DtmfDetector, TelephoneEvent};
use super::g711::G711;
use super::ports::LegSockets;
use super::recorder::{CallRecording, Channel, StereoTimeline};

/// Which side of the bridge a packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LegId {
    Caller,
    Agent,
}

impl LegId {
    fn index(self) -> usize {
        match self {
            LegId::Caller => 0,
            LegId::Agent => 1,
        }
    }
    fn channel(self) -> Channel {
        match self {
            LegId::Caller => Channel::Caller,
            LegId::Agent => Channel::Agent,
        }
    }
}

/// What a leg's peer negotiated: where to send and which payload types it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteMedia {
    /// The address from SDP; `None` when on hold with `c=0.0.0.0` or port 0.
    pub rtp: Option<SocketAddr>,
    pub codec: G711,
    pub dtmf_pt: Option<u8>,
}

/// A DTMF digit seen on a leg, in milliseconds since the relay started.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DtmfDigit {
    pub leg: LegId,
    pub digit: char,
    pub at_ms: u64,
    pub duration_ms: u64,
}

/// Counters reported when the relay stops.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RelayStats {
    /// Packets received per leg (caller, agent).
    pub received: [u64; 2],
    /// Packets forwarded to the other leg, by source leg.
    pub forwarded: [u64; 2],
    /// Packets dropped because they came from an address other than the latched one.
    pub foreign_source: [u64; 2],
    /// Packets that were not RTP.
    pub malformed: [u64; 2],
    /// Packets that could not be sent (no destination yet or a full socket buffer).
    pub unsent: [u64; 2],
    pub rtcp: [u64; 2],
}

/// Report handed back by [`MediaHandle::stop`].
#[derive(Debug)]
pub struct MediaReport {
    pub stats: RelayStats,
    pub dtmf: Vec<DtmfDigit>,
    /// The recording, drained to the end of the call and ready to be finished.
    pub recording: Option<CallRecording>,
    /// Frames in the recording (8 kHz).
    pub recorded_frames: u64,
}

enum Command {
    SetRemote(LegId, RemoteMedia),
    StartRecording(CallRecording, Instant),
    Stop(Instant, oneshot::Sender<MediaReport>),
}

/// Controls a running relay; dropping it stops the relay.
#[derive(Debug, Clone)]
pub struct MediaHandle {
    tx: mpsc::Sender<Command>,
    pub caller_port: u16,
    pub agent_port: u16,
}

impl MediaHandle {
    /// Points a leg at its peer's address after (re)negotiation and re-opens latching.
    pub async fn set_remote(&self, leg: LegId, remote: RemoteMedia) {
        let _ = self.tx.send(Command::SetRemote(leg, remote)).await;
    }

    /// Starts recording with `answered` as sample 0.
    pub async fn start_recording(&self, rec: CallRecording, answered: Instant) {
        let _ = self.tx.send(Command::StartRecording(rec, answered)).await;
    }

    /// Stops the relay; the recording ends exactly at `ended`.
    pub async fn stop(&self, ended: Instant) -> Option<MediaReport> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Stop(ended, tx)).await.ok()?;
        rx.await.ok()
    }
}

#[derive(Default)]
struct LegState {
    remote: Option<RemoteMedia>,
    latched: Option<SocketAddr>,
    rtcp_latched: Option<SocketAddr>,
    dtmf: DtmfDetector,
}

struct Relay {
    legs: [LegState; 2],
    stats: RelayStats,
    timeline: StereoTimeline,
    recording: Option<(CallRecording, Instant)>,
    chunk: Vec<i16>,
    pcm: Vec<i16>,
    digits: Vec<DtmfDigit>,
    started: Instant,
}

/// 200 ms of jitter allowance before recorded audio is handed to the file.
const JITTER_SAMPLES: u64 = 1600;

fn samples_since(origin: Instant, now: Instant) -> u64 {
    (now.saturating_duration_since(origin).as_micros() as u64) * 8 / 1000
}

impl Relay {
    /// Handles one RTP packet from `from`; returns where to forward it (with its payload type
    /// already rewritten in `pkt` when the legs use different numbers for an event).
    fn on_rtp(&mut self, from: LegId, src: SocketAddr, pkt: &mut [u8]) -> Option<SocketAddr> {
        let i = from.index();
        self.stats.received[i] += 1;
        match self.legs[i].latched {
            None => self.legs[i].latched = Some(src),
            Some(l) if l != src => {
                self.stats.foreign_source[i] += 1;
                return None;
            }
            Some(_) => {}
        }
        let Ok(rtp) = rtp_rs::RtpReader::new(pkt) else {
            self.stats.malformed[i] += 1;
            return None;
        };
        let pt = rtp.payload_type();
        let (ssrc, ts) = (rtp.ssrc(), rtp.timestamp());
        let mine = self.legs[i].remote;
        if let Some(remote) = mine {
            if pt == remote.codec.payload_type() {
                if let Some((_, answered)) = &self.recording {
                    let payload = rtp.payload();
                    let n = payload.len().min(self.pcm.len());
                    remote.codec.decode_into(&payload[..n], &mut self.pcm[..n]);
                    let arrival = samples_since(*answered, Instant::now());
                    self.timeline
                        .push(from.channel(), ssrc, ts, arrival, &self.pcm[..n]);
                }
            } else if Some(pt) == remote.dtmf_pt {
                if let Ok(ev) = TelephoneEvent::parse(rtp.payload()) {
                    let at_ms = self.started.elapsed().as_millis() as u64;
                    for d in self.legs[i].dtmf.push(ts, &ev, rtp.mark()) {
                        self.digits.push(DtmfDigit {
                            leg: from,
                            digit: d.ch,
                            at_ms,
                            duration_ms: u64::from(d.duration) / 8,
                        });
                    }
                }
            }
        }
        let other = self.legs[1 - i].remote;
        let dest = self.legs[1 - i].latched.or(other.and_then(|r| r.rtp));
        // Rewrite an event's payload type when the two legs numbered it differently.
        if let (Some(m), Some(t)) = (mine.and_then(|r| r.dtmf_pt), other.and_then(|r| r.dtmf_pt)) {
            if pt == m && m != t {
                if let Some(b) = pkt.get_mut(1) {
                    *b = (*b & 0x80) | (t & 0x7f);
                }
            }
        }
        if dest.is_none() {
            self.stats.unsent[i] += 1;
        }
        dest
    }

    fn rtcp_dest(&mut self, from: LegId, src: SocketAddr) -> Option<SocketAddr> {
        let i = from.index();
        self.stats.rtcp[i] += 1;
        self.legs[i].rtcp_latched.get_or_insert(src);
        let other = &self.legs[1 - i];
        other.rtcp_latched.or_else(|| {
            other
                .remote
                .and_then(|r| r.rtp)
                .map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1)))
        })
    }

    fn flush_recording(&mut self, now: Instant) {
        if let Some((rec, answered)) = &mut self.recording {
            let upto = samples_since(*answered, now).saturating_sub(JITTER_SAMPLES);
            self.timeline.drain(upto, &mut self.chunk);
            if !self.chunk.is_empty() {
                let chunk = std::mem::take(&mut self.chunk);
                match rec.submit(chunk) {
                    Ok(buf) => self.chunk = buf,
                    Err(e) => debug!(error = %e, "recording submit failed"),
                }
                self.chunk.clear();
            }
        }
    }

    fn stop(&mut self, ended: Instant) -> MediaReport {
        let mut frames = 0;
        let recording = self.recording.take().map(|(mut rec, answered)| {
            let end = samples_since(answered, ended);
            self.timeline.finish(end, &mut self.chunk);
            frames = end;
            let chunk = std::mem::take(&mut self.chunk);
            if let Err(e) = rec.submit(chunk) {
                debug!(error = %e, "final recording submit failed");
            }
            rec
        });
        MediaReport {
            stats: self.stats.clone(),
            dtmf: std::mem::take(&mut self.digits),
            recording,
            recorded_frames: frames,
        }
    }
}

/// Starts the relay task for a call.
pub fn spawn_relay(caller: LegSockets, agent: LegSockets, call_id: &str) -> MediaHandle {
    let (tx, rx) = mpsc::channel(16);
    let handle = MediaHandle {
        tx,
        caller_port: caller.port(),
        agent_port: agent.port(),
    };
    let span = info_span!("media", call_id = %call_id);
    tokio::spawn(run(caller, agent, rx).instrument(span));
    handle
}

async fn run(caller: LegSockets, agent: LegSockets, mut rx: mpsc::Receiver<Command>) {
    let mut relay = Relay {
        legs: Default::default(),
        stats: RelayStats::default(),
        timeline: StereoTimeline::new(),
        recording: None,
        chunk: Vec::with_capacity(16000),
        pcm: vec![0i16; 2048],
        digits: Vec::new(),
        started: Instant::now(),
    };
    let mut buf_a = vec![0u8; 2048];
    let mut buf_b = vec![0u8; 2048];
    let mut buf_c = vec![0u8; 2048];
    let mut buf_d = vec![0u8; 2048];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = caller.rtp.recv_from(&mut buf_a) => if let Ok((n, src)) = r {
                let pkt = &mut buf_a[..n];
                if let Some(dest) = relay.on_rtp(LegId::Caller, src, pkt) {
                    forward(&agent.rtp, pkt, dest, &mut relay.stats, 0);
                }
            },
            r = agent.rtp.recv_from(&mut buf_b) => if let Ok((n, src)) = r {
                let pkt = &mut buf_b[..n];
                if let Some(dest) = relay.on_rtp(LegId::Agent, src, pkt) {
                    forward(&caller.rtp, pkt, dest, &mut relay.stats, 1);
                }
            },
            r = caller.rtcp.recv_from(&mut buf_c) => if let Ok((n, src)) = r {
                if let Some(dest) = relay.rtcp_dest(LegId::Caller, src) {
                    let _ = agent.rtcp.try_send_to(&buf_c[..n], dest);
                }
            },
            r = agent.rtcp.recv_from(&mut buf_d) => if let Ok((n, src)) = r {
                if let Some(dest) = relay.rtcp_dest(LegId::Agent, src) {
                    let _ = caller.rtcp.try_send_to(&buf_d[..n], dest);
                }
            },
            _ = tick.tick() => relay.flush_recording(Instant::now()),
            cmd = rx.recv() => match cmd {
                Some(Command::SetRemote(leg, remote)) => {
                    let st = &mut relay.legs[leg.index()];
                    // New negotiation: latch afresh on the next packet (RFC 3264 §8 re-offer).
                    if st.remote.map(|r| r.rtp) != Some(remote.rtp) {
                        st.latched = None;
                        st.rtcp_latched = None;
                    }
                    st.remote = Some(remote);
                }
                Some(Command::StartRecording(rec, answered)) => {
                    relay.recording = Some((rec, answered));
                }
                Some(Command::Stop(ended, reply)) => {
                    let _ = reply.send(relay.stop(ended));
                    break;
                }
                None => {
                    relay.stop(Instant::now());
                    break;
                }
            },
        }
    }
    // Sockets and port leases drop here and return to the pool.
}

fn forward(
    sock: &tokio::net::UdpSocket,
    pkt: &[u8],
    dest: SocketAddr,
    stats: &mut RelayStats,
    i: usize,
) {
    match sock.try_send_to(pkt, dest) {
        Ok(_) => stats.forwarded[i] += 1,
        Err(_) => stats.unsent[i] += 1,
    }
}
