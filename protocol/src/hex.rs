//! Lower-case hexadecimal encoding and decoding for fixed-size byte arrays.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends the lower-case hex form of `bytes` to `out`.
pub(crate) fn encode_into(bytes: &[u8], out: &mut String) {
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

/// Writes the lower-case hex form of `bytes` into `out` (two bytes each); `out` must be
/// `2 * bytes.len()` long.
pub(crate) fn encode_to_slice(bytes: &[u8], out: &mut [u8]) {
    for (&b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0x0f)];
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Why a hex string could not be decoded into a fixed-size array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HexProblem {
    /// The string does not have exactly two characters per byte.
    Length,
    /// A character is not a hexadecimal digit.
    Char,
}

/// Decodes exactly `N` bytes from `s` (upper- or lower-case hex digits).
pub(crate) fn decode<const N: usize>(s: &str) -> Result<[u8; N], HexProblem> {
    let s = s.as_bytes();
    if s.len() != N * 2 {
        return Err(HexProblem::Length);
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let hi = nibble(pair[0]).ok_or(HexProblem::Char)?;
        let lo = nibble(pair[1]).ok_or(HexProblem::Char)?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}
