//! Media: G.711, RTP relay with latching, RFC 4733 events, the recorder and the RTP port pool.
//! The packet path allocates nothing and takes no lock.

pub mod dtmf;
pub(crate) mod epoll;
pub(crate) mod g711;
pub mod music;
pub mod player;
pub(crate) mod ports;
pub mod recorder;
pub(crate) mod relay;
pub mod srtp;
