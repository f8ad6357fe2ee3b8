//! SIP over UDP and TCP on one port, and TLS on another (RFC 3261 §18, §26.2), the edge where
//! bytes meet sockets.
//!
//! Receive loops parse each datagram or stream frame; a request that fails to parse is answered
//! with 400 (505 for a bad version) built from its raw Via/From/To/Call-ID/CSeq lines when those
//! are present, and dropped otherwise. A bad message never stops the loop, and a slow or broken
//! TCP peer only ever blocks its own connection task.
//!
//! Before anything is parsed, the [`FloodGate`] is asked: a source over its rate is dropped
//! here, at the cost of a hash lookup, so a flood from one address never reaches the parser,
//! the dispatcher or the calls.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::flood::{FloodGate, GARBAGE_COST};
use crate::sip::framing::{Framer, Item};
use crate::sip::message::reason_phrase;
use crate::sip::{Message, ParseError};
use crate::tls::Tls;

pub use crate::sip::peer::{Peer, Transport};

/// A message as the dispatcher hands it to its call's task: boxed, because tokio allocates a
/// channel's first block of 32 slots up front, and 32 unboxed messages are ~10 kB a call.
pub(crate) type Routed = Box<Inbound>;

/// A parsed message and its source.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub msg: Message,
    pub peer: Peer,
    /// When the message came off the socket (the screen-pop latency starts here).
    pub at: std::time::Instant,
}

/// How long a TLS client may take over its handshake before the connection is dropped.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// How long a write to a stream peer may block (it stopped reading) before the connection goes.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What stream (TCP, TLS) peers may hold of the server: the profile's `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Inbound connections in all, and from one address (trusted addresses: no own cap).
    pub connections: usize,
    pub per_address: usize,
    /// How long a message may take to arrive whole once its first byte has.
    pub partial: Duration,
    /// How long a connection may stay silent.
    pub idle: Duration,
}

impl Default for StreamLimits {
    fn default() -> StreamLimits {
        StreamLimits {
            connections: 10_000,
            per_address: 64,
            partial: Duration::from_secs(10),
            idle: Duration::from_secs(600),
        }
    }
}

/// What the receive loops apply before anything is parsed.
#[derive(Debug, Clone, Default)]
pub struct Defences {
    pub flood: Arc<FloodGate>,
    pub streams: StreamLimits,
}

/// Inbound stream connections, per address (IPv6 per /64) and in all.
#[derive(Debug, Default)]
struct ConnCounts {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// An inbound connection's place in the counts, given back when its reader ends.
struct Slot {
    counts: Arc<Mutex<ConnCounts>>,
    source: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                c.by_source.remove(&self.source);
            }
        }
    }
}

/// Writers of open stream connections (TCP and TLS), by peer.
type ConnMap = Arc<Mutex<HashMap<Peer, mpsc::Sender<Vec<u8>>>>>;

/// The sending half of the SIP sockets; cheap to clone into every call task.
#[derive(Clone)]
pub(crate) struct SipSocket {
    udp: Arc<UdpSocket>,
    conns: ConnMap,
    inbound: mpsc::Sender<Inbound>,
    local: SocketAddr,
    tls: Option<Tls>,
    tls_local: Option<SocketAddr>,
    /// Host names to check a TLS server's certificate against, by address: learned where a URI
    /// was resolved (a registrar, a trunk); an address without one is checked as an IP.
    tls_names: Arc<Mutex<HashMap<SocketAddr, String>>>,
    /// Per-source rate limits and stream caps, applied before parsing.
    defences: Defences,
    conn_counts: Arc<Mutex<ConnCounts>>,
}

/// What a message costs against its source's rate: a response nothing (it answers what we
/// sent; a blocked source's are still dropped), anything else one token.
fn cost_of(data: &[u8]) -> u32 {
    u32::from(!data.starts_with(b"SIP/2.0 "))
}

