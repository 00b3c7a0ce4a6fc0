//! Proxy-wasm ABI v0.2.1 constants and the header-map wire format shared by host calls.

use std::fmt;

use smallvec::SmallVec;

/// A proxy-wasm status code, as returned by every `proxy_*` host function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u32)]
pub enum Status {
    /// The call succeeded.
    Ok = 0,
    /// The requested item (header, property, shared data key, queue) does not exist.
    NotFound = 1,
    /// An argument is not acceptable in this situation.
    BadArgument = 2,
    /// A value could not be serialized.
    SerializationFailure = 3,
    /// A value could not be parsed.
    ParseFailure = 4,
    /// An expression was malformed.
    BadExpression = 5,
    /// A guest pointer or size was out of the guest's memory.
    InvalidMemoryAccess = 6,
    /// A queue was empty.
    Empty = 7,
    /// A compare-and-swap failed.
    CasMismatch = 8,
    /// A result did not match.
    ResultMismatch = 9,
    /// The host failed internally.
    InternalFailure = 10,
    /// A connection was reset.
    BrokenConnection = 11,
    /// The function is not implemented by this host.
    Unimplemented = 12,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?} ({})", *self as u32)
    }
}

/// Log levels of `proxy_log`, in the ABI's order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Most verbose.
    Trace = 0,
    /// Debugging output.
    Debug = 1,
    /// Informational.
    Info = 2,
    /// Something unexpected.
    Warn = 3,
    /// A failure.
    Error = 4,
    /// A fatal failure (the Rust SDK's panic hook logs at this level).
    Critical = 5,
}

impl LogLevel {
    /// The level for an ABI value, if valid.
    pub fn from_abi(value: u32) -> Option<Self> {
        Some(match value {
            0 => Self::Trace,
            1 => Self::Debug,
            2 => Self::Info,
            3 => Self::Warn,
            4 => Self::Error,
            5 => Self::Critical,
            _ => return None,
        })
    }
}

/// Header map types of the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MapType {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
    GrpcInitialMetadata,
    GrpcTrailingMetadata,
    CallResponseHeaders,
    CallResponseTrailers,
}

impl MapType {
    pub(crate) fn from_abi(value: u32) -> Option<Self> {
        Some(match value {
            0 => Self::RequestHeaders,
            1 => Self::RequestTrailers,
            2 => Self::ResponseHeaders,
            3 => Self::ResponseTrailers,
            4 => Self::GrpcInitialMetadata,
            5 => Self::GrpcTrailingMetadata,
            6 => Self::CallResponseHeaders,
            7 => Self::CallResponseTrailers,
            _ => return None,
        })
    }
}

/// Buffer types of the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BufferType {
    RequestBody,
    ResponseBody,
    DownstreamData,
    UpstreamData,
    CallResponseBody,
    GrpcReceiveBuffer,
    VmConfiguration,
    PluginConfiguration,
    CallData,
}

impl BufferType {
    pub(crate) fn from_abi(value: u32) -> Option<Self> {
        Some(match value {
            0 => Self::RequestBody,
            1 => Self::ResponseBody,
            2 => Self::DownstreamData,
            3 => Self::UpstreamData,
            4 => Self::CallResponseBody,
            5 => Self::GrpcReceiveBuffer,
            6 => Self::VmConfiguration,
            7 => Self::PluginConfiguration,
            8 => Self::CallData,
            _ => return None,
        })
    }
}

/// Stream types of `proxy_continue_stream` / `proxy_close_stream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamType {
    Request,
    Response,
    Downstream,
    Upstream,
}

impl StreamType {
    pub(crate) fn from_abi(value: u32) -> Option<Self> {
        Some(match value {
            0 => Self::Request,
            1 => Self::Response,
            2 => Self::Downstream,
            3 => Self::Upstream,
            _ => return None,
        })
    }
}

/// Metric types of `proxy_define_metric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    /// Monotonic counter.
    Counter = 0,
    /// Gauge (settable, signed increments).
    Gauge = 1,
    /// Histogram (recorded values).
    Histogram = 2,
}

impl MetricType {
    pub(crate) fn from_abi(value: u32) -> Option<Self> {
        Some(match value {
            0 => Self::Counter,
            1 => Self::Gauge,
            2 => Self::Histogram,
            _ => return None,
        })
    }
}

/// A header map: ordered `(name, value)` pairs. Names are lower-case as in Envoy.
pub type HeaderMap = Vec<(String, HeaderValue)>;

/// What [`HeaderValue::as_text`] gives for a value that is not UTF-8.
pub const NOT_UTF8: &str = "\u{fffd}";

