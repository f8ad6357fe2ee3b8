//! Where SIP messages come from and go to: the transport and the peer's address, and the rule
//! for where a response goes (RFC 3261 §18.2.2, RFC 3581 §4). Plain values: the sockets that use
//! them live in `transport`.

use std::net::SocketAddr;

use super::{Request, Uri};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
    /// Reliable transports run no retransmission timers (RFC 3261 §17.1.1.2).
    pub fn reliable(self) -> bool {
        self != Transport::Udp
    }

    /// The transport a URI asks for: its `transport` parameter, else TLS for `sips:`
    /// (RFC 3261 §26.2.2); `None` leaves the choice to the caller.
    pub fn of_uri(uri: &Uri) -> Option<Transport> {
        match uri.param("transport").flatten() {
            Some(t) if t.eq_ignore_ascii_case("tcp") => Some(Transport::Tcp),
            Some(t) if t.eq_ignore_ascii_case("tls") => Some(Transport::Tls),
            Some(_) => Some(Transport::Udp),
            None if uri.scheme == "sips" => Some(Transport::Tls),
            None => None,
        }
    }

    /// The port a URI without one means on this transport (RFC 3263 §4.2).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            _ => 5060,
        }
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
    if source.transport.reliable() {
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
