//! A fake of the control plane's key-set feed on a free loopback port, for the Envoy benches and
//! tests that need the filter to hold a set of a chosen size or shape without issuing every key
//! through the API: a snapshot at revision 1, then deltas that the caller publishes when it
//! chooses.
//!
//! `GET /v1/keyset` answers the snapshot without `since` (or with `since=0`), the delta from
//! `since` when a newer revision is published, else `304` after the long-poll wait (or as soon
//! as a newer revision is published); `POST /v1/usage` is acknowledged. The edge key is not
//! checked.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keygate_protocol::wire::CONTENT_TYPE;
use serde_json::json;
use tokio::sync::Notify;

/// The feed's content and what of it is published.
#[derive(Debug)]
pub struct FakeFeed {
    snapshot: Vec<u8>,
    /// `deltas[i]` takes revision `i + 1` to `i + 2`.
    deltas: Vec<Vec<u8>>,
    published: Mutex<u64>,
    changed: Notify,
}

impl FakeFeed {
    /// A feed of `snapshot` (an encoded snapshot at revision 1) and `deltas` (encoded, the
    /// `i`-th from revision `i + 1` to `i + 2`), serving revision 1 until [`FakeFeed::publish`].
    pub fn new(snapshot: Vec<u8>, deltas: Vec<Vec<u8>>) -> Arc<Self> {
        Arc::new(Self {
            snapshot,
            deltas,
            published: Mutex::new(1),
            changed: Notify::new(),
        })
    }

    /// The encoded snapshot.
    pub fn snapshot(&self) -> &[u8] {
        &self.snapshot
    }

    /// How many deltas it holds (the last revision is one more than this).
    pub fn delta_count(&self) -> usize {
        self.deltas.len()
    }

    fn published(&self) -> u64 {
        *self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves revisions up to `revision` from now on, and answers the waiting long-polls.
    pub fn publish(&self, revision: u64) {
        *self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = revision;
        self.changed.notify_waiters();
    }

    /// Serves the feed on a free loopback port of the current tokio runtime; its `host:port`.
    ///
    /// # Errors
    /// The port could not be bound.
    pub async fn serve(self: Arc<Self>) -> anyhow::Result<String> {
        use axum::extract::Query;
        use axum::http::{StatusCode, header};
        use axum::response::{IntoResponse, Response};
        use axum::routing::{get, post};

        let keyset = move |Query(q): Query<BTreeMap<String, String>>| {
            let feed = self.clone();
            async move {
                let reply = |revision: u64, body: Vec<u8>| -> Response {
                    (
                        [
                            (header::CONTENT_TYPE, CONTENT_TYPE.to_owned()),
                            (
                                header::HeaderName::from_static("x-keygate-revision"),
                                revision.to_string(),
                            ),
                        ],
                        body,
                    )
                        .into_response()
                };
                let since = q.get("since").and_then(|s| s.parse::<u64>().ok());
                let Some(since) = since.filter(|&s| s >= 1) else {
                    return reply(1, feed.snapshot.clone());
                };
                let wait: u64 = q.get("wait").and_then(|w| w.parse().ok()).unwrap_or(0);
                let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
                loop {
                    let changed = feed.changed.notified();
                    if since < feed.published() {
                        let index = usize::try_from(since - 1).unwrap_or(usize::MAX);
                        let Some(delta) = feed.deltas.get(index) else {
                            return StatusCode::NOT_FOUND.into_response();
                        };
                        return reply(since + 1, delta.clone());
                    }
                    if tokio::time::timeout_at(deadline, changed).await.is_err() {
                        return StatusCode::NOT_MODIFIED.into_response();
                    }
                }
            }
        };
        let app = axum::Router::new().route("/v1/keyset", get(keyset)).route(
            "/v1/usage",
            post(|| async { axum::Json(json!({"applied": true})) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(addr)
    }
}
