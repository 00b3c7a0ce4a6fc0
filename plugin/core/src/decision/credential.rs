//! The credential: finding the key in the configured sources (header, `Authorization: Bearer`,
//! query parameter, cookie), and with `hide_credentials` keeping every source the request uses
//! from the upstream.

use super::{CookieNames, Removals, Request};
use crate::config::{Config, KeySource};

/// The key, from the first configured source that has one.
pub(super) fn find_key<'a>(req: &Request<'a>, config: &'a Config) -> Option<&'a str> {
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

/// With `hide_credentials`, the header changes that keep every credential from the upstream:
/// each configured key source the request uses is emptied, not only the one the key was read
/// from (a client may send keys in several places; the upstream must see none of them). The
/// cookies to strip are returned.
pub(super) fn hide<'a>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Reason;
    use crate::decision::tests::{ROUTES, allow, cfg, run, set_value};
    use crate::testutil::{Fixture, headers};

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
}
