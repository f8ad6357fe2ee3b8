//! The SIP stack: codec, transactions, dialogs, digest auth, SDP and the registrar. Everything
//! in here is sans-IO: state machines are fed bytes and `now` and say what to send and when to
//! wake; sockets and clocks live in `transport`, `server` and the call tasks.

pub mod afterlife;
pub mod caller_id;
pub(crate) mod digest;
pub mod error;
pub mod framing;
pub mod headers;
pub mod message;
pub mod pager;
pub mod peer;
pub(crate) mod registrar;
pub mod registration;
pub mod reliable;
pub mod sdp;
pub mod session_timer;
pub mod transaction;
pub mod uri;

pub use error::ParseError;
pub use headers::{CSeq, HeaderName, Headers, NameAddr, Via};
pub use message::{Message, Method, Request, Response};
pub use uri::Uri;