/// A header value: bytes, as in HTTP and the ABI. Envoy passes a value that is not UTF-8
/// (obs-text, say Latin-1) through unchanged, and so does the harness.
///
/// Built from `&str`, `String`, `Vec<u8>` or `&[u8]`; compares equal to a `&str` with the same
/// bytes; `Debug` shows it as a string when it is UTF-8 and as escaped bytes otherwise.
///
/// Up to [`HeaderValue::INLINE`] bytes are held inline, without an allocation, as Envoy's
/// `HeaderString` holds short values in the header entry itself.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HeaderValue(SmallVec<[u8; HeaderValue::INLINE]>);

impl HeaderValue {
    /// Longest value held inline.
    pub const INLINE: usize = 48;

    /// The raw bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The value as text, or `None` when it is not UTF-8.
    #[must_use]
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The value as text, or `"\u{fffd}"` when it is not UTF-8: what the harness's `header`
    /// getters return, so a value that is there never reads as absent.
    #[must_use]
    pub fn as_text(&self) -> &str {
        self.to_str().unwrap_or(NOT_UTF8)
    }

    /// The value as text with anything that is not UTF-8 replaced by U+FFFD.
    #[must_use]
    pub fn to_str_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    /// The length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes, owned.
    #[must_use]
    pub fn into_bytes(self) -> Vec<u8> {
        self.0.into_vec()
    }
}

/// In JSON (scenario files and reports) a value is a string; one that is not UTF-8 is written
/// lossily, as bodies are.
impl serde::Serialize for HeaderValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_str_lossy())
    }
}

impl<'de> serde::Deserialize<'de> for HeaderValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <String as serde::Deserialize>::deserialize(d).map(Self::from)
    }
}

impl fmt::Debug for HeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_str() {
            Some(s) => fmt::Debug::fmt(s, f),
            None => write!(f, "b\"{}\"", self.0.escape_ascii()),
        }
    }
}

impl From<&str> for HeaderValue {
    fn from(value: &str) -> Self {
        Self::from(value.as_bytes())
    }
}

impl From<String> for HeaderValue {
    fn from(value: String) -> Self {
        Self::from(value.into_bytes())
    }
}

impl From<&String> for HeaderValue {
    fn from(value: &String) -> Self {
        Self::from(value.as_bytes())
    }
}

impl From<Vec<u8>> for HeaderValue {
    fn from(value: Vec<u8>) -> Self {
        Self(SmallVec::from_vec(value))
    }
}

impl From<&[u8]> for HeaderValue {
    fn from(value: &[u8]) -> Self {
        Self(SmallVec::from_slice(value))
    }
}

impl<const N: usize> From<&[u8; N]> for HeaderValue {
    fn from(value: &[u8; N]) -> Self {
        Self::from(&value[..])
    }
}

