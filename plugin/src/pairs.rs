//! The proxy-wasm serialized header map, read in place: borrowed `(name, value)` views of the
//! host's buffer instead of two owned strings per header, and a writer for the same format.
//!
//! Layout (ABI v0.2.1): pair count (u32 LE), then each pair's name and value sizes (u32 LE
//! each), then each name and value followed by a NUL byte.

use std::ops::Range;

/// What each byte of a sequence that is not UTF-8 reads as (U+001A SUBSTITUTE): the core's
/// constant, since every shell must read such bytes alike for the decision to agree.
///
/// A header the filter *rewrites* (a `cookie` without the key's cookie) is rebuilt from the
/// bytes the host sent ([`AsSent`]), not from this view, and every other header keeps its bytes
/// (the host holds them; the filter only reads a copy).
pub use keygate_filter_core::decision::SUBSTITUTE;

/// The map's bytes as the host sent them, kept by [`parse_str`] only when its view differs from
/// them (some byte was not UTF-8): a header the filter rewrites is rebuilt from these.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AsSent(Option<Vec<u8>>);

impl AsSent {
    /// The values of every header named `name` (ASCII case-insensitive) as the host sent them;
    /// `view` is the view [`parse_str`] returned with this.
    pub fn values<'s>(&'s self, view: &[(&'s str, &'s str)], name: &str) -> Vec<&'s [u8]> {
        match &self.0 {
            Some(original) => parse(original)
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, v)| v)
                .collect(),
            None => view
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_bytes())
                .collect(),
        }
    }
}

/// The pairs as strings, read in place. Every byte of a sequence that is not UTF-8 (obs-text,
/// say Latin-1, which Envoy lets through) is replaced in `bytes` by [`SUBSTITUTE`], after a copy
/// of the map as it came is kept in the returned [`AsSent`]. `None` when `bytes` is not a
/// well-formed map.
pub fn parse_str(bytes: &mut [u8]) -> Option<(Vec<(&str, &str)>, AsSent)> {
    if bytes.is_empty() {
        return Some((Vec::new(), AsSent(None)));
    }
    let (table, data) = bytes.split_at_mut(data_start(bytes)?);
    // Request headers are nearly always ASCII: one pass that checks and converts.
    let (text, as_sent) = match ascii_str(data) {
        Ok(text) => (text, AsSent(None)),
        Err(data) => {
            let as_sent = if std::str::from_utf8(data).is_ok() {
                AsSent(None)
            } else {
                let original = [&*table, &*data].concat();
                substitute_invalid(data);
                AsSent(Some(original))
            };
            (std::str::from_utf8(data).ok()?, as_sent)
        }
    };
    // Fields start and end next to NUL bytes (ASCII), so they are on character boundaries.
    let pairs = parse_with(table, text.as_bytes(), |k, v| {
        (
            text.get(k).unwrap_or_default(),
            text.get(v).unwrap_or_default(),
        )
    })?;
    Some((pairs, as_sent))
}

/// `bytes` as a `str` when they are all ASCII, or `bytes` back otherwise.
fn ascii_str(bytes: &mut [u8]) -> Result<&str, &mut [u8]> {
    if !bytes.is_ascii() {
        return Err(bytes);
    }
    // ASCII is UTF-8: this never fails.
    std::str::from_utf8(bytes).map_err(|_| &mut [][..])
}

/// The pairs as raw bytes. `None` when `bytes` is not a well-formed map.
pub fn parse(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let (table, data) = bytes.split_at(data_start(bytes)?);
    parse_with(table, data, |k, v| (&data[k], &data[v]))
}

/// Replaces every byte of each sequence in `data` that is not UTF-8 by [`SUBSTITUTE`].
fn substitute_invalid(data: &mut [u8]) {
    let mut at = 0;
    while let Err(e) = std::str::from_utf8(&data[at..]) {
        let start = at + e.valid_up_to();
        let end = e.error_len().map_or(data.len(), |n| start + n);
        data[start..end].fill(SUBSTITUTE);
        at = end;
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw) as usize)
}

/// Where a non-empty map's data starts, after the pair count and the size table; `None` when
/// `bytes` is too short for them.
fn data_start(bytes: &[u8]) -> Option<usize> {
    let start = u32_at(bytes, 0)?.checked_mul(8)?.checked_add(4)?;
    (start <= bytes.len()).then_some(start)
}

