//! An oversize request body leaves the connection usable: when a route answers `413` before
//! reading the whole body (its limit stops the read), the rest of the body is read and dropped,
//! up to [`DRAIN_LIMIT`] bytes within [`DRAIN_TIME`], before the answer goes out. Otherwise the
//! server closes the kept-alive connection with the client's bytes unread, and the client's next
//! request on it (its pool still holds it) fails with a reset: seen in CI as a flaky
//! `IncompleteMessage`, and reproduced by `control-plane/tests/api.rs`'s
//! `after_an_oversize_body_the_kept_alive_connection_serves_the_next_request`.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

/// Most bytes read and dropped after a `413` (beyond it, the connection is closed as before).
pub const DRAIN_LIMIT: usize = 16 << 20;
/// Longest a `413` waits for the rest of the body.
pub const DRAIN_TIME: Duration = Duration::from_secs(2);

/// The request body, shared between the handler (which reads it through [`SharedBody`]) and
/// this middleware (which takes what is left after the handler answered).
type Shared = Arc<Mutex<Option<Body>>>;

/// The middleware: passes the request on with its body shared; on a `413`, drains the rest.
pub async fn drain_after_payload_too_large(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let shared: Shared = Arc::new(Mutex::new(Some(body)));
    let req = Request::from_parts(parts, Body::new(SharedBody(shared.clone())));
    let resp = next.run(req).await;
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        let rest = shared.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(rest) = rest {
            let _ = tokio::time::timeout(DRAIN_TIME, drain(rest)).await;
        }
    }
    resp
}

/// Reads `body` to its end or to [`DRAIN_LIMIT`] bytes, dropping what it reads.
async fn drain(mut body: Body) {
    let mut read = 0;
    while read <= DRAIN_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            _ => return,
        }
    }
}

/// The handler's view of the shared body.
struct SharedBody(Shared);

impl http_body::Body for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}
