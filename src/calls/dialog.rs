//! One side of a B2BUA call as a SIP dialog (RFC 3261 §12): the identifiers, the remote
//! target and route set, and the local CSeq, with builders for the requests sent inside it.

use crate::sip::headers::{HeaderName, NameAddr};
use crate::sip::message::{Method, Request, Response};
use crate::sip::transaction::new_branch;
use crate::sip::Uri;
use crate::transport::{Peer, Transport};

/// Where and how screenpop presents itself in Via and Contact.
#[derive(Debug, Clone)]
pub struct LocalContact {
    pub host: String,
    /// The UDP and TCP port.
    pub port: u16,
    /// The TLS listener's port, when there is one.
    pub tls_port: Option<u16>,
}

impl LocalContact {
    /// The port a peer reaches us on over its transport.
    pub(crate) fn port_for(&self, peer: &Peer) -> u16 {
        match peer.transport {
            Transport::Tls => self.tls_port.unwrap_or(self.port),
            _ => self.port,
        }
    }

    pub fn via(&self, peer: &Peer, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {}:{};branch={branch};rport",
            peer.transport.as_str(),
            self.host,
            self.port_for(peer)
        )
    }

    pub fn contact(&self, peer: &Peer) -> String {
        let (host, port) = (&self.host, self.port_for(peer));
        match peer.transport {
            Transport::Udp => format!("<sip:screenpop@{host}:{port}>"),
            Transport::Tcp => format!("<sip:screenpop@{host}:{port};transport=tcp>"),
            Transport::Tls => format!("<sip:screenpop@{host}:{port};transport=tls>"),
        }
    }
}

/// A dialog's state as seen from screenpop's side.
#[derive(Debug, Clone)]
pub(crate) struct Dialog {
    pub call_id: String,
    /// Our URI and tag (To of an incoming INVITE, From of an outgoing one).
    pub local: NameAddr,
    /// The peer's URI and tag.
    pub remote: NameAddr,
    pub remote_target: Uri,
    /// Route set, in the order requests carry it.
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    /// Highest CSeq seen from the peer (RFC 3261 §12.2.2).
    pub remote_cseq: Option<u32>,
    /// Where the peer's signalling reaches us from (responses and in-dialog requests go here).
    pub peer: Peer,
    /// A SIPS dialog (RFC 3261 §12.1.1: a `sips:` Request-URI over TLS): our Contact in it
    /// must be a SIPS URI too (§8.1.1.8).
    pub secure: bool,
}

impl Dialog {
    /// Our Contact in this dialog.
    pub fn contact(&self, me: &LocalContact) -> String {
        let plain = me.contact(&self.peer);
        if self.secure {
            format!("<sips:screenpop@{}:{}>", me.host, me.port_for(&self.peer))
        } else {
            plain
        }
    }

    pub fn local_tag(&self) -> &str {
        self.local.tag().unwrap_or("")
    }

    pub fn remote_tag(&self) -> Option<&str> {
        self.remote.tag()
    }

    /// Builds an in-dialog request (RFC 3261 §12.2.1.1). ACK reuses the INVITE's CSeq number
    /// (`ack_of`), every other method takes the next one.
    pub fn request(&mut self, method: Method, me: &LocalContact, ack_of: Option<u32>) -> Request {
        let seq = match ack_of {
            Some(n) => n,
            None => {
                self.local_cseq += 1;
                self.local_cseq
            }
        };
        // RFC 3261 §12.2.1.1: with a loose router first (`;lr`) the Request-URI is the remote
        // target and the route set goes in Route; with a strict router first, its URI becomes
        // the Request-URI and the remote target goes last in Route.
        let first = self
            .route_set
            .first()
            .and_then(|r| NameAddr::parse(r, "Route").ok());
        let strict = first.as_ref().is_some_and(|f| f.uri.param("lr").is_none());
        let (ruri, routes): (Uri, Vec<String>) = match first {
            Some(f) if strict => {
                let mut rest: Vec<String> = self.route_set[1..].to_vec();
                rest.push(format!("<{}>", self.remote_target));
                let mut u = f.uri;
                u.headers.clear();
                (u, rest)
            }
            _ => (self.remote_target.clone(), self.route_set.clone()),
        };
        let mut r = Request::new(method.clone(), ruri);
        r.headers
            .push(HeaderName::Via, me.via(&self.peer, &new_branch()));
        r.headers.push(HeaderName::MaxForwards, "70");
        for route in routes {
            r.headers.push(HeaderName::Route, route);
        }
        r.headers.push(HeaderName::From, self.local.to_string());
        r.headers.push(HeaderName::To, self.remote.to_string());
        r.headers.push(HeaderName::CallId, self.call_id.clone());
        r.headers.push(HeaderName::CSeq, format!("{seq} {method}"));
        if matches!(method, Method::Invite) {
            r.headers.push(HeaderName::Contact, self.contact(me));
        }
        r
    }

    /// Takes the dialog state a 2xx to our INVITE establishes (RFC 3261 §12.1.2): the peer's
    /// tag, its Contact as remote target and the Record-Route set in reverse.
    pub fn establish_from(&mut self, resp: &Response) {
        if let Some(to) = resp.to() {
            self.remote = to;
        }
        if let Some(c) = resp.contact() {
            self.remote_target = c.uri;
        }
        let mut routes: Vec<String> = resp
            .headers
            .get_all(&HeaderName::RecordRoute)
            .map(str::to_string)
            .collect();
        routes.reverse();
        self.route_set = routes;
    }

