//! The request as the filter reads it: [`Request`] (method, path with and without its query,
//! headers) and [`SUBSTITUTE`], what a header byte that is not UTF-8 reads as.

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
