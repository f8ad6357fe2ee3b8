//! The media engine: symmetric RTP between each call's caller leg and agent leg (RFC 3550;
//! latching as common SBC practice), RTCP forwarded, RFC 4733 events relayed and collected, and
//! both directions fed to the recorder's timeline. A leg that negotiated SDES-SRTP is decrypted
//! on the way in (before latching, DTMF and recording) and encrypted on the way out; a packet
//! that fails authentication or replay checks is counted and dropped.
//!
//! Each engine thread polls its calls' sockets with one level-triggered epoll set. Per packet
//! it does one `recv_from`, one header read (rtp-rs, zero-copy), at most one table decode into
//! a reused buffer and one `send_to`: no allocation, no lock, no channel hop, no task wake-up.
//! Call tasks talk to the engine through a command queue and a waker; file I/O happens on the
//! recorder thread, which gets a chunk per call every quarter second.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;

use super::epoll::{Epoll, EventFd};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::dtmf::{DtmfDetector, TelephoneEvent};
use super::g711::G711;
use super::player::{Clip, Player, Repeat};
use super::ports::LegSockets;
use super::recorder::{CallRecording, Channel, StereoTimeline};
use super::srtp::SrtpContext;
use crate::sip::sdp::SrtpKeys;

/// Which side of the bridge a packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LegId {
    Caller,
    Agent,
}

impl LegId {
    /// The leg across the bridge.
    pub fn other(self) -> LegId {
        match self {
            LegId::Caller => LegId::Agent,
            LegId::Agent => LegId::Caller,
        }
    }

    pub(crate) fn index(self) -> usize {
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
    /// The leg runs SRTP with these keys.
    pub srtp: Option<SrtpKeys>,
}

/// What the engine tells a call task on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// No RTP from `leg` for the watch timeout while the call was up and not on hold.
    Silent { leg: LegId },
    /// A clip played once into `leg` is over.
    Played { leg: LegId },
    /// A key press (RFC 4733) from `leg` ended: the post-call survey's digit. Every press is
    /// also in the call's record.
    Digit { leg: LegId, digit: char },
}

/// A DTMF digit seen on a leg, in milliseconds since the relay started.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DtmfDigit {
    pub leg: LegId,
    pub digit: char,
    pub at_ms: u64,
    pub duration_ms: u64,
}

impl DtmfDigit {
    fn new(leg: LegId, d: &super::dtmf::Digit, at_ms: u64) -> Self {
        DtmfDigit {
            leg,
            digit: d.ch,
            at_ms,
            // RTP timestamp units of the 8 kHz telephone-event clock (RFC 4733 §2.1).
            duration_ms: u64::from(d.duration) / 8,
        }
    }
}

/// Counters reported when the relay stops.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
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
    /// SRTP packets that failed authentication or the replay check (dropped).
    #[serde(default)]
    pub srtp_rejected: [u64; 2],
    /// The same for SRTCP (some phones also send a short plain RTCP packet at start).
    #[serde(default)]
    pub srtcp_rejected: [u64; 2],
    /// The legs that ran SRTP.
    #[serde(default)]
    pub srtp: [bool; 2],
    /// Packets played into each leg (music, announcements) instead of the other leg's audio.
    #[serde(default)]
    pub played: [u64; 2],
    /// RTP packets relayed between the agent and a consulted party (an attended transfer),
    /// each way: agent to them, them to the agent.
    #[serde(default)]
    pub consulted: [u64; 2],
}

/// Report handed back by [`MediaHandle::stop`].
#[derive(Debug)]
pub(crate) struct MediaReport {
    pub stats: RelayStats,
    pub dtmf: Vec<DtmfDigit>,
    /// The recording, drained to the end of the call and ready to be finished.
    pub recording: Option<CallRecording>,
    /// Frames in the recording (8 kHz).
    pub recorded_frames: u64,
}

enum Command {
    Add(Box<NewCall>),
    SetRemote(u64, LegId, RemoteMedia),
    SignallingIp(u64, LegId, std::net::IpAddr),
    Watch(u64, Option<Duration>, Instant),
    StartRecording(u64, CallRecording, Instant),
    Play(u64, LegId, Arc<Clip>, Repeat),
    StopPlaying(u64, LegId),
    Hush(u64, LegId, bool),
    Consult(u64, Box<LegSockets>),
    ConsultRemote(u64, RemoteMedia),
    ConsultSignallingIp(u64, std::net::IpAddr),
    PromoteConsult(u64),
    DropConsult(u64),
    Stop(u64, Instant, oneshot::Sender<MediaReport>),
}

struct NewCall {
    id: u64,
    caller: LegSockets,
    agent: LegSockets,
    events: tokio::sync::mpsc::UnboundedSender<MediaEvent>,
}

struct Shared {
    tx: mpsc::Sender<Command>,
    waker: EventFd,
}

impl Shared {
    fn send(&self, cmd: Command) {
        if self.tx.send(cmd).is_ok() {
            if let Err(e) = self.waker.wake() {
                warn!(error = %e, "media engine wake failed");
            }
        }
    }
}

/// The media engine's handle: starts calls on it. Calls are spread over the engine's poll
/// threads; a call's four sockets always live on one thread, so no packet crosses threads.
#[derive(Clone)]
pub(crate) struct MediaEngine {
    shards: Arc<Vec<Arc<Shared>>>,
    next_id: Arc<AtomicU64>,
}

impl MediaEngine {
    /// Starts `threads` engine threads (at least one).
    pub fn spawn(threads: usize) -> std::io::Result<MediaEngine> {
        let mut shards = Vec::new();
        for n in 0..threads.max(1) {
            let poll = Epoll::new()?;
            let waker = EventFd::new()?;
            poll.add(waker.raw(), WAKER)?;
            let (tx, rx) = mpsc::channel();
            let shared = Arc::new(Shared { tx, waker });
            let engine_shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("media-{n}"))
                .spawn(move || run(poll, rx, engine_shared))?;
            shards.push(shared);
        }
        Ok(MediaEngine {
            shards: Arc::new(shards),
            next_id: Arc::new(AtomicU64::new(1)),
        })
    }

    /// Starts relaying a call's two legs; the receiver gets the call's [`MediaEvent`]s.
    pub fn add_call(
        &self,
        caller: LegSockets,
        agent: LegSockets,
    ) -> (
        MediaHandle,
        tokio::sync::mpsc::UnboundedReceiver<MediaEvent>,
    ) {
        let (events, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shard = self.shards[(id as usize) % self.shards.len()].clone();
        let handle = MediaHandle {
            shared: shard.clone(),
            id,
            stopped: false,
        };
        shard.send(Command::Add(Box::new(NewCall {
            id,
            caller,
            agent,
            events,
        })));
        (handle, events_rx)
    }
}

/// Controls one call's relay. Not `Clone`: dropping it (a call task that ends in any way,
/// panics included) stops the relay and returns the call's ports.
pub(crate) struct MediaHandle {
    shared: Arc<Shared>,
    id: u64,
    stopped: bool,
}

impl std::fmt::Debug for MediaHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaHandle").field("id", &self.id).finish()
    }
}

impl MediaHandle {
    /// Points a leg at its peer's address after (re)negotiation and re-opens latching.
    pub fn set_remote(&self, leg: LegId, remote: RemoteMedia) {
        self.shared.send(Command::SetRemote(self.id, leg, remote));
    }

    /// The address a leg's signalling comes from: media from that IP may be latched too.
    pub fn set_signalling_ip(&self, leg: LegId, ip: std::net::IpAddr) {
        self.shared.send(Command::SignallingIp(self.id, leg, ip));
    }

    /// Reports [`MediaEvent::Silent`] when a leg sends no RTP for `timeout`; `None` stops
    /// watching (on hold a leg may rightly be silent).
    pub fn watch(&self, timeout: Option<Duration>) {
        self.shared
            .send(Command::Watch(self.id, timeout, Instant::now()));
    }

    /// Starts recording with `answered` as sample 0.
    pub fn start_recording(&self, rec: CallRecording, answered: Instant) {
        self.shared
            .send(Command::StartRecording(self.id, rec, answered));
    }

    /// Plays `clip` into `leg` (music on hold, queue music, an announcement) in place of what
    /// the other leg sends, until [`MediaHandle::stop_playing`] or, played once, its end
    /// ([`MediaEvent::Played`]). The other leg's audio is still recorded, only not heard.
    pub fn play(&self, leg: LegId, clip: Arc<Clip>, repeat: Repeat) {
        self.shared.send(Command::Play(self.id, leg, clip, repeat));
    }

