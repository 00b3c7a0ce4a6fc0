//! The per-request decision: request view + key set + clock + configuration → allow or deny.
//!
//! Pure and allocation-light: the key is borrowed from the request, parsed without allocating,
//! hashed on the stack and looked up in the [`KeySet`]; only the headers to set upstream (and a
//! deny's message) are allocated.

use std::borrow::Cow;

use keygate_protocol::key;
use keygate_protocol::keyset::KeySet;
use keygate_protocol::swar::bytes_equal;
use keygate_protocol::{KeyId, KeyIdText};
use smallvec::SmallVec;

use crate::config::{Config, FailureMode, IdentityHeaders, KeySource, Route};

/// What each byte of a header's sequence that is not UTF-8 reads as in a [`Request`]: U+001A
/// SUBSTITUTE. One byte for one byte, so a shell's layout holds; never whitespace, a delimiter or
/// a key character, so a key source that holds one is malformed (not missing), and a cookie or
/// `Authorization` header with such bytes elsewhere still yields its key. Envoy's codecs refuse
/// control characters in header values, so a client cannot send this byte itself. Every shell
/// (the proxy-wasm glue's header-map reader, the dynamic module) substitutes with this.
pub const SUBSTITUTE: u8 = 0x1a;

/// A request as the filter sees it: pseudo-headers (`:method`, `:path`) and headers, names lowercase.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path`, with its query string.
    pub path: &'a str,
    /// Every request header (pseudo-headers included), as Envoy hands them over.
    pub headers: Vec<(&'a str, &'a str)>,
    /// `path` up to its query string.
    path_only: &'a str,
}

impl<'a> Request<'a> {
    /// Builds the view from borrowed header pairs, reading `:method` and `:path` from them.
    pub fn from_pairs(headers: Vec<(&'a str, &'a str)>) -> Self {
        let mut method = "";
        let mut path = "";
        for &(k, v) in &headers {
            match k {
                ":method" => method = v,
                ":path" => path = v,
                _ => {}
            }
        }
        // A byte scan: `split_once('?')` goes through the `char` searcher, dearer in wasm.
        let path_only = path
            .bytes()
            .position(|b| b == b'?')
            .map_or(path, |q| &path[..q]);
        Self {
            method,
            path,
            headers,
            path_only,
        }
    }

    /// Builds the view from an owned header list (tests, benches, the fuzz targets).
    pub fn from_headers(headers: &'a [(String, String)]) -> Self {
        Self::from_pairs(
            headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        )
    }

    /// The first value of header `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|&(_, v)| v)
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &'a str {
        self.path_only
    }
}

/// Why a request was allowed or denied; each has a stable machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A valid key with the needed scopes and resource.
    Allowed,
    /// An anonymous route.
    Anonymous,
    /// The key set is too stale and `failure_mode` is `open`.
    FailOpen,
    /// No key in any configured source.
    MissingKey,
    /// The key does not parse (format or checksum).
    MalformedKey,
    /// The key's prefix is not in `accepted_prefixes`.
    PrefixNotAccepted,
    /// Well-formed but not in the key set (never issued, revoked, suspended).
    UnknownKey,
    /// In the set but past its expiry.
    ExpiredKey,
    /// The key lacks a required scope.
    InsufficientScope,
    /// The key's allow-list does not cover the requested resource.
    ResourceNotAllowed,
    /// No key set yet (before the first successful sync).
    KeysetUnavailable,
    /// The key set is older than `max_staleness_s` and `failure_mode` is `closed`.
    KeysetStale,
    /// The path is not in normal form (dot segments, encoded separators or dot segments,
    /// backslashes, empty segments): an upstream could resolve it to another route.
    InvalidPath,
}

impl Reason {
    /// Every reason, for pre-registering metrics.
    pub const ALL: [Reason; 13] = [
        Reason::Allowed,
        Reason::Anonymous,
        Reason::FailOpen,
        Reason::MissingKey,
        Reason::MalformedKey,
        Reason::PrefixNotAccepted,
        Reason::UnknownKey,
        Reason::ExpiredKey,
        Reason::InsufficientScope,
        Reason::ResourceNotAllowed,
        Reason::KeysetUnavailable,
        Reason::KeysetStale,
        Reason::InvalidPath,
    ];

    /// This reason's position in [`Reason::ALL`], for per-reason tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The machine-readable code (`unknown_key`).
    pub fn code(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::Anonymous => "anonymous",
            Reason::FailOpen => "fail_open",
            Reason::MissingKey => "missing_key",
            Reason::MalformedKey => "malformed_key",
            Reason::PrefixNotAccepted => "prefix_not_accepted",
            Reason::UnknownKey => "unknown_key",
            Reason::ExpiredKey => "expired_key",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::ResourceNotAllowed => "resource_not_allowed",
            Reason::KeysetUnavailable => "keyset_unavailable",
            Reason::KeysetStale => "keyset_stale",
            Reason::InvalidPath => "invalid_path",
        }
    }

    /// The `WWW-Authenticate` challenge of a deny with this reason (RFC 6750), for 401 and 403.
    pub fn www_authenticate(self) -> Option<&'static str> {
        Some(match self {
            Reason::MissingKey => r#"Bearer realm="keygate""#,
            Reason::MalformedKey => {
                r#"Bearer realm="keygate", error="invalid_token", error_description="malformed_key""#
            }
            Reason::PrefixNotAccepted => {
                r#"Bearer realm="keygate", error="invalid_token", error_description="prefix_not_accepted""#
            }
            Reason::UnknownKey => {
                r#"Bearer realm="keygate", error="invalid_token", error_description="unknown_key""#
            }
            Reason::ExpiredKey => {
                r#"Bearer realm="keygate", error="invalid_token", error_description="expired_key""#
            }
            Reason::InsufficientScope => {
                r#"Bearer realm="keygate", error="insufficient_scope", error_description="insufficient_scope""#
            }
            Reason::ResourceNotAllowed => {
                r#"Bearer realm="keygate", error="insufficient_scope", error_description="resource_not_allowed""#
            }
            Reason::Allowed
            | Reason::Anonymous
            | Reason::FailOpen
            | Reason::KeysetUnavailable
            | Reason::KeysetStale
            | Reason::InvalidPath => return None,
        })
    }

    /// Whether requests with this reason pass.
    pub fn is_allow(self) -> bool {
        matches!(self, Reason::Allowed | Reason::Anonymous | Reason::FailOpen)
    }

    /// The HTTP status of a deny with this reason (200 for allows).
    pub fn status(self) -> u16 {
        match self {
            Reason::Allowed | Reason::Anonymous | Reason::FailOpen => 200,
            Reason::MissingKey
            | Reason::MalformedKey
            | Reason::PrefixNotAccepted
            | Reason::UnknownKey
            | Reason::ExpiredKey => 401,
            Reason::InsufficientScope | Reason::ResourceNotAllowed => 403,
            Reason::KeysetUnavailable | Reason::KeysetStale => 503,
            Reason::InvalidPath => 400,
        }
    }

    /// Metric name counting decisions with this reason: `keygate.decision.<outcome>.<code>`.
    pub fn metric_name(self) -> String {
        let outcome = if self.is_allow() { "allow" } else { "deny" };
        format!("keygate.decision.{outcome}.{}", self.code())
    }
}

