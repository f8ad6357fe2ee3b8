//! Registrar for agent phones (RFC 3261 §10.3) with digest authentication (RFC 3261 §22,
//! RFC 8760 SHA-256 and MD5). Sans-IO: a REGISTER and `now` in, a response out.
//!
//! Unknown users and wrong passwords get the same 401 after the same work, so the registrar
//! cannot be used to find out which usernames exist.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::digest::{self, Algorithm, NonceKey, Secret, SecretKind, Verdict};
use super::headers::{parse_scalar, HeaderName, NameAddr};
use super::message::{Request, Response};
use super::peer::Peer;
use super::Uri;

/// One registered contact of a user.
#[derive(Debug, Clone)]
pub struct Binding {
    pub contact: NameAddr,
    pub expires_at: Instant,
    pub call_id: String,
    pub cseq: u32,
    /// Where the REGISTER came from: requests to the phone go here, which also works when the
    /// phone sits behind NAT and its Contact names a private address.
    pub source: Peer,
    pub registered_at: Instant,
}

/// How a REGISTER's credentials went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// None given (the first REGISTER, answered with the challenge), a stale nonce, or a
    /// request refused before its credentials were looked at.
    None,
    /// Right, for this username.
    Ok(String),
    /// Wrong, with a nonce we gave this address: a guess at `user`'s password (`known`: a
    /// user of this registrar, not a made-up name).
    Failed { user: String, known: bool },
}

pub struct Registrar {
    realm: String,
    /// Offered in the 401 in this order, and the only ones accepted.
    algorithms: Vec<Algorithm>,
    key: NonceKey,
    users: HashMap<String, Secret>,
    bindings: HashMap<String, Vec<Binding>>,
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_contacts: usize,
}

impl Registrar {
    pub fn new(realm: &str, users: impl IntoIterator<Item = (String, String)>) -> Self {
        let users = users
            .into_iter()
            .map(|(u, p)| {
                let secret = Secret::hashed(&u, realm, &p);
                (u, secret)
            })
            .collect();
        Registrar {
            realm: realm.to_string(),
            algorithms: vec![Algorithm::Md5],
            key: NonceKey::generate(),
            users,
            bindings: HashMap::new(),
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            max_contacts: 10,
        }
    }

    /// Live bindings of `user`, most recently registered first.
    pub fn contacts(&self, user: &str, now: Instant) -> Vec<&Binding> {
        let mut v: Vec<&Binding> = self
            .bindings
            .get(user)
            .map(|b| b.iter().filter(|b| b.expires_at > now).collect())
            .unwrap_or_default();
        v.sort_by_key(|b| std::cmp::Reverse(b.registered_at));
        v
    }

    /// Adds or replaces a user's credentials (agents created through the API).
    /// Forgets a user and its bindings: its phone can no longer register or be rung.
    pub fn remove_user(&mut self, user: &str) {
        self.users.remove(user);
        self.bindings.remove(user);
    }

    pub fn set_user(&mut self, user: &str, secret: Secret) {
        self.users.insert(user.to_string(), secret);
    }