    /// Stops what plays into `leg`: the other leg is heard again.
    pub fn stop_playing(&self, leg: LegId) {
        self.shared.send(Command::StopPlaying(self.id, leg));
    }

    /// While `on`, the other leg's audio is not forwarded to `leg` (still recorded): an agent
    /// does not overhear a caller on hold.
    pub fn hush(&self, leg: LegId, on: bool) {
        self.shared.send(Command::Hush(self.id, leg, on));
    }

    /// Opens a third leg for an attended transfer's consultation on `sockets`: while it is
    /// open, the agent's leg talks to it (the caller, on hold, is recorded but neither hears
    /// nor is heard by the agent), and what it sends is not recorded. The engine bridges legs
    /// by slot, so the consulted phone gets its own ports rather than a re-INVITE moving the
    /// first agent's phone.
    pub fn consult(&self, sockets: LegSockets) {
        self.shared
            .send(Command::Consult(self.id, Box::new(sockets)));
    }

    /// The consulted party's answer: where its RTP goes and in which codec.
    pub fn set_consult_remote(&self, remote: RemoteMedia) {
        self.shared.send(Command::ConsultRemote(self.id, remote));
    }

    /// Where the consulted party's signalling comes from (its media may come from there too).
    pub fn set_consult_signalling_ip(&self, ip: std::net::IpAddr) {
        self.shared.send(Command::ConsultSignallingIp(self.id, ip));
    }

    /// Completes an attended transfer: the consulted leg becomes the agent leg (the caller
    /// hears it, it is recorded on the agent's channel) and the first agent's ports go back.
    pub fn promote_consult(&self) {
        self.shared.send(Command::PromoteConsult(self.id));
    }

    /// Ends a consultation without a transfer: its ports go back, the agent hears the caller.
    pub fn drop_consult(&self) {
        self.shared.send(Command::DropConsult(self.id));
    }

    /// Stops the relay and releases the call's ports; the recording ends exactly at `ended`.
    pub async fn stop(mut self, ended: Instant) -> Option<MediaReport> {
        let (tx, rx) = oneshot::channel();
        self.stopped = true;
        self.shared.send(Command::Stop(self.id, ended, tx));
        rx.await.ok()
    }
}

impl Drop for MediaHandle {
    fn drop(&mut self) {
        if !self.stopped {
            let (tx, _) = oneshot::channel();
            self.shared.send(Command::Stop(self.id, Instant::now(), tx));
        }
    }
}

impl LegState {
    fn may_latch(&self, src: SocketAddr) -> bool {
        self.remote
            .and_then(|r| r.rtp)
            .is_some_and(|a| a.ip() == src.ip())
            || self.signalling_ip == Some(src.ip())
    }
}

#[derive(Default)]
struct LegState {
    /// Where the leg's SIP comes from; media may come from there too (NAT).
    signalling_ip: Option<std::net::IpAddr>,
    /// When the last accepted RTP packet arrived.
    last_rx: Option<Instant>,
    remote: Option<RemoteMedia>,
    latched: Option<SocketAddr>,
    rtcp_latched: Option<SocketAddr>,
    dtmf: DtmfDetector,
    /// The leg's SRTP state: decrypting what its peer sends, encrypting what we send it. Boxed:
    /// its AES key schedules are 4.5 kB, and most legs are plain RTP (the slot was 15 kB).
    srtp: Option<Box<LegSrtp>>,
}

/// One leg's SRTP contexts, kept across re-INVITEs that repeat the same keys (the rollover
/// counter and replay window carry on).
struct LegSrtp {
    keys: SrtpKeys,
    rx: SrtpContext,
    tx: SrtpContext,
    /// What we send this leg is renumbered across jumps (see [`Renumber`]).
    renumber: Renumber,
}

/// A jump in sequence numbers larger than this (in either direction) on one SSRC is a restart,
/// not loss or reordering: 3,000 packets is a minute of 20 ms audio.
const MAX_SEQ_JUMP: u16 = 3000;

/// Keeps the sequence numbers we send an SRTP leg continuous. SRTP's packet index (RFC 3711
/// §3.3.1) is guessed from them: a plain source that restarts its numbering without changing
/// its SSRC (an SBC or PBX moving the media) would leave the receiver's rollover counter wrong
/// and every packet refused. The offset re-anchors such a jump so the stream carries on.
#[derive(Default)]
struct Renumber {
    last: Option<(u32, u16)>,
    offset: u16,
}

impl Renumber {
    fn apply(&mut self, pkt: &mut [u8]) {
        let (Some(ssrc), Some(seq)) = (pkt.get(8..12), pkt.get(2..4)) else {
            return;
        };
        let ssrc = u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]]);
        let seq = u16::from_be_bytes([seq[0], seq[1]]);
        match self.last {
            Some((s, last)) if s == ssrc => {
                let ahead = seq.wrapping_sub(last);
                let behind = last.wrapping_sub(seq);
                if ahead > MAX_SEQ_JUMP && behind > MAX_SEQ_JUMP {
                    // Carry on from the last number sent.
                    self.offset = last
                        .wrapping_add(self.offset)
                        .wrapping_add(1)
                        .wrapping_sub(seq);
                }
                if ahead <= MAX_SEQ_JUMP || behind > MAX_SEQ_JUMP {
                    self.last = Some((ssrc, seq));
                }
            }
            // A new SSRC is a new stream with its own index: numbers pass as they are.
            _ => {
                self.offset = 0;
                self.last = Some((ssrc, seq));
            }
        }
        let out = seq.wrapping_add(self.offset).to_be_bytes();
        pkt[2] = out[0];
        pkt[3] = out[1];
    }
}

impl LegSrtp {
    fn new(keys: SrtpKeys) -> LegSrtp {
        LegSrtp {
            keys,
            rx: SrtpContext::new(&keys.theirs, keys.suite),
            tx: SrtpContext::new(&keys.ours, keys.suite),
            renumber: Renumber::default(),
        }
    }

    /// A renegotiation: each direction starts afresh only if its own key or the suite changed
    /// (a peer that re-keys its side leaves our sending rollover counter alone).
    fn rekey(&mut self, keys: SrtpKeys) {
        if keys.suite != self.keys.suite || keys.theirs != self.keys.theirs {
            self.rx = SrtpContext::new(&keys.theirs, keys.suite);
        }
        if keys.suite != self.keys.suite || keys.ours != self.keys.ours {
            self.tx = SrtpContext::new(&keys.ours, keys.suite);
        }
        self.keys = keys;
    }
}

struct Relay {
    legs: [LegState; 2],
    stats: RelayStats,
    timeline: StereoTimeline,
    recording: Option<(CallRecording, Instant)>,
    digits: Vec<DtmfDigit>,
    started: Instant,
}

thread_local! {
    /// One packet's decoded audio on its way into the timeline: one per media thread, not one
    /// per call (256 ms of G.711 at most; a longer payload is cut there).
    static PCM: std::cell::RefCell<[i16; 2048]> = const { std::cell::RefCell::new([0; 2048]) };
}

/// 200 ms of jitter allowance before recorded audio is handed to the file.
const JITTER_SAMPLES: u64 = 1600;

/// How often each call's recorded audio is handed to the recorder (and its silence checked):
/// with the jitter allowance, how far the timeline must reach ahead of what was written
/// (`recorder::DEFAULT_WINDOW_FRAMES`).
const DRAIN_EVERY: Duration = Duration::from_millis(250);

fn samples_since(origin: Instant, now: Instant) -> u64 {
    (now.saturating_duration_since(origin).as_micros() as u64) * 8 / 1000
}

