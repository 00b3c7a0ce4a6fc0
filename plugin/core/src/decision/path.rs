//! The path: the normal form it must be in, the route it matches and the resource segment read
//! from it.

use super::Request;
use crate::config::{Config, Route};

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
    // be wrong.
    if !bytes.iter().any(|&b| matches!(b, b'.' | b'%' | b'\\')) {
        return !bytes.windows(2).any(|w| w == b"//");
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

pub(super) fn route_for<'a>(config: &'a Config, req: &Request<'_>) -> Option<&'a Route> {
    let path = req.path_only();
    config.routes.iter().find(|r| r.matches(req.method, path))
}

/// The `index`-th segment of `path` (zero-based, the leading `/` skipped).
pub(super) fn path_segment(path: &str, index: usize) -> Option<&str> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Reason;
    use crate::decision::tests::{ROUTES, allow, cfg, deny, run};
    use crate::testutil::{Fixture, headers};

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
    fn normal_path_agrees_with_its_reference_at_every_offset() {
        // Every string of up to 4 characters at each offset of a longer path, so that `//`,
        // `.` and `%` fall at every position.
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
}
