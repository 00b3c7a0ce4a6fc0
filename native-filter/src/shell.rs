//! The native shell's request path, without FFI: the work on each request's headers, over the
//! [`Stream`] seam (Envoy's callbacks in the `ffi` module, a recording fake in the tests).
//!
//! The request path mirrors the proxy-wasm glue (`plugin/src/glue.rs`): the same view of the
//! headers (a byte that is not UTF-8 reads as [`decision::SUBSTITUTE`]), the same decision on
//! the set's state (Fresh, Stale or Unavailable: [`crate::published`]), the same header edits in
//! the same order, the same local reply; an allowed request is counted for usage
//! ([`crate::usage`]). The sync's own counters and gauges are not the request path's: its
//! thread flushes them ([`crate::metrics`]).

use std::cell::RefCell;
use std::sync::LazyLock;

use keygate_filter_core::decision::{
    self, Decision, Deny, DenyBodies, KeySetState, Reason, Request, decide,
};
use keygate_filter_core::limits::{self, AllowedFields, AtomicCounters, Outcome};
use smallvec::SmallVec;

use crate::config::{Keygate, Keys};

/// The process's rate-limit counters: one proxy, one count (exact), whatever the thread or the
/// filter configuration that sees the key.
static COUNTERS: LazyLock<AtomicCounters> = LazyLock::new(AtomicCounters::default);

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
    /// The client's address, Envoy's `source.address` (for a canary hit); `None` if unknown.
    fn client_address(&mut self) -> Option<String> {
        None
    }
    /// Keeps an allowed request's `RateLimit-Policy` and `RateLimit` for its response
    /// (`rate_limit_headers`; the stream's own filter object holds them until its response
    /// headers).
    fn keep_fields(&mut self, fields: AllowedFields);
}

/// What the filter tells Envoy after the request headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Carry on down the filter chain.
    Continue,
    /// Stop: a local reply was sent.
    Stop,
}

impl Keygate {
    /// Decides a request from its headers (every one, pseudo-headers included, as Envoy holds
    /// them) at `now_ms`, and acts on `stream`: on an allow, the header edits; on a deny,
    /// the local reply.
    ///
    /// `headers` may borrow Envoy's header map, whose memory an edit may free: whatever the
    /// edits need from it is copied before the first one.
    pub fn on_request_headers(
        &self,
        headers: &[(&[u8], &[u8])],
        now_ms: u64,
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
        let published;
        let state = match &self.keys {
            Keys::Fixed(set) => KeySetState::Fresh(set),
            Keys::Synced(sync) => {
                published = sync.shared_state().published.load();
                published.state(&self.config, now_ms)
            }
        };
        let decision = decide(&req, state, now_ms / 1000, &self.config);
        let reason = decision.reason();
        let verdict = match decision {
            Decision::Allow(a) if self.over_limit(&a, now_ms, stream) => Verdict::Stop,
            Decision::Allow(a) => {
                if let (Reason::Allowed, Some(key), Keys::Synced(sync)) =
                    (reason, a.key_id(), &self.keys)
                {
                    sync.shared_state().usage.record(key, now_ms / 1000);
                }
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
                // Before the reply: the request's view may borrow Envoy's header map.
                if let (Some(key), Keys::Synced(sync)) = (d.canary, &self.keys) {
                    let client = stream.client_address().unwrap_or_default();
                    let user_agent = req.header("user-agent").unwrap_or("");
                    sync.shared_state()
                        .canary
                        .push(key, now_ms, req.path, &client, user_agent);
                }
                if let (Some(key), Keys::Synced(sync)) = (d.exhausted, &self.keys) {
                    sync.shared_state().usage.record_refused(
                        key,
                        now_ms / 1000,
                        Reason::CreditsExhausted,
                    );
                }
                send_deny(&d, stream);
                Verdict::Stop
            }
        };
        stream.count(if verdict == Verdict::Stop && reason.is_allow() {
            Reason::RateLimited
        } else {
            reason
        });
        verdict
    }

    /// Counts an allowed request against its key's rate limits (nothing for a key without
    /// any); over one, answers the 429 with its fields and counts it for usage; within them and
    /// with `rate_limit_headers`, keeps the fields for the response.
    fn over_limit(&self, a: &decision::Allow<'_>, now_ms: u64, stream: &mut impl Stream) -> bool {
        let Some(id) = a.identity.as_ref().filter(|i| !i.limits().is_empty()) else {
            return false;
        };
        let fleet = self.config.rate_limit_fleet_size;
        let outcome = limits::check(
            id.limits(),
            id.key_id(),
            id.owner(),
            now_ms,
            fleet,
            &mut &*COUNTERS,
        );
        let status = match outcome {
            Outcome::Limited(status) => status,
            Outcome::Within(status) => {
                if self.config.rate_limit_headers {
                    stream.keep_fields(status.allowed_fields());
                }
                return false;
            }
            Outcome::Unlimited => return false,
        };
        if let Keys::Synced(sync) = &self.keys {
            sync.shared_state().usage.record_refused(
                id.key_id(),
                now_ms / 1000,
                Reason::RateLimited,
            );
        }
        let fields = status.limited_fields();
        let extra: SmallVec<[(&str, &str); 3]> =
            fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        send_deny_with(&limits::deny(), &extra, stream);
        true
    }
}

