//! Upstream clusters for `proxy_http_call`: in-process handlers or real HTTP endpoints.

use std::fmt;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use crate::abi::{HeaderMap, HeaderValue};

/// An HTTP callout as the filter issued it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CalloutRequest {
    /// The cluster name passed to `proxy_http_call`.
    pub cluster: String,
    /// Request headers, including `:method`, `:path` and `:authority`.
    pub headers: HeaderMap,
    /// Request body.
    #[serde(with = "crate::serde_bytes_lossy")]
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: HeaderMap,
    /// The call's timeout (`None` when the filter passed 0, which Envoy treats as no timeout).
    pub timeout: Option<Duration>,
}

impl CalloutRequest {
    /// The first value of a header (names are compared lower-case), as text: one that is not
    /// UTF-8 reads as `"\u{fffd}"` ([`HeaderValue::as_text`]).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_text())
    }
}

/// A response to a callout.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct CalloutResponse {
    /// Response headers; `:status` is added from `status` if absent.
    #[serde(default)]
    pub headers: HeaderMap,
    /// Response body.
    #[serde(default, with = "crate::serde_bytes_lossy")]
    pub body: Vec<u8>,
    /// Response trailers.
    #[serde(default)]
    pub trailers: HeaderMap,
}

/// What an in-process handler answers, and after how long (virtual or real time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutReply {
    pub(crate) outcome: ReplyOutcome,
    pub(crate) latency: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReplyOutcome {
    Response(CalloutResponse),
    /// The connection is reset: delivered with no headers, `proxy_get_status` = BrokenConnection "reset".
    Reset,
    /// No answer: only the call's timeout ends it.
    Silent,
}

impl CalloutReply {
    /// A response with this status and no body.
    pub fn status(status: u16) -> Self {
        Self {
            outcome: ReplyOutcome::Response(CalloutResponse {
                headers: vec![(":status".to_owned(), status.to_string().into())],
                ..CalloutResponse::default()
            }),
            latency: Duration::ZERO,
        }
    }

    /// A full response. `:status` defaults to 200 when the headers lack it.
    pub fn response(mut response: CalloutResponse) -> Self {
        if !response.headers.iter().any(|(k, _)| k == ":status") {
            response
                .headers
                .insert(0, (":status".to_owned(), "200".into()));
        }
        Self {
            outcome: ReplyOutcome::Response(response),
            latency: Duration::ZERO,
        }
    }

    /// A connection reset (Envoy's `onFailure`).
    pub fn reset() -> Self {
        Self {
            outcome: ReplyOutcome::Reset,
            latency: Duration::ZERO,
        }
    }

    /// Never answers; the call's timeout decides.
    pub fn silent() -> Self {
        Self {
            outcome: ReplyOutcome::Silent,
            latency: Duration::ZERO,
        }
    }

    /// Adds a header to a response (no effect on reset/silent replies).
    pub fn header(mut self, name: &str, value: impl Into<HeaderValue>) -> Self {
        if let ReplyOutcome::Response(r) = &mut self.outcome {
            r.headers.push((name.to_ascii_lowercase(), value.into()));
        }
        self
    }

    /// Sets the body of a response.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        if let ReplyOutcome::Response(r) = &mut self.outcome {
            r.body = body.into();
        }
        self
    }

    /// Adds a trailer to a response.
    pub fn trailer(mut self, name: &str, value: impl Into<HeaderValue>) -> Self {
        if let ReplyOutcome::Response(r) = &mut self.outcome {
            r.trailers.push((name.to_ascii_lowercase(), value.into()));
        }
        self
    }

    /// Delivers the reply after `latency` (if the call's timeout is shorter, the call times out).
    pub fn after(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }
}

/// Handler signature of an in-process cluster.
pub type Handler = dyn Fn(&CalloutRequest) -> CalloutReply + Send + Sync;

/// Where a cluster's calls go.
#[derive(Clone)]
pub enum Cluster {
    /// Answered in-process by a closure (called synchronously when the filter makes the call;
    /// the reply is delivered later, never inside the call).
    Handler(Arc<Handler>),
    /// A real HTTP endpoint: `base_url` (e.g. `http://127.0.0.1:8080`) + the call's `:path`.
    Http {
        /// Scheme, host and port, no trailing slash.
        base_url: String,
    },
}

impl Cluster {
    /// An in-process cluster.
    pub fn handler(f: impl Fn(&CalloutRequest) -> CalloutReply + Send + Sync + 'static) -> Self {
        Self::Handler(Arc::new(f))
    }

