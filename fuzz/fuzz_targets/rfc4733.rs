#![no_main]
//! See `screenpop::fuzzing::rfc4733` for the input's shape and the invariants checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| screenpop::fuzzing::rfc4733(data));
