//! Fuzz target `filter_wasm`: see [`keygate_fuzz::filter_wasm`].
#![no_main]

libfuzzer_sys::fuzz_target!(
    |case: keygate_fuzz::request::Case| keygate_fuzz::filter_wasm::check(&case)
);
