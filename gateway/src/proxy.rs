//! The HTTP/1.1 front door: filter each request on the worker pool, then proxy it upstream
//! (bodies streamed both ways) or answer the filter's local reply.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{HOST, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use keygate_host_harness::{HeaderMap, Plugin, Request};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::envoy_bootstrap::FilterStateHeader;
use crate::error::GatewayError;
use crate::settings::PluginSettings;
use crate::workers::{FilterPool, Verdict};

/// Body of the gateway's responses: streamed from the upstream, or a local reply.
type Body = Either<Incoming, Full<Bytes>>;

/// Connection-scoped headers a proxy never forwards (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
];

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the gateway needs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Listen address (port 0 picks one; see [`RunningGateway::local_addr`]).
    pub listen: SocketAddr,
    /// Upstream base URL, `http://host:port` (a path prefix is allowed).
    pub upstream: String,
    /// The compiled filter.
    pub plugin: Arc<Plugin>,
    /// Configuration, ids and environment of the filter.
    pub settings: PluginSettings,
    /// Clusters the filter may call: name → `http://host:port`.
    pub clusters: Vec<(String, String)>,
    /// Worker threads (filter instances).
    pub workers: usize,
    /// The response headers filled from the filter's state on a forwarded request, as Envoy's
    /// route configuration adds them (`envoy_bootstrap::shipped_filter_state_headers` for
    /// `envoy/envoy.yaml`'s).
    pub filter_state_headers: Vec<FilterStateHeader>,
    /// The request headers whose repeated values are joined into one, comma-separated, as
    /// Envoy does for a header with an inline slot (`envoy_bootstrap::inline_request_headers`;
    /// `envoy/envoy.yaml` gives `x-api-key` one).
    pub inline_request_headers: Vec<String>,
}

/// Starts gateways.
#[derive(Debug)]
pub struct Gateway;

