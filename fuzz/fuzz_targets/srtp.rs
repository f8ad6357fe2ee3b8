#![no_main]
//! See `screenpop::fuzzing::srtp` for the input's shape and the invariants checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| screenpop::fuzzing::srtp(data));
