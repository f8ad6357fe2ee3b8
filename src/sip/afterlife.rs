//! What ended calls leave behind: the dispatcher answers their peers' late retransmissions.
//!
//! RFC 3261 §17.2.2 keeps a completed non-INVITE server transaction for Timer J (32 s over UDP)
//! so that a retransmitted request, sent because our final response was lost, gets that response
//! again; RFC 6026 §7.1 keeps an accepted INVITE transaction for Timer L so that a late copy of
//! the INVITE is absorbed rather than taken for a new call. Keeping each ended call's task alive
//! for that (its state, its queues, its dialogs) cost tens of kilobytes per call for 32 s: at
//! 500 set-ups a second, 16,000 ended calls and half a gigabyte. A call now hands the few bytes
//! that matter here when it goes, and the dispatcher consults this table for requests no live
//! call owns. The same holds for our INVITEs refused with an error (a 487 after a CANCEL, a
//! 401 before an authenticated retry): their client transactions ACK repeats of the error for
//! Timer D (§17.1.1.2), and the dispatcher now sends that ACK for an ended call.
//!
//! Sans-IO: fed keys and `now`, it says what to send; the dispatcher sends it.

use std::collections::HashMap;
use std::time::Instant;

use super::peer::Peer;
use super::transaction::{Remains, ServerKey};

/// What to do with a request that belongs to an ended call's finished transaction.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer<'a> {
    /// Send our final response again (the peer did not get it).
    Repeat(&'a [u8], Peer),
    /// Drop it: a late copy of an INVITE that was answered and acknowledged.
    Absorb,
}

#[derive(Debug)]
struct Entry {
    response: Option<Vec<u8>>,
    peer: Peer,
    until: Instant,
}

/// The finished transactions and Call-IDs of ended calls, each until its timer runs out.
#[derive(Debug, Default)]
pub struct Afterlife {
    transactions: HashMap<ServerKey, Entry>,
    /// Our INVITEs refused with an error, by branch: the ACK to send again for a repeat.
    acks: HashMap<String, Entry>,
    /// Responses for these Call-IDs are late copies for an ended call, not strays.
    call_ids: HashMap<String, Instant>,
}

impl Afterlife {
    /// Takes over what an ended call left: its finished transactions, and its Call-IDs for as
    /// long as the last of them lasts (or `quiet_until`, when later: late responses to our BYE).
    pub fn bury(
        &mut self,
        remains: impl IntoIterator<Item = (Remains, Peer)>,
        call_ids: impl IntoIterator<Item = String>,
        quiet_until: Instant,
    ) {
        let mut last = quiet_until;
        for (r, peer) in remains {
            match r {
                Remains::Replay {
                    key,
                    response,
                    until,
                } => {
                    last = last.max(until);
                    self.transactions.insert(
                        key,
                        Entry {
                            response,
                            peer,
                            until,
                        },
                    );
                }
                Remains::Reack { branch, ack, until } => {
                    last = last.max(until);
                    self.acks.insert(
                        branch,
                        Entry {
                            response: Some(ack),
                            peer,
                            until,
                        },
                    );
                }
                Remains::Nothing => {}
            }
        }
        for id in call_ids {
            self.call_ids.insert(id, last);
        }
    }

