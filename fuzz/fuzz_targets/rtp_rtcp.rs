#![no_main]
//! See `screenpop::fuzzing::rtp_rtcp` for the input's shape and the invariants checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| screenpop::fuzzing::rtp_rtcp(data));
