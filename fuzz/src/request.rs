//! `filter_request`: the filter's per-request decision (the native core, `decision::decide`) fed
//! arbitrary header maps. It never panics; nobody passes without a valid, unexpired key that
//! has the route's scopes and resource, on a fresh set; client `x-keygate-*` and identity headers
//! never reach upstream; a hidden credential never reaches upstream; denials never echo a key.

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use keygate_filter_core::config::{Config, FailureMode};
use keygate_filter_core::decision::{Allow, Decision, Identity, KeySetState, Reason, Request, decide};
use keygate_protocol::KeyId;
use keygate_protocol::keyset::KeySet;
use keygate_protocol::wire::{KeyEntry, Snapshot};

/// A fuzz case.
#[derive(Debug, Arbitrary)]
pub struct Case {
    pub(crate) config: u8,
    state: u8,
    now: Now,
    method: Option<Piece>,
    path: Option<PathPiece>,
    headers: Vec<(Name, Piece)>,
}

/// The clock.
#[derive(Debug, Arbitrary)]
enum Now {
    BeforeExpiry,
    AfterExpiry,
    AtExpiry,
    Any(u64),
}

/// A header name: from a pool (mixed case, identity and `x-keygate-*` names) or any string.
#[derive(Debug, Arbitrary)]
enum Name {
    Pool(u8),
    Raw(String),
}

/// A header value: a key (known, unknown, mistyped) in some wrapping, a pool value, or any string.
#[derive(Debug, Arbitrary)]
enum Piece {
    Key { which: u8, form: u8 },
    Pool(u8),
    Raw(String),
}

/// A `:path`.
#[derive(Debug, Arbitrary)]
enum PathPiece {
    Pool(u8),
    WithKey {
        base: u8,
        which: u8,
        param: u8,
        extra: bool,
    },
    Raw(String),
}

const NAMES: [&str; 18] = [
    ":method",
    ":path",
    ":authority",
    "x-api-key",
    "X-API-KEY",
    "authorization",
    "Authorization",
    "cookie",
    "x-keygate-key-id",
    "X-Keygate-Owner",
    "x-keygate-scopes",
    "x-keygate-extra",
    "x-user-id",
    "X-User-Owner",
    "x-user-scopes",
    "x-key",
    "host",
    "x-other",
];
const VALUES: [&str; 8] = [
    "",
    " ",
    "Bearer",
    "Bearer ",
    "Basic abc",
    "kg_live_",
    "a=b; c",
    "GET",
];
const PATHS: [&str; 9] = [
    "/",
    "/health",
    "/healthz",
    "/repos/acme/widgets",
    "/repos/other/x/y",
    "/repos/",
    "/api/v1/thing",
    "/repos/acme/widgets?x=1",
    "",
];
const PARAMS: [&str; 3] = ["api_key", "key", "API_KEY"];
const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "get", "DELETE", ""];

pub(crate) const EXPIRY: u64 = 1_800_000_000;

/// A key the fixture knows: its secret and, when it is in the set, its entry.
pub struct FixtureKey {
    /// The key string.
    pub secret: String,
    /// Its set entry (`None`: well-formed but not in the set, or mistyped).
    pub entry: Option<KeyEntry>,
}

/// The fixed keys, set and configurations every case draws from.
pub struct Fixture {
    /// Keys: 0–2 in the set, 3 unknown, 4 a mistyped copy of 0.
    pub keys: Vec<FixtureKey>,
    /// The set holding keys 0–2.
    pub set: KeySet,
    /// The configurations.
    pub configs: Vec<Config>,
}

fn make_key(prefix: &str, seed: u8) -> String {
    let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let body: String = (0..32u32)
        .map(|i| char::from(alphabet[((u32::from(seed) * 7 + i * 13) % 62) as usize]))
        .collect();
    let head = format!("{prefix}_{body}");
    let sum = crate::key::reference_checksum(head.as_bytes());
    format!("{head}{sum}")
}

