//! SIP over UDP and TCP on one port, and TLS on another (RFC 3261 §18, §26.2), the edge where
//! bytes meet sockets.
//!
//! Receive loops parse each datagram or stream frame; a request that fails to parse is answered
//! with 400 (505 for a bad version) built from its raw Via/From/To/Call-ID/CSeq lines when those
//! are present, and dropped otherwise. A bad message never stops the loop, and a slow or broken
//! TCP peer only ever blocks its own connection task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::sip::message::{reason_phrase, MAX_MESSAGE};
use crate::sip::{Message, ParseError};
use crate::tls::Tls;

pub use crate::sip::peer::{Peer, Transport};

/// A parsed message and its source.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub msg: Message,
    pub peer: Peer,
    /// When the message came off the socket (the screen-pop latency starts here).
    pub at: std::time::Instant,
}

/// How long a TCP connection may stay silent before it is closed.
const TCP_IDLE: std::time::Duration = std::time::Duration::from_secs(600);

/// How long a TLS client may take over its handshake before the connection is dropped.
const TLS_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(10);

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
    /// address, and starts the receive loops.
    pub async fn bind(
        addr: SocketAddr,
        tls: Option<Tls>,
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
            return Some(self.clone().spawn_conn(stream, peer));
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
                Some(self.clone().spawn_conn(s, peer))
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
                            at: std::time::Instant::now(),
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(Err(e)) => self.reject(peer, data, &e),
                Err(_) => warn!(peer = %peer.addr, "parser panicked; datagram dropped"),
            }
        }
    }

    async fn accept_loop(self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let peer = Peer {
                        addr,
                        transport: Transport::Tcp,
                    };
                    self.clone().spawn_conn(stream, peer);
                }
                Err(e) => {
                    warn!(error = %e, "tcp accept");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
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
                        me.spawn_conn(s, peer);
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
    fn spawn_conn<S>(self, stream: S, peer: Peer) -> mpsc::Sender<Vec<u8>>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
        if let Ok(mut m) = self.conns.lock() {
            m.insert(peer, tx.clone());
        }
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    break;
                }
            }
            // TLS: close_notify before the TCP FIN.
            let _ = wr.shutdown().await;
        });
        let ret = tx.clone();
        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::with_capacity(8192);
            let mut chunk = vec![0u8; 16384];
            'conn: loop {
                // A connection silent for longer than any registration or call keep-alive is
                // gone (rebooted phone, lost NAT mapping) or idle on purpose: close it.
                let n = match tokio::time::timeout(TCP_IDLE, rd.read(&mut chunk)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(n)) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    match Message::parse_stream(&buf) {
                        Ok((msg, used)) => {
                            buf.drain(..used);
                            if self
                                .inbound
                                .send(Inbound {
                                    msg,
                                    peer,
                                    at: std::time::Instant::now(),
                                })
                                .await
                                .is_err()
                            {
                                break 'conn;
                            }
                        }
                        Err(ParseError::Incomplete) => {
                            if buf.iter().all(|b| *b == b'\r' || *b == b'\n') {
                                // RFC 5626 §3.5.1: a double-CRLF ping gets a CRLF pong (a
                                // phone behind NAT learns its connection is alive); a lone
                                // CRLF waits for its pair.
                                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                                    let _ = tx.try_send(b"\r\n".to_vec());
                                    buf.clear();
                                } else if buf.len() >= 4 {
                                    buf.clear();
                                }
                            }
                            if buf.len() > MAX_MESSAGE {
                                break 'conn;
                            }
                            break;
                        }
                        Err(e) => {
                            // Framing is lost: answer if we can, then close (RFC 3261 §18.3).
                            self.reject(peer, &buf, &e);
                            break 'conn;
                        }
                    }
                }
            }
            // Responses to what was read may still be on their way through the dispatcher:
            // keep the writer registered a little longer, then let it close the connection.
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
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
