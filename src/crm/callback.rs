//! The callback policy: which ended calls get a callback work order, and what it says. The
//! store only stores the work order; the rule lives here so the call simulation and the call
//! task apply the same one.

use crate::store::calls::CallDisposition;

/// The title of the callback work order a call that ended so deserves, or `None` when the
/// caller was served. Every call nobody answered is called back — missed, rejected, abandoned
/// (the caller hung up waiting) — including withheld numbers, whose work order says so.
pub fn callback_title(disposition: CallDisposition, number: Option<&str>) -> Option<String> {
    if disposition == CallDisposition::Answered {
        return None;
    }
    let who = number.unwrap_or("a withheld number");
    Some(format!("Call back {who} ({} call)", disposition.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unanswered_call_is_called_back() {
        assert_eq!(
            callback_title(CallDisposition::Answered, Some("+861")),
            None
        );
        assert_eq!(
            callback_title(CallDisposition::Missed, Some("+8613800138000")).as_deref(),
            Some("Call back +8613800138000 (missed call)")
        );
        assert_eq!(
            callback_title(CallDisposition::Abandoned, None).as_deref(),
            Some("Call back a withheld number (abandoned call)")
        );
        assert!(callback_title(CallDisposition::Rejected, None).is_some());
    }
}