/// UDP and TCP on one port. With port 0 the UDP socket picks an ephemeral port and TCP takes the
/// same number, which some other TCP socket may already hold: then another port is tried, so a
/// client bound to port 0 (`screenpop dial`) never fails for a port it did not choose.
async fn bind_pair(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut tries = 0;
    loop {
        let udp = UdpSocket::bind(addr).await?;
        let local = udp.local_addr()?;
        match TcpListener::bind(local).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e)
                if addr.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse && tries < 16 =>
            {
                tries += 1;
                debug!(
                    port = local.port(),
                    "tcp port taken; trying another ephemeral port"
                );
            }
            Err(e) => return Err(e),
        }
    }
}

impl SipSocket {
    /// Binds UDP and TCP on `addr`, and with `tls` a TLS listener on its port at the same
    /// address, and starts the receive loops, which apply `defences` before parsing.
    pub async fn bind(
        addr: SocketAddr,
        tls: Option<Tls>,
        defences: Defences,
    ) -> std::io::Result<(SipSocket, mpsc::Receiver<Inbound>)> {
        let (udp, tcp) = bind_pair(addr).await?;
        let local = udp.local_addr()?;
        let tls_listener = match &tls {
            Some(t) => Some(TcpListener::bind(SocketAddr::new(addr.ip(), t.port())).await?),
            None => None,
        };
        let tls_local = match &tls_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let sock = socket2::SockRef::from(&udp);
        let _ = sock.set_recv_buffer_size(4 << 20);
        let _ = sock.set_send_buffer_size(4 << 20);
        let (tx, rx) = mpsc::channel(4096);
        let me = SipSocket {
            udp: Arc::new(udp),
            conns: Arc::default(),
            inbound: tx,
            local,
            tls: tls.clone(),
            tls_local,
            tls_names: Arc::default(),
            defences,
            conn_counts: Arc::default(),
        };
        tokio::spawn(me.clone().udp_loop());
        tokio::spawn(me.clone().accept_loop(tcp));
        info!(%local, "sip listening on udp and tcp");
        if let (Some(l), Some(t)) = (tls_listener, tls) {
            tokio::spawn(me.clone().tls_accept_loop(l, t));
            info!(local = ?tls_local, "sip listening on tls");
        }
        Ok((me, rx))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn gate(&self) -> &FloodGate {
        &self.defences.flood
    }

    /// A place for an inbound connection from `ip`, or `None` when the server or that address
    /// (unless trusted) holds as many as it may: the connection is then closed at once.
    fn slot(&self, ip: IpAddr) -> Option<Slot> {
        // A connection costs a token like a request (a TLS handshake costs us more than one):
        // a blocked source, or one opening connections too fast, is closed at once.
        if !self.gate().admit(ip, 1, false) {
            return None;
        }
        let limits = self.defences.streams;
        let source = crate::guard::source_key(ip);
        let trusted = self.gate().trusts(ip);
        let mut c = self.conn_counts.lock().unwrap_or_else(|p| p.into_inner());
        let mine = c.by_source.get(&source).copied().unwrap_or(0);
        // Trusted peers are not held to the total: connections from elsewhere filling it
        // must not lock out the PBX.
        let why = if !trusted && c.total >= limits.connections {
            "total"
        } else if !trusted && mine >= limits.per_address {
            "per_address"
        } else {
            c.total += 1;
            *c.by_source.entry(source).or_default() += 1;
            return Some(Slot {
                counts: self.conn_counts.clone(),
                source,
            });
        };
        drop(c);
        metrics::counter!("screenpop_sip_stream_refused_total", "why" => why).increment(1);
        debug!(%ip, why, "stream connection refused: at the cap");
        None
    }

    /// The TLS listener's address, when there is one.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls_local
    }

    /// Checks a TLS connection opened to `addr` against `host`'s certificate (the host part of
    /// the URI that resolved to it).
    pub fn name_tls_peer(&self, addr: SocketAddr, host: &str) {
        if let Ok(mut m) = self.tls_names.lock() {
            m.insert(addr, host.trim_matches(['[', ']']).to_string());
        }
    }