/// The configurations, as JSON.
pub const CONFIGS: [&str; 4] = [
    r#"{"cluster":"cp","authority":"cp.local","edge_key":"kg_edge_secret"}"#,
    r#"{"cluster":"keygate_control_plane","authority":"keygate.internal","edge_key":"kg_edge_x","sync_interval_ms":1000,"long_poll_wait_s":25,
        "key_sources":[{"header":"x-api-key"},{"bearer":true},{"query":"api_key"},{"cookie":"kg_key"}],"accepted_prefixes":["kg_live"],
        "routes":[{"path_prefix":"/health","anonymous":true},
                  {"path_prefix":"/repos/","methods":["GET","HEAD"],"required_scopes":["repo:read"],"resource_from_path_segment":1},
                  {"path_prefix":"/repos/","required_scopes":["repo:write"],"resource_from_path_segment":1}],
        "identity_headers":{"key_id":"x-keygate-key-id","owner":"x-keygate-owner","scopes":"x-keygate-scopes"},
        "hide_credentials":true,"failure_mode":"closed","max_staleness_s":300,"usage_report_interval_ms":10000,"usage_cluster":"keygate_control_plane"}"#,
    r#"{"cluster":"cp","authority":"cp","edge_key":"e","key_sources":[{"query":"api_key"},{"cookie":"kg_key"},{"bearer":true}],
        "hide_credentials":false,"failure_mode":"open","identity_headers":{"key_id":"x-user-id","owner":"x-user-owner","scopes":"x-user-scopes"},
        "routes":[{"path_prefix":"/repos/","required_scopes":["repo:read"],"resource_from_path_segment":2},{"path_prefix":"/healthz","methods":["get"],"anonymous":true}]}"#,
    r#"{"cluster":"cp","authority":"cp","edge_key":"e","key_sources":[{"header":"x-key"},{"cookie":"kg_key"}],"accepted_prefixes":["kg_test"],
        "routes":[{"path_prefix":"/","required_scopes":["repo:read"]}]}"#,
];

/// A fixture key: prefix, owner, scopes, resources, expiry.
type KeySpec = (
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    Option<u64>,
);

/// The shared fixture (built once).
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let specs: [KeySpec; 3] = [
            (
                "kg_live",
                "org_a",
                &["repo:read", "repo:write"],
                &["acme/*"],
                None,
            ),
            ("kg_live", "org_b", &["repo:read"], &[], Some(EXPIRY)),
            ("kg_test", "org_c", &["repo:read"], &["other/x"], None),
        ];
        let mut keys: Vec<FixtureKey> = specs
            .iter()
            .enumerate()
            .map(|(i, (prefix, owner, scopes, resources, expires_at))| {
                let secret = make_key(prefix, i as u8 + 1);
                let entry = KeyEntry {
                    policy: Default::default(),
                    digest: keygate_protocol::Digest::of(&secret),
                    key_id: KeyId::from_bytes([i as u8 + 1; 16]),
                    owner: (*owner).to_owned(),
                    expires_at: *expires_at,
                    scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                    resources: resources.iter().map(|s| (*s).to_owned()).collect(),
                };
                FixtureKey {
                    secret,
                    entry: Some(entry),
                }
            })
            .collect();
        keys.push(FixtureKey {
            secret: make_key("kg_live", 9),
            entry: None,
        });
        let mut typo = keys[0].secret.clone().into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        keys.push(FixtureKey {
            secret: String::from_utf8(typo).expect("ASCII"),
            entry: None,
        });
        let snapshot = Snapshot {
            revision: 1,
            entries: keys.iter().filter_map(|k| k.entry.clone()).collect(),
        };
        let mut set = KeySet::new();
        set.apply(&snapshot.encode().expect("fixture encodes"))
            .expect("fixture applies");
        let configs = CONFIGS
            .iter()
            .map(|c| Config::from_json(c.as_bytes()).expect("fixture config is valid"))
            .collect();
        Fixture { keys, set, configs }
    })
}

