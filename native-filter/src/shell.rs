//! The native shell's logic, without FFI: the filter configuration Envoy hands over once, and
//! the work on each request's headers, over the [`Stream`] seam (Envoy's callbacks in the
//! `ffi` module, a recording fake in the tests).
//!
//! The request path mirrors the proxy-wasm glue (`plugin/src/glue.rs`): the same view of the
//! headers (a byte that is not UTF-8 reads as [`decision::SUBSTITUTE`]), the same decision, the
//! same header edits in the same order, the same local reply.

use std::cell::RefCell;
use std::sync::Arc;

use keygate_filter_core::config::Config;
use keygate_filter_core::decision::{
    self, Decision, DenyBodies, KeySetState, Reason, Request, decide,
};
use keygate_protocol::keyset::KeySet;
use serde::Deserialize;
use smallvec::SmallVec;

/// The `filter_name` of Keygate's filter.
pub const KEYGATE: &str = "keygate";
/// The `filter_name` of the filter that does nothing (the baseline).
pub const NOOP: &str = "noop";
/// The `filter_name` of the filter that makes the callbacks Keygate makes on an allowed request
/// and nothing else (the floor of this shell: what no trim of Keygate's own code goes below).
pub const HOST_CALLS: &str = "host-calls";
/// `filter_name` of the filter that decides as Keygate does, on Keygate's configuration and
/// key set, then makes [`host_calls_only`]'s callbacks instead of the decision's (a baseline
/// that tells the decision's own cost in Envoy from that of the edits it asks for).
pub const DECIDE_ONLY: &str = "decide-only";

/// What the request path asks of its host: Envoy's request header map and local reply, and the
/// decision counters.
pub trait Stream {
    /// Removes every request header named `name`.
    fn remove_header(&mut self, name: &[u8]);
    /// Replaces the request header `name` by `value`.
    fn set_header(&mut self, name: &[u8], value: &[u8]);
    /// Adds a request header (the name is known to be absent).
    fn add_header(&mut self, name: &[u8], value: &[u8]);
    /// Answers the request locally.
    fn send_reply(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]);
    /// Counts one decision with `reason`.
    fn count(&mut self, reason: Reason);
}

/// What the filter tells Envoy after the request headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Carry on down the filter chain.
    Continue,
    /// Stop: a local reply was sent.
    Stop,
}

/// A filter configuration: one per `DynamicModuleFilter` in Envoy's configuration, created on
/// the main thread and read by every worker thread.
#[derive(Debug)]
pub enum FilterConfig {
    /// `filter_name: noop`.
    Noop,
    /// `filter_name: host-calls`.
    HostCalls,
    /// `filter_name: keygate`.
    Keygate(Box<Keygate>),
    /// `filter_name: decide-only`, with Keygate's `filter_config`.
    DecideOnly(Box<Keygate>),
}

impl FilterConfig {
    /// The configuration of the filter named `filter_name`, from `filter_config` (the bytes of
    /// the `google.protobuf.StringValue` Envoy's configuration gives; see [`NativeConfig`]).
    ///
    /// # Errors
    /// A message for Envoy's log: unknown filter name, bad configuration, unreadable snapshot.
    pub fn new(filter_name: &[u8], filter_config: &[u8]) -> Result<Self, String> {
        match filter_name {
            n if n == NOOP.as_bytes() => Ok(FilterConfig::Noop),
            n if n == HOST_CALLS.as_bytes() => Ok(FilterConfig::HostCalls),
            n if n == KEYGATE.as_bytes() => Ok(FilterConfig::Keygate(Box::new(Keygate::new(
                filter_config,
            )?))),
            n if n == DECIDE_ONLY.as_bytes() => Ok(FilterConfig::DecideOnly(Box::new(
                Keygate::new(filter_config)?,
            ))),
            n => Err(format!(
                "keygate-native-filter: unknown filter_name {:?} (expected {KEYGATE:?}, {NOOP:?}, {HOST_CALLS:?} or {DECIDE_ONLY:?})",
                String::from_utf8_lossy(n)
            )),
        }
    }
}

/// Keygate's `filter_config`, JSON:
/// `{"configuration": <the proxy-wasm filter's configuration, the same JSON object>,
/// "snapshot_file": "<path of a key-set snapshot in the protocol's wire format>"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativeConfig {
    /// The plugin configuration, parsed by `keygate_filter_core::config::Config::from_json`.
    pub configuration: serde_json::Value,
    /// The key set, read once when Envoy creates the configuration (the prototype has no sync).
    pub snapshot_file: String,
}