    /// The answer to a request no live call owns, if it belongs to an ended call's transaction.
    pub fn request(&self, now: Instant, key: &ServerKey) -> Option<Answer<'_>> {
        let e = self.transactions.get(key).filter(|e| now < e.until)?;
        Some(match &e.response {
            Some(bytes) => Answer::Repeat(bytes, e.peer),
            None => Answer::Absorb,
        })
    }

    /// The ACK to send again for a repeat of an error response to one of an ended call's
    /// INVITEs, sent on `branch` (the repeat means our ACK was lost).
    pub fn response(&self, now: Instant, branch: &str) -> Option<(&[u8], Peer)> {
        let e = self.acks.get(branch).filter(|e| now < e.until)?;
        Some((e.response.as_deref()?, e.peer))
    }

    /// True if a response with this Call-ID is a late copy for a call that has just ended.
    pub fn ended_recently(&self, now: Instant, call_id: &str) -> bool {
        self.call_ids.get(call_id).is_some_and(|&until| now < until)
    }

    /// Forgets what has run out.
    pub fn expire(&mut self, now: Instant) {
        self.transactions.retain(|_, e| now < e.until);
        self.acks.retain(|_, e| now < e.until);
        self.call_ids.retain(|_, until| now < *until);
    }

    /// Transactions held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.transactions.len() + self.acks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Method;
    use crate::sip::peer::Transport;
    use std::time::Duration;

    fn key(branch: &str, method: Method) -> ServerKey {
        ServerKey::Rfc3261 {
            branch: branch.into(),
            sent_by: "192.0.2.1:5060".into(),
            method,
        }
    }

    fn peer() -> Peer {
        Peer {
            addr: "192.0.2.1:5060".parse().unwrap(),
            transport: Transport::Udp,
        }
    }

    #[test]
    fn repeats_absorbs_and_forgets() {
        let t0 = Instant::now();
        let j = t0 + Duration::from_secs(32);
        let mut a = Afterlife::default();
        a.bury(
            [
                (
                    Remains::Replay {
                        key: key("z9hG4bKbye", Method::Bye),
                        response: Some(b"SIP/2.0 200 OK\r\n\r\n".to_vec()),
                        until: j,
                    },
                    peer(),
                ),
                (
                    Remains::Replay {
                        key: key("z9hG4bKinv", Method::Invite),
                        response: None,
                        until: j,
                    },
                    peer(),
                ),
                (Remains::Nothing, peer()),
            ],
            ["call-1".to_string()],
            t0 + Duration::from_secs(5),
        );
        assert_eq!(a.len(), 2);
        assert_eq!(
            a.request(t0, &key("z9hG4bKbye", Method::Bye)),
            Some(Answer::Repeat(b"SIP/2.0 200 OK\r\n\r\n", peer()))
        );
        assert_eq!(
            a.request(t0, &key("z9hG4bKinv", Method::Invite)),
            Some(Answer::Absorb)
        );
        // Another branch is another transaction: not ours to answer.
        assert_eq!(a.request(t0, &key("z9hG4bKnew", Method::Bye)), None);
        assert!(a.ended_recently(t0, "call-1"));
        assert!(!a.ended_recently(t0, "call-2"));

        // Timer J over: a retransmission is a stranger's again, and everything is forgotten.
        assert_eq!(a.request(j, &key("z9hG4bKbye", Method::Bye)), None);
        assert!(!a.ended_recently(j, "call-1"));
        a.expire(j);
        assert!(a.is_empty());
        assert!(a.call_ids.is_empty());
    }

    #[test]
    fn acks_a_repeated_refusal_of_an_ended_calls_invite() {
        let t0 = Instant::now();
        let d = t0 + Duration::from_secs(32);
        let mut a = Afterlife::default();
        a.bury(
            [(
                Remains::Reack {
                    branch: "z9hG4bKinv".into(),
                    ack: b"ACK sip:gw SIP/2.0\r\n\r\n".to_vec(),
                    until: d,
                },
                peer(),
            )],
            ["call-2".to_string()],
            t0,
        );
        assert_eq!(a.len(), 1);
        assert_eq!(
            a.response(t0, "z9hG4bKinv"),
            Some((&b"ACK sip:gw SIP/2.0\r\n\r\n"[..], peer()))
        );
        assert_eq!(a.response(t0, "z9hG4bKother"), None);
        // Not a request of ours to answer.
        assert_eq!(a.request(t0, &key("z9hG4bKinv", Method::Invite)), None);
        // The Call-ID's responses are late copies for as long as the ACK is kept.
        assert!(a.ended_recently(t0 + Duration::from_secs(31), "call-2"));
        assert_eq!(a.response(d, "z9hG4bKinv"), None, "Timer D is over");
        a.expire(d);
        assert!(a.is_empty());
    }
}
