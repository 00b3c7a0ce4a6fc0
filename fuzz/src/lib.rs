//! Keygate's fuzz checks: one `check` function per fuzz target, shared by the cargo-fuzz targets
//! (nightly, libFuzzer) and by the stable replay tests in `tests/` (corpus plus seeded inputs).
//!
//! Every check panics, with a message that says which property broke, when the code under test
//! misbehaves; on well-behaved code it returns quietly for any input.

pub mod config;
pub mod filter_wasm;
pub mod harness;
pub mod key;
pub mod keyset;
pub mod request;
pub mod wire;

/// Rewrites the CRC32 trailer of a would-be key-set message so mutated bodies get past the
/// checksum and reach the deeper checks. Returns `None` when the input is shorter than a header.
#[must_use]
pub fn with_fixed_crc(bytes: &[u8]) -> Option<Vec<u8>> {
    let n = bytes.len();
    if n < keygate_protocol::wire::HEADER_LEN + keygate_protocol::wire::TRAILER_LEN {
        return None;
    }
    let mut out = bytes.to_vec();
    let crc = crc32fast::hash(&out[..n - 4]);
    out[n - 4..].copy_from_slice(&crc.to_le_bytes());
    Some(out)
}
