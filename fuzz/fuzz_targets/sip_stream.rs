#![no_main]
//! See `screenpop::fuzzing::sip_stream` for the input's shape and the invariants checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| screenpop::fuzzing::sip_stream(data));
