//! Proxy-wasm ABI v0.2.1 constants and the header-map wire format shared by host calls.

use std::fmt;

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
pub type HeaderMap = Vec<(String, String)>;

/// Serializes pairs in the spec's format: pair count (u32 LE), then for each pair the name
/// and value sizes (u32 LE each), then each name and value followed by a NUL byte.
pub(crate) fn serialize_map(map: &[(String, String)]) -> Vec<u8> {
    let data: usize = map.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut out = Vec::with_capacity(4 + map.len() * 8 + data);
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (k, v) in map {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in map {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
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
        map.push((lossy_string(key), lossy_string(value)));
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_round_trips_in_spec_layout() {
        let map = vec![
            (":path".to_owned(), "/a".to_owned()),
            ("x".to_owned(), String::new()),
        ];
        let bytes = serialize_map(&map);
        assert_eq!(&bytes[..4], &2u32.to_le_bytes());
        assert_eq!(&bytes[4..8], &5u32.to_le_bytes());
        assert_eq!(&bytes[8..12], &2u32.to_le_bytes());
        assert_eq!(&bytes[20..27], b":path\0/");
        assert_eq!(deserialize_map(&bytes), Some(map));
    }

    #[test]
    fn invalid_utf8_in_a_map_is_replaced_not_rejected() {
        // one pair: name "a\xff", value "\xfe" (sizes 2 and 1)
        let bytes = [1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, b'a', 0xff, 0, 0xfe, 0];
        assert_eq!(
            deserialize_map(&bytes),
            Some(vec![("a\u{fffd}".to_owned(), "\u{fffd}".to_owned())])
        );
        assert_eq!(lossy_string(b"plain"), "plain");
    }

    #[test]
    fn malformed_maps_are_rejected() {
        assert_eq!(deserialize_map(&[1, 0, 0, 0]), None);
        assert_eq!(deserialize_map(&[255, 255, 255, 255, 0, 0]), None);
        let mut bytes = serialize_map(&[("a".to_owned(), "b".to_owned())]);
        let last = bytes.len() - 1;
        bytes[last] = b'x';
        assert_eq!(deserialize_map(&bytes), None);
    }
}
