//! The proxy-wasm serialized header map, read in place: borrowed `(name, value)` views of the
//! host's buffer instead of two owned strings per header, and a writer for the same format.
//!
//! Layout (ABI v0.2.1): pair count (u32 LE), then each pair's name and value sizes (u32 LE
//! each), then each name and value followed by a NUL byte.

use std::ops::Range;

/// What stands in for a name or value that is not UTF-8: not empty (a key source that holds it
/// is malformed, not missing) and never a valid key.
pub const NOT_UTF8: &str = "\u{fffd}";

/// The pairs as strings: a name or value that is not UTF-8 becomes [`NOT_UTF8`]. `None` when
/// `bytes` is not a well-formed map.
pub fn parse_str(bytes: &[u8]) -> Option<Vec<(&str, &str)>> {
    let data_start = bytes
        .get(..4)
        .and_then(|c| c.try_into().ok())
        .map_or(0, |c| {
            (u32::from_le_bytes(c) as usize)
                .saturating_mul(8)
                .saturating_add(4)
        });
    match bytes.get(data_start..).map(std::str::from_utf8) {
        // The usual case: every name and value is UTF-8, checked once. Fields start and end
        // next to NUL bytes, so they are on character boundaries.
        Some(Ok(data)) => parse_with(bytes, |k, v| {
            let field = |r: Range<usize>| data.get(r.start - data_start..r.end - data_start);
            (field(k).unwrap_or(NOT_UTF8), field(v).unwrap_or(NOT_UTF8))
        }),
        _ => parse_with(bytes, |k, v| {
            let field = |r: Range<usize>| std::str::from_utf8(&bytes[r]).unwrap_or(NOT_UTF8);
            (field(k), field(v))
        }),
    }
}

/// Walks a serialized map, handing each pair's name and value positions in `bytes` to `each`.
fn parse_with<T>(
    bytes: &[u8],
    mut each: impl FnMut(Range<usize>, Range<usize>) -> T,
) -> Option<Vec<T>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(u32::from_le_bytes(raw) as usize)
    };
    let count = u32_at(0)?;
    let mut pos = count.checked_mul(8)?.checked_add(4)?;
    if pos > bytes.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let mut take = |len: usize| -> Option<Range<usize>> {
            let end = pos.checked_add(len)?;
            if end >= bytes.len() || bytes[end] != 0 {
                return None;
            }
            let field = pos..end;
            pos = end + 1;
            Some(field)
        };
        let (name_len, value_len) = (u32_at(4 + i * 8)?, u32_at(8 + i * 8)?);
        let name = take(name_len)?;
        let value = take(value_len)?;
        pairs.push(each(name, value));
    }
    Some(pairs)
}

/// Serializes `pairs` in the same layout.
pub fn serialize<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let data: usize = pairs
        .iter()
        .map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 2)
        .sum();
    let mut out = Vec::with_capacity(4 + pairs.len() * 8 + data);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.as_ref().len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.as_ref().len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pairs as raw bytes (to see what the string view stands for).
    fn parse(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
        parse_with(bytes, |k, v| (&bytes[k], &bytes[v]))
    }

    #[test]
    fn a_serialized_map_reads_back_in_place() {
        let map = [
            (":path", "/x"),
            ("x-api-key", "kg_live_abc"),
            ("empty", ""),
            ("x-name", "café ☕"),
        ];
        let bytes = serialize(&map);
        let pairs = parse(&bytes).unwrap();
        assert_eq!(parse_str(&bytes).unwrap(), map.to_vec());
        assert_eq!(pairs.len(), 4);
        assert_eq!(parse(&[]), Some(Vec::new()));
        assert_eq!(parse(&serialize::<&str, &str>(&[])), Some(Vec::new()));
    }

    #[test]
    fn the_layout_is_the_abi_s() {
        // written out by hand from the spec: count, sizes, then NUL-terminated fields
        let bytes = serialize(&[("ab", "c")]);
        assert_eq!(
            bytes,
            [1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, b'a', b'b', 0, b'c', 0]
        );
    }

    #[test]
    fn malformed_maps_are_refused_not_read_past() {
        let good = serialize(&[("a", "b"), ("cc", "dd")]);
        // every truncation is refused
        for end in 1..good.len() {
            assert_eq!(parse(&good[..end]), None, "truncated at {end}");
            assert_eq!(parse_str(&good[..end]), None, "truncated at {end}");
        }
        // a missing NUL terminator
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] = b'x';
        assert_eq!(parse(&bad), None);
        // a count whose size table would overflow or run past the end
        assert_eq!(parse(&[255, 255, 255, 255]), None);
        assert_eq!(parse(&[2, 0, 0, 0, 0, 0, 0, 0]), None);
        // a field size past the end
        assert_eq!(
            parse(&[1, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0, 0, 0]),
            None
        );
    }

    #[test]
    fn non_utf8_names_and_values_become_a_marker_that_is_not_empty() {
        let bytes = serialize(&[(&b"x-api-key"[..], &b"kg_\xff"[..]), (b"\xfe", b"v")]);
        let pairs = parse(&bytes).unwrap();
        assert_eq!(pairs[0].1, b"kg_\xff");
        assert_eq!(
            parse_str(&bytes).unwrap(),
            vec![("x-api-key", NOT_UTF8), (NOT_UTF8, "v")]
        );
    }
}