/// Keygate's filter configuration: the plugin's configuration and the key set, one copy per
/// process (Envoy shares this object between its worker threads).
#[derive(Debug)]
pub struct Keygate {
    config: Config,
    keys: Arc<KeySet>,
}

impl Keygate {
    /// Parses `filter_config` ([`NativeConfig`]) and loads its snapshot.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn new(filter_config: &[u8]) -> Result<Self, String> {
        let native: NativeConfig = serde_json::from_slice(filter_config)
            .map_err(|e| format!("keygate-native-filter: filter_config: {e}"))?;
        let json = serde_json::to_vec(&native.configuration)
            .map_err(|e| format!("keygate-native-filter: configuration: {e}"))?;
        let config = Config::from_json(&json).map_err(|e| e.to_string())?;
        let bytes = std::fs::read(&native.snapshot_file).map_err(|e| {
            format!(
                "keygate-native-filter: snapshot_file {:?}: {e}",
                native.snapshot_file
            )
        })?;
        let mut keys = KeySet::new();
        keys.apply(&bytes).map_err(|e| {
            format!(
                "keygate-native-filter: snapshot_file {:?}: {e}",
                native.snapshot_file
            )
        })?;
        Ok(Self {
            config,
            keys: Arc::new(keys),
        })
    }

    /// The key set.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Decides a request from its headers (every one, pseudo-headers included, as Envoy holds
    /// them) at `now_secs`, and acts on `stream`: on an allow, the header edits; on a deny,
    /// the local reply.
    ///
    /// `headers` may borrow Envoy's header map, whose memory an edit may free: whatever the
    /// edits need from it is copied before the first one.
    pub fn on_request_headers(
        &self,
        headers: &[(&[u8], &[u8])],
        now_secs: u64,
        stream: &mut impl Stream,
    ) -> Verdict {
        let substituted: Vec<(String, String)>;
        let view: Vec<(&str, &str)> = match borrowed_text(headers) {
            Some(view) => view,
            None => {
                substituted = headers
                    .iter()
                    .map(|(k, v)| (substitute_invalid(k), substitute_invalid(v)))
                    .collect();
                substituted
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect()
            }
        };
        let req = Request::from_pairs(view);
        let decision = decide(&req, KeySetState::Fresh(&self.keys), now_secs, &self.config);
        let reason = decision.reason();
        let verdict = match decision {
            Decision::Allow(a) => {
                // Copies first: the removals' names and the cookies may borrow Envoy's map.
                let mut names: SmallVec<[u8; 128]> = SmallVec::new();
                let mut ends: SmallVec<[usize; 4]> = SmallVec::new();
                for name in &a.remove {
                    names.extend_from_slice(name.as_bytes());
                    ends.push(names.len());
                }
                let cookie = (!a.strip_cookies.is_empty()).then(|| {
                    decision::cookies_without(
                        headers
                            .iter()
                            .filter(|(k, _)| k.eq_ignore_ascii_case(b"cookie"))
                            .map(|&(_, v)| v),
                        &a.strip_cookies,
                    )
                });
                let mut start = 0;
                for end in ends {
                    stream.remove_header(&names[start..end]);
                    start = end;
                }
                for (name, value) in &a.set {
                    stream.set_header(name.as_bytes(), value.as_bytes());
                }
                match cookie {
                    Some(Some(rest)) => stream.set_header(b"cookie", &rest),
                    Some(None) => stream.remove_header(b"cookie"),
                    None => {}
                }
                for (name, value) in a.identity.iter().flat_map(decision::Identity::headers) {
                    stream.add_header(name.as_bytes(), value.as_bytes());
                }
                Verdict::Continue
            }
            Decision::Deny(d) => {
                let mut reply: SmallVec<[(&str, &str); 3]> = SmallVec::new();
                reply.push(("content-type", "application/json"));
                reply.push(("cache-control", "no-store"));
                if let Some(w) = d.www_authenticate {
                    reply.push(("www-authenticate", w));
                }
                BODIES.with_borrow_mut(|bodies| {
                    let body = bodies.body(&d);
                    stream.send_reply(d.status(), &reply, body.as_bytes());
                });
                Verdict::Stop
            }
        };
        stream.count(reason);
        verdict
    }
}

impl Keygate {
    /// [`DECIDE_ONLY`]: decides as [`Keygate::on_request_headers`] does, then makes
    /// [`host_calls_only`]'s callbacks whatever the decision.
    pub fn decide_then_host_calls(
        &self,
        headers: &[(&[u8], &[u8])],
        now_secs: u64,
        stream: &mut impl Stream,
    ) -> Verdict {
        let view: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| {
                (
                    std::str::from_utf8(k).unwrap_or(""),
                    std::str::from_utf8(v).unwrap_or(""),
                )
            })
            .collect();
        let req = Request::from_pairs(view);
        let decision = decide(&req, KeySetState::Fresh(&self.keys), now_secs, &self.config);
        std::hint::black_box(&decision);
        host_calls_only(stream)
    }
}

