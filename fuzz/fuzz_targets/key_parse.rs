//! Fuzz target `key_parse`: see [`keygate_fuzz::key`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate_fuzz::key::check(data));
