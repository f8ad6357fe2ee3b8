//! One side of a B2BUA call as a SIP dialog (RFC 3261 §12): the identifiers, the remote
//! target and route set, and the local CSeq, with builders for the requests sent inside it.

use crate::sip::headers::{HeaderName, NameAddr};
use crate::sip::message::{Method, Request};
use crate::sip::transaction::new_branch;
use crate::sip::Uri;
use crate::transport::Peer;

/// Where and how screenpop presents itself in Via and Contact.
#[derive(Debug, Clone)]
pub struct LocalContact {
    pub host: String,
    pub port: u16,
}

impl LocalContact {
    pub fn via(&self, peer: &Peer, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {}:{};branch={branch};rport",
            peer.transport.as_str(),
            self.host,
            self.port
        )
    }

    pub fn contact(&self, peer: &Peer) -> String {
        match peer.transport {
            crate::transport::Transport::Udp => {
                format!("<sip:screenpop@{}:{}>", self.host, self.port)
            }
            crate::transport::Transport::Tcp => {
                format!("<sip:screenpop@{}:{};transport=tcp>", self.host, self.port)
            }
        }
    }
}

/// A dialog's state as seen from screenpop's side.
#[derive(Debug, Clone)]
pub struct Dialog {
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
}

impl Dialog {
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
        let mut r = Request::new(method.clone(), self.remote_target.clone());
        r.headers
            .push(HeaderName::Via, me.via(&self.peer, &new_branch()));
        r.headers.push(HeaderName::MaxForwards, "70");
        for route in &self.route_set {
            r.headers.push(HeaderName::Route, route.clone());
        }
        r.headers.push(HeaderName::From, self.local.to_string());
        r.headers.push(HeaderName::To, self.remote.to_string());
        r.headers.push(HeaderName::CallId, self.call_id.clone());
        r.headers.push(HeaderName::CSeq, format!("{seq} {method}"));
        if matches!(method, Method::Invite) {
            r.headers.push(HeaderName::Contact, me.contact(&self.peer));
        }
        r
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

/// Where a request to a URI goes: the URI's host when it is an IP literal, otherwise the
/// peer the dialog's signalling came from (we do not resolve names on the call path).
pub fn target_peer(uri: &Uri, fallback: Peer) -> Peer {
    let host = uri.host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            let transport = match uri.param("transport").flatten() {
                Some(t) if t.eq_ignore_ascii_case("tcp") => crate::transport::Transport::Tcp,
                Some(_) => crate::transport::Transport::Udp,
                None => fallback.transport,
            };
            Peer {
                addr: std::net::SocketAddr::new(ip, uri.port.unwrap_or(5060)),
                transport,
            }
        }
        Err(_) => fallback,
    }
}
