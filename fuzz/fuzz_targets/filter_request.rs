//! Fuzz target `filter_request`: see [`keygate_fuzz::request`].
#![no_main]

libfuzzer_sys::fuzz_target!(
    |case: keygate_fuzz::request::Case| keygate_fuzz::request::check(&case)
);
