//! The API key format `<prefix>_<body><checksum>`: generate, parse, checksum and display form.
//!
//! - **prefix**: `[a-z][a-z0-9]*(_[a-z0-9]+)*`, at most [`MAX_PREFIX_LEN`] characters
//!   (`kg_live`, `acme_test`);
//! - **body**: base62 characters (`0-9A-Za-z`) from a CSPRNG; [`generate`] makes
//!   [`GENERATED_BODY_LEN`] (190 bits), [`parse`] accepts [`MIN_BODY_LEN`] or more;
//! - **checksum**: [`CHECKSUM_LEN`] base62 characters of the CRC32 (IEEE) of the bytes
//!   `<prefix>_<body>`, most significant digit first, left-padded with `0`.
//!
//! Base62 digit values follow the alphabet order: `0`–`9` are 0–9, `A`–`Z` are 10–35 and
//! `a`–`z` are 36–61. As with GitHub's token format, the checksum lets a scanner or the filter
//! reject a mistyped or made-up key offline, without a lookup.
//!
//! [`parse`] caps its input at [`MAX_KEY_LEN`] bytes before any other work, splits at the **last**
//! `_` (the body and checksum never contain one), and does not allocate.

use std::fmt;

use rand::Rng as _;
use zeroize::Zeroize;

use crate::Digest;

/// The longest key string [`parse`] looks at, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// The longest prefix, in characters.
pub const MAX_PREFIX_LEN: usize = 20;
/// The shortest body [`parse`] accepts (30 base62 characters are more than 178 bits).
pub const MIN_BODY_LEN: usize = 30;
/// The body length [`generate`] produces (32 base62 characters are more than 190 bits).
pub const GENERATED_BODY_LEN: usize = 32;
/// The length of the base62 CRC32 checksum at the end of a key.
pub const CHECKSUM_LEN: usize = 6;
/// How many body characters the display form shows.
pub const DISPLAY_BODY_LEN: usize = 8;

/// The base62 alphabet, in digit-value order.
pub const BASE62_ALPHABET: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a string is not a well-formed key (or a prefix is not a valid prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum KeyFormatError {
    /// The input is empty.
    #[error("the key is empty")]
    Empty,
    /// The input is longer than [`MAX_KEY_LEN`] bytes.
    #[error("the key is longer than 256 bytes")]
    TooLong,
    /// There is no `_`, or the part before the last `_` is not a valid prefix.
    #[error("the key prefix is missing or invalid")]
    BadPrefix,
    /// The body or checksum contains a character outside `0-9A-Za-z`.
    #[error("the key body contains a character outside base62")]
    BadCharset,
    /// The body is shorter than [`MIN_BODY_LEN`] characters (plus the checksum).
    #[error("the key body is too short")]
    BadLength,
    /// The checksum does not match the prefix and body.
    #[error("the key checksum does not match")]
    BadChecksum,
}

impl KeyFormatError {
    /// A short, stable, machine-readable code: `empty`, `too_long`, `bad_prefix`,
    /// `bad_charset`, `bad_length` or `bad_checksum`.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLong => "too_long",
            Self::BadPrefix => "bad_prefix",
            Self::BadCharset => "bad_charset",
            Self::BadLength => "bad_length",
            Self::BadChecksum => "bad_checksum",
        }
    }
}

/// Checks a prefix: `[a-z][a-z0-9]*(_[a-z0-9]+)*`, 1 to [`MAX_PREFIX_LEN`] characters.
///
/// # Errors
/// [`KeyFormatError::BadPrefix`] if it is not.
pub const fn validate_prefix(prefix: &str) -> Result<(), KeyFormatError> {
    let b = prefix.as_bytes();
    if b.is_empty() || b.len() > MAX_PREFIX_LEN || !b[0].is_ascii_lowercase() {
        return Err(KeyFormatError::BadPrefix);
    }
    let mut i = 1;
    while i < b.len() {
        let c = b[i];
        let ok = match c {
            b'a'..=b'z' | b'0'..=b'9' => true,
            // A `_` must be followed by a letter or digit: no `__`, no trailing `_`.
            b'_' => i + 1 < b.len() && b[i + 1] != b'_',
            _ => false,
        };
        if !ok {
            return Err(KeyFormatError::BadPrefix);
        }
        i += 1;
    }
    Ok(())
}