impl Relay {
    /// Handles one RTP packet from `from`; returns where to forward it (with its payload type
    /// already rewritten in `pkt` when the legs use different numbers for an event).
    fn on_rtp(
        &mut self,
        now: Instant,
        from: LegId,
        src: SocketAddr,
        pkt: &mut [u8],
    ) -> Option<SocketAddr> {
        let i = from.index();
        self.stats.received[i] += 1;
        let Ok(rtp) = rtp_rs::RtpReader::new(pkt) else {
            self.stats.malformed[i] += 1;
            return None;
        };
        // Latch only a valid RTP packet from the address the peer negotiated or signalled
        // from (NAT keeps the IP, not the port): a stray packet cannot capture the stream.
        match self.legs[i].latched {
            None if self.legs[i].may_latch(src) => self.legs[i].latched = Some(src),
            Some(l) if l == src => {}
            _ => {
                self.stats.foreign_source[i] += 1;
                return None;
            }
        }
        self.legs[i].last_rx = Some(now);
        let pt = rtp.payload_type();
        let (ssrc, ts) = (rtp.ssrc(), rtp.timestamp());
        let mine = self.legs[i].remote;
        if let Some(remote) = mine {
            if pt == remote.codec.payload_type() {
                // Audio moves the clock a press whose end packets were all lost is closed by.
                if let Some(d) = self.legs[i].dtmf.expire(ts) {
                    let at_ms = now.saturating_duration_since(self.started).as_millis() as u64;
                    self.digits.push(DtmfDigit::new(from, &d, at_ms));
                }
                if let Some((_, answered)) = &self.recording {
                    let payload = rtp.payload();
                    let arrival = samples_since(*answered, now);
                    let timeline = &mut self.timeline;
                    PCM.with_borrow_mut(|pcm| {
                        let n = payload.len().min(pcm.len());
                        remote.codec.decode_into(&payload[..n], &mut pcm[..n]);
                        timeline.push(from.channel(), ssrc, ts, arrival, &pcm[..n]);
                    });
                }
            } else if Some(pt) == remote.dtmf_pt {
                if let Ok(ev) = TelephoneEvent::parse(rtp.payload()) {
                    let at_ms = now.saturating_duration_since(self.started).as_millis() as u64;
                    for d in self.legs[i].dtmf.push(ts, &ev, rtp.mark()) {
                        self.digits.push(DtmfDigit::new(from, &d, at_ms));
                    }
                }
            }
        }
        let other = self.legs[1 - i].remote;
        let dest = self.legs[1 - i].latched.or(other.and_then(|r| r.rtp));
        // Rewrite an event's payload type when the two legs numbered it differently; keep it
        // from a leg that did not negotiate events (the digit is in the record already).
        if let Some(m) = mine.and_then(|r| r.dtmf_pt).filter(|m| pt == *m) {
            match other.and_then(|r| r.dtmf_pt) {
                Some(t) if t != m => {
                    if let Some(b) = pkt.get_mut(1) {
                        *b = (*b & 0x80) | (t & 0x7f);
                    }
                }
                Some(_) => {}
                None => return None,
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
        let leg = &mut self.legs[i];
        match leg.rtcp_latched {
            None if leg.may_latch(src) || leg.latched.is_some_and(|l| l.ip() == src.ip()) => {
                leg.rtcp_latched = Some(src)
            }
            Some(l) if l == src => {}
            _ => return None,
        }
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
            let mut chunk = rec.buffer();
            self.timeline.drain(upto, &mut chunk);
            if let Err(e) = rec.submit(chunk) {
                debug!(error = %e, "recording submit failed");
            }
        }
    }

    fn stop(&mut self, ended: Instant) -> MediaReport {
        let at_ms = ended.saturating_duration_since(self.started).as_millis() as u64;
        for leg in [LegId::Caller, LegId::Agent] {
            if let Some(d) = self.legs[leg.index()].dtmf.flush() {
                self.digits.push(DtmfDigit::new(leg, &d, at_ms));
            }
        }
        let mut frames = 0;
        let recording = self.recording.take().map(|(mut rec, answered)| {
            let end = samples_since(answered, ended);
            let mut chunk = rec.buffer();
            self.timeline.finish(end, &mut chunk);
            frames = end;
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

const WAKER: u64 = u64::MAX;
/// Socket order within a call's token block.
const CALLER_RTP: usize = 0;
const AGENT_RTP: usize = 1;
const CALLER_RTCP: usize = 2;
const AGENT_RTCP: usize = 3;
const CONSULT_RTP: usize = 4;
const CONSULT_RTCP: usize = 5;
/// Tokens per slot: the four sockets of the two legs and the two of a consultation.
const TOKENS: usize = 6;

/// The third leg of an attended transfer, bridged to the agent's leg while it lasts.
struct ConsultLeg {
    sockets: [std::net::UdpSocket; 2],
    lease: super::ports::PortLease,
    state: LegState,
}

struct Slot {
    id: u64,
    sockets: [std::net::UdpSocket; 4],
    /// Held so the ports return to the pool when the slot is dropped.
    leases: (super::ports::PortLease, super::ports::PortLease),
    relay: Relay,
    events: tokio::sync::mpsc::UnboundedSender<MediaEvent>,
    /// Silence timeout and when watching began; `None` when not watching.
    watch: Option<(Duration, Instant)>,
    /// What plays into each leg (caller, agent) in place of the other leg's audio.
    players: [Option<Player>; 2],
    /// Legs the other leg's audio is not forwarded to (the agent while the caller is on hold).
    hushed: [bool; 2],
    /// An attended transfer's consultation: the agent talks to it instead of the caller.
    consult: Option<ConsultLeg>,
}

impl Slot {
    /// When the next packet of a player is due.
    fn next_play(&self) -> Option<Instant> {
        self.players
            .iter()
            .flatten()
            .filter_map(Player::poll_timeout)
            .min()
    }

    /// Sends every packet the players owe by `now` (a late wake-up sends the missed ones, as
    /// a jitter buffer expects); a clip played once that is over is reported and dropped.
    fn play(&mut self, now: Instant, scratch: &mut Scratch) {
        for leg in [LegId::Caller, LegId::Agent] {
            let i = leg.index();
            let Some(player) = self.players[i].as_mut() else {
                continue;
            };
            let st = &mut self.relay.legs[i];
            let dest = st.latched.or(st.remote.and_then(|r| r.rtp));
            while player.poll_packet(now, &mut scratch.play) {
                let Some(dest) = dest else { continue };
                let bytes: &[u8] = match st.srtp.as_mut() {
                    // The player's numbers are continuous already, and passing them through
                    // the renumbering would reset the offset kept for the other leg's stream.
                    Some(s) => {
                        if s.tx.protect(&scratch.play, &mut scratch.sealed).is_err() {
                            continue;
                        }
                        &scratch.sealed
                    }
                    None => &scratch.play,
                };
                if self.sockets[i].send_to(bytes, dest).is_ok() {
                    self.relay.stats.played[i] += 1;
                }
            }
            if player.is_finished() {
                self.players[i] = None;
                let _ = self.events.send(MediaEvent::Played { leg });
            }
        }
    }

    /// Reports a leg that has been silent longer than the watch timeout, once.
    fn check_silence(&mut self, now: Instant) {
        let Some((timeout, since)) = self.watch else {
            return;
        };
        for leg in [LegId::Caller, LegId::Agent] {
            let last = self.relay.legs[leg.index()]
                .last_rx
                .map_or(since, |t| t.max(since));
            if now.saturating_duration_since(last) > timeout {
                let _ = self.events.send(MediaEvent::Silent { leg });
                self.watch = None;
                return;
            }
        }
    }
}

fn new_relay() -> Relay {
    Relay {
        legs: Default::default(),
        stats: RelayStats::default(),
        timeline: StereoTimeline::new(),
        recording: None,
        digits: Vec::new(),
        started: Instant::now(),
    }
}

fn run(poll: Epoll, rx: mpsc::Receiver<Command>, shared: Arc<Shared>) {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut slots: Vec<Option<Slot>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut by_id: HashMap<u64, usize> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    let mut scratch = Scratch {
        clear: Vec::with_capacity(2048),
        sealed: Vec::with_capacity(2048),
        play: Vec::with_capacity(256),
    };
    // The slots with a player: only they have timers of their own. Every player starts on this
    // thread's 20 ms grid, so one wake-up serves them all; the next one due is kept, not
    // searched for on every turn of the loop.
    let mut playing: Vec<usize> = Vec::new();
    let grid = Instant::now();
    let mut next_play: Option<Instant> = None;
    let next_play_of = |playing: &[usize], slots: &[Option<Slot>]| {
        playing
            .iter()
            .filter_map(|i| slots.get(*i).and_then(Option::as_ref))
            .filter_map(Slot::next_play)
            .min()
    };
    let mut next_flush = Instant::now() + DRAIN_EVERY;
    loop {
        let wake = next_play.map_or(next_flush, |p| p.min(next_flush));
        let timeout = wake.saturating_duration_since(Instant::now());
        let n = match poll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != ErrorKind::Interrupted {
                    warn!(error = %e, "media poll failed");
                }
                continue;
            }
        };
        let now = Instant::now();
        let mut commands = false;
        for ev in &events[..n] {
            let t = ev.u64;
            if t == WAKER {
                commands = true;
                continue;
            }
            let (slot_i, sock_i) = ((t as usize) / TOKENS, (t as usize) % TOKENS);
            let Some(Some(slot)) = slots.get_mut(slot_i) else {
                continue;
            };
            relay_one(slot, sock_i, now, &mut buf, &mut scratch);
        }
        // Commands after the event batch, so a slot is never reused while events for its
        // old sockets are still being handled.
        if commands {
            shared.waker.reset();
            loop {
                match rx.try_recv() {
                    Ok(cmd) => handle_command(
                        cmd,
                        &poll,
                        &mut slots,
                        &mut free,
                        &mut by_id,
                        (&mut playing, grid),
                    ),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
            next_play = next_play_of(&playing, &slots);
        }
        if next_play.is_some_and(|p| now >= p) {
            playing.retain(|i| match slots.get_mut(*i).and_then(Option::as_mut) {
                Some(slot) => {
                    slot.play(now, &mut scratch);
                    slot.players.iter().any(Option::is_some)
                }
                None => false,
            });
            next_play = next_play_of(&playing, &slots);
        }
        if now >= next_flush {
            for slot in slots.iter_mut().flatten() {
                slot.relay.flush_recording(now);
                slot.check_silence(now);
            }
            next_flush = now + DRAIN_EVERY;
        }
    }
}

/// Buffers for SRTP, reused for every packet: the decrypted packet from an SRTP leg and the
/// encrypted one for an SRTP leg.
struct Scratch {
    clear: Vec<u8>,
    sealed: Vec<u8>,
    /// The next packet a player sends.
    play: Vec<u8>,
}

/// Reads one packet from a readable socket (level-triggered: if more is queued the next poll
/// reports the socket again) and forwards it.
fn relay_one(slot: &mut Slot, sock_i: usize, now: Instant, buf: &mut [u8], scratch: &mut Scratch) {
    if sock_i >= CONSULT_RTP {
        return relay_consulted(slot, sock_i == CONSULT_RTP, now, buf, scratch);
    }
    let Some(sock) = slot.sockets.get(sock_i) else {
        return;
    };
    let (n, src) = match sock.recv_from(buf) {
        Ok(x) => x,
        // WouldBlock, or an ICMP error from an earlier send: it concerns that peer only.
        Err(_) => return,
    };
    let (from, out) = match sock_i {
        CALLER_RTP => (LegId::Caller, AGENT_RTP),
        AGENT_RTP => (LegId::Agent, CALLER_RTP),
        CALLER_RTCP => (LegId::Caller, AGENT_RTCP),
        _ => (LegId::Agent, CALLER_RTCP),
    };
    let rtp = sock_i < 2;
    let i = from.index();
    let consulting = slot.consult.is_some();
    // From an SRTP leg only what authenticates goes on, decrypted.
    let pkt: &mut [u8] = match slot.relay.legs[i].srtp.as_mut() {
        Some(s) => {
            let opened = if rtp {
                s.rx.unprotect(&buf[..n], &mut scratch.clear)
            } else {
                s.rx.unprotect_rtcp(&buf[..n], &mut scratch.clear)
            };
            if let Err(e) = opened {
                if rtp {
                    slot.relay.stats.srtp_rejected[i] += 1;
                } else {
                    slot.relay.stats.srtcp_rejected[i] += 1;
                }
                debug!(leg = ?from, rtcp = !rtp, len = n, error = %e, "srtp packet dropped");
                return;
            }
            &mut scratch.clear[..]
        }
        None => &mut buf[..n],
    };
    // The payload type as sent: forwarding to the caller may renumber an event.
    let pt_byte = pkt.get(1).copied();
    let dest = if rtp {
        let pressed = slot.relay.digits.len();
        let dest = slot.relay.on_rtp(now, from, src, pkt);
        for d in &slot.relay.digits[pressed..] {
            let _ = slot.events.send(MediaEvent::Digit {
                leg: d.leg,
                digit: d.digit,
            });
        }
        dest
    } else {
        slot.relay.rtcp_dest(from, src)
    };
    if consulting {
        // A consultation: the agent talks to the consulted party, whatever the caller's side
        // negotiated; the caller, on hold, is recorded and not heard.
        let st = &slot.relay.legs[i];
        let taken = if rtp { st.latched } else { st.rtcp_latched } == Some(src);
        if from == LegId::Agent && taken {
            if let (Some(b), Some(p)) = (pt_byte, pkt.get_mut(1)) {
                *p = b;
            }
            to_consulted(slot, rtp, pkt, &mut scratch.sealed);
        }
        return;
    }
    let Some(dest) = dest else {
        return;
    };
    if slot.players[1 - i].is_some() || slot.hushed[1 - i] {
        // The other leg hears the player (music on hold), or nothing (an agent whose caller
        // is on hold): this leg is recorded, not heard.
        return;
    }
    let bytes: &[u8] = match slot.relay.legs[1 - i].srtp.as_mut() {
        Some(s) => {
            let sealed = if rtp {
                s.renumber.apply(pkt);
                s.tx.protect(pkt, &mut scratch.sealed)
            } else {
                s.tx.protect_rtcp(pkt, &mut scratch.sealed)
            };
            if sealed.is_err() {
                if rtp {
                    slot.relay.stats.unsent[i] += 1;
                }
                return;
            }
            &scratch.sealed
        }
        None => pkt,
    };
    match slot.sockets[out].send_to(bytes, dest) {
        Ok(_) if rtp => slot.relay.stats.forwarded[i] += 1,
        Err(_) if rtp => slot.relay.stats.unsent[i] += 1,
        _ => {}
    }
}

/// Where a leg's RTP (or RTCP) goes: the latched address, else the negotiated one.
fn leg_dest(st: &LegState, rtp: bool) -> Option<SocketAddr> {
    if rtp {
        st.latched.or(st.remote.and_then(|r| r.rtp))
    } else {
        st.rtcp_latched.or_else(|| {
            st.remote
                .and_then(|r| r.rtp)
                .map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1)))
        })
    }
}

/// Seals `pkt` for an SRTP leg (RTP renumbered across jumps), or passes it as it is.
fn seal<'a>(
    srtp: Option<&mut LegSrtp>,
    rtp: bool,
    pkt: &'a mut [u8],
    sealed: &'a mut Vec<u8>,
) -> Option<&'a [u8]> {
    match srtp {
        Some(s) => {
            let r = if rtp {
                s.renumber.apply(pkt);
                s.tx.protect(pkt, sealed)
            } else {
                s.tx.protect_rtcp(pkt, sealed)
            };
            r.ok().map(|_| &sealed[..])
        }
        None => Some(pkt),
    }
}

