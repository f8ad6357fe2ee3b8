#![no_main]
//! See `screenpop::fuzzing::wav_repair` for the input's shape and the invariants checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| screenpop::fuzzing::wav_repair(data));
