//! The SHA-256 digest of a key string: what the key set stores instead of the key itself.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::hex;

/// Longest input that fits in one SHA-256 block with its padding (a `0x80` byte and the 8-byte
/// length).
const ONE_BLOCK_MAX: usize = 55;

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// The SHA-256 digest of a whole API key string (prefix, body and checksum).
///
/// Equality (`==`) is constant-time (through `subtle`), so comparing a digest derived from a
/// presented key with a stored one does not leak how many leading bytes matched.
///
/// `Ord` is plain lexicographic byte order. It exists so that key sets can be sorted and
/// binary-searched; the order is over SHA-256 outputs, not over secret material, and a search
/// always ends with a constant-time equality check (see [`crate::keyset::KeySet::lookup`]).
#[derive(Clone, Copy)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of a key: SHA-256 over the UTF-8 bytes of the whole key string.
    #[must_use]
    pub fn of(key: &str) -> Self {
        let bytes = key.as_bytes();
        if bytes.len() > ONE_BLOCK_MAX {
            return Self(Sha256::digest(bytes).into());
        }
        // A key fits in one block with its padding (FIPS 180-4, 5.1.1): padded here and
        // compressed once by `sha2`, without the streaming hasher's buffering (the filter hashes
        // a key on every request).
        let mut block = [0u8; 64];
        block[..bytes.len()].copy_from_slice(bytes);
        block[bytes.len()] = 0x80;
        block[56..].copy_from_slice(&(bytes.len() as u64 * 8).to_be_bytes());
        let mut state = SHA256_IV;
        sha2::block_api::compress256(&mut state, &[block]);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        Self(out)
    }

    /// Wraps 32 raw digest bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 raw digest bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64-character lower-case hex form.
    #[must_use]
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        hex::encode_into(&self.0, &mut s);
        s
    }

    /// Parses a 64-character hex form (either case).
    ///
    /// # Errors
    /// [`HexError::Length`] if `s` is not 64 characters, [`HexError::Char`] if one is not a hex digit.
    pub fn from_hex(s: &str) -> Result<Self, HexError> {
        hex::decode::<32>(s).map(Self).map_err(|p| match p {
            hex::HexProblem::Length => HexError::Length,
            hex::HexProblem::Char => HexError::Char,
        })
    }
}

/// Why a hex digest could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// Not exactly 64 hex characters.
    #[error("a digest is 64 hex characters")]
    Length,
    /// A character that is not a hex digit.
    #[error("a digest contains a character that is not a hex digit")]
    Char,
}

/// Constant-time equality of two 32-byte values: the bytes are folded into one word with XOR
/// and OR (no data-dependent branch), and only that word is compared, through `subtle`.
#[must_use]
pub(crate) fn ct_eq_32(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut acc = 0u64;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let mut xa = [0u8; 8];
        let mut ya = [0u8; 8];
        xa.copy_from_slice(x);
        ya.copy_from_slice(y);
        acc |= u64::from_ne_bytes(xa) ^ u64::from_ne_bytes(ya);
    }
    acc.ct_eq(&0).into()
}

impl PartialEq for Digest {
    fn eq(&self, other: &Self) -> bool {
        ct_eq_32(&self.0, &other.0)
    }
}

impl Eq for Digest {}

impl ConstantTimeEq for Digest {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.0.ct_eq(&other.0)
    }
}

impl PartialOrd for Digest {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Digest {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

impl Hash for Digest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl From<[u8; 32]> for Digest {
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_block_path_agrees_with_the_streaming_hasher_at_every_length() {
        // Every length from empty to several blocks, across the one-block limit (55, 56, 64).
        let text: String = (0..200u32)
            .map(|i| char::from(b'!' + u8::try_from(i * 7 % 94).unwrap()))
            .collect();
        for len in 0..=text.len() {
            let s = &text[..len];
            let expected: [u8; 32] = Sha256::digest(s.as_bytes()).into();
            assert_eq!(Digest::of(s).as_bytes(), &expected, "length {len}");
        }
    }

    #[test]
    fn sha256_of_known_strings() {
        assert_eq!(
            Digest::of("").to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            Digest::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let d = Digest::of("kg_live_x");
        assert_eq!(Digest::from_hex(&d.to_hex()), Ok(d));
        assert_eq!(Digest::from_hex(&d.to_hex().to_uppercase()), Ok(d));
        assert_eq!(Digest::from_hex("abc"), Err(HexError::Length));
        let mut bad = d.to_hex();
        bad.replace_range(10..11, "g");
        assert_eq!(Digest::from_hex(&bad), Err(HexError::Char));
    }

    #[test]
    fn equality_and_order() {
        let a = Digest::from_bytes([1; 32]);
        let mut b_bytes = [1; 32];
        b_bytes[31] = 2;
        let b = Digest::from_bytes(b_bytes);
        assert_ne!(a, b);
        assert!(a < b);
        assert_eq!(a, Digest::from_bytes([1; 32]));
        for i in 0..32 {
            let mut c = [1; 32];
            c[i] ^= 0x80;
            assert_ne!(a, Digest::from_bytes(c), "byte {i}");
            assert!(ct_eq_32(&c, &c));
        }
        assert_eq!(format!("{a:?}"), format!("Digest({})", "01".repeat(32)));
    }
}
