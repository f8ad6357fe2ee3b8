//! Where SIP messages come from and go to: the transport and the peer's address, and the rule
//! for where a response goes (RFC 3261 §18.2.2, RFC 3581 §4). Plain values: the sockets that use
//! them live in `transport`.

use std::net::SocketAddr;

use super::Request;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
    /// Reliable transports run no retransmission timers (RFC 3261 §17.1.1.2).
    pub fn reliable(self) -> bool {
        self == Transport::Tcp
    }
}

/// Where a message came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub addr: SocketAddr,
    pub transport: Transport,
}

/// Where a response to `req` goes (RFC 3261 §18.2.2, RFC 3581 §4): over a stream, back on the
/// connection; over UDP, to the source address when `rport` was asked for, otherwise to the
/// source IP (`received`) and the Via's port.
pub(crate) fn response_peer(req: &Request, source: Peer) -> Peer {
    if source.transport == Transport::Tcp {
        return source;
    }
    match req.top_via() {
        Some(v) if v.param("rport").is_none() => Peer {
            addr: SocketAddr::new(source.addr.ip(), v.port.unwrap_or(5060)),
            transport: source.transport,
        },
        _ => source,
    }
}