/// The agent's packet, already taken by the agent leg (latched, recorded), goes to the
/// consulted party.
fn to_consulted(slot: &mut Slot, rtp: bool, pkt: &mut [u8], sealed: &mut Vec<u8>) {
    let Some(c) = slot.consult.as_mut() else {
        return;
    };
    let Some(dest) = leg_dest(&c.state, rtp) else {
        return;
    };
    if rtp && rtp_rs::RtpReader::new(pkt).is_err() {
        return;
    }
    if rtp {
        // An event numbered differently on the two legs is renumbered, or kept from a leg
        // that did not negotiate events.
        let ours = slot.relay.legs[LegId::Agent.index()]
            .remote
            .and_then(|r| r.dtmf_pt);
        let pt = pkt.get(1).map(|b| b & 0x7f);
        if let Some(m) = ours.filter(|m| pt == Some(*m)) {
            match c.state.remote.and_then(|r| r.dtmf_pt) {
                Some(t) if t != m => {
                    if let Some(b) = pkt.get_mut(1) {
                        *b = (*b & 0x80) | (t & 0x7f);
                    }
                }
                Some(_) => {}
                None => return,
            }
        }
    }
    let Some(bytes) = seal(c.state.srtp.as_deref_mut(), rtp, pkt, sealed) else {
        return;
    };
    let sock = &c.sockets[usize::from(!rtp)];
    if sock.send_to(bytes, dest).is_ok() && rtp {
        slot.relay.stats.consulted[0] += 1;
    }
}

