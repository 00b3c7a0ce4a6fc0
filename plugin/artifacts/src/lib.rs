//! Path of the Keygate filter compiled to `wasm32-wasip1` by this crate's build script, for the
//! harness-level tests in `tests/` and for the end-to-end crate; and the control plane's key-set
//! answer as a harness cluster gives it, for the tests and benches that feed the filter.

pub mod exports;

use keygate_host_harness::{CalloutReply, CalloutResponse};
use keygate_protocol::wire::CONTENT_TYPE;

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

/// The filter benches' plugin configuration: cluster `keygate`, and one route (`/repos/`) that
/// needs the scope `repo:read` and the resource named by the path's second segment (the keys of
/// `keygate_testkit::bench::repo_key_set` pass it for their own `org…` only).
pub const BENCH_FILTER_CONFIG: &str = r#"{"cluster":"keygate","authority":"keygate.internal","edge_key":"kg_edge_x",
    "routes":[{"path_prefix":"/repos/","required_scopes":["repo:read"],"resource_from_path_segment":1}]}"#;

/// A `200` key-set answer of the control plane with `body` (an encoded snapshot or delta).
pub fn keyset_reply(body: Vec<u8>) -> CalloutReply {
    CalloutReply::response(CalloutResponse {
        headers: vec![("content-type".into(), CONTENT_TYPE.into())],
        body,
        trailers: Vec::new(),
    })
}