/// A gateway serving on a background task.
#[derive(Debug)]
pub struct RunningGateway {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningGateway {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight requests finish (bounded), stops the workers.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

struct State {
    pool: FilterPool,
    client: Client<HttpConnector, Incoming>,
    upstream: Uri,
    filter_state_headers: Vec<FilterStateHeader>,
    inline_request_headers: Vec<String>,
}

impl Gateway {
    /// Validates the configuration, starts the filter workers and binds the listener.
    pub async fn start(config: GatewayConfig) -> Result<RunningGateway, GatewayError> {
        let upstream = parse_upstream(&config.upstream)?;
        for (name, url) in &config.clusters {
            parse_upstream(url).map_err(|_| GatewayError::InvalidArgument {
                what: "cluster",
                value: format!("{name}={url}"),
                reason: "expected name=http://host:port".into(),
            })?;
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| GatewayError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| GatewayError::Bind {
            addr: config.listen,
            source,
        })?;
        let (plugin, settings, clusters, workers) = (
            config.plugin,
            config.settings,
            config.clusters,
            config.workers,
        );
        let pool = tokio::task::spawn_blocking(move || {
            FilterPool::start(plugin, &settings, &clusters, workers)
        })
        .await
        .map_err(|e| GatewayError::Worker(e.to_string()))??;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let state = Arc::new(State {
            pool,
            client,
            upstream,
            filter_state_headers: config.filter_state_headers,
            inline_request_headers: config.inline_request_headers,
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, state, stopped));
        Ok(RunningGateway { addr, stop, task })
    }
}

fn parse_upstream(url: &str) -> Result<Uri, GatewayError> {
    let invalid = |reason: &str| GatewayError::InvalidArgument {
        what: "upstream URL",
        value: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| invalid(&e.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid("only http:// upstreams are supported"));
    }
    if uri.authority().is_none() {
        return Err(invalid("no host"));
    }
    if uri.query().is_some() {
        return Err(invalid("no query allowed"));
    }
    Ok(uri)
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, mut stopped: oneshot::Receiver<()>) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let service = service_fn(move |req| handle(state.clone(), peer, req));
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut stopped => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
    if let Ok(state) = Arc::try_unwrap(state) {
        let _ = tokio::task::spawn_blocking(move || state.pool.shutdown()).await;
    }
}

async fn handle(
    state: Arc<State>,
    peer: SocketAddr,
    req: hyper::Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let authority = parts
        .headers
        .get(HOST)
        .map(|h| h.as_bytes().into())
        .or_else(|| parts.uri.authority().map(|a| a.as_str().into()))
        .unwrap_or_default();
    let mut headers: HeaderMap = vec![
        (":method".to_owned(), parts.method.as_str().into()),
        (":path".to_owned(), path.into()),
        (":authority".to_owned(), authority),
        (":scheme".to_owned(), "http".into()),
    ];
    for (name, value) in &parts.headers {
        if name == HOST || HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        // Values go through byte for byte, as Envoy passes obs-text (not UTF-8) through.
        let inline = state
            .inline_request_headers
            .iter()
            .any(|h| h == name.as_str());
        if let Some((_, joined)) = headers
            .iter_mut()
            .find(|(k, _)| inline && k.as_str() == name.as_str())
        {
            let mut bytes = joined.as_bytes().to_vec();
            bytes.push(b',');
            bytes.extend_from_slice(value.as_bytes());
            *joined = bytes.as_slice().into();
            continue;
        }
        headers.push((name.as_str().to_owned(), value.as_bytes().into()));
    }
    let request = Request {
        headers,
        body: Vec::new(),
        trailers: Vec::new(),
        properties: vec![("source.address".to_owned(), peer.to_string())],
        upstream: Default::default(),
    };
    match state.pool.decide(request).await {
        Verdict::Forward {
            headers,
            filter_state,
        } => {
            let mut response = forward(&state, headers, body).await;
            add_filter_state_headers(&state.filter_state_headers, &filter_state, &mut response);
            Ok(response)
        }
        Verdict::Reply {
            status,
            headers,
            body,
        } => Ok(local_reply(status, &headers, body)),
        Verdict::Reset => Err(std::io::Error::other("stream reset by the filter")),
    }
}

async fn forward(state: &State, headers: HeaderMap, body: Incoming) -> Response<Body> {
    let pseudo = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_bytes())
    };
    let method = pseudo(":method")
        .and_then(|m| Method::from_bytes(m).ok())
        .unwrap_or(Method::GET);
    let path = pseudo(":path")
        .and_then(|p| std::str::from_utf8(p).ok())
        .unwrap_or("/");
    let base = state.upstream.path().trim_end_matches('/');
    let uri = format!(
        "http://{}{base}{path}",
        state
            .upstream
            .authority()
            .map(|a| a.as_str())
            .unwrap_or_default()
    );
    let mut builder = hyper::Request::builder().method(method).uri(uri);
    if let Some(authority) = pseudo(":authority").filter(|a| !a.is_empty())
        && let Ok(authority) = HeaderValue::from_bytes(authority)
    {
        builder = builder.header(HOST, authority);
    }
    for (name, value) in &headers {
        if name.starts_with(':') {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            builder = builder.header(n, v);
        }
    }
    let Ok(request) = builder.body(body) else {
        return local_reply(400, &[], b"bad request\n".to_vec());
    };
    match state.client.request(request).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            for name in HOP_BY_HOP {
                parts.headers.remove(name);
            }
            Response::from_parts(parts, Either::Left(body))
        }
        Err(e) => {
            tracing::warn!(error = %e, "upstream request failed");
            local_reply(502, &[], b"upstream connect error\n".to_vec())
        }
    }
}

/// Adds each of `wanted` whose property the filter set on the stream (or, with
/// `keep_empty_value`, did not), as Envoy's `response_headers_to_add` does after the router.
fn add_filter_state_headers(
    wanted: &[FilterStateHeader],
    filter_state: &[(String, Vec<u8>)],
    response: &mut Response<Body>,
) {
    for w in wanted {
        let value = filter_state
            .iter()
            .find(|(path, _)| *path == w.property)
            .map_or(&[][..], |(_, v)| v.as_slice());
        if value.is_empty() && !w.keep_empty_value {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(w.header.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
}

fn local_reply(
    status: u16,
    headers: &[(String, keygate_host_harness::HeaderValue)],
    body: Vec<u8>,
) -> Response<Body> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in headers {
        if name == "content-length" || HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    response
}
