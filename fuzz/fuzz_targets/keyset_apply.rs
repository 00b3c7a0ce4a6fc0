//! Fuzz target `keyset_apply`: see [`keygate_fuzz::keyset`].
#![no_main]

libfuzzer_sys::fuzz_target!(
    |program: keygate_fuzz::keyset::Program| keygate_fuzz::keyset::check(&program)
);
