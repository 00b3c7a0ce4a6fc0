//! Stable equivalents of the fuzz targets: replay the checked-in corpus of every target, then a
//! few hundred seeded pseudo-random inputs, through the same checks (`cargo test` in `fuzz/`).

use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds for {target}");
    files
        .iter()
        .map(|f| std::fs::read(f).expect("seed readable"))
        .collect()
}

/// Deterministic pseudo-random inputs (xorshift64*), lengths 0 to `max_len`.
fn random_inputs(seed: u64, count: usize, max_len: usize) -> Vec<Vec<u8>> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    (0..count)
        .map(|_| {
            let len = (next() as usize) % (max_len + 1);
            (0..len).map(|_| next() as u8).collect()
        })
        .collect()
}

fn all_inputs(target: &str, seed: u64, count: usize, max_len: usize) -> Vec<Vec<u8>> {
    let mut v = corpus(target);
    v.extend(random_inputs(seed, count, max_len));
    v
}

#[test]
fn key_parse() {
    for input in all_inputs("key_parse", 1, 500, 120) {
        keygate_fuzz::key::check(&input);
    }
}

#[test]
fn wire_decode() {
    let mut inputs = all_inputs("wire_decode", 2, 300, 400);
    // Valid messages with one byte changed: most are rejected, some reach the deep checks.
    let seeds = corpus("wire_decode");
    for (i, r) in random_inputs(3, 300, 8).into_iter().enumerate() {
        let mut m = seeds[i % seeds.len()].clone();
        if let (Some(&a), Some(&b)) = (r.first(), r.get(1)) {
            let at = usize::from(a) * 7 % m.len().max(1);
            if let Some(byte) = m.get_mut(at) {
                *byte ^= b | 1;
            }
        }
        inputs.push(m);
    }
    for input in inputs {
        keygate_fuzz::wire::check(&input);
    }
}

fn structured<T: for<'a> Arbitrary<'a>>(input: &[u8]) -> Option<T> {
    T::arbitrary_take_rest(Unstructured::new(input)).ok()
}

#[test]
fn keyset_apply() {
    for input in all_inputs("keyset_apply", 4, 200, 2000) {
        if let Some(p) = structured::<keygate_fuzz::keyset::Program>(&input) {
            keygate_fuzz::keyset::check(&p);
        }
    }
}

#[test]
fn plugin_config() {
    for input in all_inputs("plugin_config", 5, 300, 200) {
        keygate_fuzz::config::check(&input);
    }
}

#[test]
fn filter_request() {
    for input in all_inputs("filter_request", 6, 1000, 300) {
        if let Some(c) = structured::<keygate_fuzz::request::Case>(&input) {
            keygate_fuzz::request::check(&c);
        }
    }
}

#[test]
fn filter_wasm() {
    // Fewer inputs than the native target: each one runs the real filter in the harness.
    for input in all_inputs("filter_wasm", 8, 300, 300) {
        if let Some(c) = structured::<keygate_fuzz::request::Case>(&input) {
            keygate_fuzz::filter_wasm::check(&c);
        }
    }
}

#[test]
fn harness_header_map() {
    for input in all_inputs("harness_header_map", 7, 200, 200) {
        keygate_fuzz::harness::check(&input);
    }
}

/// Regression (found by `fuzz/run.sh 60 harness_header_map`): op 4 let the host write a map
/// pointer over the guest's "out" key name, so a later header-map round trip in the same
/// harness wrote to another key and looked like a host bug. The guest now restores its names.
#[test]
fn harness_header_map_survives_a_raw_write_over_the_guest_key_names() {
    let mut raw = vec![4u8];
    for word in [0u32, 0, 0, 80, 84] {
        raw.extend_from_slice(&word.to_le_bytes());
    }
    raw.extend_from_slice(&[0; 8]);
    keygate_fuzz::harness::check(&raw);
    let nul_in_value = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus/harness_header_map/regression-nul-in-value"),
    )
    .expect("the regression input is checked in");
    keygate_fuzz::harness::check(&nul_in_value);
}

#[test]
fn fixture_configs_parse() {
    // The filter_request fixture's configurations are accepted and round-trip.
    for c in keygate_fuzz::request::CONFIGS {
        keygate_fuzz::config::check(c.as_bytes());
        assert!(keygate_filter_core::config::Config::from_json(c.as_bytes()).is_ok());
    }
}
