#![no_main]
//! See `screenpop::fuzzing::sdp` for the input's shape and the invariants checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| screenpop::fuzzing::sdp(data));