const fn base62_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'Z' => Some(c - b'A' + 10),
        b'a'..=b'z' => Some(c - b'a' + 36),
        _ => None,
    }
}

/// Whether each byte is a base62 digit.
const IS_BASE62: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = base62_value(b as u8).is_some();
        b += 1;
    }
    table
};

/// The position of the last byte of `bytes` that is not a base62 character.
fn last_non_base62(bytes: &[u8]) -> Option<usize> {
    bytes.iter().rposition(|&b| !IS_BASE62[usize::from(b)])
}

/// The [`CHECKSUM_LEN`] base62 characters of the CRC32 (IEEE) of `data`, most significant first.
#[must_use]
pub fn checksum(data: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(data);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62_ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// A well-formed key borrowed from the input string, as returned by [`parse`].
///
/// Holding a `ParsedKey` says nothing about whether the key exists: look its [`digest`](Self::digest)
/// up in a [`KeySet`](crate::keyset::KeySet).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    key: &'a str,
    /// Byte index of the last `_`.
    sep: usize,
}

impl<'a> ParsedKey<'a> {
    /// The prefix, without the separating `_`.
    #[must_use]
    pub fn prefix(&self) -> &'a str {
        &self.key[..self.sep]
    }

    /// The random body (without the checksum).
    #[must_use]
    pub fn body(&self) -> &'a str {
        &self.key[self.sep + 1..self.key.len() - CHECKSUM_LEN]
    }

    /// The checksum characters.
    #[must_use]
    pub fn checksum(&self) -> &'a str {
        &self.key[self.key.len() - CHECKSUM_LEN..]
    }

    /// The whole key.
    #[must_use]
    pub fn as_str(&self) -> &'a str {
        self.key
    }

    /// SHA-256 of the whole key string.
    #[must_use]
    pub fn digest(&self) -> Digest {
        Digest::of(self.key)
    }

    /// The display form for listings: the prefix, `_`, and the first 8 body characters
    /// (`kg_live_AbCdEfGh`). Never enough to use the key.
    #[must_use]
    pub fn display_prefix(&self) -> String {
        self.key[..self.sep + 1 + DISPLAY_BODY_LEN].to_owned()
    }
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedKey")
            .field("display_prefix", &self.display_prefix())
            .finish_non_exhaustive()
    }
}

/// Parses and checks a key without allocating.
///
/// Checks, in this order: empty, longer than [`MAX_KEY_LEN`] bytes (before anything else looks
/// at the input), a valid prefix before the last `_`, base62 characters after it, at least
/// [`MIN_BODY_LEN`] + [`CHECKSUM_LEN`] of them, and the checksum.
///
/// # Errors
/// The first [`KeyFormatError`] in that order.
pub fn parse(input: &str) -> Result<ParsedKey<'_>, KeyFormatError> {
    if input.is_empty() {
        return Err(KeyFormatError::Empty);
    }
    if input.len() > MAX_KEY_LEN {
        return Err(KeyFormatError::TooLong);
    }
    let bytes = input.as_bytes();
    // One backward pass to the last byte that is not base62: it must be the `_` that ends the
    // prefix.
    let sep = match last_non_base62(bytes) {
        Some(sep) if bytes[sep] == b'_' => sep,
        Some(bad) => {
            // Errors in the order of the checks: prefix first, then characters.
            let sep = bytes[..bad]
                .iter()
                .rposition(|&b| b == b'_')
                .ok_or(KeyFormatError::BadPrefix)?;
            validate_prefix(&input[..sep])?;
            return Err(KeyFormatError::BadCharset);
        }
        None => return Err(KeyFormatError::BadPrefix),
    };
    validate_prefix(&input[..sep])?;
    let rest = &bytes[sep + 1..];
    if rest.len() < MIN_BODY_LEN + CHECKSUM_LEN {
        return Err(KeyFormatError::BadLength);
    }
    let split = bytes.len() - CHECKSUM_LEN;
    let expected = checksum(&bytes[..split]);
    // Both sides come from the input, so the compare guards no secret and need not be constant
    // time; a fold of the six bytes is cheaper in wasm than a call per byte.
    let diff = expected
        .iter()
        .zip(&bytes[split..])
        .fold(0, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(KeyFormatError::BadChecksum);
    }
    Ok(ParsedKey { key: input, sep })
}