fn key_value(f: &Fixture, which: u8, form: u8) -> String {
    let k = &f.keys[usize::from(which) % f.keys.len()].secret;
    match form % 9 {
        0 => k.clone(),
        1 => format!("  {k} "),
        2 => format!("Bearer {k}"),
        3 => format!("bearer   {k}  "),
        4 => format!("Basic {k}"),
        5 => format!("kg_key={k}"),
        6 => format!("a=1; kg_key=\"{k}\"; b=2"),
        7 => format!("{k},{k}"),
        _ => format!("kg_key={k}; kg_key=other"),
    }
}

fn piece(f: &Fixture, p: &Piece) -> String {
    match p {
        Piece::Key { which, form } => key_value(f, *which, *form),
        Piece::Pool(i) => VALUES[usize::from(*i) % VALUES.len()].to_owned(),
        Piece::Raw(s) => s.clone(),
    }
}

/// Builds the header list of a case.
pub(crate) fn headers_of(f: &Fixture, case: &Case) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(m) = &case.method {
        let v = match m {
            Piece::Pool(i) => METHODS[usize::from(*i) % METHODS.len()].to_owned(),
            other => piece(f, other),
        };
        out.push((":method".to_owned(), v));
    }
    if let Some(p) = &case.path {
        let v = match p {
            PathPiece::Pool(i) => PATHS[usize::from(*i) % PATHS.len()].to_owned(),
            PathPiece::WithKey {
                base,
                which,
                param,
                extra,
            } => {
                let base = PATHS[usize::from(*base) % PATHS.len()];
                let k = &f.keys[usize::from(*which) % f.keys.len()].secret;
                let sep = if base.contains('?') { '&' } else { '?' };
                let param = PARAMS[usize::from(*param) % PARAMS.len()];
                let tail = if *extra { "&z=1#frag" } else { "" };
                format!("{base}{sep}{param}={k}{tail}")
            }
            PathPiece::Raw(s) => s.clone(),
        };
        out.push((":path".to_owned(), v));
    }
    for (n, v) in case.headers.iter().take(32) {
        let name = match n {
            Name::Pool(i) => NAMES[usize::from(*i) % NAMES.len()].to_owned(),
            Name::Raw(s) => s.clone(),
        };
        out.push((name, piece(f, v)));
    }
    out
}

/// The request upstream sees after an allow: removals (case-insensitive, every copy), then sets
/// (replacing every copy), then the key's cookie stripped from the cookie headers' bytes, then
/// the identity headers added (as the host's add: no search, so a
/// client copy the decision failed to remove would still be there). Values are text or, as
/// the host holds them, bytes.
pub(crate) fn forwarded<V: Clone + From<String> + Value>(
    headers: &[(String, V)],
    allow: &Allow<'_>,
) -> Vec<(String, V)> {
    let mut out: Vec<(String, V)> = headers
        .iter()
        .filter(|(k, _)| !allow.remove.iter().any(|r| r.eq_ignore_ascii_case(k)))
        .cloned()
        .collect();
    for (name, value) in &allow.set {
        out.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        out.push(((*name).to_owned(), value.clone().into()));
    }
    if !allow.strip_cookies.is_empty() {
        // Written out here, not with the filter's `cookies_without`: Envoy's `setCopy` of the
        // cookie header (the first one takes the value, later ones go), over the bytes sent.
        let mut rest: Vec<u8> = Vec::new();
        for (_, v) in headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
        {
            for c in v.bytes().split(|&b| b == b';') {
                let c = trim_ows(c);
                let k = trim_ows(c.split(|&b| b == b'=').next().unwrap_or_default());
                if c.is_empty() || allow.strip_cookies.iter().any(|n| k == n.as_bytes()) {
                    continue;
                }
                if !rest.is_empty() {
                    rest.extend_from_slice(b"; ");
                }
                rest.extend_from_slice(c);
            }
        }
        let first = out
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case("cookie"));
        out.retain(|(k, _)| !k.eq_ignore_ascii_case("cookie"));
        if !rest.is_empty() {
            let at = first.unwrap_or(out.len());
            out.insert(at, ("cookie".to_owned(), V::from_bytes(rest)));
        }
    }
    for (name, value) in allow.identity.iter().flat_map(Identity::headers) {
        out.push((name.to_owned(), value.to_owned().into()));
    }
    out
}