    /// Sends bytes to a peer. UDP sends are immediate; TCP goes through the connection's
    /// writer task, opening a connection when there is none.
    pub fn send(&self, peer: Peer, bytes: Vec<u8>) {
        match peer.transport {
            Transport::Udp => {
                // A full socket buffer drops the message: the transaction layer retransmits,
                // and an unbounded queue of send tasks would be worse.
                if let Err(e) = self.udp.try_send_to(&bytes, peer.addr) {
                    debug!(peer = %peer.addr, error = %e, "udp send failed");
                }
            }
            Transport::Tcp | Transport::Tls => {
                let existing = self.conns.lock().ok().and_then(|m| m.get(&peer).cloned());
                match existing {
                    Some(tx) => {
                        if tx.try_send(bytes).is_err() {
                            warn!(peer = %peer.addr, "stream connection backlogged or closed");
                        }
                    }
                    None => {
                        let me = self.clone();
                        tokio::spawn(async move {
                            if let Some(tx) = me.connect(peer).await {
                                let _ = tx.send(bytes).await;
                            }
                        });
                    }
                }
            }
        }
    }

    /// Opens a stream connection to `peer` (TLS: checked against the name the address was
    /// learned under, else its IP) and starts its reader and writer.
    async fn connect(&self, peer: Peer) -> Option<mpsc::Sender<Vec<u8>>> {
        let stream = match TcpStream::connect(peer.addr).await {
            Ok(s) => s,
            Err(e) => {
                debug!(peer = %peer.addr, error = %e, "connect");
                return None;
            }
        };
        if peer.transport == Transport::Tcp {
            return Some(self.clone().spawn_conn(stream, peer, None));
        }
        let Some(tls) = &self.tls else {
            warn!(peer = %peer.addr, "a message for a TLS peer, but the profile has no [tls]");
            return None;
        };
        let host = self
            .tls_names
            .lock()
            .ok()
            .and_then(|m| m.get(&peer.addr).cloned())
            .unwrap_or_else(|| peer.addr.ip().to_string());
        let Some(name) = crate::tls::server_name(&host) else {
            warn!(%host, "not a name a TLS certificate can be checked against");
            return None;
        };
        let _ = stream.set_nodelay(true);
        match tokio::time::timeout(TLS_HANDSHAKE, tls.connector().connect(name, stream)).await {
            Ok(Ok(s)) => {
                metrics::counter!("screenpop_tls_handshakes_total", "side" => "client")
                    .increment(1);
                Some(self.clone().spawn_conn(s, peer, None))
            }
            Ok(Err(e)) => {
                metrics::counter!("screenpop_tls_handshake_failures_total", "side" => "client")
                    .increment(1);
                warn!(peer = %peer.addr, %host, error = %e, "tls handshake failed");
                None
            }
            Err(_) => {
                metrics::counter!("screenpop_tls_handshake_failures_total", "side" => "client")
                    .increment(1);
                warn!(peer = %peer.addr, %host, "tls handshake timed out");
                None
            }
        }
    }

