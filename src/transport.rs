//! SIP over UDP and TCP on one port (RFC 3261 §18), the edge where bytes meet sockets.
//!
//! Receive loops parse each datagram or stream frame; a request that fails to parse is answered
//! with 400 (505 for a bad version) built from its raw Via/From/To/Call-ID/CSeq lines when those
//! are present, and dropped otherwise. A bad message never stops the loop, and a slow or broken
//! TCP peer only ever blocks its own connection task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::sip::message::{reason_phrase, MAX_MESSAGE};
use crate::sip::{Message, ParseError};

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

type ConnMap = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

/// The sending half of the SIP sockets; cheap to clone into every call task.
#[derive(Clone)]
pub(crate) struct SipSocket {
    udp: Arc<UdpSocket>,
    conns: ConnMap,
    inbound: mpsc::Sender<Inbound>,
    local: SocketAddr,
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
    /// Binds UDP and TCP on `addr` and starts the receive loops.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<(SipSocket, mpsc::Receiver<Inbound>)> {
        let (udp, tcp) = bind_pair(addr).await?;
        let local = udp.local_addr()?;
        let sock = socket2::SockRef::from(&udp);
        let _ = sock.set_recv_buffer_size(4 << 20);
        let _ = sock.set_send_buffer_size(4 << 20);
        let (tx, rx) = mpsc::channel(4096);
        let me = SipSocket {
            udp: Arc::new(udp),
            conns: Arc::default(),
            inbound: tx,
            local,
        };
        tokio::spawn(me.clone().udp_loop());
        tokio::spawn(me.clone().accept_loop(tcp));
        info!(%local, "sip listening on udp and tcp");
        Ok((me, rx))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
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
            Transport::Tcp => {
                let existing = self
                    .conns
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&peer.addr).cloned());
                match existing {
                    Some(tx) => {
                        if tx.try_send(bytes).is_err() {
                            warn!(peer = %peer.addr, "tcp connection backlogged or closed");
                        }
                    }
                    None => {
                        let me = self.clone();
                        tokio::spawn(async move {
                            match TcpStream::connect(peer.addr).await {
                                Ok(stream) => {
                                    let tx = me.clone().spawn_conn(stream, peer.addr);
                                    let _ = tx.send(bytes).await;
                                }
                                Err(e) => debug!(peer = %peer.addr, error = %e, "tcp connect"),
                            }
                        });
                    }
                }
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
                    self.clone().spawn_conn(stream, addr);
                }
                Err(e) => {
                    warn!(error = %e, "tcp accept");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Starts the reader and writer of one TCP connection and registers its writer.
    fn spawn_conn(self, stream: TcpStream, addr: SocketAddr) -> mpsc::Sender<Vec<u8>> {
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
        if let Ok(mut m) = self.conns.lock() {
            m.insert(addr, tx.clone());
        }
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    break;
                }
            }
        });
        let ret = tx.clone();
        tokio::spawn(async move {
            let peer = Peer {
                addr,
                transport: Transport::Tcp,
            };
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
                if m.get(&addr).is_some_and(|s| s.same_channel(&tx)) {
                    m.remove(&addr);
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
