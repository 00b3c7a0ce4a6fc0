//! The edge report contract: the headers a filter sends with each key-set call
//! (`GET /v1/keyset`) to say which proxy it is and what it holds, and the bounds on their values,
//! shared by the filter (which writes them) and the control plane (which records them).
//!
//! No secret travels in them: the edge's id is a random token naming one proxy process (not a
//! credential), the rest is what the proxy knows of itself. Every value is visible ASCII
//! (`0x21..=0x7e`, plus space inside) of at most [`MAX_VALUE_BYTES`]; [`clean`] makes any text so.

/// The edge's id: 32 lowercase hex digits, one per proxy process and sync source, shared by
/// all its workers.
pub const ID_HEADER: &str = "keygate-edge-id";
/// Envoy's `node.id` (absent when the host has none).
pub const NODE_HEADER: &str = "keygate-edge-node";
/// Envoy's `node.cluster` (absent when the host has none).
pub const CLUSTER_HEADER: &str = "keygate-edge-cluster";
/// The revision the edge's leader has applied (absent before its first set).
pub const REVISION_HEADER: &str = "keygate-edge-revision";
/// Keys in the edge's set.
pub const KEYS_HEADER: &str = "keygate-edge-keys";
/// Milliseconds since the last successful answer the edge's set reflects.
pub const STALENESS_HEADER: &str = "keygate-edge-staleness-ms";
/// Workers (VMs keeping a set) in the proxy process.
pub const WORKERS_HEADER: &str = "keygate-edge-workers";
/// The filter's version (`<shell>/<crate version>`).
pub const VERSION_HEADER: &str = "keygate-edge-version";

/// The longest value of any edge header, bytes.
pub const MAX_VALUE_BYTES: usize = 128;

/// Length of an edge id (hex digits).
pub const ID_LEN: usize = 32;

/// Whether `id` is a well-formed edge id (32 lowercase hex digits).
pub fn is_edge_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `text` as a header value: characters outside visible ASCII become `?`, leading and trailing
/// spaces go, and it is cut to [`MAX_VALUE_BYTES`].
pub fn clean(text: &str) -> String {
    let mut out: String = text
        .trim()
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .take(MAX_VALUE_BYTES)
        .collect();
    out.truncate(out.trim_end().len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_lowercase_hex_digits() {
        assert!(is_edge_id("0123456789abcdef0123456789abcdef"));
        assert!(!is_edge_id("0123456789ABCDEF0123456789abcdef"));
        assert!(!is_edge_id("0123456789abcdef"));
        assert!(!is_edge_id("0123456789abcdef0123456789abcdeg"));
    }

    #[test]
    fn clean_keeps_visible_ascii_and_caps_the_length() {
        assert_eq!(clean("  edge-1.eu west "), "edge-1.eu west");
        assert_eq!(clean("caf\u{e9}\r\nx"), "caf???x");
        assert_eq!(clean(&"a".repeat(500)).len(), MAX_VALUE_BYTES);
    }
}
