//! Fuzz target `plugin_config`: see [`keygate_fuzz::config`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate_fuzz::config::check(data));