    async fn udp_loop(self) {
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, src) = match self.udp.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    // ICMP port unreachable surfaces here on Linux; it concerns one peer only.
                    debug!(error = %e, "udp recv");
                    continue;
                }
            };
            let data = &buf[..n];
            if data.iter().all(|b| b.is_ascii_whitespace()) {
                continue; // keep-alive
            }
            if !self.gate().admit(src.ip(), cost_of(data), false) {
                continue;
            }
            let peer = Peer {
                addr: src,
                transport: Transport::Udp,
            };
            // The parser is fuzzed and panic-free by design; should a bug slip through anyway,
            // it costs one datagram, not the receive loop of every call.
            let parsed = std::panic::catch_unwind(|| Message::parse(data));
            match parsed {
                Ok(Ok(msg)) => {
                    if self
                        .inbound
                        .send(Inbound {
                            msg,
                            peer,
                            at: Instant::now(),
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(Err(e)) => {
                    // Garbage costs more; the datagram that blocks its source goes unanswered.
                    if self.gate().admit(src.ip(), GARBAGE_COST, false) {
                        self.reject(peer, data, &e);
                    }
                }
                Err(_) => warn!(peer = %peer.addr, "parser panicked; datagram dropped"),
            }
        }
    }

    async fn accept_loop(self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, addr)) => {
                    let Some(slot) = self.slot(addr.ip()) else {
                        continue; // blocked, or at the cap: closed at once
                    };
                    let _ = stream.set_nodelay(true);
                    let peer = Peer {
                        addr,
                        transport: Transport::Tcp,
                    };
                    self.clone().spawn_conn(stream, peer, Some(slot));
                }
                Err(e) => {
                    warn!(error = %e, "tcp accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Accepts TLS clients: each handshake runs in its own task under a deadline, so a client
    /// that stalls or fails it holds up nobody; failures are counted and logged.
    async fn tls_accept_loop(self, listener: TcpListener, tls: Tls) {
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "tls accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // The handshake holds a place too: a peer cannot open thousands of them.
            let Some(slot) = self.slot(addr.ip()) else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            // The certificate in force when the client connected (SIGHUP swaps it for later
            // ones).
            let acceptor = tls.acceptor();
            let me = self.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        metrics::counter!("screenpop_tls_handshakes_total", "side" => "server")
                            .increment(1);
                        let peer = Peer {
                            addr,
                            transport: Transport::Tls,
                        };
                        me.spawn_conn(s, peer, Some(slot));
                    }
                    Ok(Err(e)) => {
                        metrics::counter!("screenpop_tls_handshake_failures_total", "side" => "server")
                            .increment(1);
                        info!(peer = %addr, error = %e, "tls handshake failed");
                    }
                    Err(_) => {
                        metrics::counter!("screenpop_tls_handshake_failures_total", "side" => "server")
                            .increment(1);
                        info!(peer = %addr, "tls handshake timed out");
                    }
                }
            });
        }
    }

    /// Starts the reader and writer of one stream connection (TCP, or TLS over it) and
    /// registers its writer.
    fn spawn_conn<S>(self, stream: S, peer: Peer, slot: Option<Slot>) -> mpsc::Sender<Vec<u8>>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
        if let Ok(mut m) = self.conns.lock() {
            m.insert(peer, tx.clone());
        }
        // The reader and the writer both hold the connection's place: it is given back when
        // the socket is really gone, not when a peer that stopped reading half-closes.
        let slot = slot.map(Arc::new);
        let writer_slot = slot.clone();
        tokio::spawn(async move {
            let _slot = writer_slot;
            while let Some(b) = rx.recv().await {
                // A peer that stops reading (a zero window) holds nothing for long.
                match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&b)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => break,
                }
            }
            // TLS: close_notify before the TCP FIN.
            let _ = wr.shutdown().await;
        });
        let ret = tx.clone();
        let limits = self.defences.streams;
        tokio::spawn(async move {
            // Held until the reader ends: the connection counts against its address's and
            // the server's caps (inbound ones only; `None` for those we opened).
            let slot = slot;
            let mut framer = Framer::default();
            let mut chunk = vec![0u8; 16384];
            // Cut off (silent, dribbling, flooding): closed at once, nothing more is owed.
            let mut cut = false;
            'conn: loop {
                // A connection silent for longer than any registration or call keep-alive is
                // gone (rebooted phone, lost NAT mapping) or idle on purpose; one that has
                // been sending a message for longer than any peer needs is holding a slot
                // (slowloris): close either.
                let now = Instant::now();
                let (wait, partial) = match framer.partial_since() {
                    Some(since) => (
                        (since + limits.partial)
                            .saturating_duration_since(now)
                            .min(limits.idle),
                        true,
                    ),
                    None => (limits.idle, false),
                };
                let n = match tokio::time::timeout(wait, rd.read(&mut chunk)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => n,
                    Err(_) => {
                        let why = if partial { "partial" } else { "idle" };
                        debug!(peer = %peer.addr, why, "stream connection cut off");
                        metrics::counter!("screenpop_sip_stream_closed_total", "why" => why)
                            .increment(1);
                        cut = true;
                        break;
                    }
                };
                framer.push(&chunk[..n], Instant::now());
                loop {
                    let frame = match framer.next_item() {
                        Ok(None) => break,
                        Ok(Some(Item::Ping)) => {
                            // RFC 5626 §3.5.1: a double-CRLF ping gets a CRLF pong (a phone
                            // behind NAT learns its connection is alive).
                            let _ = tx.try_send(b"\r\n".to_vec());
                            continue;
                        }
                        Ok(Some(Item::Message(frame))) => frame,
                        Err(e) => {
                            // Framing is lost: answer if we can, then close (RFC 3261 §18.3).
                            if self.gate().admit(peer.addr.ip(), 1 + GARBAGE_COST, true) {
                                self.reject(peer, framer.pending(), &e);
                            }
                            break 'conn;
                        }
                    };
                    if !self.gate().admit(peer.addr.ip(), cost_of(&frame), true) {
                        cut = true; // blocked for flooding: the connection goes
                        break 'conn;
                    }
                    match std::panic::catch_unwind(|| Message::parse_stream(&frame)) {
                        Ok(Ok((msg, _))) => {
                            let inbound = Inbound {
                                msg,
                                peer,
                                at: Instant::now(),
                            };
                            if self.inbound.send(inbound).await.is_err() {
                                break 'conn;
                            }
                        }
                        // Framed but not well formed: answered, and the stream goes on (its
                        // framing is intact).
                        Ok(Err(e)) => {
                            if self.gate().admit(peer.addr.ip(), GARBAGE_COST, true) {
                                self.reject(peer, &frame, &e);
                            }
                        }
                        Err(_) => warn!(peer = %peer.addr, "parser panicked; message dropped"),
                    }
                }
            }
            drop(slot);
            // Responses to what was read may still be on their way through the dispatcher:
            // keep the writer registered a little longer, then let it close the connection.
            if !cut {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            if let Ok(mut m) = self.conns.lock() {
                if m.get(&peer).is_some_and(|s| s.same_channel(&tx)) {
                    m.remove(&peer);
                }
            }
        });
        ret
    }

    fn reject(&self, peer: Peer, data: &[u8], err: &ParseError) {
        match error_response(data, err.status()) {
            Some(resp) => {
                debug!(peer = %peer.addr, error = %err, "malformed request answered");
                self.send(peer, resp);
            }
            None => debug!(peer = %peer.addr, error = %err, "malformed message dropped"),
        }
    }
}