/// The state of this worker's key set as the decision sees it.
#[derive(Debug, Clone, Copy)]
pub enum KeySetState<'a> {
    /// No successful sync yet: fail closed.
    Unavailable,
    /// Synced within `max_staleness_s`.
    Fresh(&'a KeySet),
    /// Older than `max_staleness_s`: the failure mode applies.
    Stale(&'a KeySet),
}

/// Let the request through, after these header changes (removals first, then sets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow<'a> {
    /// Why it passes.
    pub reason: Reason,
    /// Header names to remove (spoofed identity headers, the credential header); held inline
    /// up to four, the usual one or two without an allocation.
    pub remove: Removals<'a>,
    /// Headers to set, replacing what is there (`:path` rewritten without the credential).
    pub set: Vec<(&'a str, String)>,
    /// The names of the key cookies to hide: every `cookie` header becomes
    /// [`cookies_without`] them, computed by the host shell from the bytes the client sent (the
    /// decision reads a string view; other cookies may hold bytes that are not UTF-8), and the
    /// header goes when no cookie is left.
    pub strip_cookies: CookieNames<'a>,
    /// Identity headers to add after the removals (key id, owner, scopes), for an allowed key.
    /// None of them is present by then: every one the client sent is in `remove`, so the host
    /// is asked to add, the cheaper call, not to replace.
    pub identity: Option<Identity<'a>>,
}

impl Allow<'_> {
    /// The key that was used (for usage counting): `None` on a pass without a key (anonymous
    /// route, fail-open).
    pub fn key_id(&self) -> Option<KeyId> {
        self.identity.as_ref().map(|i| i.key_id)
    }
}

/// Names of request headers to remove.
pub type Removals<'a> = SmallVec<[&'a str; 4]>;

/// Names of cookies to remove.
pub type CookieNames<'a> = SmallVec<[&'a str; 1]>;

/// The identity headers of an allowed key, without an allocation: the names from the
/// configuration, the key id's text on the stack, the owner and the scope list borrowed from the
/// key set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity<'a> {
    names: &'a IdentityHeaders,
    key_id: KeyId,
    key_id_text: KeyIdText,
    owner: &'a str,
    scopes: &'a str,
}

impl Identity<'_> {
    /// The headers, name and value: key id, owner, scopes.
    pub fn headers(&self) -> [(&str, &str); 3] {
        [
            (&self.names.key_id, self.key_id_text.as_str()),
            (&self.names.owner, self.owner),
            (&self.names.scopes, self.scopes),
        ]
    }
}

/// Answer locally with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    /// Why.
    pub reason: Reason,
    /// Human-readable message (never contains the key).
    pub message: Cow<'static, str>,
    /// `WWW-Authenticate` value for 401/403.
    pub www_authenticate: Option<&'static str>,
}

impl Deny {
    /// A deny with `reason` and `message` (its challenge follows from the reason).
    pub fn new(reason: Reason, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            reason,
            message: message.into(),
            www_authenticate: reason.www_authenticate(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.reason.status()
    }

    /// The JSON body: `{"error":{"code":"…","message":"…"}}`.
    pub fn body(&self) -> String {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            error: Error<'a>,
        }
        #[derive(serde::Serialize)]
        struct Error<'a> {
            code: &'a str,
            message: &'a str,
        }
        let body = Body {
            error: Error {
                code: self.reason.code(),
                message: &self.message,
            },
        };
        // Serializing two string fields cannot fail; the fallback keeps the code readable.
        serde_json::to_string(&body)
            .unwrap_or_else(|_| format!(r#"{{"error":{{"code":"{}"}}}}"#, self.reason.code()))
    }
}

/// Deny bodies already serialized: a deny whose message is a static string gets the body made
/// the last time its reason had that message (the request path then formats nothing); any
/// other message is serialized afresh.
#[derive(Debug, Default)]
pub struct DenyBodies {
    cached: [Option<(&'static str, String)>; Reason::ALL.len()],
}

impl DenyBodies {
    /// The body of `deny`, the same bytes as [`Deny::body`].
    pub fn body(&mut self, deny: &Deny) -> Cow<'_, str> {
        let Cow::Borrowed(message) = deny.message else {
            return Cow::Owned(deny.body());
        };
        let slot = &mut self.cached[deny.reason.index()];
        match slot {
            // The same static string is nearly always the same pointer: no byte compare then.
            Some((m, _)) if std::ptr::eq(*m, message) || *m == message => {}
            _ => *slot = Some((message, deny.body())),
        }
        Cow::Borrowed(slot.as_ref().map_or("", |(_, body)| body.as_str()))
    }
}

/// The filter's verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Forward upstream.
    Allow(Allow<'a>),
    /// Reply locally.
    Deny(Deny),
}

impl Decision<'_> {
    /// The reason, whichever way it went.
    pub fn reason(&self) -> Reason {
        match self {
            Decision::Allow(a) => a.reason,
            Decision::Deny(d) => d.reason,
        }
    }
}

/// The key, from the first configured source that has one.
fn find_key<'a>(req: &Request<'a>, config: &'a Config) -> Option<&'a str> {
    for source in &config.key_sources {
        match source {
            KeySource::Header(name) => {
                if let Some(v) = req.header(name).map(str::trim).filter(|v| !v.is_empty()) {
                    return Some(v);
                }
            }
            KeySource::Bearer => {
                if let Some(v) = req.header("authorization").and_then(bearer_token) {
                    return Some(v);
                }
            }
            KeySource::Query(name) => {
                if let Some(v) = query_param(req.path, name).filter(|v| !v.is_empty()) {
                    return Some(v);
                }
            }
            KeySource::Cookie(name) => {
                let v = req
                    .headers
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
                    .find_map(|(_, v)| cookie_value(v, name))
                    .filter(|v| !v.is_empty());
                if let Some(v) = v {
                    return Some(v);
                }
            }
        }
    }
    None
}

fn bearer_token(auth: &str) -> Option<&str> {
    let auth = auth.trim();
    let (scheme, rest) = auth.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

fn query_param<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = path.split_once('?')?;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// Optional whitespace around a cookie, its name and its value: space and tab (RFC 6265's OWS).
/// The same bytes are trimmed where the key's cookie is read and where it is stripped, so the
/// cookie read is the cookie removed.
const OWS: [char; 2] = [' ', '\t'];

fn ows_trimmed(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|c| {
        let (k, v) = c.trim_matches(OWS).split_once('=')?;
        (k.trim_matches(OWS) == name).then(|| v.trim_matches(OWS).trim_matches('"'))
    })
}

/// `path` with every `name` query parameter removed.
fn path_without_param(path: &str, name: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_owned();
    };
    let mut out = String::with_capacity(path.len());
    out.push_str(base);
    let mut first = true;
    for pair in query.split('&') {
        let k = pair.split_once('=').map_or(pair, |(k, _)| k);
        if k == name || pair.is_empty() {
            continue;
        }
        out.push(if first { '?' } else { '&' });
        first = false;
        out.push_str(pair);
    }
    out
}

