//! Path of the Keygate filter compiled to `wasm32-wasip1` by this crate's build script, for the
//! harness-level tests in `tests/` and for the end-to-end crate; and the control plane's key-set
//! answer as a harness cluster gives it, and the benches' three kinds of request, for the tests
//! and benches that feed the filter.

pub mod calls;
pub mod exports;

use std::sync::Arc;
use std::time::Duration;

use keygate_host_harness::{CalloutReply, CalloutResponse, Cluster, Harness, Plugin, Request};
use keygate_protocol::key::{self, KeyFormatError};
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

/// One worker of `plugin` under [`BENCH_FILTER_CONFIG`], synced from a control plane that
/// answers the key set with `snapshot` at once and every later poll with `304`: the harness the
/// A/B and instruction-count examples time.
///
/// # Errors
/// The harness's, when the module does not load or configure.
pub fn synced_bench_harness(
    plugin: Plugin,
    snapshot: Arc<Vec<u8>>,
) -> keygate_host_harness::Result<Harness> {
    let mut h = Harness::builder(plugin)
        .workers(1)
        .plugin_configuration(BENCH_FILTER_CONFIG.as_bytes().to_vec())
        .cluster(
            "keygate",
            Cluster::handler(move |req| {
                if req.header(":path") == Some("/v1/keyset") {
                    keyset_reply(snapshot.to_vec())
                } else {
                    CalloutReply::status(304)
                }
            }),
        )
        .build()?;
    h.advance(Duration::from_millis(1_000));
    Ok(h)
}

/// The benches' three kinds of request, each a list of (path, key): what the filter allows, a
/// well-formed key that is not in the set, and a malformed one.
#[derive(Debug, Clone)]
pub struct BenchKinds {
    /// The secrets given, each on a path its key may read (`/repos/org{i % 100}/widgets`).
    pub allowed: Vec<(String, String)>,
    /// The same paths with freshly generated keys (valid checksum): parse, SHA-256 and a lookup
    /// that misses.
    pub unknown: Vec<(String, String)>,
    /// The allowed keys with their last checksum character changed: refused by the parser, no
    /// digest, no lookup.
    pub malformed: Vec<(String, String)>,
}

impl BenchKinds {
    /// The three kinds for `secrets` (from `keygate_testkit::bench::repo_key_set`: a secret
    /// and its index, which names the `org…` its key may read).
    ///
    /// # Errors
    /// Never in practice: `kg_live` is a valid prefix.
    pub fn new(secrets: &[(String, usize)]) -> Result<Self, KeyFormatError> {
        let allowed: Vec<(String, String)> = secrets
            .iter()
            .map(|(s, i)| (format!("/repos/org{}/widgets", i % 100), s.clone()))
            .collect();
        let unknown = allowed
            .iter()
            .map(|(path, _)| {
                let k = key::generate("kg_live")?;
                Ok((path.clone(), k.expose_secret().to_owned()))
            })
            .collect::<Result<_, KeyFormatError>>()?;
        let malformed = allowed
            .iter()
            .map(|(path, secret)| {
                let mut bad = secret.clone();
                let last = bad.pop().unwrap_or('0');
                bad.push(if last == 'A' { 'B' } else { 'A' });
                (path.clone(), bad)
            })
            .collect();
        Ok(Self {
            allowed,
            unknown,
            malformed,
        })
    }

    /// The harness requests of the three kinds ([`bench_requests`]): allowed, unknown,
    /// malformed.
    pub fn requests(&self) -> [Vec<Request>; 3] {
        [&self.allowed, &self.unknown, &self.malformed].map(|kind| bench_requests(kind))
    }
}

/// The harness requests of one kind: `GET` of the path with a `user-agent` and the key in
/// `x-api-key`.
pub fn bench_requests(kind: &[(String, String)]) -> Vec<Request> {
    kind.iter()
        .map(|(path, key)| {
            Request::get(path)
                .header("user-agent", "bench")
                .header("x-api-key", key)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_kinds_are_what_their_names_say() {
        let secrets: Vec<(String, usize)> = (0..50)
            .map(|i| key::generate("kg_live").map(|k| (k.expose_secret().to_owned(), i * 7)))
            .collect::<Result<_, _>>()
            .unwrap();
        let kinds = BenchKinds::new(&secrets).unwrap();
        for (j, (secret, i)) in secrets.iter().enumerate() {
            let path = format!("/repos/org{}/widgets", i % 100);
            assert_eq!(kinds.allowed[j], (path.clone(), secret.clone()));
            let (unknown_path, unknown) = &kinds.unknown[j];
            assert_eq!(unknown_path, &path);
            assert!(key::parse(unknown).is_ok());
            assert!(secrets.iter().all(|(s, _)| s != unknown));
            let (bad_path, bad) = &kinds.malformed[j];
            assert_eq!(bad_path, &path);
            assert_eq!(bad.len(), secret.len());
            assert_eq!(key::parse(bad).err(), Some(KeyFormatError::BadChecksum));
        }
        let [_, _, requests] = kinds.requests();
        assert_eq!(requests.len(), secrets.len());
        for (request, (path, bad)) in requests.iter().zip(&kinds.malformed) {
            let header = |name: &str| {
                request
                    .headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_text())
            };
            assert_eq!(header(":method"), Some("GET"));
            assert_eq!(header(":path"), Some(path.as_str()));
            assert_eq!(header("x-api-key"), Some(bad.as_str()));
        }
    }
}