    /// Drops expired bindings; returns the users left with none.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        for b in self.bindings.values_mut() {
            b.retain(|b| b.expires_at > now);
        }
        let gone: Vec<String> = self
            .bindings
            .iter()
            .filter(|(_, b)| b.is_empty())
            .map(|(u, _)| u.clone())
            .collect();
        self.bindings.retain(|_, b| !b.is_empty());
        gone
    }

    /// The digest algorithms to offer, in order (a profile's `digest_algorithms`; MD5 alone
    /// until this is called). An empty list keeps MD5.
    pub fn with_algorithms(mut self, algorithms: &[Algorithm]) -> Self {
        if !algorithms.is_empty() {
            self.algorithms = algorithms.to_vec();
        }
        self
    }

    fn challenge(&self, req: &Request, now_secs: u64, ip: IpAddr, stale: bool) -> Response {
        let mut resp = req.response(401, Some(&tag_for(req)));
        for v in digest::challenge(
            &self.realm,
            &self.algorithms,
            &self.key,
            now_secs,
            ip,
            stale,
        ) {
            resp.headers.push(HeaderName::WwwAuthenticate, v);
        }
        resp
    }

    /// Handles a REGISTER. `now_secs` is wall-clock seconds for nonces; `now` orders expiry.
    pub fn handle(&mut self, now: Instant, now_secs: u64, req: &Request, source: Peer) -> Response {
        self.handle_auth(now, now_secs, req, source).0
    }

    /// As [`Registrar::handle`], saying how the credentials went (for the password-guessing
    /// guard, which counts failures and knows each user's good addresses).
    pub fn handle_auth(
        &mut self,
        now: Instant,
        now_secs: u64,
        req: &Request,
        source: Peer,
    ) -> (Response, Auth) {
        let mut auth = Auth::None;
        let r = self.register(now, now_secs, req, source, &mut auth);
        (r, auth)
    }

    fn register(
        &mut self,
        now: Instant,
        now_secs: u64,
        req: &Request,
        source: Peer,
        auth: &mut Auth,
    ) -> Response {
        let ip = source.addr.ip();
        let Some(to) = req.to() else {
            return req.response(400, None);
        };
        let aor = to.uri.user_unescaped().unwrap_or_default();
        // Authenticate (RFC 3261 §22.4).
        let creds = req
            .headers
            .get_all(&HeaderName::Authorization)
            .filter_map(|v| digest::parse_authorization(v).ok())
            .find(|c| c.realm == self.realm);
        let Some(creds) = creds else {
            return self.challenge(req, now_secs, ip, false);
        };
        if !self.algorithms.contains(&creds.algorithm) {
            // Answered with an algorithm this registrar does not offer: a profile that turned
            // MD5 off means it.
            return self.challenge(req, now_secs, ip, false);
        }
        let verdict = match self.users.get(&creds.username) {
            Some(secret) => digest::verify(
                &creds,
                "REGISTER",
                secret,
                &self.realm,
                &self.key,
                now_secs,
                ip,
            ),
            None => digest::verify_unknown_user(
                &creds,
                "REGISTER",
                SecretKind::Ha1,
                &self.realm,
                &self.key,
                now_secs,
                ip,
            ),
        };
        match verdict {
            Verdict::Ok => *auth = Auth::Ok(creds.username.clone()),
            Verdict::Stale => return self.challenge(req, now_secs, ip, true),
            Verdict::Fail => {
                if digest::is_guess(&creds, &self.key, now_secs, ip) {
                    *auth = Auth::Failed {
                        user: creds.username.clone(),
                        known: self.users.contains_key(&creds.username),
                    };
                }
                return self.challenge(req, now_secs, ip, false);
            }
        }
        if creds.username != aor {
            // Authenticated, but not allowed to register someone else's AOR.
            return req.response(403, Some(&tag_for(req)));
        }
        let tag = tag_for(req);
        let call_id = req.call_id().unwrap_or_default().to_string();
        let cseq = req.cseq().map(|c| c.seq).unwrap_or(0);
        let header_expires = req
            .headers
            .get(&HeaderName::Expires)
            .and_then(|e| parse_scalar(e, "Expires", u32::MAX as u64).ok())
            .map(|e| e as u32);
        let contacts: Vec<&str> = req.headers.get_all(&HeaderName::Contact).collect();
        if contacts.contains(&"*") {
            // Remove all bindings: only with Expires: 0 and a single Contact (§10.3 step 6).
            if contacts.len() != 1 || header_expires != Some(0) {
                return req.response(400, Some(&tag));
            }
            self.bindings.remove(&aor);
            return self.ok(req, &aor, now, &tag);
        }
        let mut parsed = Vec::new();
        for c in contacts {
            let Ok(na) = NameAddr::parse(c, "Contact") else {
                return req.response(400, Some(&tag));
            };
            let expires = na
                .param("expires")
                .flatten()
                .and_then(|e| e.parse::<u64>().ok())
                .map(|e| e.min(u32::MAX as u64) as u32)
                .or(header_expires)
                .unwrap_or(self.default_expires);
            if expires != 0 && expires < self.min_expires {
                let mut r = req.response(423, Some(&tag));
                r.headers.push(
                    HeaderName::Other("Min-Expires".into()),
                    self.min_expires.to_string(),
                );
                return r;
            }
            parsed.push((na, expires.min(self.max_expires)));
        }
        let list = self.bindings.entry(aor.clone()).or_default();
        for (na, expires) in parsed {
            let existing = list.iter().position(|b| same_uri(&b.contact.uri, &na.uri));
            if let Some(i) = existing {
                // §10.3 step 7: an older or repeated CSeq on the same Call-ID is ignored.
                if list[i].call_id == call_id && cseq <= list[i].cseq {
                    continue;
                }
                if expires == 0 {
                    list.remove(i);
                    continue;
                }
            } else if expires == 0 {
                continue;
            }
            let mut contact = na.clone();
            contact
                .params
                .retain(|(k, _)| !k.eq_ignore_ascii_case("expires"));
            let binding = Binding {
                contact,
                expires_at: now + Duration::from_secs(expires as u64),
                call_id: call_id.clone(),
                cseq,
                source,
                registered_at: now,
            };
            match existing {
                Some(i) => list[i] = binding,
                None => {
                    if list.len() >= self.max_contacts {
                        list.remove(0);
                    }
                    list.push(binding)
                }
            }
        }
        self.ok(req, &aor, now, &tag)
    }

    fn ok(&self, req: &Request, aor: &str, now: Instant, tag: &str) -> Response {
        let mut resp = req.response(200, Some(tag));
        for b in self.contacts(aor, now) {
            let left = b.expires_at.saturating_duration_since(now).as_secs();
            resp.headers
                .push(HeaderName::Contact, format!("{};expires={left}", b.contact));
        }
        resp
    }
}