impl PartialEq<str> for HeaderValue {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for HeaderValue {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<HeaderValue> for str {
    fn eq(&self, other: &HeaderValue) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<HeaderValue> for &str {
    fn eq(&self, other: &HeaderValue) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

/// Serializes pairs in the spec's format (see [`serialize_map_into`]).
#[cfg(test)]
pub(crate) fn serialize_map(map: &[(String, HeaderValue)]) -> Vec<u8> {
    let mut out = vec![0; serialized_len(map)];
    serialize_map_into(map, &mut out);
    out
}

/// The length of a map in the spec's format.
pub(crate) fn serialized_len(map: &[(String, HeaderValue)]) -> usize {
    4 + map
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len() + 2)
        .sum::<usize>()
}

/// Writes a map in the spec's format (pair count, u32 LE; then for each pair the name and
/// value sizes, u32 LE each; then each name and value followed by a NUL byte) into `out`,
/// which must be [`serialized_len`] long; `false` (and `out` untouched) when it is not.
pub(crate) fn serialize_map_into(map: &[(String, HeaderValue)], out: &mut [u8]) -> bool {
    if out.len() != serialized_len(map) {
        return false;
    }
    let (sizes, mut data) = out.split_at_mut(4 + 8 * map.len());
    sizes[..4].copy_from_slice(&(map.len() as u32).to_le_bytes());
    for ((k, v), slot) in map.iter().zip(sizes[4..].chunks_exact_mut(8)) {
        slot[..4].copy_from_slice(&(k.len() as u32).to_le_bytes());
        slot[4..].copy_from_slice(&(v.len() as u32).to_le_bytes());
        for part in [k.as_bytes(), v.as_bytes()] {
            let (field, rest) = data.split_at_mut(part.len() + 1);
            field[..part.len()].copy_from_slice(part);
            field[part.len()] = 0;
            data = rest;
        }
    }
    true
}

/// `bytes` as a string, invalid UTF-8 replaced (valid UTF-8, the usual case, takes the fast path).
pub(crate) fn lossy_string(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Parses the spec's map format. Returns `None` when the bytes are not a well-formed map.
pub(crate) fn deserialize_map(bytes: &[u8]) -> Option<HeaderMap> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let read_u32 = |at: usize| -> Option<usize> {
        let raw = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize)
    };
    let count = read_u32(0)?;
    let sizes_end = 4usize.checked_add(count.checked_mul(8)?)?;
    if sizes_end > bytes.len() {
        return None;
    }
    let mut pos = sizes_end;
    let mut map = Vec::with_capacity(count);
    for i in 0..count {
        let key_len = read_u32(4 + i * 8)?;
        let value_len = read_u32(8 + i * 8)?;
        let key = bytes.get(pos..pos.checked_add(key_len)?)?;
        pos += key_len;
        if bytes.get(pos) != Some(&0) {
            return None;
        }
        pos += 1;
        let value = bytes.get(pos..pos.checked_add(value_len)?)?;
        pos += value_len;
        if bytes.get(pos) != Some(&0) {
            return None;
        }
        pos += 1;
        map.push((lossy_string(key), HeaderValue::from(value)));
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_short_and_long_hold_their_bytes_whatever_they_were_built_from() {
        for len in [0, 1, HeaderValue::INLINE, HeaderValue::INLINE + 1, 4096] {
            let bytes: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let from_slice = HeaderValue::from(&bytes[..]);
            let from_vec = HeaderValue::from(bytes.clone());
            let text = String::from_utf8(bytes.clone()).unwrap();
            assert_eq!(from_slice, from_vec);
            assert_eq!(from_slice.as_bytes(), &bytes[..]);
            assert_eq!(from_slice.len(), len);
            assert!(from_slice == *text.as_str() && text.as_str() == from_vec);
            assert_eq!(from_vec.clone().into_bytes(), bytes);
        }
        assert_ne!(HeaderValue::from("a"), HeaderValue::from("ab"));
    }

    #[test]
    fn map_round_trips_in_spec_layout() {
        let map = vec![
            (":path".to_owned(), HeaderValue::from("/a")),
            ("x".to_owned(), HeaderValue::default()),
        ];
        let bytes = serialize_map(&map);
        assert_eq!(&bytes[..4], &2u32.to_le_bytes());
        assert_eq!(&bytes[4..8], &5u32.to_le_bytes());
        assert_eq!(&bytes[8..12], &2u32.to_le_bytes());
        assert_eq!(&bytes[20..27], b":path\0/");
        assert_eq!(bytes.len(), serialized_len(&map));
        assert_eq!(deserialize_map(&bytes), Some(map.clone()));
        // a buffer of any other length is refused
        for len in [bytes.len() - 1, bytes.len() + 1] {
            assert!(!serialize_map_into(&map, &mut vec![0; len]));
        }
    }

    #[test]
    fn a_value_that_is_not_utf8_is_kept_and_a_name_is_replaced() {
        // one pair: name "a\xff", value "\xfe" (sizes 2 and 1)
        let bytes = [1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, b'a', 0xff, 0, 0xfe, 0];
        let map = deserialize_map(&bytes).unwrap();
        assert_eq!(
            map,
            vec![("a\u{fffd}".to_owned(), HeaderValue::from(&[0xfe]))]
        );
        assert_eq!(map[0].1.to_str(), None);
        assert_eq!(map[0].1.to_str_lossy(), "\u{fffd}");
        assert_eq!(format!("{:?}", map[0].1), r#"b"\xfe""#);
        // and it goes back to the guest byte for byte
        assert_eq!(
            serialize_map(&map)[12..],
            [b'a', 0xef, 0xbf, 0xbd, 0, 0xfe, 0]
        );
        assert_eq!(lossy_string(b"plain"), "plain");
    }

    #[test]
    fn a_header_value_compares_with_text_by_its_bytes() {
        let v = HeaderValue::from("k\u{e9}y");
        assert_eq!(v, "k\u{e9}y");
        assert_eq!("k\u{e9}y", v);
        assert_ne!(HeaderValue::from(&b"k\xe9y"[..]), "k\u{e9}y");
        assert_eq!(format!("{v:?}"), "\"k\u{e9}y\"");
        assert_eq!(v.len(), 4);
        assert!(!v.is_empty() && HeaderValue::default().is_empty());
    }

    #[test]
    fn malformed_maps_are_rejected() {
        assert_eq!(deserialize_map(&[1, 0, 0, 0]), None);
        assert_eq!(deserialize_map(&[255, 255, 255, 255, 0, 0]), None);
        let mut bytes = serialize_map(&[("a".to_owned(), HeaderValue::from("b"))]);
        let last = bytes.len() - 1;
        bytes[last] = b'x';
        assert_eq!(deserialize_map(&bytes), None);
    }
}