/// A packet from the consulted party: latched like any leg's, then to the agent (unless a
/// ringback still plays there). It is not recorded: the recording is the caller's call.
fn relay_consulted(
    slot: &mut Slot,
    rtp: bool,
    now: Instant,
    buf: &mut [u8],
    scratch: &mut Scratch,
) {
    let Some(c) = slot.consult.as_mut() else {
        return;
    };
    let (n, src) = match c.sockets[usize::from(!rtp)].recv_from(buf) {
        Ok(x) => x,
        Err(_) => return,
    };
    let pkt: &mut [u8] = match c.state.srtp.as_mut() {
        Some(s) => {
            let opened = if rtp {
                s.rx.unprotect(&buf[..n], &mut scratch.clear)
            } else {
                s.rx.unprotect_rtcp(&buf[..n], &mut scratch.clear)
            };
            if opened.is_err() {
                return;
            }
            &mut scratch.clear[..]
        }
        None => &mut buf[..n],
    };
    let st = &mut c.state;
    if rtp {
        if rtp_rs::RtpReader::new(pkt).is_err() {
            return;
        }
        match st.latched {
            None if st.may_latch(src) => st.latched = Some(src),
            Some(l) if l == src => {}
            _ => return,
        }
        st.last_rx = Some(now);
    } else {
        match st.rtcp_latched {
            None if st.may_latch(src) || st.latched.is_some_and(|l| l.ip() == src.ip()) => {
                st.rtcp_latched = Some(src)
            }
            Some(l) if l == src => {}
            _ => return,
        }
    }
    let theirs = st.remote.and_then(|r| r.dtmf_pt);
    let a = LegId::Agent.index();
    if slot.players[a].is_some() {
        return;
    }
    let agent = &mut slot.relay.legs[a];
    let Some(dest) = leg_dest(agent, rtp) else {
        return;
    };
    if rtp {
        let pt = pkt.get(1).map(|b| b & 0x7f);
        if let Some(m) = theirs.filter(|m| pt == Some(*m)) {
            match agent.remote.and_then(|r| r.dtmf_pt) {
                Some(t) if t != m => {
                    if let Some(b) = pkt.get_mut(1) {
                        *b = (*b & 0x80) | (t & 0x7f);
                    }
                }
                Some(_) => {}
                None => return,
            }
        }
    }
    let Some(bytes) = seal(agent.srtp.as_deref_mut(), rtp, pkt, &mut scratch.sealed) else {
        return;
    };
    let out = if rtp { AGENT_RTP } else { AGENT_RTCP };
    if slot.sockets[out].send_to(bytes, dest).is_ok() && rtp {
        slot.relay.stats.consulted[1] += 1;
    }
}

fn handle_command(
    cmd: Command,
    poll: &Epoll,
    slots: &mut Vec<Option<Slot>>,
    free: &mut Vec<usize>,
    by_id: &mut HashMap<u64, usize>,
    (playing, grid): (&mut Vec<usize>, Instant),
) {
    match cmd {
        Command::Add(new) => {
            let NewCall {
                id,
                caller,
                agent,
                events,
            } = *new;
            let index = free.pop().unwrap_or_else(|| {
                slots.push(None);
                slots.len() - 1
            });
            let sockets = [caller.rtp, agent.rtp, caller.rtcp, agent.rtcp];
            for (k, s) in sockets.iter().enumerate() {
                if let Err(e) = poll.add(s.as_raw_fd(), (index * TOKENS + k) as u64) {
                    warn!(error = %e, "media socket not registered");
                }
            }
            if let Some(place) = slots.get_mut(index) {
                *place = Some(Slot {
                    id,
                    sockets,
                    leases: (caller.lease, agent.lease),
                    relay: new_relay(),
                    events,
                    watch: None,
                    players: [None, None],
                    hushed: [false; 2],
                    consult: None,
                });
                by_id.insert(id, index);
            }
        }
        Command::SetRemote(id, leg, remote) => {
            if let Some(slot) = slot_of(slots, by_id, id) {
                let st = &mut slot.relay.legs[leg.index()];
                // New negotiation: latch afresh on the next packet (RFC 3264 §8 re-offer).
                if st.remote.map(|r| r.rtp) != Some(remote.rtp) {
                    st.latched = None;
                    st.rtcp_latched = None;
                }
                match (st.srtp.as_mut(), remote.srtp) {
                    (Some(s), Some(keys)) => s.rekey(keys),
                    (_, keys) => st.srtp = keys.map(|k| Box::new(LegSrtp::new(k))),
                }
                st.remote = Some(remote);
                slot.relay.stats.srtp[leg.index()] |= remote.srtp.is_some();
            }
        }
        Command::SignallingIp(id, leg, ip) => {
            if let Some(slot) = slot_of(slots, by_id, id) {
                slot.relay.legs[leg.index()].signalling_ip = Some(ip);
            }
        }
        Command::Watch(id, timeout, since) => {
            if let Some(slot) = slot_of(slots, by_id, id) {
                slot.watch = timeout.map(|t| (t, since));
            }
        }
        Command::StartRecording(id, rec, answered) => {
            if let Some(slot) = slot_of(slots, by_id, id) {
                slot.relay.recording = Some((rec, answered));
            }
        }
        Command::Play(id, leg, clip, repeat) => {
            let Some(&index) = by_id.get(&id) else {
                return;
            };
            if let Some(slot) = slot_of(slots, by_id, id) {
                let codec = slot.relay.legs[leg.index()]
                    .remote
                    .map_or(G711::Pcmu, |r| r.codec);
                // A stream of its own: a new SSRC with random first numbers (RFC 3550 §5.1).
                let start = (rand::random(), rand::random(), rand::random());
                // The next tick of the thread's 20 ms grid.
                let since = Instant::now().saturating_duration_since(grid).as_micros();
                let ticks = u32::try_from(since.div_ceil(20_000)).unwrap_or(u32::MAX);
                let at = grid + Duration::from_millis(20) * ticks;
                slot.players[leg.index()] = Some(Player::new(&clip, codec, repeat, at, start));
                if !playing.contains(&index) {
                    playing.push(index);
                }
            }
        }
        Command::StopPlaying(id, leg) => {
            if let Some(slot) = slot_of(slots, by_id, id) {
                slot.players[leg.index()] = None;
            }
        }
        Command::Hush(id, leg, on) => {
            if let Some(slot) = slot_of(slots, by_id, id) {
                slot.hushed[leg.index()] = on;
            }
        }
        Command::Consult(id, sockets) => {
            let Some(&index) = by_id.get(&id) else {
                return;
            };
            if let Some(slot) = slot_of(slots, by_id, id) {
                let LegSockets { rtp, rtcp, lease } = *sockets;
                if let Some(old) = slot.consult.take() {
                    unregister(poll, &old.sockets);
                }
                for (k, s) in [(CONSULT_RTP, &rtp), (CONSULT_RTCP, &rtcp)] {
                    if let Err(e) = poll.add(s.as_raw_fd(), (index * TOKENS + k) as u64) {
                        warn!(error = %e, "consultation socket not registered");
                    }
                }
                slot.consult = Some(ConsultLeg {
                    sockets: [rtp, rtcp],
                    lease,
                    state: LegState::default(),
                });
            }
        }
        Command::ConsultRemote(id, remote) => {
            if let Some(c) = slot_of(slots, by_id, id).and_then(|s| s.consult.as_mut()) {
                let st = &mut c.state;
                if st.remote.map(|r| r.rtp) != Some(remote.rtp) {
                    st.latched = None;
                    st.rtcp_latched = None;
                }
                match (st.srtp.as_mut(), remote.srtp) {
                    (Some(s), Some(keys)) => s.rekey(keys),
                    (_, keys) => st.srtp = keys.map(|k| Box::new(LegSrtp::new(k))),
                }
                st.remote = Some(remote);
            }
        }
        Command::ConsultSignallingIp(id, ip) => {
            if let Some(c) = slot_of(slots, by_id, id).and_then(|s| s.consult.as_mut()) {
                c.state.signalling_ip = Some(ip);
            }
        }
        Command::PromoteConsult(id) => {
            let Some(&index) = by_id.get(&id) else {
                return;
            };
            let Some(slot) = slot_of(slots, by_id, id) else {
                return;
            };
            let Some(mut c) = slot.consult.take() else {
                return;
            };
            unregister(poll, &c.sockets);
            let _ = poll.remove(slot.sockets[AGENT_RTP].as_raw_fd());
            let _ = poll.remove(slot.sockets[AGENT_RTCP].as_raw_fd());
            let [rtp, rtcp] = &mut c.sockets;
            std::mem::swap(&mut slot.sockets[AGENT_RTP], rtp);
            std::mem::swap(&mut slot.sockets[AGENT_RTCP], rtcp);
            std::mem::swap(&mut slot.leases.1, &mut c.lease);
            let a = LegId::Agent.index();
            std::mem::swap(&mut slot.relay.legs[a], &mut c.state);
            for k in [AGENT_RTP, AGENT_RTCP] {
                let token = (index * TOKENS + k) as u64;
                if let Err(e) = poll.add(slot.sockets[k].as_raw_fd(), token) {
                    warn!(error = %e, "media socket not registered");
                }
            }
            // The first agent's last key press is theirs; their ports go back with `c`.
            if let Some(d) = c.state.dtmf.flush() {
                let at_ms = Instant::now()
                    .saturating_duration_since(slot.relay.started)
                    .as_millis() as u64;
                slot.relay
                    .digits
                    .push(DtmfDigit::new(LegId::Agent, &d, at_ms));
            }
            slot.players[a] = None;
            slot.hushed[a] = false;
            debug!(id, "consultation became the agent leg");
        }
        Command::DropConsult(id) => {
            if let Some(slot) = slot_of(slots, by_id, id) {
                if let Some(c) = slot.consult.take() {
                    unregister(poll, &c.sockets);
                }
            }
        }
        Command::Stop(id, ended, reply) => {
            let Some(index) = by_id.remove(&id) else {
                return;
            };
            playing.retain(|i| *i != index);
            if let Some(mut slot) = slots.get_mut(index).and_then(Option::take) {
                unregister(poll, &slot.sockets);
                if let Some(c) = slot.consult.take() {
                    unregister(poll, &c.sockets);
                }
                let report = slot.relay.stop(ended);
                debug!(id = slot.id, "media stopped");
                // Sockets and port leases go back to the pool before the call task hears the
                // media has stopped, so a call that has ended holds no port.
                drop(slot);
                let _ = reply.send(report);
                free.push(index);
            }
        }
    }
}

