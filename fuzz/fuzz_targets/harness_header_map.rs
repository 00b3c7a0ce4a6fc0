//! Fuzz target `harness_header_map`: see [`keygate_fuzz::harness`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate_fuzz::harness::check(data));