/// Every cookie of the `cookie` header `values`, except those named `name`, joined with `; `,
/// byte for byte as sent; `None` when no cookie is left (the header goes).
pub fn cookies_without<'v>(
    values: impl IntoIterator<Item = &'v [u8]>,
    names: &[&str],
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for v in values {
        for c in v.split(|&b| b == b';') {
            let c = ows_trimmed(c);
            let k = c.iter().position(|&b| b == b'=').map_or(c, |eq| &c[..eq]);
            let k = ows_trimmed(k);
            if c.is_empty() || names.iter().any(|n| k == n.as_bytes()) {
                continue;
            }
            if !out.is_empty() {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(c);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Client-sent headers that only the filter may set: every `x-keygate-*` and the identity headers.
fn spoofable<'a>(req: &Request<'a>, config: &Config, out: &mut Removals<'a>) {
    let ih = &config.identity_headers;
    for &(k, _) in &req.headers {
        let lower_prefix = k.len() >= 10 && k.as_bytes()[..10].eq_ignore_ascii_case(b"x-keygate-");
        let is_identity = k.eq_ignore_ascii_case(&ih.key_id)
            || k.eq_ignore_ascii_case(&ih.owner)
            || k.eq_ignore_ascii_case(&ih.scopes);
        if (lower_prefix || is_identity) && !out.contains(&k) {
            out.push(k);
        }
    }
}

/// Whether `path` (without its query) is in the normal form route prefixes and resource
/// segments are read in. Refused: a `.` or `..` segment (also percent-encoded, `%2e`), an encoded
/// separator (`%2f`, `%5c`), a backslash, and an empty segment other than a trailing one
/// (`//`). Each of these may be resolved by the upstream (or a proxy behind the filter) to a
/// different path than the one matched here, walking out of an anonymous prefix or a
/// resource allow-list (`/health/../admin`, `/repos/acme/../globex`). A path without a leading
/// `/` (or an absent one) matches no prefix and is left to the keyed default.
pub fn is_normal_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return true;
    }
    // Most paths hold no dot, percent sign or backslash: then only an empty segment (`//`) can
    // be wrong. One pass over the bytes, eight at a time, finds either.
    let mut plain = true;
    // The high bit of byte 0 when the previous word ended in `/`.
    let mut slash_before = 0;
    let words = bytes.chunks_exact(8);
    // The bytes after the last whole word, padded with NUL, which is none of those looked for.
    let mut last = [0; 8];
    for (to, from) in last.iter_mut().zip(words.remainder()) {
        *to = *from;
    }
    for w in words
        .map(|c| c.try_into().map_or(0, u64::from_le_bytes))
        .chain([u64::from_le_bytes(last)])
    {
        if bytes_equal(w, b'.') | bytes_equal(w, b'%') | bytes_equal(w, b'\\') != 0 {
            plain = false;
            break;
        }
        let slashes = bytes_equal(w, b'/');
        if slashes & ((slashes << 8) | slash_before) != 0 {
            return false;
        }
        slash_before = slashes >> 56;
    }
    if plain {
        return true;
    }
    // One pass, no allocation: this runs on every request. Per segment: whether it is empty,
    // and how many dots (`.` or `%2e`) it holds while it holds nothing else.
    let (mut empty, mut dots, mut only_dots) = (true, 0u32, true);
    let mut i = 1;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        match b {
            b'/' => {
                if empty || (only_dots && dots <= 2) {
                    return false;
                }
                (empty, dots, only_dots) = (true, 0, true);
                continue;
            }
            b'\\' => return false,
            b'%' => {
                if let [hi, lo, ..] = bytes[i..] {
                    match (hi, lo.to_ascii_lowercase()) {
                        (b'2', b'f') | (b'5', b'c') => return false,
                        (b'2', b'e') => {
                            (empty, dots, i) = (false, dots + 1, i + 2);
                            continue;
                        }
                        _ => {}
                    }
                }
                only_dots = false;
            }
            b'.' => dots += 1,
            _ => only_dots = false,
        }
        empty = false;
    }
    // The last segment may be empty (a trailing `/`), not a dot segment.
    empty || !(only_dots && dots <= 2)
}

fn route_for<'a>(config: &'a Config, req: &Request<'_>) -> Option<&'a Route> {
    let path = req.path_only();
    config.routes.iter().find(|r| r.matches(req.method, path))
}

/// The `index`-th segment of `path` (zero-based, the leading `/` skipped).
fn path_segment(path: &str, index: usize) -> Option<&str> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    // Byte scans (a `/` is never inside a multi-byte character, so the cuts are boundaries).
    let mut start = 0;
    for _ in 0..index {
        start += rest.as_bytes()[start..].iter().position(|&b| b == b'/')? + 1;
    }
    let end = rest.as_bytes()[start..]
        .iter()
        .position(|&b| b == b'/')
        .map_or(rest.len(), |e| start + e);
    let segment = &rest[start..end];
    (!segment.is_empty()).then_some(segment)
}

/// With `hide_credentials`, the header changes that keep every credential from the upstream:
/// each configured key source the request uses is emptied, not only the one the key was read
/// from (a client may send keys in several places; the upstream must see none of them). The
/// cookies to strip are returned.
fn hide<'a>(
    config: &'a Config,
    req: &Request<'a>,
    remove: &mut Removals<'a>,
    set: &mut Vec<(&'a str, String)>,
) -> CookieNames<'a> {
    let mut cookies = CookieNames::new();
    if !config.hide_credentials {
        return cookies;
    }
    let mut path: Option<String> = None;
    for source in &config.key_sources {
        match source {
            KeySource::Header(name) => {
                if let Some(&(k, _)) = req
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    && !remove.contains(&k)
                {
                    remove.push(k);
                }
            }
            KeySource::Bearer => {
                if let Some(&(k, _)) = req.headers.iter().find(|(k, v)| {
                    k.eq_ignore_ascii_case("authorization") && bearer_token(v).is_some()
                }) && !remove.contains(&k)
                {
                    remove.push(k);
                }
            }
            KeySource::Query(name) => {
                let current = path.as_deref().unwrap_or(req.path);
                if query_param(current, name).is_some() {
                    path = Some(path_without_param(current, name));
                }
            }
            KeySource::Cookie(name) => {
                let sent = req
                    .headers
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
                    .any(|(_, v)| cookie_value(v, name).is_some());
                if sent {
                    cookies.push(name);
                }
            }
        }
    }
    if let Some(p) = path {
        set.push((":path", p));
    }
    cookies
}