fn unregister(poll: &Epoll, sockets: &[std::net::UdpSocket]) {
    for s in sockets {
        let _ = poll.remove(s.as_raw_fd());
    }
}

fn slot_of<'a>(
    slots: &'a mut [Option<Slot>],
    by_id: &HashMap<u64, usize>,
    id: u64,
) -> Option<&'a mut Slot> {
    by_id
        .get(&id)
        .and_then(|i| slots.get_mut(*i))
        .and_then(|s| s.as_mut())
}

/// The relay's per-packet path without sockets, for the coverage-guided fuzz targets
/// (`crate::fuzzing`): datagrams on either leg, RTP or RTCP, from the negotiated address or a
/// stranger, `step` milliseconds apart, recorded by `recorder` when one is given. Whatever the
/// bytes, the relay must not panic and the recording must be exactly as long as the call.
pub(crate) fn feed_packets(
    config: u8,
    packets: &[(u8, &[u8])],
    recorder: Option<&super::recorder::RecorderHandle>,
) -> Option<CallRecording> {
    let caller: SocketAddr = ([10, 0, 0, 1], 4000).into();
    let agent: SocketAddr = ([10, 0, 0, 2], 5000).into();
    let stranger: SocketAddr = ([10, 0, 0, 1], 4002).into();
    let codec = |bit: u8| {
        if config & bit != 0 {
            G711::Pcma
        } else {
            G711::Pcmu
        }
    };
    let mut r = new_relay();
    r.legs[0].remote = Some(RemoteMedia {
        rtp: Some(caller),
        codec: codec(1),
        dtmf_pt: (config & 4 != 0).then_some(101),
        srtp: None,
    });
    r.legs[1].remote = Some(RemoteMedia {
        rtp: Some(agent),
        codec: codec(2),
        dtmf_pt: (config & 8 != 0).then_some(96),
        srtp: None,
    });
    let t0 = r.started;
    if let Some(recorder) = recorder {
        if let Ok(rec) = recorder.start("fuzz", (2026, 1, 1)) {
            r.recording = Some((rec, t0));
        }
    }
    let mut now = t0;
    let mut last_drain = t0;
    for (head, bytes) in packets {
        now += Duration::from_millis(u64::from(head >> 3) * 4);
        let leg = if head & 1 == 0 {
            LegId::Caller
        } else {
            LegId::Agent
        };
        let src = match (head & 4 != 0, leg) {
            (true, _) => stranger,
            (false, LegId::Caller) => caller,
            (false, LegId::Agent) => agent,
        };
        let mut pkt = bytes.to_vec();
        if head & 2 == 0 {
            let _ = r.on_rtp(now, leg, src, &mut pkt);
        } else {
            let _ = r.rtcp_dest(leg, src);
        }
        if now.duration_since(last_drain) >= DRAIN_EVERY {
            r.flush_recording(now);
            last_drain = now;
        }
    }
    let ended = now + Duration::from_millis(20);
    let report = r.stop(ended);
    let frames = samples_since(t0, ended);
    if report.recording.is_some() {
        assert_eq!(
            report.recorded_frames, frames,
            "recording as long as the call"
        );
    }
    let total: u64 = report.stats.received.iter().sum();
    let rtp = packets.iter().filter(|(h, _)| h & 2 == 0).count() as u64;
    assert_eq!(total, rtp, "every RTP packet counted");
    report.recording
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn remote(rtp: &str, dtmf: Option<u8>) -> RemoteMedia {
        RemoteMedia {
            rtp: Some(addr(rtp)),
            codec: G711::Pcmu,
            dtmf_pt: dtmf,
            srtp: None,
        }
    }

    #[test]
    fn a_plain_call_keeps_its_slot_small() {
        // Every call holds a slot for its whole life; SRTP state (4.5 kB a leg) is boxed, so a
        // plain RTP call does not pay for it (the slot was 15 kB; issue 13, point 4).
        assert!(
            std::mem::size_of::<Slot>() <= 2048,
            "{}",
            std::mem::size_of::<Slot>()
        );
    }

    #[test]
    fn latches_first_source_and_drops_others() {
        let mut r = new_relay();
        r.legs[0].remote = Some(remote("10.0.0.1:4000", None));
        r.legs[0].signalling_ip = Some("192.0.2.9".parse().unwrap());
        r.legs[1].remote = Some(remote("10.0.0.2:5000", None));
        let now = Instant::now();
        // A stray packet from elsewhere cannot capture the stream.
        let mut stray = rtp(0, 1, 160, 66, &[0xff; 160]);
        assert_eq!(
            r.on_rtp(now, LegId::Caller, addr("203.0.113.5:9"), &mut stray),
            None
        );
        assert!(r.legs[0].latched.is_none());
        // The caller's media comes from its NATed signalling address, another port: latched.
        let mut p = rtp(0, 1, 160, 7, &[0xff; 160]);
        let dest = r.on_rtp(now, LegId::Caller, addr("192.0.2.9:7000"), &mut p);
        assert_eq!(dest, Some(addr("10.0.0.2:5000")));
        // Another source on the caller leg is dropped.
        let mut q = rtp(0, 2, 320, 7, &[0xff; 160]);
        assert_eq!(
            r.on_rtp(now, LegId::Caller, addr("192.0.2.66:7000"), &mut q),
            None
        );
        assert_eq!(
            r.stats.foreign_source[0], 2,
            "the stray and the second source"
        );
        // The agent's packets go to the latched caller address, not the SDP one.
        let mut a = rtp(0, 1, 160, 9, &[0xff; 160]);
        let back = r.on_rtp(now, LegId::Agent, addr("10.0.0.2:5000"), &mut a);
        assert_eq!(back, Some(addr("192.0.2.9:7000")));
    }

    #[test]
    fn non_rtp_is_dropped_and_counted() {
        let mut r = new_relay();
        let mut junk = vec![0u8; 5];
        assert_eq!(
            r.on_rtp(Instant::now(), LegId::Caller, addr("10.0.0.1:1"), &mut junk),
            None
        );
        assert_eq!(r.stats.malformed[0], 1);
    }

    #[test]
    fn telephone_event_payload_type_is_rewritten_and_digits_kept() {
        let mut r = new_relay();
        r.legs[0].remote = Some(remote("10.0.0.1:4000", Some(96)));
        r.legs[1].remote = Some(remote("10.0.0.2:5000", Some(101)));
        let now = Instant::now();
        for (k, end) in [(0, false), (1, false), (2, true), (3, true), (4, true)] {
            let ev = TelephoneEvent {
                event: 5,
                end,
                volume: 10,
                duration: 160 * (k + 1),
            };
            let mut p = rtp(
                if k == 0 { 0x80 | 96 } else { 96 },
                k,
                8000,
                1,
                &ev.to_bytes().unwrap(),
            );
            r.on_rtp(now, LegId::Caller, addr("10.0.0.1:4000"), &mut p);
            assert_eq!(p[1] & 0x7f, 101, "agent leg numbers the event 101");
        }
        assert_eq!(r.digits.len(), 1);
        assert_eq!(r.digits[0].digit, '5');
        assert_eq!(r.digits[0].leg, LegId::Caller);
    }

    /// The trunk took no telephone-event but the phone did: the agent's key presses are kept
    /// with the call and not sent to the caller as a payload type it never agreed to.
    #[test]
    fn events_from_the_agent_are_kept_but_not_sent_to_a_caller_without_them() {
        let mut r = new_relay();
        r.legs[0].remote = Some(remote("10.0.0.1:4000", None));
        r.legs[1].remote = Some(remote("10.0.0.2:5000", Some(101)));
        let now = Instant::now();
        for (k, end) in [(0u16, false), (1, true)] {
            let ev = TelephoneEvent {
                event: 5,
                end,
                volume: 10,
                duration: 160 * (k + 1),
            };
            let mut p = rtp(101, k, 8000, 2, &ev.to_bytes().unwrap());
            let dest = r.on_rtp(now, LegId::Agent, addr("10.0.0.2:5000"), &mut p);
            assert_eq!(dest, None, "not forwarded");
        }
        let mut audio = rtp(0, 2, 8160, 2, &[0xff; 160]);
        let dest = r.on_rtp(now, LegId::Agent, addr("10.0.0.2:5000"), &mut audio);
        assert_eq!(dest, Some(addr("10.0.0.1:4000")), "audio still flows");
        assert_eq!(r.digits.len(), 1);
        assert_eq!((r.digits[0].leg, r.digits[0].digit), (LegId::Agent, '5'));
    }

    /// A press whose end packets were all lost is still reported: closed by the audio clock a
    /// second past its last reported duration, or at the end of the call.
    #[test]
    fn a_press_without_end_packets_is_kept() {
        let mut r = new_relay();
        r.legs[0].remote = Some(remote("10.0.0.1:4000", Some(96)));
        r.legs[1].remote = Some(remote("10.0.0.2:5000", Some(101)));
        let t0 = Instant::now();
        let press = |event: u8| TelephoneEvent {
            event,
            end: false,
            volume: 10,
            duration: 800,
        };
        let mut p = rtp(0x80 | 96, 1, 8000, 1, &press(7).to_bytes().unwrap());
        r.on_rtp(t0, LegId::Caller, addr("10.0.0.1:4000"), &mut p);
        // Audio half a second on: the press may still be going.
        let mut a = rtp(0, 2, 8000 + 4000, 1, &[0xff; 160]);
        r.on_rtp(t0, LegId::Caller, addr("10.0.0.1:4000"), &mut a);
        assert!(r.digits.is_empty());
        // Audio more than a second past its reported end: it is over.
        let mut a = rtp(0, 3, 8000 + 800 + 8001, 1, &[0xff; 160]);
        r.on_rtp(
            t0 + Duration::from_secs(1),
            LegId::Caller,
            addr("10.0.0.1:4000"),
            &mut a,
        );
        assert_eq!(r.digits.len(), 1);
        assert_eq!((r.digits[0].digit, r.digits[0].duration_ms), ('7', 100));

        // The agent presses 9 and the call ends before any end packet.
        let mut p = rtp(0x80 | 101, 1, 100, 2, &press(9).to_bytes().unwrap());
        r.on_rtp(t0, LegId::Agent, addr("10.0.0.2:5000"), &mut p);
        let report = r.stop(t0 + Duration::from_secs(2));
        let digits: Vec<_> = report.dtmf.iter().map(|d| (d.leg, d.digit)).collect();
        assert_eq!(digits, [(LegId::Caller, '7'), (LegId::Agent, '9')]);
    }

    #[test]
    fn recording_places_each_leg_on_its_channel() {
        let dir = std::env::temp_dir().join(format!("screenpop-relay-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let recorder = super::super::recorder::Recorder::spawn(&dir).unwrap();
        let mut r = new_relay();
        r.legs[0].remote = Some(remote("10.0.0.1:4000", None));
        r.legs[1].remote = Some(remote("10.0.0.2:5000", None));
        let t0 = Instant::now();
        r.recording = Some((recorder.start("relaytest", (2026, 1, 2)).unwrap(), t0));
        // One second of packets: caller sends loud μ-law (0x80 ≈ +32124), agent silence (0xff).
        for i in 0..50u32 {
            let now = t0 + Duration::from_millis(20 * i as u64);
            let mut c = rtp(0, i as u16, i * 160, 1, &[0x80; 160]);
            r.on_rtp(now, LegId::Caller, addr("10.0.0.1:4000"), &mut c);
            let mut a = rtp(0, i as u16, 5000 + i * 160, 2, &[0xff; 160]);
            r.on_rtp(now, LegId::Agent, addr("10.0.0.2:5000"), &mut a);
        }
        let report = r.stop(t0 + Duration::from_secs(1));
        assert_eq!(report.recorded_frames, 8000);
        let finished = report.recording.unwrap().finish().recv().unwrap().unwrap();
        let mut wav = hound::WavReader::open(&finished.path).unwrap();
        let s: Vec<i16> = wav.samples::<i16>().map(|x| x.unwrap()).collect();
        assert_eq!(s.len(), 16000);
        assert!(
            s.iter().step_by(2).all(|v| *v == 32124),
            "caller on the left"
        );
        assert!(
            s.iter().skip(1).step_by(2).all(|v| *v == 0),
            "agent on the right"
        );
        drop(recorder);
        let _ = std::fs::remove_dir_all(&dir);
    }

    proptest::proptest! {
        /// Arbitrary datagrams on either leg, with and without recording and events
        /// configured, never panic and never leave the relay inconsistent.
        #[test]
        fn arbitrary_packets_never_panic(
            pkts in proptest::collection::vec(
                (proptest::bool::ANY, proptest::collection::vec(proptest::num::u8::ANY, 0..300)),
                0..64,
            ),
            dtmf in proptest::option::of(96u8..128),
        ) {
            let dir = std::env::temp_dir().join(format!("screenpop-relay-prop-{}", std::process::id()));
            let recorder = super::super::recorder::Recorder::spawn(&dir).unwrap();
            let mut r = new_relay();
            r.legs[0].remote = Some(remote("10.0.0.1:4000", dtmf));
            r.legs[1].remote = Some(remote("10.0.0.2:5000", Some(101)));
            let t0 = Instant::now();
            r.recording = Some((recorder.start("prop", (2026, 1, 1)).unwrap(), t0));
            for (k, (caller, mut bytes)) in pkts.into_iter().enumerate() {
                let now = t0 + Duration::from_millis(20 * k as u64);
                let (leg, src) = if caller {
                    (LegId::Caller, addr("10.0.0.1:4000"))
                } else {
                    (LegId::Agent, addr("10.0.0.2:5000"))
                };
                let _ = r.on_rtp(now, leg, src, &mut bytes);
                let _ = r.rtcp_dest(leg, src);
            }
            let report = r.stop(t0 + Duration::from_secs(2));
            proptest::prop_assert_eq!(report.recorded_frames, 16000);
            drop(report);
            drop(recorder);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// The engine end to end on loopback: the agent's leg runs SRTP, the caller's plain RTP.
    /// What the phone encrypts reaches the trunk decrypted, what the trunk sends reaches the
    /// phone encrypted under our key, and a forged packet is counted and dropped.
    #[test]
    fn an_srtp_leg_is_decrypted_in_and_encrypted_out() {
        use super::super::srtp::{MasterKey, Suite};
        use std::net::UdpSocket;
        let pool = super::super::ports::PortPool::new(46100, 46199);
        let ip = "127.0.0.1".parse().unwrap();
        let (caller, agent) = (pool.bind(ip).unwrap(), pool.bind(ip).unwrap());
        let (to_caller_leg, to_agent_leg) = (
            caller.rtp.local_addr().unwrap(),
            agent.rtp.local_addr().unwrap(),
        );
        let engine = MediaEngine::spawn(1).unwrap();
        let (handle, _events) = engine.add_call(caller, agent);
        let trunk = UdpSocket::bind("127.0.0.1:0").unwrap();
        let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&trunk, &phone] {
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
        }
        let suite = Suite::AesCm128HmacSha1_80;
        let keys = SrtpKeys {
            suite,
            ours: MasterKey::new([1; 16], [2; 14]),
            theirs: MasterKey::new([3; 16], [4; 14]),
        };
        let plain = |addr: SocketAddr, srtp| RemoteMedia {
            rtp: Some(addr),
            codec: G711::Pcmu,
            dtmf_pt: None,
            srtp,
        };
        handle.set_remote(LegId::Caller, plain(trunk.local_addr().unwrap(), None));
        handle.set_remote(LegId::Agent, plain(phone.local_addr().unwrap(), Some(keys)));
        // The phone encrypts with the key it announced and decrypts with ours.
        let mut phone_tx = SrtpContext::new(&keys.theirs, suite);
        let mut phone_rx = SrtpContext::new(&keys.ours, suite);
        let (mut sealed, mut opened) = (Vec::new(), Vec::new());
        let mut buf = [0u8; 2048];

        let spoken = rtp(0, 1, 160, 9, &[0x55; 160]);
        phone_tx.protect(&spoken, &mut sealed).unwrap();
        assert_ne!(sealed[12..172], spoken[12..], "the payload is encrypted");
        // Commands reach the engine asynchronously: resend until the relay is set up.
        let mut got = None;
        for _ in 0..20 {
            phone.send_to(&sealed, to_agent_leg).unwrap();
            if let Ok((n, _)) = trunk.recv_from(&mut buf) {
                got = Some(buf[..n].to_vec());
                break;
            }
        }
        assert_eq!(
            got.as_deref(),
            Some(&spoken[..]),
            "the trunk gets it decrypted"
        );

        let heard = rtp(0, 7, 1120, 5, &[0x33; 160]);
        trunk.send_to(&heard, to_caller_leg).unwrap();
        let (n, _) = phone.recv_from(&mut buf).expect("the phone is sent SRTP");
        assert_eq!(n, heard.len() + suite.tag_len());
        phone_rx.unprotect(&buf[..n], &mut opened).unwrap();
        assert_eq!(opened, heard, "and it decrypts under our key");

        // A forged packet (bad tag) and a replay are dropped, never forwarded.
        let mut forged = sealed.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        phone.send_to(&forged, to_agent_leg).unwrap();
        phone.send_to(&sealed, to_agent_leg).unwrap();
        assert!(trunk.recv_from(&mut buf).is_err(), "nothing gets through");

        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let report = rt.block_on(handle.stop(Instant::now())).unwrap();
        assert_eq!(report.stats.srtp, [false, true]);
        assert!(report.stats.srtp_rejected[1] >= 2, "{:?}", report.stats);
        assert_eq!(report.stats.forwarded, [1, 1], "{:?}", report.stats);
    }

    /// Music played into the caller's leg on loopback: 20 ms packets of the clip's audio with
    /// consecutive numbers and timestamps and the marker on the first; the agent's audio is
    /// not heard meanwhile but still counted; after the stop the agent is heard again.
    #[test]
    fn a_clip_plays_into_a_leg_in_place_of_the_other() {
        use std::net::UdpSocket;
        let pool = super::super::ports::PortPool::new(46200, 46299);
        let ip = "127.0.0.1".parse().unwrap();
        let (caller, agent) = (pool.bind(ip).unwrap(), pool.bind(ip).unwrap());
        let to_agent_leg = agent.rtp.local_addr().unwrap();
        let engine = MediaEngine::spawn(1).unwrap();
        let (handle, _events) = engine.add_call(caller, agent);
        let trunk = UdpSocket::bind("127.0.0.1:0").unwrap();
        let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
        trunk
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let remote = |a: SocketAddr| RemoteMedia {
            rtp: Some(a),
            codec: G711::Pcmu,
            dtmf_pt: None,
            srtp: None,
        };
        handle.set_remote(LegId::Caller, remote(trunk.local_addr().unwrap()));
        handle.set_remote(LegId::Agent, remote(phone.local_addr().unwrap()));
        // A ramp, so each packet's place in the clip shows in its bytes.
        let pcm: Vec<i16> = (0..1600)
            .map(|i| ((i % 400) * 50 - 10_000) as i16)
            .collect();
        let clip = Arc::new(Clip::from_pcm(pcm));
        let encoded = clip.encoded(G711::Pcmu);
        handle.play(LegId::Caller, clip.clone(), Repeat::Loop);
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        let started = Instant::now();
        while got.len() < 25 {
            // The phone talks all the while: none of it may reach the caller.
            let _ = phone.send_to(&rtp(0, got.len() as u16, 0, 77, &[0x11; 160]), to_agent_leg);
            let (n, _) = trunk.recv_from(&mut buf).expect("music packets");
            got.push((Instant::now(), buf[..n].to_vec()));
        }
        let took = got[24].0 - got[0].0;
        assert!(
            took >= Duration::from_millis(440) && took < Duration::from_millis(700),
            "24 intervals of 20 ms took {took:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        let first = rtp_rs::RtpReader::new(&got[0].1).unwrap();
        assert!(first.mark(), "the marker starts the stream");
        let ssrc = first.ssrc();
        for (k, (_, p)) in got.iter().enumerate() {
            let r = rtp_rs::RtpReader::new(p).unwrap();
            assert_eq!(r.ssrc(), ssrc, "one stream, not the phone's");
            assert_eq!(r.sequence_number(), first.sequence_number() + (k as u16));
            assert_eq!(
                r.timestamp(),
                first.timestamp().wrapping_add(160 * k as u32)
            );
            let at = (k * 160) % encoded.len();
            assert_eq!(
                r.payload(),
                &encoded[at..at + 160],
                "packet {k} is the clip's"
            );
        }
        handle.stop_playing(LegId::Caller);
        // Drain what was in flight, then the phone is heard again.
        std::thread::sleep(Duration::from_millis(60));
        let mut heard = false;
        for seq in 0..20 {
            let _ = phone.send_to(&rtp(0, seq, 0, 78, &[0x22; 160]), to_agent_leg);
            while let Ok((n, _)) = trunk.recv_from(&mut buf) {
                if n == 172 && buf[8..12] == [0, 0, 0, 78] {
                    heard = true;
                    break;
                }
            }
            if heard {
                break;
            }
        }
        assert!(heard, "the phone is heard again after the music stops");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let report = rt.block_on(handle.stop(Instant::now())).unwrap();
        assert!(report.stats.played[0] >= 25, "{:?}", report.stats);
        assert!(report.stats.received[1] >= 25, "{:?}", report.stats);
        assert!(
            report.stats.forwarded[1] >= 1,
            "heard after the stop: {:?}",
            report.stats
        );
    }

    /// A hushed leg gets nothing of the other leg (an agent whose caller is on hold), while
    /// the other leg is still received; unhushed, it is heard again.
    #[test]
    fn a_hushed_leg_does_not_hear_the_other() {
        use std::net::UdpSocket;
        let pool = super::super::ports::PortPool::new(46300, 46399);
        let ip = "127.0.0.1".parse().unwrap();
        let (caller, agent) = (pool.bind(ip).unwrap(), pool.bind(ip).unwrap());
        let to_caller_leg = caller.rtp.local_addr().unwrap();
        let engine = MediaEngine::spawn(1).unwrap();
        let (handle, _events) = engine.add_call(caller, agent);
        let trunk = UdpSocket::bind("127.0.0.1:0").unwrap();
        let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
        phone
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let remote = |a: SocketAddr| RemoteMedia {
            rtp: Some(a),
            codec: G711::Pcmu,
            dtmf_pt: None,
            srtp: None,
        };
        handle.set_remote(LegId::Caller, remote(trunk.local_addr().unwrap()));
        handle.set_remote(LegId::Agent, remote(phone.local_addr().unwrap()));
        handle.hush(LegId::Agent, true);
        std::thread::sleep(Duration::from_millis(50));
        let mut buf = [0u8; 2048];
        for seq in 0..10 {
            let _ = trunk.send_to(&rtp(0, seq, 0, 91, &[0x33; 160]), to_caller_leg);
            assert!(
                phone.recv_from(&mut buf).is_err(),
                "nothing reaches a hushed leg"
            );
        }
        handle.hush(LegId::Agent, false);
        std::thread::sleep(Duration::from_millis(50));
        let mut heard = false;
        for seq in 10..30 {
            let _ = trunk.send_to(&rtp(0, seq, 0, 91, &[0x33; 160]), to_caller_leg);
            if phone.recv_from(&mut buf).is_ok() {
                heard = true;
                break;
            }
        }
        assert!(heard, "heard again");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let report = rt.block_on(handle.stop(Instant::now())).unwrap();
        assert!(report.stats.received[0] >= 11, "{:?}", report.stats);
    }

    /// What goes to an SRTP leg keeps continuous numbers across a restart of the source's
    /// numbering on one SSRC (else the receiver's rollover counter goes wrong); loss and
    /// reordering pass as they are, and a new SSRC keeps its own numbers.
    #[test]
    fn sequence_jumps_to_an_srtp_leg_are_renumbered() {
        let mut r = Renumber::default();
        let mut out = |seq: u16, ssrc: u32| {
            let mut p = rtp(0, seq, 0, ssrc, &[0; 4]);
            r.apply(&mut p);
            u16::from_be_bytes([p[2], p[3]])
        };
        assert_eq!(out(100, 7), 100);
        assert_eq!(out(103, 7), 103, "loss passes");
        assert_eq!(out(102, 7), 102, "reordering passes");
        assert_eq!(out(40_000, 7), 104, "a restart continues the numbering");
        assert_eq!(out(40_001, 7), 105);
        assert_eq!(out(39_999, 7), 103, "reordering around it too");
        assert_eq!(out(65_535, 7), 106, "and a second one");
        assert_eq!(out(0, 7), 107, "across the wrap");
        assert_eq!(out(5, 9), 5, "a new SSRC keeps its own numbers");
        assert_eq!(out(6, 9), 6);
    }
}
