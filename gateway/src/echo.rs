//! The demo upstream: answers every request with what it received, as JSON.

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

/// Serves the echo upstream on `listener` until `shutdown` resolves, then drains connections.
///
/// The answer is `200 application/json`:
/// `{"method":…,"path":…,"headers":{name: value, …},"body":…,"body_length":…}` (repeated
/// headers joined with `, `; the body as lossy UTF-8).
pub async fn serve_echo(listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(echo));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown()).await;
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "body_length": body.len(),
    });
    let mut response = Response::new(Full::new(Bytes::from(json.to_string())));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