    /// A real HTTP endpoint.
    pub fn http(base_url: impl Into<String>) -> Self {
        Self::Http {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
        }
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Handler(_) => f.write_str("Cluster::Handler(..)"),
            Self::Http { base_url } => write!(f, "Cluster::Http({base_url})"),
        }
    }
}

/// How a finished callout ends, as delivered to `proxy_on_http_call_response`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CalloutResult {
    /// A response arrived.
    Response(CalloutResponse),
    /// The connection failed or was reset: 0 headers, `proxy_get_status` BrokenConnection "reset".
    Reset,
    /// The call's timeout expired.
    Timeout,
}

/// How a timed-out call is delivered to the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutDelivery {
    /// As Envoy's async client does: its router answers `504` with body
    /// `upstream request timeout`, delivered as a normal response.
    #[default]
    GatewayTimeout,
    /// As a reset: 0 headers, `proxy_get_status` = BrokenConnection, "reset".
    Reset,
}

/// Performs a real HTTP exchange on a background thread; the result arrives on the receiver.
pub(crate) fn spawn_http_call(
    base_url: &str,
    request: &CalloutRequest,
) -> mpsc::Receiver<CalloutResult> {
    let (tx, rx) = mpsc::channel();
    let url = format!("{base_url}{}", request.header(":path").unwrap_or("/"));
    let request = request.clone();
    std::thread::spawn(move || {
        let _ = tx.send(http_exchange(&url, &request));
    });
    rx
}

fn http_exchange(url: &str, request: &CalloutRequest) -> CalloutResult {
    let method = request.header(":method").unwrap_or("GET").to_owned();
    let mut builder = ureq::http::Request::builder()
        .method(method.as_str())
        .uri(url);
    for (name, value) in &request.headers {
        if name.starts_with(':') {
            continue;
        }
        builder = builder.header(name.as_str(), value.as_bytes());
    }
    if let Some(authority) = request.header(":authority") {
        builder = builder.header("host", authority);
    }
    let Ok(http_request) = builder.body(request.body.clone()) else {
        return CalloutResult::Reset;
    };
    let mut config = ureq::Agent::config_builder().http_status_as_error(false);
    if let Some(timeout) = request.timeout {
        config = config.timeout_global(Some(timeout));
    }
    let agent: ureq::Agent = config.build().into();
    match agent.run(http_request) {
        Ok(mut response) => {
            let mut headers = vec![(
                ":status".to_owned(),
                response.status().as_u16().to_string().into(),
            )];
            for (name, value) in response.headers() {
                headers.push((name.as_str().to_owned(), value.as_bytes().into()));
            }
            // ureq caps `read_to_vec` at 10 MB by default; a key-set snapshot of a million keys
            // is 60 MB. Envoy buffers the whole response; the harness allows what a guest buffer
            // may hold.
            match response
                .body_mut()
                .with_config()
                .limit(crate::memory::MAX_GUEST_BUFFER as u64)
                .read_to_vec()
            {
                Ok(body) => CalloutResult::Response(CalloutResponse {
                    headers,
                    body,
                    trailers: Vec::new(),
                }),
                Err(ureq::Error::Timeout(_)) => CalloutResult::Timeout,
                Err(_) => CalloutResult::Reset,
            }
        }
        Err(ureq::Error::Timeout(_)) => CalloutResult::Timeout,
        Err(e) if is_connect_failure(&e) => connect_failure_reply(),
        Err(_) => CalloutResult::Reset,
    }
}

/// The body of Envoy's answer to a call whose connection could not be made.
pub const CONNECT_FAILURE_BODY: &str = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure";

/// Whether the exchange failed before a connection existed (refused, unreachable).
fn is_connect_failure(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::ConnectionFailed => true,
        ureq::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::NetworkUnreachable
                | std::io::ErrorKind::HostUnreachable
                | std::io::ErrorKind::AddrNotAvailable
        ),
        _ => false,
    }
}

/// Envoy answers a call whose connection fails (refused, unreachable) with its router's local
/// reply, delivered as a normal response (`onSuccess`), not as a failure: `503`,
/// `content-length`, `content-type: text/plain` and [`CONNECT_FAILURE_BODY`].
fn connect_failure_reply() -> CalloutResult {
    CalloutResult::Response(CalloutResponse {
        headers: vec![
            (":status".to_owned(), "503".into()),
            (
                "content-length".to_owned(),
                CONNECT_FAILURE_BODY.len().to_string().into(),
            ),
            ("content-type".to_owned(), "text/plain".into()),
        ],
        body: CONNECT_FAILURE_BODY.as_bytes().to_vec(),
        trailers: Vec::new(),
    })
}
