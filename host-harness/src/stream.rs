//! The public description of a request stream (input) and of what happened to it (outcome).

use crate::abi::{HeaderMap, HeaderValue};
use crate::state::LocalResponse;

/// Identifies a stream: the worker that runs it and its context id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct StreamId {
    /// Worker index.
    pub worker: usize,
    /// The stream's context id in that worker's instance.
    pub context_id: u32,
}

/// What the upstream answers once the request reaches it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpstreamResponse {
    /// Response headers including `:status`.
    pub headers: HeaderMap,
    /// Body chunks, each delivered to `proxy_on_response_body` as it "arrives".
    #[serde(default, with = "crate::serde_chunks")]
    pub body: Vec<Vec<u8>>,
    /// Trailers (none when empty).
    #[serde(default)]
    pub trailers: HeaderMap,
}

impl UpstreamResponse {
    /// A response with a status and no body.
    pub fn status(status: u16) -> Self {
        Self {
            headers: vec![(":status".to_owned(), status.to_string().into())],
            body: Vec::new(),
            trailers: Vec::new(),
        }
    }

    /// Adds a header (any bytes: `&str`, `String`, `&[u8]`, …).
    pub fn header(mut self, name: &str, value: impl Into<HeaderValue>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Appends a body chunk.
    pub fn body(mut self, chunk: impl Into<Vec<u8>>) -> Self {
        self.body.push(chunk.into());
        self
    }
}

impl Default for UpstreamResponse {
    fn default() -> Self {
        Self::status(200)
    }
}

/// A downstream request: headers, body chunks, trailers, per-request properties, and the
/// upstream's answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Request {
    /// Request headers including pseudo-headers.
    pub headers: HeaderMap,
    /// Body chunks.
    #[serde(default, with = "crate::serde_chunks")]
    pub body: Vec<Vec<u8>>,
    /// Trailers (none when empty).
    #[serde(default)]
    pub trailers: HeaderMap,
    /// Extra properties for this stream: dotted path (`source.address`) → value.
    #[serde(default)]
    pub properties: Vec<(String, String)>,
    /// The upstream's response.
    #[serde(default)]
    pub upstream: UpstreamResponse,
}

impl Request {
    /// A request with this method and path, `:authority` `example.com`, `:scheme` `http`.
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            headers: vec![
                (":method".to_owned(), method.into()),
                (":path".to_owned(), path.into()),
                (":authority".to_owned(), "example.com".into()),
                (":scheme".to_owned(), "http".into()),
            ],
            body: Vec::new(),
            trailers: Vec::new(),
            properties: Vec::new(),
            upstream: UpstreamResponse::default(),
        }
    }

    /// A GET request.
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// Adds a header (name lower-cased; the value any bytes: `&str`, `String`, `&[u8]`, …).
    pub fn header(mut self, name: &str, value: impl Into<HeaderValue>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Appends a body chunk.
    pub fn body(mut self, chunk: impl Into<Vec<u8>>) -> Self {
        self.body.push(chunk.into());
        self
    }

    /// Adds a trailer.
    pub fn trailer(mut self, name: &str, value: impl Into<HeaderValue>) -> Self {
        self.trailers
            .push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Sets a per-stream property (dotted path, string value).
    pub fn property(mut self, path: &str, value: &str) -> Self {
        self.properties.push((path.to_owned(), value.to_owned()));
        self
    }

    /// Sets the upstream's response.
    pub fn upstream(mut self, response: UpstreamResponse) -> Self {
        self.upstream = response;
        self
    }
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Still running: paused by the filter, waiting for a callout, tick or resume.
    Pending,
    /// Reached the upstream, and its response reached the client.
    Completed,
    /// The filter answered with `proxy_send_local_response`.
    LocalResponse,
    /// The filter closed the stream (`proxy_close_stream`): the client sees a reset.
    Reset,
    /// The filter trapped; fail-closed policy answered 503.
    FailedClosed,
    /// The filter trapped; fail-open policy let the stream through without the filter.
    FailedOpen,
}

/// What the upstream received.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct ForwardedRequest {
    /// Headers as the filter left them when it let them through.
    pub headers: HeaderMap,
    /// Body as forwarded.
    #[serde(with = "crate::serde_bytes_lossy")]
    pub body: Vec<u8>,
    /// Trailers as forwarded.
    pub trailers: HeaderMap,
}

/// What the client received.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct FinalResponse {
    /// HTTP status (from `:status`).
    pub status: u16,
    /// Headers as the filter left them.
    pub headers: HeaderMap,
    /// Body.
    #[serde(with = "crate::serde_bytes_lossy")]
    pub body: Vec<u8>,
    /// Trailers.
    pub trailers: HeaderMap,
}

impl FinalResponse {
    pub(crate) fn from_headers(headers: HeaderMap, body: Vec<u8>, trailers: HeaderMap) -> Self {
        let status = headers
            .iter()
            .find(|(k, _)| k == ":status")
            .and_then(|(_, v)| v.as_text().parse().ok())
            .unwrap_or(0);
        Self {
            status,
            headers,
            body,
            trailers,
        }
    }

    /// First value of a header, as text (`"\u{fffd}"` when it is not UTF-8).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_value(name).map(HeaderValue::as_text)
    }

    /// First value of a header, byte for byte.
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.header_value(name).map(HeaderValue::as_bytes)
    }

    fn header_value(&self, name: &str) -> Option<&HeaderValue> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// The observable result of one stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamOutcome {
    /// Which stream.
    pub id: StreamId,
    /// How it ended (or `Pending`).
    pub disposition: Disposition,
    /// What the upstream received (`None` if the request never got there).
    pub request: Option<ForwardedRequest>,
    /// What the client received (`None` while pending or after a reset).
    pub response: Option<FinalResponse>,
    /// The local response the filter sent, if any.
    pub local_response: Option<LocalResponse>,
    /// What the filter set with `proxy_set_property` on this stream (path → value, in the
    /// order first set, each with its last value): Envoy keeps each as the filter-state object
    /// `wasm.<path>`, which its header formatters (`%FILTER_STATE(wasm.<path>:PLAIN)%`) read.
    pub filter_state: Vec<(String, Vec<u8>)>,
}

impl StreamOutcome {
    /// First value of a header the upstream received, as text (`"\u{fffd}"` when it is not
    /// UTF-8, so a value that is there never reads as absent).
    pub fn request_header(&self, name: &str) -> Option<&str> {
        self.request_header_value(name).map(HeaderValue::as_text)
    }

    /// First value of a header the upstream received, byte for byte.
    pub fn request_header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.request_header_value(name).map(HeaderValue::as_bytes)
    }

    fn request_header_value(&self, name: &str) -> Option<&HeaderValue> {
        self.request
            .as_ref()?
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The status the client got, if any.
    pub fn status(&self) -> Option<u16> {
        self.response.as_ref().map(|r| r.status)
    }
}
