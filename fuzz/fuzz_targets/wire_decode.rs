//! Fuzz target `wire_decode`: see [`keygate_fuzz::wire`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate_fuzz::wire::check(data));