/// Answers with the filter's local reply for `deny`.
pub fn send_deny(deny: &Deny, stream: &mut impl Stream) {
    send_deny_with(deny, &[], stream);
}

/// Answers with the filter's local reply for `deny`, with `extra` headers (a 429's fields).
fn send_deny_with(deny: &Deny, extra: &[(&str, &str)], stream: &mut impl Stream) {
    let mut reply: SmallVec<[(&str, &str); 6]> = SmallVec::new();
    reply.push(("content-type", "application/json"));
    reply.push(("cache-control", "no-store"));
    if let Some(w) = deny.www_authenticate {
        reply.push(("www-authenticate", w));
    }
    reply.extend_from_slice(extra);
    // A panic inside a borrow (caught at the hook) leaves the cell borrowed for good: then a
    // body of its own.
    let sent = BODIES.with(|cell| {
        let Ok(mut bodies) = cell.try_borrow_mut() else {
            return false;
        };
        let body = bodies.body(deny);
        stream.send_reply(deny.status(), &reply, body.as_bytes());
        true
    });
    if !sent {
        let mut bodies = DenyBodies::default();
        let body = bodies.body(deny);
        stream.send_reply(deny.status(), &reply, body.as_bytes());
    }
}

/// The reply of a request whose handling failed (a panic caught at the hook): fail closed,
/// with the core's `503 keyset_unavailable`, counted as such.
pub fn fail_closed(stream: &mut impl Stream) -> Verdict {
    let deny = Deny::new(
        Reason::KeysetUnavailable,
        "the filter failed on this request",
    );
    send_deny(&deny, stream);
    stream.count(Reason::KeysetUnavailable);
    Verdict::Stop
}

impl Keygate {
    /// Whether allowed requests of limited keys carry the rate-limit fields: then each stream
    /// needs a filter object of its own to keep them until its response.
    pub fn fields_on_allowed(&self) -> bool {
        self.config.rate_limit_headers
    }

    /// [`DECIDE_ONLY`]: decides as [`Keygate::on_request_headers`] does, then makes
    /// [`host_calls_only`]'s callbacks whatever the decision.
    pub fn decide_then_host_calls(
        &self,
        headers: &[(&[u8], &[u8])],
        now_ms: u64,
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
        let published;
        let state = match &self.keys {
            Keys::Fixed(set) => KeySetState::Fresh(set),
            Keys::Synced(sync) => {
                published = sync.shared_state().published.load();
                published.state(&self.config, now_ms)
            }
        };
        let decision = decide(&req, state, now_ms / 1000, &self.config);
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
/// One allocation of the final size (a `collect` into `Option<Vec<_>>` cannot know the size,
/// and grew the vector on every request: 500 instructions in callgrind).
fn borrowed_text<'a>(headers: &[(&'a [u8], &'a [u8])]) -> Option<Vec<(&'a str, &'a str)>> {
    let mut view = Vec::with_capacity(headers.len());
    for &(k, v) in headers {
        view.push((std::str::from_utf8(k).ok()?, std::str::from_utf8(v).ok()?));
    }
    Some(view)
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
    use crate::config::FilterConfig;
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
        kept: Option<AllowedFields>,
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
        fn keep_fields(&mut self, fields: AllowedFields) {
            self.kept = Some(fields);
        }
    }

    fn no_log(_: keygate_filter_core::host::LogLevel, _: &str) {}

    /// A configuration holding one key (returned), with its snapshot in `dir`.
    fn keygate(dir: &std::path::Path) -> (Keygate, String, KeyId) {
        keygate_with(dir, Default::default(), false)
    }