/// Decides one request. `now_secs` is Unix time in seconds.
pub fn decide<'a>(
    req: &Request<'a>,
    keys: KeySetState<'a>,
    now_secs: u64,
    config: &'a Config,
) -> Decision<'a> {
    let mut remove = Removals::new();
    spoofable(req, config, &mut remove);

    if !is_normal_path(req.path_only()) {
        return Decision::Deny(Deny::new(
            Reason::InvalidPath,
            "the path has dot segments, encoded separators or empty segments",
        ));
    }
    let route = route_for(config, req);
    if route.is_some_and(|r| r.anonymous) {
        // A key sent to an anonymous route is hidden as well: the upstream never sees one.
        let mut set = Vec::new();
        let strip_cookies = hide(config, req, &mut remove, &mut set);
        return Decision::Allow(Allow {
            reason: Reason::Anonymous,
            remove,
            set,
            strip_cookies,
            identity: None,
        });
    }

    let Some(raw) = find_key(req, config) else {
        return Decision::Deny(Deny::new(Reason::MissingKey, "an API key is required"));
    };
    let parsed = match key::parse(raw) {
        Ok(p) => p,
        Err(_) => {
            return Decision::Deny(Deny::new(
                Reason::MalformedKey,
                "the API key is malformed or its checksum does not match",
            ));
        }
    };
    if let Some(prefixes) = &config.accepted_prefixes
        && !prefixes.iter().any(|p| p == parsed.prefix())
    {
        return Decision::Deny(Deny::new(
            Reason::PrefixNotAccepted,
            "keys with this prefix are not accepted here",
        ));
    }

    let set = match keys {
        KeySetState::Unavailable => {
            return Decision::Deny(Deny::new(
                Reason::KeysetUnavailable,
                "the key set has not been loaded yet",
            ));
        }
        KeySetState::Stale(_) if config.failure_mode == FailureMode::Open => {
            let mut set = Vec::new();
            let strip_cookies = hide(config, req, &mut remove, &mut set);
            return Decision::Allow(Allow {
                reason: Reason::FailOpen,
                remove,
                set,
                strip_cookies,
                identity: None,
            });
        }
        KeySetState::Stale(_) => {
            return Decision::Deny(Deny::new(
                Reason::KeysetStale,
                "the key set is too old to be trusted",
            ));
        }
        KeySetState::Fresh(set) => set,
    };

    let digest = parsed.digest();
    let Some(entry) = set.lookup(&digest) else {
        return Decision::Deny(Deny::new(
            Reason::UnknownKey,
            "the API key is not valid (unknown, revoked or suspended)",
        ));
    };
    if entry.is_expired(now_secs) {
        return Decision::Deny(Deny::new(Reason::ExpiredKey, "the API key has expired"));
    }
    if let Some(route) = route {
        if let Some(missing) = route.required_scopes.iter().find(|s| !entry.has_scope(s)) {
            return Decision::Deny(Deny::new(
                Reason::InsufficientScope,
                format!("the API key lacks the scope {missing:?}"),
            ));
        }
        if let Some(index) = route.resource_from_path_segment {
            let allowed =
                path_segment(req.path_only(), index).is_some_and(|r| entry.allows_resource(r));
            if !allowed {
                return Decision::Deny(Deny::new(
                    Reason::ResourceNotAllowed,
                    "the API key is not allowed to access this resource",
                ));
            }
        }
    }

    let mut set_headers = Vec::new();
    let strip_cookies = hide(config, req, &mut remove, &mut set_headers);
    let key_id = entry.key_id();
    let identity = Identity {
        names: &config.identity_headers,
        key_id,
        key_id_text: key_id.text(),
        owner: entry.owner(),
        scopes: entry.scope_list(),
    };
    Decision::Allow(Allow {
        reason: Reason::Allowed,
        remove,
        set: set_headers,
        strip_cookies,
        identity: Some(identity),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Fixture, headers};

    fn cfg(extra: &str) -> Config {
        let json = format!(
            r#"{{"cluster":"cp","authority":"cp.local","edge_key":"kg_edge_x"{}{extra}}}"#,
            if extra.is_empty() { "" } else { "," }
        );
        Config::from_json(json.as_bytes()).unwrap()
    }

    const ROUTES: &str = r#""routes":[
        {"path_prefix":"/health","anonymous":true},
        {"path_prefix":"/repos/","methods":["GET"],"required_scopes":["repo:read"],"resource_from_path_segment":1},
        {"path_prefix":"/repos/","required_scopes":["repo:write"],"resource_from_path_segment":1},
        {"path_prefix":"/admin","required_scopes":["admin"]}
    ]"#;

    fn run<'a>(f: &'a Fixture, c: &'a Config, h: &'a [(String, String)]) -> Decision<'a> {
        decide(
            &Request::from_headers(h),
            KeySetState::Fresh(&f.set),
            f.now,
            c,
        )
    }

    fn deny(d: Decision<'_>) -> Deny {
        match d {
            Decision::Deny(d) => d,
            Decision::Allow(a) => panic!("expected a deny, got {a:?}"),
        }
    }

    fn allow(d: Decision<'_>) -> Allow<'_> {
        match d {
            Decision::Allow(a) => a,
            Decision::Deny(d) => panic!("expected an allow, got {d:?}"),
        }
    }

    /// Every header the decision sets or adds, name and value.
    fn written<'a>(a: &'a Allow<'_>) -> impl Iterator<Item = (&'a str, &'a str)> {
        a.set
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(a.identity.iter().flat_map(Identity::headers))
    }

    fn set_value<'a>(a: &'a Allow<'_>, name: &str) -> Option<&'a str> {
        written(a).find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    #[test]
    fn valid_key_in_header_is_allowed_with_identity_and_hidden() {
        let f = Fixture::new();
        let c = cfg("");
        let h = headers("GET", "/x", &[("x-api-key", &f.reader.secret)]);
        let a = allow(run(&f, &c, &h));
        assert_eq!(a.reason, Reason::Allowed);
        assert_eq!(a.key_id(), Some(f.reader.id));
        assert!(a.remove.contains(&"x-api-key"));
        assert_eq!(
            set_value(&a, "x-keygate-key-id"),
            Some(f.reader.id.to_string().as_str())
        );
        assert_eq!(set_value(&a, "x-keygate-owner"), Some("alice"));
        assert_eq!(set_value(&a, "x-keygate-scopes"), Some("repo:read"));
        // no value the filter sets carries the secret
        assert!(written(&a).all(|(_, v)| !v.contains(&f.reader.secret)));
    }

    #[test]
    fn bearer_key_is_accepted_and_only_that_authorization_removed() {
        let f = Fixture::new();
        let c = cfg("");
        let auth = format!("Bearer {}", f.reader.secret);
        let h = headers("GET", "/x", &[("authorization", &auth)]);
        let a = allow(run(&f, &c, &h));
        assert_eq!(a.remove[..], ["authorization"]);

        // a key in x-api-key wins; a Basic Authorization header is left alone
        let h = headers(
            "GET",
            "/x",
            &[
                ("authorization", "Basic dXNlcjpwYXNz"),
                ("x-api-key", &f.reader.secret),
            ],
        );
        let a = allow(run(&f, &c, &h));
        assert_eq!(a.remove[..], ["x-api-key"]);
    }

    #[test]
    fn hide_credentials_false_keeps_the_credential() {
        let f = Fixture::new();
        let c = cfg(r#""hide_credentials":false"#);
        let h = headers("GET", "/x", &[("x-api-key", &f.reader.secret)]);
        let a = allow(run(&f, &c, &h));
        assert!(a.remove.is_empty());
    }

    #[test]
    fn query_and_cookie_credentials_are_removed_when_hiding() {
        let f = Fixture::new();
        let c = cfg(r#""key_sources":[{"query":"api_key"},{"cookie":"kg"}]"#);
        let path = format!("/x?a=1&api_key={}&b=2", f.reader.secret);
        let h = headers("GET", &path, &[]);
        let a = allow(run(&f, &c, &h));
        assert_eq!(set_value(&a, ":path"), Some("/x?a=1&b=2"));

        let path = format!("/x?api_key={}", f.reader.secret);
        let h = headers("GET", &path, &[]);
        let a = allow(run(&f, &c, &h));
        assert_eq!(set_value(&a, ":path"), Some("/x"));

        let cookie = format!("theme=dark; kg={}; lang=en", f.reader.secret);
        let h = headers("GET", "/x", &[("cookie", &cookie)]);
        let a = allow(run(&f, &c, &h));
        assert_eq!(a.strip_cookies[..], ["kg"]);
        assert!(a.set.is_empty() && !a.remove.contains(&"cookie"));
        // without hiding, nothing is stripped
        let shown = cfg(r#""key_sources":[{"cookie":"kg"}],"hide_credentials":false"#);
        assert!(allow(run(&f, &shown, &h)).strip_cookies.is_empty());
        // a key in the query is read first: the key cookie goes as well
        let path = format!("/x?api_key={}", f.reader.secret);
        let h = headers("GET", &path, &[("cookie", &cookie)]);
        let a = allow(run(&f, &c, &h));
        assert_eq!(a.strip_cookies[..], ["kg"]);
        assert_eq!(set_value(&a, ":path"), Some("/x"));
    }

    #[test]
    fn every_key_source_the_request_uses_is_hidden_not_only_the_one_read() {
        let f = Fixture::new();
        let c = cfg(&format!(
            r#"{ROUTES},"key_sources":[{{"header":"x-api-key"}},{{"bearer":true}},{{"cookie":"kg"}},{{"query":"api_key"}},{{"query":"token"}}]"#
        ));
        let path = "/x?api_key=kg_live_other&page=2&token=t";
        let bearer = "Bearer kg_live_other";
        let h = headers(
            "GET",
            path,
            &[
                ("x-api-key", f.reader.secret.as_str()),
                ("Authorization", bearer),
                ("cookie", "a=1; kg=kg_live_other"),
            ],
        );
        let a = allow(run(&f, &c, &h));
        assert_eq!(a.reason, Reason::Allowed);
        assert!(a.remove.contains(&"x-api-key"));
        assert!(a.remove.contains(&"Authorization"));
        assert_eq!(a.strip_cookies[..], ["kg"]);
        assert_eq!(set_value(&a, ":path"), Some("/x?page=2"));
        // An anonymous route hides them all as well.
        let anon = headers(
            "GET",
            "/health?api_key=k",
            &[("authorization", bearer), ("cookie", "kg=k")],
        );
        let a = allow(run(&f, &c, &anon));
        assert_eq!(a.reason, Reason::Anonymous);
        assert!(a.remove.contains(&"authorization"));
        assert_eq!(a.strip_cookies[..], ["kg"]);
        assert_eq!(set_value(&a, ":path"), Some("/health"));
        // Another authorization scheme is not a key: it stays.
        let basic = headers(
            "GET",
            "/x",
            &[
                ("x-api-key", f.reader.secret.as_str()),
                ("authorization", "Basic dXNlcjpwYXNz"),
            ],
        );
        assert!(!allow(run(&f, &c, &basic)).remove.contains(&"authorization"));
    }

    #[test]
    fn cookies_without_drops_every_cookie_of_that_name_and_keeps_the_rest_byte_for_byte() {
        let strip = |values: &[&[u8]]| cookies_without(values.iter().copied(), &["kg"]);
        assert_eq!(
            strip(&[b"theme=dark; kg=SECRET; lang=en"]).as_deref(),
            Some(&b"theme=dark; lang=en"[..])
        );
        // several headers, spaces and tabs around cookies and names, empty pieces, duplicates
        assert_eq!(
            strip(&[b" a=1 ;\tkg =x;;", b"kg=y; b=caf\xe9 ", b"kg"]).as_deref(),
            Some(&b"a=1; b=caf\xe9"[..])
        );
        // a name that only starts with the key's name, or holds it in its value, stays
        assert_eq!(
            strip(&[b"kgx=1; a=kg"]).as_deref(),
            Some(&b"kgx=1; a=kg"[..])
        );
        // nothing left: the header goes
        assert_eq!(strip(&[b"kg=SECRET", b" ; "]), None);
        assert_eq!(strip(&[]), None);
    }

    fn cookie_piece() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop::collection::vec(
            prop_oneof![
                Just(b"kg".to_vec()),
                Just(b"=".to_vec()),
                Just(b" ".to_vec()),
                Just(b"\t".to_vec()),
                Just(b";".to_vec()),
                Just("\u{a0}".as_bytes().to_vec()),
                (b'a'..=b'z').prop_map(|b| vec![b]),
                (0x80u8..=0xff).prop_map(|b| vec![b]),
            ],
            0..16,
        )
        .prop_map(|p| p.concat())
    }

    proptest::proptest! {
        #[test]
        fn after_stripping_no_key_cookie_can_be_read_and_every_other_cookie_stays(
            headers in proptest::collection::vec(cookie_piece(), 0..4)
        ) {
            let rest = cookies_without(headers.iter().map(Vec::as_slice), &["kg"]);
            // the model: every non-empty OWS-trimmed piece whose trimmed name is not `kg`
            let model: Vec<&[u8]> = headers
                .iter()
                .flat_map(|h| h.split(|&b| b == b';'))
                .map(ows_trimmed)
                .filter(|c| {
                    let name = c.split(|&b| b == b'=').next().unwrap_or_default();
                    !c.is_empty() && ows_trimmed(name) != b"kg"
                })
                .collect();
            match &rest {
                None => proptest::prop_assert!(model.is_empty()),
                Some(rest) => proptest::prop_assert_eq!(rest.clone(), model.join(&b"; "[..])),
            }
            // whatever the filter reads the key from is gone: reading the rewrite finds no key
            if let Some(rest) = rest
                && let Ok(text) = std::str::from_utf8(&rest)
            {
                proptest::prop_assert_eq!(cookie_value(text, "kg"), None);
            }
        }
    }

    #[test]
    fn the_cookie_read_is_the_cookie_stripped() {
        // OWS is space and tab on both sides: a no-break space is part of the name, so the
        // cookie is neither read as the key nor stripped
        let nbsp = "\u{a0}kg=v";
        assert_eq!(cookie_value(nbsp, "kg"), None);
        assert_eq!(
            cookies_without([nbsp.as_bytes()], &["kg"]).as_deref(),
            Some(nbsp.as_bytes())
        );
        let tabbed = "\tkg\t=\tv\t; a=1";
        assert_eq!(cookie_value(tabbed, "kg"), Some("v"));
        assert_eq!(
            cookies_without([tabbed.as_bytes()], &["kg"]).as_deref(),
            Some(&b"a=1"[..])
        );
    }

    #[test]
    fn spoofed_identity_headers_are_always_stripped() {
        let f = Fixture::new();
        let c = cfg(ROUTES);
        let spoof = [
            ("x-keygate-key-id", "key_00000000000000000000000000000000"),
            ("X-Keygate-Owner", "mallory"),
            ("x-keygate-anything", "1"),
        ];
        // anonymous route
        let h = headers("GET", "/health", &spoof);
        let a = allow(run(&f, &c, &h));
        assert_eq!(a.reason, Reason::Anonymous);
        assert_eq!(a.remove.len(), 3);
        assert!(a.set.is_empty() && a.identity.is_none());
        // keyed route: removed, then set by the filter
        let mut hs = spoof.to_vec();
        hs.push(("x-api-key", &f.reader.secret));
        let h = headers("GET", "/x", &hs);
        let a = allow(run(&f, &c, &h));
        for (name, _) in &spoof {
            assert!(a.remove.contains(name), "{name} not stripped");
        }
        assert_eq!(set_value(&a, "x-keygate-owner"), Some("alice"));
        // The identity headers are added, not replaced: each one the client sent is removed
        // first (whatever its case), so none is left for an add to duplicate.
        let identity = a.identity.as_ref().map(Identity::headers);
        assert!(identity.is_some());
        for (name, _) in identity.into_iter().flatten() {
            let sent = hs.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
            let removed = a.remove.iter().any(|k| k.eq_ignore_ascii_case(name));
            assert!(!sent || removed, "{name} would be duplicated");
        }
        assert!(a.set.is_empty());
        // custom identity header names are stripped too
        let c = cfg(r#""identity_headers":{"owner":"x-owner"}"#);
        let h = headers(
            "GET",
            "/x",
            &[("x-owner", "mallory"), ("x-api-key", &f.reader.secret)],
        );
        let a = allow(run(&f, &c, &h));
        assert!(a.remove.contains(&"x-owner"));
        assert_eq!(set_value(&a, "x-owner"), Some("alice"));
    }

    #[test]
    fn missing_key_is_401_with_bare_challenge() {
        let f = Fixture::new();
        let c = cfg("");
        for h in [
            headers("GET", "/x", &[]),
            headers("GET", "/x", &[("x-api-key", "  ")]),
            headers("GET", "/x", &[("authorization", "Basic abc")]),
            headers("GET", "/x", &[("authorization", "Bearer ")]),
        ] {
            let d = deny(run(&f, &c, &h));
            assert_eq!((d.status(), d.reason), (401, Reason::MissingKey));
            assert_eq!(d.www_authenticate, Some(r#"Bearer realm="keygate""#));
        }
    }

    #[test]
    fn malformed_keys_are_401_without_lookup() {
        let f = Fixture::new();
        let c = cfg("");
        let mut bad_checksum = f.reader.secret.clone();
        let last = bad_checksum.pop().unwrap();
        bad_checksum.push(if last == 'A' { 'B' } else { 'A' });
        let long = "kg_live_".to_owned() + &"a".repeat(300);
        for k in [
            bad_checksum.as_str(),
            "nope",
            "kg_live_short",
            long.as_str(),
            "kg_live_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        ] {
            let h = headers("GET", "/x", &[("x-api-key", k)]);
            let d = deny(run(&f, &c, &h));
            assert_eq!((d.status(), d.reason), (401, Reason::MalformedKey), "{k}");
            assert!(
                d.www_authenticate
                    .unwrap()
                    .contains(r#"error="invalid_token""#)
            );
            assert!(!d.body().contains(k));
        }
        // no lookup: even with no key set at all, malformed is reported, not unavailable
        let h = headers("GET", "/x", &[("x-api-key", bad_checksum.as_str())]);
        let d = deny(decide(
            &Request::from_headers(&h),
            KeySetState::Unavailable,
            f.now,
            &c,
        ));
        assert_eq!(d.reason, Reason::MalformedKey);
    }

    #[test]
    fn prefixes_outside_the_accepted_list_are_refused() {
        let f = Fixture::new();
        let c = cfg(r#""accepted_prefixes":["kg_test"]"#);
        let h = headers("GET", "/x", &[("x-api-key", &f.reader.secret)]);
        let d = deny(run(&f, &c, &h));
        assert_eq!((d.status(), d.reason), (401, Reason::PrefixNotAccepted));
        let c = cfg(r#""accepted_prefixes":["kg_test","kg_live"]"#);
        assert!(matches!(run(&f, &c, &h), Decision::Allow(_)));
    }

    #[test]
    fn unknown_and_expired_keys_are_401() {
        let f = Fixture::new();
        let c = cfg("");
        let h = headers("GET", "/x", &[("x-api-key", &f.unknown)]);
        let d = deny(run(&f, &c, &h));
        assert_eq!((d.status(), d.reason), (401, Reason::UnknownKey));
        let h = headers("GET", "/x", &[("x-api-key", &f.expired.secret)]);
        let d = deny(run(&f, &c, &h));
        assert_eq!((d.status(), d.reason), (401, Reason::ExpiredKey));
        let body: serde_json::Value = serde_json::from_str(&d.body()).unwrap();
        assert_eq!(body["error"]["code"], "expired_key");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("expired")
        );
    }

    #[test]
    fn scopes_and_resources_are_403() {
        let f = Fixture::new();
        let c = cfg(ROUTES);
        // reader may GET acme repos
        let h = headers(
            "GET",
            "/repos/acme/widgets",
            &[("x-api-key", &f.reader.secret)],
        );
        assert!(matches!(run(&f, &c, &h), Decision::Allow(_)));
        // but not POST (needs repo:write)
        let h = headers(
            "POST",
            "/repos/acme/widgets",
            &[("x-api-key", &f.reader.secret)],
        );
        let d = deny(run(&f, &c, &h));
        assert_eq!((d.status(), d.reason), (403, Reason::InsufficientScope));
        assert!(d.message.contains("repo:write"));
        assert!(
            d.www_authenticate
                .unwrap()
                .contains(r#"error="insufficient_scope""#)
        );
        // nor another owner's repo
        let h = headers("GET", "/repos/globex/x", &[("x-api-key", &f.reader.secret)]);
        let d = deny(run(&f, &c, &h));
        assert_eq!((d.status(), d.reason), (403, Reason::ResourceNotAllowed));
        // a missing resource segment is not allowed either
        let h = headers("GET", "/repos/", &[("x-api-key", &f.reader.secret)]);
        assert_eq!(deny(run(&f, &c, &h)).reason, Reason::ResourceNotAllowed);
        // admin has no allow-list (everything) and the admin scope
        let h = headers(
            "DELETE",
            "/repos/globex/x",
            &[("x-api-key", &f.admin.secret)],
        );
        assert!(matches!(run(&f, &c, &h), Decision::Allow(_)));
        let h = headers("GET", "/admin/users", &[("x-api-key", &f.reader.secret)]);
        assert_eq!(deny(run(&f, &c, &h)).reason, Reason::InsufficientScope);
        let h = headers("GET", "/admin/users?x=1", &[("x-api-key", &f.admin.secret)]);
        let a = allow(run(&f, &c, &h));
        assert_eq!(
            set_value(&a, "x-keygate-scopes"),
            Some("admin repo:read repo:write")
        );
    }

    #[test]
    fn paths_not_in_normal_form_are_400_before_any_route() {
        let f = Fixture::new();
        let c = cfg(ROUTES);
        for (path, key) in [
            ("/health/../admin/users", None),
            ("/health/%2e%2e/admin/users", None),
            ("/health/%2E./admin", None),
            ("/health%2F..%2Fadmin", None),
            ("/health/..%5cadmin", None),
            ("/health/..\\admin", None),
            ("/health/..", None),
            ("/health/./x", None),
            ("/repos/acme/../globex/x", Some(&f.reader.secret)),
            ("/repos/acme/x/../../globex", Some(&f.reader.secret)),
            ("//repos/globex/x", Some(&f.reader.secret)),
            ("/repos//globex/x", Some(&f.reader.secret)),
            ("/./repos/globex/x?a=b", Some(&f.reader.secret)),
        ] {
            let extra: Vec<(&str, &str)> =
                key.map(|k| ("x-api-key", k.as_str())).into_iter().collect();
            let h = headers("GET", path, &extra);
            let d = deny(run(&f, &c, &h));
            assert_eq!((d.status(), d.reason), (400, Reason::InvalidPath), "{path}");
            assert!(d.www_authenticate.is_none());
        }
        // Normal forms still pass: trailing slash, dots inside a segment, encoded other bytes,
        // dot segments in the query.
        for path in [
            "/health",
            "/health/",
            "/health/a.b/..c/c..",
            "/health/%2e%2e%2e",
            "/health/x%20y",
            "/health?p=/../admin",
        ] {
            let h = headers("GET", path, &[]);
            assert_eq!(allow(run(&f, &c, &h)).reason, Reason::Anonymous, "{path}");
        }
        assert!(is_normal_path("/") && is_normal_path("") && is_normal_path("*"));
        assert!(!is_normal_path("//") && !is_normal_path("/."));
    }

    /// The first, allocating version of [`is_normal_path`], kept as the specification.
    fn normal_path_reference(path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return true;
        };
        if path.contains('\\') {
            return false;
        }
        let lower = path.to_ascii_lowercase();
        if lower.contains("%2f") || lower.contains("%5c") {
            return false;
        }
        let segments: Vec<&str> = rest.split('/').collect();
        let last = segments.len() - 1;
        segments.iter().enumerate().all(|(i, seg)| {
            if seg.is_empty() {
                return i == last;
            }
            let decoded = seg.to_ascii_lowercase().replace("%2e", ".");
            decoded != "." && decoded != ".."
        })
    }

    #[test]
    fn normal_path_agrees_with_its_reference_on_every_short_path() {
        // Every string of up to 6 characters over the characters that matter, with and
        // without a leading slash.
        const ALPHABET: &[u8] = b"/.%2eEfF5cCa\\";
        let mut checked = 0;
        let mut buf = Vec::new();
        for len in 0..=6u32 {
            for mut n in 0..ALPHABET.len().pow(len) {
                buf.clear();
                buf.push(b'/');
                for _ in 0..len {
                    buf.push(ALPHABET[n % ALPHABET.len()]);
                    n /= ALPHABET.len();
                }
                for path in [&buf[..], &buf[1..]] {
                    let path = std::str::from_utf8(path).unwrap();
                    assert_eq!(
                        is_normal_path(path),
                        normal_path_reference(path),
                        "{path:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 10_000_000, "{checked}");
    }

    #[test]
    fn normal_path_agrees_with_its_reference_across_eight_byte_words() {
        // The fast pass reads eight bytes at a time: put every string of up to 4 characters
        // at each offset of a longer path, so that `//`, `.` and `%` fall on each side of a
        // word's end.
        const ALPHABET: &[u8] = b"/.%2eEfF5cCa\\";
        let mut checked = 0;
        let mut buf = Vec::new();
        for pad in 0..=17 {
            for len in 0..=4u32 {
                for mut n in 0..ALPHABET.len().pow(len) {
                    buf.clear();
                    buf.push(b'/');
                    buf.extend(std::iter::repeat_n(b'x', pad));
                    for _ in 0..len {
                        buf.push(ALPHABET[n % ALPHABET.len()]);
                        n /= ALPHABET.len();
                    }
                    buf.extend_from_slice(b"/y");
                    let path = std::str::from_utf8(&buf).unwrap();
                    assert_eq!(
                        is_normal_path(path),
                        normal_path_reference(path),
                        "{path:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 500_000, "{checked}");
    }

    #[test]
    fn path_segment_agrees_with_splitting_the_path() {
        let reference = |path: &str, index: usize| -> Option<String> {
            path.strip_prefix('/')
                .unwrap_or(path)
                .split('/')
                .nth(index)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        for path in [
            "",
            "/",
            "//",
            "/a",
            "a",
            "/a/",
            "/a//b",
            "/repos/acme/widgets",
            "repos/acme",
            "/é/ü/x",
            "/a/b/c/d/",
            "///x",
        ] {
            for index in 0..6 {
                assert_eq!(
                    path_segment(path, index).map(str::to_owned),
                    reference(path, index),
                    "{path:?} {index}"
                );
            }
        }
    }

    #[test]
    fn challenges_follow_rfc6750_for_every_reason() {
        for r in Reason::ALL {
            let expected = match r.status() {
                401 if r == Reason::MissingKey => Some(r#"Bearer realm="keygate""#.to_owned()),
                401 => Some(format!(
                    r#"Bearer realm="keygate", error="invalid_token", error_description="{}""#,
                    r.code()
                )),
                403 => Some(format!(
                    r#"Bearer realm="keygate", error="insufficient_scope", error_description="{}""#,
                    r.code()
                )),
                _ => None,
            };
            assert_eq!(r.www_authenticate().map(str::to_owned), expected, "{r:?}");
        }
    }

    #[test]
    fn reason_index_is_the_position_in_all() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
    }

    #[test]
    fn cached_deny_bodies_are_the_same_bytes_as_fresh_ones() {
        let mut bodies = DenyBodies::default();
        let unknown = Deny::new(Reason::UnknownKey, "not valid");
        let expired = Deny::new(Reason::ExpiredKey, "expired");
        let other = Deny::new(Reason::UnknownKey, "another static message");
        let scoped = Deny::new(Reason::InsufficientScope, format!("lacks {:?}", "a\"b"));
        // The same static text at another address, and other text of the same length.
        let same_text = Deny::new(Reason::UnknownKey, &*String::from("not valid").leak());
        let same_len = Deny::new(Reason::UnknownKey, &*String::from("not VALID").leak());
        for _ in 0..2 {
            for d in [
                &unknown, &expired, &other, &unknown, &scoped, &same_text, &unknown, &same_len,
                &unknown,
            ] {
                assert_eq!(bodies.body(d), d.body(), "{d:?}");
            }
        }
    }

    #[test]
    fn deny_bodies_are_json_with_code_and_escaped_message() {
        let d = Deny::new(Reason::InsufficientScope, "needs \"repo:write\"\n");
        let v: serde_json::Value = serde_json::from_str(&d.body()).unwrap();
        assert_eq!(v["error"]["code"], "insufficient_scope");
        assert_eq!(v["error"]["message"], "needs \"repo:write\"\n");
    }

    #[test]
    fn keys_sent_to_anonymous_routes_are_hidden_too() {
        let f = Fixture::new();
        let c = cfg(&format!(
            r#"{ROUTES},"key_sources":[{{"header":"x-api-key"}},{{"bearer":true}},{{"query":"api_key"}}]"#
        ));
        let h = headers("GET", "/health", &[("x-api-key", &f.reader.secret)]);
        let a = allow(run(&f, &c, &h));
        assert_eq!(a.reason, Reason::Anonymous);
        assert!(a.remove.contains(&"x-api-key") && a.key_id().is_none());
        let bearer = format!("Bearer {}", f.reader.secret);
        let h = headers("GET", "/health", &[("authorization", &bearer)]);
        assert!(allow(run(&f, &c, &h)).remove.contains(&"authorization"));
        let path = format!("/health?x=1&api_key={}", f.reader.secret);
        let h = headers("GET", &path, &[]);
        let a = allow(run(&f, &c, &h));
        assert_eq!(set_value(&a, ":path"), Some("/health?x=1"));
        // Without hiding, nothing is touched.
        let keep = cfg(&format!(r#"{ROUTES},"hide_credentials":false"#));
        let h = headers("GET", "/health", &[("x-api-key", &f.reader.secret)]);
        let a = allow(run(&f, &keep, &h));
        assert!(a.remove.is_empty() && a.set.is_empty());
    }

    #[test]
    fn keyset_states_fail_closed_or_open() {
        let f = Fixture::new();
        let h = headers("GET", "/x", &[("x-api-key", &f.reader.secret)]);
        let req = Request::from_headers(&h);
        let closed = cfg("");
        let d = deny(decide(&req, KeySetState::Unavailable, f.now, &closed));
        assert_eq!(
            (d.status(), d.reason, d.www_authenticate),
            (503, Reason::KeysetUnavailable, None)
        );
        let d = deny(decide(&req, KeySetState::Stale(&f.set), f.now, &closed));
        assert_eq!((d.status(), d.reason), (503, Reason::KeysetStale));
        let open = cfg(r#""failure_mode":"open""#);
        // fail open applies only once stale; before the first sync it is still closed
        let d = deny(decide(&req, KeySetState::Unavailable, f.now, &open));
        assert_eq!(d.reason, Reason::KeysetUnavailable);
        let h2 = headers(
            "GET",
            "/x",
            &[("x-api-key", &f.reader.secret), ("x-keygate-owner", "m")],
        );
        let a = allow(decide(
            &Request::from_headers(&h2),
            KeySetState::Stale(&f.set),
            f.now,
            &open,
        ));
        assert_eq!(a.reason, Reason::FailOpen);
        // Spoofed identity stripped, and the key hidden like on any pass.
        assert_eq!(a.remove[..], ["x-keygate-owner", "x-api-key"]);
        assert!(a.set.is_empty() && a.identity.is_none());
        // anonymous routes pass without a key set
        let c = cfg(ROUTES);
        let h = headers("GET", "/health", &[]);
        assert_eq!(
            allow(decide(
                &Request::from_headers(&h),
                KeySetState::Unavailable,
                f.now,
                &c
            ))
            .reason,
            Reason::Anonymous
        );
    }

    #[test]
    fn every_reason_has_a_distinct_code_and_metric() {
        let mut codes: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Reason::ALL.len());
        assert_eq!(
            Reason::UnknownKey.metric_name(),
            "keygate.decision.deny.unknown_key"
        );
        assert_eq!(
            Reason::Allowed.metric_name(),
            "keygate.decision.allow.allowed"
        );
    }
}
