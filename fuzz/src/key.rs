//! `key_parse`: `key::parse` never panics, accepted keys round-trip, and a single-character
//! substitution or adjacent transposition is always rejected by the checksum.

use keygate_protocol::Digest;
use keygate_protocol::key::{self, KeyFormatError};
use sha2::Digest as _;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// An independent implementation of the checksum: base62 of CRC32 (IEEE), most significant first.
#[must_use]
pub fn reference_checksum(data: &[u8]) -> String {
    let mut n = crc32fast::hash(data);
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Builds a well-formed key from arbitrary bytes: a valid prefix, a base62 body of 30 to 89
/// characters, and the reference checksum.
#[must_use]
pub fn synthesize(bytes: &[u8]) -> String {
    let mut it = bytes
        .iter()
        .copied()
        .chain(std::iter::repeat(0))
        .enumerate();
    let mut next = move || {
        let (i, b) = it.next().unwrap_or((0, 0));
        b.wrapping_add((i as u8).wrapping_mul(31))
    };
    let prefix_len = 1 + usize::from(next() % 20);
    let mut prefix = String::new();
    for i in 0..prefix_len {
        let b = next();
        let last = i + 1 == prefix_len;
        let c = if i == 0 {
            char::from(b'a' + b % 26)
        } else if b % 7 == 0 && !last && !prefix.ends_with('_') {
            '_'
        } else {
            char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[usize::from(b % 36)])
        };
        prefix.push(c);
    }
    let body_len = 30 + usize::from(next() % 60);
    let body: String = (0..body_len)
        .map(|_| char::from(ALPHABET[usize::from(next() % 62)]))
        .collect();
    let head = format!("{prefix}_{body}");
    let sum = reference_checksum(head.as_bytes());
    format!("{head}{sum}")
}

/// The fuzz target: parses the input as it is and, when the first byte is odd, a key
/// synthesized from the rest (which must parse).
pub fn check(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        match key::parse(s) {
            Ok(parsed) => check_parsed(s, parsed),
            Err(e) => check_rejected(s, e),
        }
    }
    if let Some((&mode, rest)) = data.split_first()
        && mode & 1 == 1
    {
        let k = synthesize(rest);
        match key::parse(&k) {
            Ok(parsed) => check_parsed(&k, parsed),
            Err(e) => panic!("a well-formed key {k:?} was rejected: {e:?}"),
        }
    }
}

fn check_rejected(s: &str, e: KeyFormatError) {
    if s.is_empty() {
        assert_eq!(e, KeyFormatError::Empty);
    } else if s.len() > key::MAX_KEY_LEN {
        assert_eq!(e, KeyFormatError::TooLong);
    }
    assert!(!e.code().is_empty());
}

fn check_parsed(s: &str, p: key::ParsedKey<'_>) {
    assert_eq!(p.as_str(), s);
    assert_eq!(
        format!("{}_{}{}", p.prefix(), p.body(), p.checksum()),
        s,
        "parts do not rebuild the key"
    );
    assert!(
        key::validate_prefix(p.prefix()).is_ok(),
        "accepted a bad prefix"
    );
    assert!(p.body().len() >= key::MIN_BODY_LEN, "accepted a short body");
    assert!(!p.body().contains('_') && !p.checksum().contains('_'));
    let head = &s[..s.len() - key::CHECKSUM_LEN];
    assert_eq!(
        p.checksum(),
        reference_checksum(head.as_bytes()),
        "checksum differs from CRC32/base62"
    );
    assert_eq!(&key::checksum(head.as_bytes())[..], p.checksum().as_bytes());
    assert_eq!(
        p.display_prefix(),
        format!("{}_{}", p.prefix(), &p.body()[..key::DISPLAY_BODY_LEN])
    );
    let sha: [u8; 32] = sha2::Sha256::digest(s.as_bytes()).into();
    assert_eq!(
        p.digest(),
        Digest::from_bytes(sha),
        "digest is not SHA-256 of the key"
    );
    assert_eq!(p.digest(), Digest::of(s));
    // Round trip: the rebuilt string parses to the same parts.
    let rebuilt = format!("{}_{}{}", p.prefix(), p.body(), p.checksum());
    let again = key::parse(&rebuilt).expect("a rebuilt key parses");
    assert_eq!(again.prefix(), p.prefix());
    assert_eq!(again.body(), p.body());

    // Every single-character substitution (keeping the character class, so only the checksum
    // can catch it) and every adjacent transposition of distinct characters is rejected.
    let bytes = s.as_bytes();
    let sep = p.prefix().len();
    for i in 0..bytes.len() {
        let c = bytes[i];
        let replacement = match c {
            b'_' => continue,
            _ if i > sep => {
                let v = ALPHABET.iter().position(|&a| a == c).expect("base62");
                ALPHABET[(v + 1 + i % 61) % 62]
            }
            b'a'..=b'z' => b'a' + (c - b'a' + 1 + (i % 25) as u8) % 26,
            b'0'..=b'9' => b'0' + (c - b'0' + 1 + (i % 9) as u8) % 10,
            _ => unreachable!("a parsed key is ASCII [a-z0-9_A-Z]"),
        };
        let mut m = bytes.to_vec();
        m[i] = replacement;
        let m = String::from_utf8(m).expect("ASCII");
        assert_eq!(
            key::parse(&m).map(|k| k.as_str().to_owned()),
            Err(KeyFormatError::BadChecksum),
            "substitution at {i} not caught"
        );
        if i > sep + 1 && bytes[i - 1] != c {
            let mut t = bytes.to_vec();
            t.swap(i - 1, i);
            let t = String::from_utf8(t).expect("ASCII");
            assert_eq!(
                key::parse(&t).map(|k| k.as_str().to_owned()),
                Err(KeyFormatError::BadChecksum),
                "transposition at {i} not caught"
            );
        }
    }
}