/// A freshly generated secret key. It owns the key string and wipes it when dropped.
///
/// `Debug` shows only the display form; the secret is reachable only through
/// [`expose_secret`](Self::expose_secret) (or [`into_string`](Self::into_string)).
#[derive(Clone)]
pub struct SecretKey {
    key: String,
    prefix_len: usize,
}

impl SecretKey {
    /// The whole key string. Show it to its owner once; store only its [`digest`](Self::digest).
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.key
    }

    /// SHA-256 of the whole key string.
    #[must_use]
    pub fn digest(&self) -> Digest {
        Digest::of(&self.key)
    }

    /// The prefix, without the separating `_`.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.key[..self.prefix_len]
    }

    /// The display form for listings: prefix, `_` and the first 8 body characters.
    #[must_use]
    pub fn display_prefix(&self) -> String {
        self.key[..self.prefix_len + 1 + DISPLAY_BODY_LEN].to_owned()
    }

    /// Gives up the key string (the caller becomes responsible for not leaking it).
    #[must_use]
    pub fn into_string(mut self) -> String {
        std::mem::take(&mut self.key)
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("display_prefix", &self.display_prefix())
            .finish_non_exhaustive()
    }
}

/// Generates a new key with `prefix`: [`GENERATED_BODY_LEN`] base62 characters from the
/// thread-local CSPRNG (ChaCha seeded by the OS; `random_get` on WASI), then the checksum.
///
/// # Errors
/// [`KeyFormatError::BadPrefix`] if `prefix` is not a valid prefix.
pub fn generate(prefix: &str) -> Result<SecretKey, KeyFormatError> {
    validate_prefix(prefix)?;
    let mut key = String::with_capacity(prefix.len() + 1 + GENERATED_BODY_LEN + CHECKSUM_LEN);
    key.push_str(prefix);
    key.push('_');
    let mut rng = rand::rng();
    let mut pool = [0u8; 64];
    let mut written = 0;
    while written < GENERATED_BODY_LEN {
        rng.fill_bytes(&mut pool);
        for &b in &pool {
            // Rejection sampling: 248 = 4 * 62, so `b % 62` is uniform over the accepted bytes.
            if b < 248 && written < GENERATED_BODY_LEN {
                key.push(char::from(BASE62_ALPHABET[usize::from(b % 62)]));
                written += 1;
            }
        }
    }
    pool.zeroize();
    let sum = checksum(key.as_bytes());
    key.extend(sum.iter().map(|&c| char::from(c)));
    Ok(SecretKey {
        key,
        prefix_len: prefix.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The first, three-pass version of [`parse`], kept as the specification of its errors.
    fn parse_reference(input: &str) -> Result<(&str, usize), KeyFormatError> {
        if input.is_empty() {
            return Err(KeyFormatError::Empty);
        }
        if input.len() > MAX_KEY_LEN {
            return Err(KeyFormatError::TooLong);
        }
        let bytes = input.as_bytes();
        let sep = bytes
            .iter()
            .rposition(|&b| b == b'_')
            .ok_or(KeyFormatError::BadPrefix)?;
        validate_prefix(&input[..sep])?;
        let rest = &bytes[sep + 1..];
        if !rest.iter().all(|&b| base62_value(b).is_some()) {
            return Err(KeyFormatError::BadCharset);
        }
        if rest.len() < MIN_BODY_LEN + CHECKSUM_LEN {
            return Err(KeyFormatError::BadLength);
        }
        let split = bytes.len() - CHECKSUM_LEN;
        if checksum(&bytes[..split]) != bytes[split..] {
            return Err(KeyFormatError::BadChecksum);
        }
        Ok((input, sep))
    }

    proptest! {
        /// Valid keys with one character replaced, inserted or removed, and short strings over
        /// the characters that matter: the one-pass parser answers as the reference does.
        #[test]
        fn parse_agrees_with_its_reference(
            edit in 0usize..3, at in any::<prop::sample::Index>(), c in "[a-zA-Z0-9_\\-. é]",
            other in "[a-z0-9_A-Z!.]{0,50}",
        ) {
            let key = generate("kg_live").unwrap().expose_secret().to_owned();
            let mut chars: Vec<char> = key.chars().collect();
            let i = at.index(chars.len());
            let ch = c.chars().next().unwrap();
            match edit {
                0 => chars[i] = ch,
                1 => chars.insert(i, ch),
                _ => { chars.remove(i); }
            }
            for input in [key.clone(), chars.into_iter().collect(), other] {
                let new = parse(&input).map(|p| (p.as_str(), p.sep));
                prop_assert_eq!(new, parse_reference(&input), "{:?}", input);
            }
        }
    }

    #[test]
    fn last_non_base62_agrees_with_a_byte_by_byte_search() {
        let reference = |b: &[u8]| b.iter().rposition(|&c| !BASE62_ALPHABET.contains(&c));
        // Every byte value at every position of base62 runs that end on each side of a word.
        for len in 1..=20 {
            let base: Vec<u8> = (0..len).map(|i| BASE62_ALPHABET[(i * 7) % 62]).collect();
            assert_eq!(last_non_base62(&base), None);
            for at in 0..len {
                for value in 0..=255u8 {
                    let mut bytes = base.clone();
                    bytes[at] = value;
                    assert_eq!(last_non_base62(&bytes), reference(&bytes), "{bytes:?}");
                    // and a second bad byte before it, which must not hide it
                    if at > 0 {
                        bytes[at - 1] = b'_';
                        assert_eq!(last_non_base62(&bytes), reference(&bytes), "{bytes:?}");
                    }
                }
            }
        }
    }

    fn with_checksum(s: &str) -> String {
        let sum = checksum(s.as_bytes());
        format!("{s}{}", std::str::from_utf8(&sum).unwrap())
    }

    #[test]
    fn prefixes() {
        for ok in [
            "kg",
            "kg_live",
            "acme_test",
            "a",
            "a1_b2_c3",
            "abcdefghijklmnopqrst",
        ] {
            assert_eq!(validate_prefix(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Kg",
            "1kg",
            "_kg",
            "kg_",
            "kg__live",
            "kg-live",
            "kg live",
            "abcdefghijklmnopqrstu",
            "kgé",
        ] {
            assert_eq!(
                validate_prefix(bad),
                Err(KeyFormatError::BadPrefix),
                "{bad}"
            );
        }
    }

    #[test]
    fn checksum_is_base62_crc32_msd_first() {
        // CRC32("123456789") is the standard check value 0xCBF43926; the 6 digits, read back
        // most significant first, give it again.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        let s = checksum(b"123456789");
        let mut n: u64 = 0;
        for c in s {
            n = n * 62 + u64::from(base62_value(c).unwrap());
        }
        assert_eq!(n, 0xCBF4_3926);
        // Small values are left-padded with '0'.
        let empty = checksum(b"");
        assert_eq!(crc32fast::hash(b""), 0);
        assert_eq!(&empty, b"000000");
    }

    #[test]
    fn generated_keys_parse() {
        let k = generate("kg_live").unwrap();
        let s = k.expose_secret();
        assert_eq!(
            s.len(),
            "kg_live_".len() + GENERATED_BODY_LEN + CHECKSUM_LEN
        );
        let p = parse(s).unwrap();
        assert_eq!(p.prefix(), "kg_live");
        assert_eq!(k.prefix(), "kg_live");
        assert_eq!(p.body().len(), GENERATED_BODY_LEN);
        assert_eq!(p.digest(), k.digest());
        assert_eq!(p.display_prefix(), k.display_prefix());
        assert_eq!(p.display_prefix().len(), "kg_live_".len() + 8);
        assert!(s.starts_with(&p.display_prefix()));
        assert_ne!(generate("kg_live").unwrap().expose_secret(), s);
        assert_eq!(generate("Bad").unwrap_err(), KeyFormatError::BadPrefix);
    }

    #[test]
    fn debug_hides_the_secret() {
        let k = generate("kg").unwrap();
        let body = &k.expose_secret()[3 + 8..];
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(body), "{dbg}");
        assert!(dbg.contains(&k.display_prefix()));
        let p = parse(k.expose_secret()).unwrap();
        assert!(!format!("{p:?}").contains(body));
    }

    #[test]
    fn every_error_kind() {
        let body = "A".repeat(MIN_BODY_LEN);
        let good = with_checksum(&format!("kg_live_{body}"));
        assert!(parse(&good).is_ok());
        assert_eq!(parse(""), Err(KeyFormatError::Empty));
        assert_eq!(parse(&"a".repeat(257)), Err(KeyFormatError::TooLong));
        assert_eq!(parse("nounderscore"), Err(KeyFormatError::BadPrefix));
        assert_eq!(
            parse(&good.replacen("kg", "KG", 1)),
            Err(KeyFormatError::BadPrefix)
        );
        assert_eq!(
            parse(&good.replacen('A', "-", 1)),
            Err(KeyFormatError::BadCharset)
        );
        assert_eq!(
            parse(&good.replacen('A', "é", 1)),
            Err(KeyFormatError::BadCharset)
        );
        let short = with_checksum(&format!("kg_{}", "A".repeat(MIN_BODY_LEN - 1)));
        assert_eq!(parse(&short), Err(KeyFormatError::BadLength));
        let mut typo = good.clone().into_bytes();
        typo[10] = b'B';
        let typo = String::from_utf8(typo).unwrap();
        assert_eq!(parse(&typo), Err(KeyFormatError::BadChecksum));
        let codes: Vec<_> = [
            KeyFormatError::Empty,
            KeyFormatError::TooLong,
            KeyFormatError::BadPrefix,
            KeyFormatError::BadCharset,
            KeyFormatError::BadLength,
            KeyFormatError::BadChecksum,
        ]
        .iter()
        .map(KeyFormatError::code)
        .collect();
        assert_eq!(
            codes,
            [
                "empty",
                "too_long",
                "bad_prefix",
                "bad_charset",
                "bad_length",
                "bad_checksum"
            ]
        );
    }

    #[test]
    fn longest_key_is_accepted_and_one_more_byte_is_not() {
        let prefix = "a".repeat(MAX_PREFIX_LEN);
        let body_len = MAX_KEY_LEN - MAX_PREFIX_LEN - 1 - CHECKSUM_LEN;
        let key = with_checksum(&format!("{prefix}_{}", "z".repeat(body_len)));
        assert_eq!(key.len(), MAX_KEY_LEN);
        assert_eq!(parse(&key).unwrap().body().len(), body_len);
        let longer = with_checksum(&format!("{prefix}_{}", "z".repeat(body_len + 1)));
        assert_eq!(parse(&longer), Err(KeyFormatError::TooLong));
    }
}
