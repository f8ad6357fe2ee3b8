#![no_main]
//! See `screenpop::fuzzing::sip_message` for the input's shape and the invariants checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| screenpop::fuzzing::sip_message(data));