    /// [`keygate`] with the key's `policy` and the configuration's `rate_limit_headers`.
    fn keygate_with(
        dir: &std::path::Path,
        policy: keygate_protocol::policy::Policy,
        rate_limit_headers: bool,
    ) -> (Keygate, String, KeyId) {
        let k = key::generate("kg_live").unwrap();
        let key_id = KeyId::from_bytes([7; 16]);
        let snapshot = Snapshot {
            revision: 1,
            entries: vec![KeyEntry {
                policy,
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
                "routes": [{"path_prefix": "/", "required_scopes": []}],
                "rate_limit_headers": rate_limit_headers
            },
            "snapshot_file": path.to_str().unwrap(),
        });
        let config = Keygate::new(filter_config.to_string().as_bytes(), no_log).unwrap();
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
            FilterConfig::new(b"decide-only", b"{}", no_log).unwrap_err(),
            FilterConfig::new(b"keygate", b"{}", no_log).unwrap_err(),
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
    fn an_allowed_request_of_a_limited_key_keeps_its_fields_only_when_asked() {
        use keygate_protocol::policy::{LimitPool, Policy, RateLimit};
        let policy = Policy {
            limits: vec![RateLimit {
                name: "burst".into(),
                limit: 2,
                window_s: 10,
                pool: LimitPool::Key,
            }],
            ..Policy::default()
        };
        let now = 1_763_900_004_000; // 6 s before a 10 s window ends
        for asked in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (config, secret, _) = keygate_with(dir.path(), policy.clone(), asked);
            assert_eq!(config.fields_on_allowed(), asked);
            let h = request(&[(b"x-api-key", secret.as_bytes())]);
            let mut s = Recorded::default();
            assert_eq!(
                config.on_request_headers(&h, now, &mut s),
                Verdict::Continue
            );
            let expected = asked.then(|| {
                [
                    ("ratelimit-policy", r#""burst";q=2;w=10"#.to_owned()),
                    ("ratelimit", r#""burst";r=1;t=6"#.to_owned()),
                ]
            });
            assert_eq!(s.kept, expected, "rate_limit_headers {asked}");
        }
        // A key without limits keeps nothing, the option on or not.
        let dir = tempfile::tempdir().unwrap();
        let (config, secret, _) = keygate_with(dir.path(), Policy::default(), true);
        let mut s = Recorded::default();
        let h = request(&[(b"x-api-key", secret.as_bytes())]);
        assert_eq!(
            config.on_request_headers(&h, now, &mut s),
            Verdict::Continue
        );
        assert_eq!(s.kept, None);
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
            FilterConfig::new(b"noop", b"", no_log),
            Ok(FilterConfig::Noop)
        ));
        let e = FilterConfig::new(b"other", b"", no_log).unwrap_err();
        assert!(e.contains("unknown filter_name"), "{e}");
        let e = FilterConfig::new(b"keygate", b"{}", no_log).unwrap_err();
        assert!(e.contains("configuration"), "{e}");
        let e = FilterConfig::new(
            b"keygate",
            br#"{"configuration": {"cluster": "c", "authority": "a", "edge_key": "k"}, "snapshot_file": "/nonexistent/x"}"#,
            no_log,
        )
        .unwrap_err();
        assert!(e.contains("snapshot_file"), "{e}");
        for (config, says) in [
            (
                r#"{"cluster": "c", "authority": "a", "edge_key": "k"}"#,
                "either",
            ),
            (
                r#"{"cluster": "c", "authority": "a", "edge_key": "k"}, "control_plane_url": "https://cp", "snapshot_file": "x""#,
                "either",
            ),
            (
                r#"{"cluster": "c", "authority": "a", "edge_key": "k"}, "control_plane_url": "ftp://cp""#,
                "give http://host:port or https://host:port",
            ),
            (
                r#"{"cluster": "c", "authority": "a", "edge_key": "k"}, "control_plane_url": "http://cp", "ca_file": "/etc/ssl/ca.pem""#,
                "ca_file is for an https://",
            ),
            (
                r#"{"cluster": "c", "authority": "a", "edge_key": "k"}, "control_plane_url": "https://cp", "ca_file": "/nonexistent/ca.pem""#,
                "ca_file \"/nonexistent/ca.pem\"",
            ),
            (
                r#"{"cluster": "c", "authority": "a", "edge_key": "k"}, "control_plane_url": "http://""#,
                "no host",
            ),
        ] {
            let json = format!(r#"{{"configuration": {config}}}"#);
            let e = FilterConfig::new(b"keygate", json.as_bytes(), no_log).unwrap_err();
            assert!(e.contains(says), "{json}: {e}");
        }
    }

    /// A synced configuration whose control plane is not there: every keyed request fails
    /// closed (no set yet), an anonymous route still passes.
    #[test]
    fn before_the_first_sync_keyed_requests_fail_closed() {
        let _serial = crate::sync_thread::SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let filter_config = serde_json::json!({
            "configuration": {
                "cluster": "fail-closed-test",
                "authority": "cp",
                "edge_key": "kg_edge_x",
                "key_sources": [{"header": "x-api-key"}],
                "routes": [
                    {"path_prefix": "/open", "anonymous": true},
                    {"path_prefix": "/", "required_scopes": []}
                ]
            },
            "control_plane_url": format!("http://127.0.0.1:{port}"),
        });
        let config = Keygate::new(filter_config.to_string().as_bytes(), no_log).unwrap();
        let key = key::generate("kg_live").unwrap();
        let mut s = Recorded::default();
        let h = request(&[(b"x-api-key", key.expose_secret().as_bytes())]);
        assert_eq!(config.on_request_headers(&h, 1, &mut s), Verdict::Stop);
        let (status, _, body) = s.reply.unwrap();
        assert_eq!(status, 503);
        assert!(body.contains("keyset_unavailable"), "{body}");
        let mut s = Recorded::default();
        let h = vec![(&b":method"[..], &b"GET"[..]), (b":path", b"/open/x")];
        assert_eq!(config.on_request_headers(&h, 1, &mut s), Verdict::Continue);
        let mut s = Recorded::default();
        assert_eq!(fail_closed(&mut s), Verdict::Stop);
        assert_eq!(s.reply.unwrap().0, 503);
        assert_eq!(s.counted, vec![Reason::KeysetUnavailable]);
    }
}