/// Walks a map's size `table` (count and sizes) over its `data`, handing each pair's name and
/// value positions in `data` to `each`.
fn parse_with<T>(
    table: &[u8],
    data: &[u8],
    mut each: impl FnMut(Range<usize>, Range<usize>) -> T,
) -> Option<Vec<T>> {
    let count = u32_at(table, 0)?;
    let mut pos: usize = 0;
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let mut take = |len: usize| -> Option<Range<usize>> {
            let end = pos.checked_add(len)?;
            if end >= data.len() || data[end] != 0 {
                return None;
            }
            let field = pos..end;
            pos = end + 1;
            Some(field)
        };
        let (name_len, value_len) = (u32_at(table, 4 + i * 8)?, u32_at(table, 8 + i * 8)?);
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
        let mut copy = bytes.clone();
        let (view, as_sent) = parse_str(&mut copy).unwrap();
        assert_eq!(view, map.to_vec());
        assert_eq!(as_sent, AsSent(None));
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
            assert_eq!(
                parse_str(&mut good[..end].to_vec()),
                None,
                "truncated at {end}"
            );
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
    fn bytes_that_are_not_utf8_read_as_substitutes_one_for_one() {
        let mut bytes = serialize(&[
            (&b"x-api-key"[..], &b"kg_\xff"[..]),
            (b"\xfe", b"v"),
            (b"cookie", b"a=caf\xc3\xa9; b=\xe9\xe2"),
            (b"authorization", b"Bearer \xc3kg"),
        ]);
        assert_eq!(parse(&bytes).unwrap()[0].1, b"kg_\xff");
        let sent = bytes.clone();
        let (view, as_sent) = parse_str(&mut bytes).unwrap();
        assert_eq!(
            view,
            vec![
                ("x-api-key", "kg_\u{1a}"),
                ("\u{1a}", "v"),
                // valid UTF-8 stays; a truncated sequence is one substitute per byte
                ("cookie", "a=caf\u{e9}; b=\u{1a}\u{1a}"),
                ("authorization", "Bearer \u{1a}kg"),
            ]
        );
        // what the host sent is kept for the headers the filter rewrites
        assert_eq!(
            as_sent.values(&view, "Cookie"),
            [&b"a=caf\xc3\xa9; b=\xe9\xe2"[..]]
        );
        assert_eq!(as_sent, AsSent(Some(sent)));
        // a lone continuation byte, an overlong form, a surrogate, a sequence cut by the end
        let mut bytes = serialize(&[(&b"v"[..], &b"\x80\xc0\xaf\xed\xa0\x80ok\xf0\x9f"[..])]);
        assert_eq!(
            parse_str(&mut bytes).unwrap().0,
            vec![("v", "\u{1a}\u{1a}\u{1a}\u{1a}\u{1a}\u{1a}ok\u{1a}\u{1a}")]
        );
    }

    /// The filter's view of one field, written out independently: each byte of a sequence that
    /// is not UTF-8 becomes one U+001A.
    fn substituted(field: &[u8]) -> String {
        let mut out = String::new();
        for chunk in field.utf8_chunks() {
            out.push_str(chunk.valid());
            out.extend(chunk.invalid().iter().map(|_| '\u{1a}'));
        }
        out
    }

    fn field() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        // mostly ASCII, with Latin-1 bytes, UTF-8 sequences and their pieces
        prop::collection::vec(
            prop_oneof![
                4 => (0x20u8..0x7f).prop_map(|b| vec![b]),
                1 => (0x80u8..=0xff).prop_map(|b| vec![b]),
                1 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
                1 => Just(b"cookie".to_vec()),
            ],
            0..12,
        )
        .prop_map(|pieces| pieces.concat())
    }

    proptest::proptest! {
        #[test]
        fn any_map_reads_back_with_its_view_and_what_was_sent(
            map in proptest::collection::vec((field(), field()), 0..8)
        ) {
            let bytes = serialize(&map);
            let expected: Vec<(&[u8], &[u8])> =
                map.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
            proptest::prop_assert_eq!(parse(&bytes), Some(expected));

            let mut buffer = bytes.clone();
            let (view, as_sent) = parse_str(&mut buffer).unwrap();
            let model: Vec<(String, String)> =
                map.iter().map(|(k, v)| (substituted(k), substituted(v))).collect();
            let got: Vec<(String, String)> =
                view.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            proptest::prop_assert_eq!(got, model);
            let all_utf8 = map
                .iter()
                .all(|(k, v)| std::str::from_utf8(k).is_ok() && std::str::from_utf8(v).is_ok());
            proptest::prop_assert_eq!(as_sent == AsSent(None), all_utf8);
            // what was sent, by name, whatever the view holds
            for (name, _) in &map {
                let Ok(name) = std::str::from_utf8(name) else { continue };
                let sent: Vec<&[u8]> = map
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
                    .map(|(_, v)| v.as_slice())
                    .collect();
                proptest::prop_assert_eq!(as_sent.values(&view, name), sent);
            }
        }
    }

    #[test]
    fn only_ascii_converts_and_anything_else_comes_back_unchanged() {
        let mut ascii = *b"x-api-key\0kg_live_abc\0";
        assert_eq!(ascii_str(&mut ascii), Ok("x-api-key\0kg_live_abc\0"));
        for other in [&b"caf\xc3\xa9"[..], b"\x80", b"ok\xff"] {
            let mut bytes = other.to_vec();
            assert_eq!(
                ascii_str(&mut bytes).map(str::as_bytes),
                Err(&mut other.to_vec()[..])
            );
        }
    }

    #[test]
    fn a_map_that_is_utf8_is_its_own_record_of_what_was_sent() {
        let mut bytes = serialize(&[("cookie", "a=1"), ("x", "y"), ("COOKIE", "b=café")]);
        let (view, as_sent) = parse_str(&mut bytes).unwrap();
        assert_eq!(as_sent, AsSent(None));
        assert_eq!(
            as_sent.values(&view, "cookie"),
            [&b"a=1"[..], "b=café".as_bytes()]
        );
        assert!(as_sent.values(&view, "missing").is_empty());
    }
}