    /// The URI the dialog's next request is sent to: the first Route when there is a route
    /// set, otherwise the remote target.
    pub fn next_hop(&self) -> Uri {
        self.route_set
            .first()
            .and_then(|r| NameAddr::parse(r, "Route").ok())
            .map(|r| r.uri)
            .unwrap_or_else(|| self.remote_target.clone())
    }

    /// Accepts a request's CSeq if it is newer than the last (RFC 3261 §12.2.2); an old one
    /// gets 500.
    pub fn accept_remote_cseq(&mut self, seq: u32) -> bool {
        match self.remote_cseq {
            Some(last) if seq <= last => false,
            _ => {
                self.remote_cseq = Some(seq);
                true
            }
        }
    }
}

/// The CANCEL of one of our INVITEs (RFC 3261 §9.1): its Request-URI, top Via, Route, From,
/// To, Call-ID and CSeq number; it goes where the INVITE went.
pub(crate) fn cancel_of(inv: &Request) -> Request {
    let mut cancel = Request::new(Method::Cancel, inv.uri.clone());
    if let Some(v) = inv.headers.get(&HeaderName::Via) {
        cancel.headers.push(HeaderName::Via, v);
    }
    for r in inv.headers.get_all(&HeaderName::Route) {
        cancel.headers.push(HeaderName::Route, r);
    }
    cancel.headers.push(HeaderName::MaxForwards, "70");
    for name in [HeaderName::From, HeaderName::To, HeaderName::CallId] {
        if let Some(v) = inv.headers.get(&name) {
            cancel.headers.push(name, v);
        }
    }
    let seq = inv.cseq().map(|c| c.seq).unwrap_or(1);
    cancel
        .headers
        .push(HeaderName::CSeq, format!("{seq} CANCEL"));
    cancel
}

/// Where a request to a URI goes: the URI's host when it is an IP literal, otherwise the
/// peer the dialog's signalling came from (we do not resolve names on the call path).
pub(crate) fn target_peer(uri: &Uri, fallback: Peer) -> Peer {
    let host = uri.host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            let transport = Transport::of_uri(uri).unwrap_or(fallback.transport);
            Peer {
                addr: std::net::SocketAddr::new(ip, uri.port.unwrap_or(transport.default_port())),
                transport,
            }
        }
        Err(_) => fallback,
    }
}

/// The address written into SDP and Contact: the profile's `public_addr`, else the bound
/// address, else loopback when bound to a wildcard (nothing better is known).
pub(crate) fn advertised_ip(
    bound: std::net::SocketAddr,
    public: Option<std::net::IpAddr>,
) -> std::net::IpAddr {
    match public {
        Some(ip) => ip,
        None if bound.ip().is_unspecified() => {
            if bound.is_ipv6() {
                std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
            } else {
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
            }
        }
        None => bound.ip(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Transport;

    fn dialog(route_set: Vec<&str>) -> Dialog {
        Dialog {
            call_id: "c".into(),
            local: NameAddr::parse("<sip:a@10.0.0.1>;tag=l", "From").unwrap(),
            remote: NameAddr::parse("<sip:b@10.0.0.2>;tag=r", "To").unwrap(),
            remote_target: Uri::parse("sip:b@10.0.0.2:5070").unwrap(),
            route_set: route_set.into_iter().map(str::to_string).collect(),
            local_cseq: 7,
            remote_cseq: None,
            peer: Peer {
                addr: "10.0.0.2:5070".parse().unwrap(),
                transport: Transport::Udp,
            },
            secure: false,
        }
    }

    fn me() -> LocalContact {
        LocalContact {
            host: "10.0.0.9".into(),
            port: 5060,
            tls_port: None,
        }
    }

    #[test]
    fn loose_routing_keeps_the_remote_target() {
        let mut d = dialog(vec!["<sip:sbc1@10.0.0.5;lr>", "<sip:sbc2@10.0.0.6;lr>"]);
        let bye = d.request(Method::Bye, &me(), None);
        assert_eq!(bye.uri.to_string(), "sip:b@10.0.0.2:5070");
        let routes: Vec<&str> = bye.headers.get_all(&HeaderName::Route).collect();
        assert_eq!(routes, ["<sip:sbc1@10.0.0.5;lr>", "<sip:sbc2@10.0.0.6;lr>"]);
        assert_eq!(d.next_hop().host, "10.0.0.5");
        assert_eq!(bye.cseq().unwrap().seq, 8);
        let ack = d.request(Method::Ack, &me(), Some(3));
        assert_eq!(ack.cseq().unwrap().seq, 3, "ACK reuses the INVITE's number");
    }

    #[test]
    fn strict_router_becomes_the_request_uri() {
        let mut d = dialog(vec!["<sip:old@10.0.0.5>", "<sip:next@10.0.0.6;lr>"]);
        let bye = d.request(Method::Bye, &me(), None);
        assert_eq!(bye.uri.to_string(), "sip:old@10.0.0.5");
        let routes: Vec<&str> = bye.headers.get_all(&HeaderName::Route).collect();
        assert_eq!(routes, ["<sip:next@10.0.0.6;lr>", "<sip:b@10.0.0.2:5070>"]);
    }

    #[test]
    fn no_route_set_goes_to_the_remote_target() {
        let d = dialog(vec![]);
        assert_eq!(d.next_hop().to_string(), "sip:b@10.0.0.2:5070");
    }
}
