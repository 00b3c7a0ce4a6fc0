//! The canary hit report contract (`POST /v1/canary-hits`): what one hit carries and how large a
//! report may be, so that what the filter sends always fits what the control plane accepts.
//!
//! A report is `{"hits":[{"id","key_id","at","path","client","user_agent"}]}`: `id` unique per
//! hit (the control plane records each id once, so a retried report raises nothing twice),
//! `key_id` the canary's `key_<32 hex>`, `at` unix seconds, `path` the request's path **without
//! its query string** (a key may travel in the query), `client` the client's address as the edge
//! saw it, `user_agent` the `User-Agent` header. The edge cuts `path` and `user_agent` to their
//! bounds with [`truncate`]; the control plane refuses longer values.

/// Most hits in one report.
pub const MAX_HITS: usize = 64;
/// Longest hit id, in bytes.
pub const MAX_ID_BYTES: usize = 64;
/// Longest path, in bytes.
pub const MAX_PATH_BYTES: usize = 512;
/// Longest client address, in bytes.
pub const MAX_CLIENT_BYTES: usize = 64;
/// Longest user agent, in bytes.
pub const MAX_USER_AGENT_BYTES: usize = 256;

/// The body limit of `POST /v1/canary-hits`: a full report at the largest hits (JSON escapes
/// at most sextuple a byte) with room for the envelope.
pub const MAX_BODY_BYTES: usize = MAX_HITS
    * (6 * (MAX_ID_BYTES + MAX_PATH_BYTES + MAX_CLIENT_BYTES + MAX_USER_AGENT_BYTES) + 200)
    + 64;

/// `text` cut to at most `max` bytes, on a character boundary.
#[must_use]
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The path of a `:path` value without its query string (and fragment), cut to
/// [`MAX_PATH_BYTES`]: what a hit reports, never the query where a key may be.
#[must_use]
pub fn reported_path(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    truncate(&path[..end], MAX_PATH_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("", 0), "");
    }

    #[test]
    fn the_reported_path_never_holds_the_query() {
        assert_eq!(reported_path("/v1/x?api_key=kg_live_abc"), "/v1/x");
        assert_eq!(reported_path("/a#frag"), "/a");
        assert_eq!(reported_path("/plain"), "/plain");
        let long = format!("/{}", "a".repeat(2 * MAX_PATH_BYTES));
        assert_eq!(reported_path(&long).len(), MAX_PATH_BYTES);
    }
}