/// Space and tab trimmed from both ends (RFC 6265's optional whitespace).
fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// A header value of the request models: a string or the bytes on the wire.
pub(crate) trait Value {
    /// The value's bytes.
    fn bytes(&self) -> &[u8];
    /// A value from bytes (a rewrite of values that were of this type).
    fn from_bytes(bytes: Vec<u8>) -> Self;
}

impl Value for String {
    fn bytes(&self) -> &[u8] {
        self.as_bytes()
    }
    fn from_bytes(bytes: Vec<u8>) -> Self {
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Value for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn from_bytes(bytes: Vec<u8>) -> Self {
        bytes
    }
}

/// The fuzz target.
pub fn check(case: &Case) {
    let f = fixture();
    let config = &f.configs[usize::from(case.config) % f.configs.len()];
    let state = match case.state % 3 {
        0 => KeySetState::Fresh(&f.set),
        1 => KeySetState::Stale(&f.set),
        _ => KeySetState::Unavailable,
    };
    let now = match case.now {
        Now::BeforeExpiry => EXPIRY - 1000,
        Now::AfterExpiry => EXPIRY + 1000,
        Now::AtExpiry => EXPIRY,
        Now::Any(x) => x,
    };
    let headers = headers_of(f, case);
    let req = Request::from_headers(&headers);
    let decision = decide(&req, state, now, config);
    let ih = &config.identity_headers;
    let is_identity = |k: &str| {
        k.len() >= 10 && k.as_bytes()[..10].eq_ignore_ascii_case(b"x-keygate-")
            || [&ih.key_id, &ih.owner, &ih.scopes]
                .iter()
                .any(|h| h.eq_ignore_ascii_case(k))
    };
    match &decision {
        Decision::Deny(d) => {
            assert!(!d.reason.is_allow());
            assert!(
                matches!(d.status(), 400 | 401 | 403 | 503),
                "deny status {}",
                d.status()
            );
            if d.status() == 400 {
                assert_eq!(d.reason, Reason::InvalidPath);
                assert!(!keygate_filter_core::decision::is_normal_path(req.path_only()));
            }
            let body: serde_json::Value =
                serde_json::from_str(&d.body()).expect("deny body is JSON");
            assert_eq!(body["error"]["code"], d.reason.code());
            assert_eq!(
                d.www_authenticate.is_some(),
                matches!(d.status(), 401 | 403)
            );
            for k in &f.keys {
                assert!(
                    !d.message.contains(&k.secret) && !d.body().contains(&k.secret),
                    "a deny echoes a key"
                );
            }
        }
        Decision::Allow(a) => {
            assert!(a.reason.is_allow());
            // Client-sent identity headers never reach upstream, whatever the reason.
            let fwd = forwarded(&headers, a);
            for (k, v) in &headers {
                if is_identity(k) {
                    assert!(
                        !fwd.iter().any(|(fk, fv)| fk.eq_ignore_ascii_case(k)
                            && fv == v
                            && !a
                                .set
                                .iter()
                                .map(|(s, sv)| (*s, sv.as_str()))
                                .chain(a.identity.iter().flat_map(Identity::headers))
                                .any(|(s, sv)| s.eq_ignore_ascii_case(k) && sv == v)),
                        "client header {k:?} reaches upstream"
                    );
                }
            }
            match a.reason {
                Reason::Allowed => check_allowed(f, config, &req, state, now, &headers, a, &fwd),
                Reason::FailOpen => {
                    assert!(
                        matches!(state, KeySetState::Stale(_))
                            && config.failure_mode == FailureMode::Open
                    );
                    assert!(a.key_id().is_none());
                    assert!(
                        hiding_only(a),
                        "fail-open sets {:?} {:?}",
                        a.set,
                        a.identity
                    );
                }
                Reason::Anonymous => {
                    assert!(a.key_id().is_none());
                    assert!(
                        hiding_only(a),
                        "anonymous sets {:?} {:?}",
                        a.set,
                        a.identity
                    );
                    let path = req.path.split_once('?').map_or(req.path, |(p, _)| p);
                    let route = config.routes.iter().find(|r| r.matches(req.method, path));
                    assert!(
                        route.is_some_and(|r| r.anonymous),
                        "anonymous pass on a keyed route"
                    );
                }
                other => panic!("allow with a deny reason {other:?}"),
            }
        }
    }
}

/// A pass without identity sets nothing but what hides a credential (a query rewrite; a cookie
/// is stripped apart).
fn hiding_only(a: &Allow<'_>) -> bool {
    a.identity.is_none() && a.set.iter().all(|(k, _)| *k == ":path")
}

#[allow(clippy::too_many_arguments)]
fn check_allowed(
    f: &Fixture,
    config: &Config,
    req: &Request<'_>,
    state: KeySetState<'_>,
    now: u64,
    headers: &[(String, String)],
    a: &Allow<'_>,
    fwd: &[(String, String)],
) {
    assert!(
        matches!(state, KeySetState::Fresh(_)),
        "allowed without a fresh set"
    );
    let id = a.key_id().expect("an allowed request names its key");
    let key = f
        .keys
        .iter()
        .find(|k| k.entry.as_ref().is_some_and(|e| e.key_id == id))
        .expect("the allowed key is in the set");
    let entry = key.entry.as_ref().expect("in the set");
    let occurrences: usize = headers
        .iter()
        .map(|(_, v)| v.matches(key.secret.as_str()).count())
        .sum();
    assert!(
        occurrences >= 1,
        "allowed with a key the request does not carry"
    );
    assert!(
        entry.expires_at.is_none_or(|e| now < e),
        "an expired key passes"
    );
    if let Some(p) = &config.accepted_prefixes {
        assert!(p.iter().any(|p| key.secret.starts_with(&format!("{p}_"))));
    }
    let path = req.path.split_once('?').map_or(req.path, |(p, _)| p);
    if let Some(route) = config.routes.iter().find(|r| r.matches(req.method, path)) {
        assert!(!route.anonymous);
        for s in &route.required_scopes {
            assert!(entry.scopes.contains(s), "passes without scope {s}");
        }
        if let Some(i) = route.resource_from_path_segment {
            let seg = path
                .strip_prefix('/')
                .unwrap_or(path)
                .split('/')
                .nth(i)
                .filter(|s| !s.is_empty());
            let seg = seg.expect("passes without the resource segment");
            assert!(
                keygate_protocol::scope::resource_allowed(&entry.resources, seg),
                "resource {seg} not allowed"
            );
        }
    }
    let get = |name: &str| {
        a.identity
            .iter()
            .flat_map(Identity::headers)
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    };
    let ih = &config.identity_headers;
    assert_eq!(get(&ih.key_id), Some(id.to_string().as_str()));
    assert_eq!(get(&ih.owner), Some(entry.owner.as_str()));
    assert_eq!(get(&ih.scopes), Some(entry.scopes.join(" ").as_str()));
    // Added, not replaced: exactly one copy of each reaches upstream, the filter's.
    for name in [&ih.key_id, &ih.owner, &ih.scopes] {
        let copies = fwd.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
        assert_eq!(copies.count(), 1, "{name} upstream more than once");
    }
    if config.hide_credentials && occurrences == 1 {
        for (k, v) in fwd {
            assert!(
                !v.contains(&key.secret),
                "the credential reaches upstream in {k:?}"
            );
        }
    }
}