/// Builds an error response to a request that did not parse, from its raw header lines
/// (RFC 3261 §8.2.6.2 needs Via, From, To, Call-ID and CSeq). Returns `None` for responses and
/// for requests missing those lines: they cannot be answered.
pub fn error_response(data: &[u8], status: u16) -> Option<Vec<u8>> {
    let head_end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(data.len().min(8192));
    let head = String::from_utf8_lossy(&data[..head_end]);
    let mut lines = head.split("\r\n");
    let start = lines.next()?;
    if crate::sip::message::starts_with_sip(start) {
        return None;
    }
    let mut vias = Vec::new();
    let (mut from, mut to, mut call_id, mut cseq) = (None, None, None, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if value.contains(['\r', '\n']) {
            continue;
        }
        match name.trim().to_ascii_lowercase().as_str() {
            "via" | "v" => vias.push(value.to_string()),
            "from" | "f" => from = from.or(Some(value.to_string())),
            "to" | "t" => to = to.or(Some(value.to_string())),
            "call-id" | "i" => call_id = call_id.or(Some(value.to_string())),
            "cseq" => cseq = cseq.or(Some(value.to_string())),
            _ => {}
        }
    }
    let (from, to, call_id, cseq) = (from?, to?, call_id?, cseq?);
    if vias.is_empty() || cseq.split_whitespace().nth(1) == Some("ACK") {
        return None; // an ACK is never answered
    }
    let mut out = format!("SIP/2.0 {status} {}\r\n", reason_phrase(status));
    for v in vias {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    out.push_str(&format!(
        "From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
    ));
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_from_raw_lines() {
        let raw = b"INVITE  sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:x@y>;tag=1\r\nt: <sip:a@b>\r\ni: abc\r\nCSeq: 1 INVITE\r\n\r\n";
        let r = String::from_utf8(error_response(raw, 400).unwrap()).unwrap();
        assert!(r.starts_with("SIP/2.0 400 Bad Request\r\n"));
        assert!(r.contains("Call-ID: abc\r\n"));
        assert!(error_response(b"SIP/2.0 999 x\r\n\r\n", 400).is_none());
        assert!(error_response(b"garbage", 400).is_none());
    }
}
