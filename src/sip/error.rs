//! Errors of the SIP codec. Each variant names the exact violation so that a log line says what
//! was wrong with a peer's message, and [`ParseError::status`] says which response (if any) it
//! deserves (RFC 3261 §8.2, RFC 4475 §3.1.2).

use thiserror::Error;

/// Why a SIP message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("message incomplete: need more bytes")]
    Incomplete,
    #[error("message larger than the {0}-byte limit")]
    TooLarge(usize),
    #[error("header section larger than the {0}-byte limit")]
    HeadersTooLarge(usize),
    #[error("bad start line: {0}")]
    BadStartLine(&'static str),
    #[error("unsupported SIP version {0:?}")]
    BadVersion(String),
    #[error("bad status code")]
    BadStatusCode,
    #[error("bad header line: {0}")]
    BadHeaderLine(&'static str),
    #[error("bad {header} header: {why}")]
    BadHeader {
        header: &'static str,
        why: &'static str,
    },
    #[error("bad URI: {0}")]
    BadUri(&'static str),
    #[error("Content-Length {0}")]
    BadContentLength(&'static str),
    #[error("body shorter than Content-Length")]
    TruncatedBody,
    #[error("Content-Length missing on a stream transport")]
    MissingContentLength,
    #[error("CSeq method {cseq} does not match request method {method}")]
    CSeqMismatch { method: String, cseq: String },
}

impl ParseError {
    /// The status code a request with this error is answered with, when it can be answered at
    /// all (RFC 3261 §8.1.3.3 / §21.5.6: 505 for a version we do not speak, 400 otherwise).
    pub fn status(&self) -> u16 {
        match self {
            ParseError::BadVersion(_) => 505,
            ParseError::TooLarge(_) => 513,
            ParseError::HeadersTooLarge(_) => 400,
            _ => 400,
        }
    }
}