/// The callbacks Keygate makes on an allowed request (its headers already read by the shell):
/// remove the key's header, add the three identity headers, count the decision. No logic.
pub fn host_calls_only(stream: &mut impl Stream) -> Verdict {
    stream.remove_header(b"x-api-key");
    stream.add_header(b"x-keygate-key-id", b"key_0123456789abcdef0123456789abcdef");
    stream.add_header(b"x-keygate-owner", b"owner-1");
    stream.add_header(b"x-keygate-scopes", b"repo:read");
    stream.count(Reason::Allowed);
    Verdict::Continue
}

thread_local! {
    /// Deny bodies already serialized, per worker thread.
    static BODIES: RefCell<DenyBodies> = RefCell::new(DenyBodies::default());
}

/// The headers as text, borrowed, when every name and value is UTF-8 (nearly always: ASCII).
fn borrowed_text<'a>(headers: &[(&'a [u8], &'a [u8])]) -> Option<Vec<(&'a str, &'a str)>> {
    headers
        .iter()
        .map(|&(k, v)| Some((std::str::from_utf8(k).ok()?, std::str::from_utf8(v).ok()?)))
        .collect()
}

/// `bytes` as text, every byte of a sequence that is not UTF-8 replaced by
/// [`decision::SUBSTITUTE`], one byte for one byte (as the proxy-wasm shell reads a header map).
fn substitute_invalid(bytes: &[u8]) -> String {
    let mut out = bytes.to_vec();
    let mut at = 0;
    while let Err(e) = std::str::from_utf8(&out[at..]) {
        let start = at + e.valid_up_to();
        let end = e.error_len().map_or(out.len(), |n| start + n);
        out[start..end].fill(decision::SUBSTITUTE);
        at = end;
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_protocol::KeyId;
    use keygate_protocol::key;
    use keygate_protocol::wire::{KeyEntry, Snapshot};

    /// A local reply: status, headers, body.
    type Reply = (u16, Vec<(String, String)>, String);

    /// What a request did to its stream.
    #[derive(Debug, Default)]
    struct Recorded {
        edits: Vec<(&'static str, String, String)>,
        reply: Option<Reply>,
        counted: Vec<Reason>,
    }

    impl Stream for Recorded {
        fn remove_header(&mut self, name: &[u8]) {
            self.edits.push((
                "remove",
                String::from_utf8_lossy(name).into(),
                String::new(),
            ));
        }
        fn set_header(&mut self, name: &[u8], value: &[u8]) {
            self.edits.push((
                "set",
                String::from_utf8_lossy(name).into(),
                String::from_utf8_lossy(value).into(),
            ));
        }
        fn add_header(&mut self, name: &[u8], value: &[u8]) {
            self.edits.push((
                "add",
                String::from_utf8_lossy(name).into(),
                String::from_utf8_lossy(value).into(),
            ));
        }
        fn send_reply(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
            self.reply = Some((
                status,
                headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                String::from_utf8_lossy(body).into(),
            ));
        }
        fn count(&mut self, reason: Reason) {
            self.counted.push(reason);
        }
    }

    /// A configuration holding one key (returned), with its snapshot in `dir`.
    fn keygate(dir: &std::path::Path) -> (Keygate, String, KeyId) {
        let k = key::generate("kg_live").unwrap();
        let key_id = KeyId::from_bytes([7; 16]);
        let snapshot = Snapshot {
            revision: 1,
            entries: vec![KeyEntry {
                digest: k.digest(),
                key_id,
                owner: "acme".into(),
                expires_at: None,
                scopes: vec!["repo:read".into()],
                resources: Vec::new(),
            }],
        }
        .encode()
        .unwrap();
        let path = dir.join("snapshot.bin");
        std::fs::write(&path, snapshot).unwrap();
        let filter_config = serde_json::json!({
            "configuration": {
                "cluster": "keygate_control_plane",
                "authority": "cp",
                "edge_key": "kg_edge_x",
                "key_sources": [{"header": "x-api-key"}],
                "routes": [{"path_prefix": "/", "required_scopes": []}]
            },
            "snapshot_file": path.to_str().unwrap(),
        });
        let config = Keygate::new(filter_config.to_string().as_bytes()).unwrap();
        (config, k.expose_secret().to_owned(), key_id)
    }

    fn request<'a>(extra: &[(&'a [u8], &'a [u8])]) -> Vec<(&'a [u8], &'a [u8])> {
        let mut h: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"GET"),
            (b":path", b"/hello"),
            (b":authority", b"example"),
        ];
        h.extend_from_slice(extra);
        h
    }

    #[test]
    fn decide_only_makes_the_fixed_callbacks_whatever_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (config, secret, _) = keygate(dir.path());
        let mut fixed = Recorded::default();
        host_calls_only(&mut fixed);
        for key in [secret.as_str(), "kg_live_unknown"] {
            let mut s = Recorded::default();
            let h = request(&[(b"x-api-key", key.as_bytes())]);
            let verdict = config.decide_then_host_calls(&h, 1_763_900_000, &mut s);
            assert!(matches!(verdict, Verdict::Continue));
            assert_eq!(s.edits, fixed.edits, "{key}");
            assert_eq!(s.counted, fixed.counted);
            assert!(s.reply.is_none());
        }
        assert_eq!(
            FilterConfig::new(b"decide-only", b"{}").unwrap_err(),
            FilterConfig::new(b"keygate", b"{}").unwrap_err(),
            "decide-only takes Keygate's filter_config"
        );
    }

    #[test]
    fn a_valid_key_passes_without_its_header_and_with_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (config, secret, key_id) = keygate(dir.path());
        let mut s = Recorded::default();
        let h = request(&[
            (b"x-api-key", secret.as_bytes()),
            (b"x-keygate-owner", b"spoofed"),
        ]);
        assert_eq!(config.on_request_headers(&h, 1, &mut s), Verdict::Continue);
        let id = key_id.text();
        assert_eq!(
            s.edits,
            vec![
                ("remove", "x-keygate-owner".into(), String::new()),
                ("remove", "x-api-key".into(), String::new()),
                ("add", "x-keygate-key-id".into(), id.as_str().to_owned()),
                ("add", "x-keygate-owner".into(), "acme".into()),
                ("add", "x-keygate-scopes".into(), "repo:read".into()),
            ]
        );
        assert!(s.reply.is_none());
        assert_eq!(s.counted, vec![Reason::Allowed]);
    }

    #[test]
    fn an_unknown_key_gets_the_filters_401() {
        let dir = tempfile::tempdir().unwrap();
        let (config, _, _) = keygate(dir.path());
        let other = key::generate("kg_live").unwrap();
        let mut s = Recorded::default();
        let h = request(&[(b"x-api-key", other.expose_secret().as_bytes())]);
        assert_eq!(config.on_request_headers(&h, 1, &mut s), Verdict::Stop);
        let (status, headers, body) = s.reply.unwrap();
        assert_eq!(status, 401);
        assert_eq!(
            headers[0],
            ("content-type".into(), "application/json".into())
        );
        assert!(headers.iter().any(|(k, _)| k == "www-authenticate"));
        assert!(body.contains(r#""code":"unknown_key""#), "{body}");
        assert!(s.edits.is_empty());
        assert_eq!(s.counted, vec![Reason::UnknownKey]);
    }

    #[test]
    fn a_header_that_is_not_utf8_reads_as_substitutes() {
        assert_eq!(
            substitute_invalid(b"a\xffb\xe2\x82"),
            "a\u{1a}b\u{1a}\u{1a}"
        );
        let dir = tempfile::tempdir().unwrap();
        let (config, secret, _) = keygate(dir.path());
        let mut s = Recorded::default();
        let h = request(&[(b"x-api-key", secret.as_bytes()), (b"x-latin1", b"caf\xe9")]);
        assert_eq!(config.on_request_headers(&h, 1, &mut s), Verdict::Continue);
        let mut s = Recorded::default();
        let h = request(&[(b"x-api-key", b"kg_live_\xff")]);
        assert_eq!(config.on_request_headers(&h, 1, &mut s), Verdict::Stop);
        assert_eq!(s.counted, vec![Reason::MalformedKey]);
    }

    #[test]
    fn filter_names_and_bad_configurations_are_refused_with_a_reason() {
        assert!(matches!(
            FilterConfig::new(b"noop", b""),
            Ok(FilterConfig::Noop)
        ));
        let e = FilterConfig::new(b"other", b"").unwrap_err();
        assert!(e.contains("unknown filter_name"), "{e}");
        let e = FilterConfig::new(b"keygate", b"{}").unwrap_err();
        assert!(e.contains("configuration"), "{e}");
        let e = FilterConfig::new(
            b"keygate",
            br#"{"configuration": {"cluster": "c", "authority": "a", "edge_key": "k"}, "snapshot_file": "/nonexistent/x"}"#,
        )
        .unwrap_err();
        assert!(e.contains("snapshot_file"), "{e}");
    }
}