/// A stable To tag for responses to one REGISTER (retransmissions get the same one).
fn tag_for(req: &Request) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    req.call_id().hash(&mut h);
    req.cseq().map(|c| c.seq).hash(&mut h);
    format!("{:016x}", h.finish())
}

/// URI equivalence good enough for bindings (RFC 3261 §19.1.4 simplified: scheme, user, host,
/// port).
fn same_uri(a: &Uri, b: &Uri) -> bool {
    a.scheme == b.scheme && a.user == b.user && a.host == b.host && a.port == b.port
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use crate::transport::Transport;

    fn peer() -> Peer {
        Peer {
            addr: "127.0.0.1:5062".parse().unwrap(),
            transport: Transport::Udp,
        }
    }

    fn register(user: &str, extra: &str, cseq: u32) -> Request {
        let raw = format!(
            "REGISTER sip:screenpop SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK{cseq}\r\nFrom: <sip:{user}@screenpop>;tag=a\r\nTo: <sip:{user}@screenpop>\r\nCall-ID: reg1\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@127.0.0.1:5062>\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match Message::parse(raw.as_bytes()).unwrap() {
            Message::Request(r) => r,
            _ => panic!(),
        }
    }

    fn authorize(
        reg: &mut Registrar,
        user: &str,
        pw: &str,
        alg: Algorithm,
        extra: &str,
        cseq: u32,
    ) -> Response {
        let now = Instant::now();
        let r = register(user, extra, cseq);
        let ch = reg.handle(now, 1000, &r, peer());
        assert_eq!(ch.status, 401);
        let wanted = ch
            .headers
            .get_all(&HeaderName::WwwAuthenticate)
            .map(|v| digest::parse_challenge(v).unwrap())
            .find(|c| c.algorithm == alg)
            .unwrap();
        let auth =
            digest::respond(&wanted, user, pw, "REGISTER", "sip:screenpop", "abc", 1).unwrap();
        let r2 = register(user, &format!("{extra}Authorization: {auth}\r\n"), cseq + 1);
        reg.handle(now, 1001, &r2, peer())
    }

    #[test]
    fn md5_alone_is_offered_by_default() {
        let mut reg = Registrar::new("screenpop", [("1001".to_string(), "pw".to_string())]);
        let ch = reg.handle(Instant::now(), 1000, &register("1001", "", 1), peer());
        let offered: Vec<_> = ch
            .headers
            .get_all(&HeaderName::WwwAuthenticate)
            .map(|v| digest::parse_challenge(v).unwrap().algorithm)
            .collect();
        assert_eq!(offered, [Algorithm::Md5]);
    }

    #[test]
    fn an_algorithm_not_offered_is_refused() {
        let users = [("1001".to_string(), "pw".to_string())];
        let mut reg = Registrar::new("screenpop", users).with_algorithms(&[Algorithm::Sha256]);
        let now = Instant::now();
        let ch = reg.handle(now, 1000, &register("1001", "", 1), peer());
        let offered = ch.headers.get(&HeaderName::WwwAuthenticate).unwrap();
        let mut md5 = digest::parse_challenge(offered).unwrap();
        assert_eq!(md5.algorithm, Algorithm::Sha256);
        // The right password, hashed with the algorithm this registrar turned off.
        md5.algorithm = Algorithm::Md5;
        let auth = digest::respond(&md5, "1001", "pw", "REGISTER", "sip:screenpop", "abc", 1);
        let r = register("1001", &format!("Authorization: {}\r\n", auth.unwrap()), 2);
        assert_eq!(reg.handle(now, 1001, &r, peer()).status, 401);
        assert!(reg.contacts("1001", now).is_empty());
    }

    #[test]
    fn register_with_md5_and_sha256() {
        let users = [("1001".to_string(), "pw".to_string())];
        let mut reg = Registrar::new("screenpop", users)
            .with_algorithms(&[Algorithm::Sha256, Algorithm::Md5]);
        for (alg, cseq) in [(Algorithm::Md5, 1), (Algorithm::Sha256, 10)] {
            let ok = authorize(&mut reg, "1001", "pw", alg, "", cseq);
            assert_eq!(ok.status, 200, "{alg:?}");
            assert!(ok
                .headers
                .get(&HeaderName::Contact)
                .unwrap()
                .contains("expires=3600"));
        }
        assert_eq!(reg.contacts("1001", Instant::now()).len(), 1);
    }

    #[test]
    fn wrong_password_and_unknown_user_look_the_same() {
        let mut reg = Registrar::new("screenpop", [("1001".to_string(), "pw".to_string())]);
        let bad = authorize(&mut reg, "1001", "nope", Algorithm::Md5, "", 1);
        let unknown = authorize(&mut reg, "9999", "pw", Algorithm::Md5, "", 1);
        assert_eq!(bad.status, 401);
        assert_eq!(unknown.status, 401);
        assert_eq!(
            bad.headers.count(&HeaderName::WwwAuthenticate),
            unknown.headers.count(&HeaderName::WwwAuthenticate)
        );
        assert!(reg.contacts("1001", Instant::now()).is_empty());
    }

    #[test]
    fn unregister_with_expires_zero() {
        let mut reg = Registrar::new("screenpop", [("1001".to_string(), "pw".to_string())]);
        assert_eq!(
            authorize(&mut reg, "1001", "pw", Algorithm::Md5, "", 1).status,
            200
        );
        let r = authorize(&mut reg, "1001", "pw", Algorithm::Md5, "Expires: 0\r\n", 5);
        assert_eq!(r.status, 200);
        assert!(reg.contacts("1001", Instant::now()).is_empty());
        let brief = authorize(&mut reg, "1001", "pw", Algorithm::Md5, "Expires: 5\r\n", 9);
        assert_eq!(brief.status, 423);
    }

    #[test]
    fn unknown_scheme_is_challenged() {
        let mut reg = Registrar::new("screenpop", [("1001".to_string(), "pw".to_string())]);
        let r = register(
            "1001",
            "Authorization: NoOneKnowsThisScheme opaque-data=here\r\n",
            1,
        );
        assert_eq!(reg.handle(Instant::now(), 1, &r, peer()).status, 401);
    }
}
