//! Graceful shutdown ends long-polls at once: a reader waiting on `GET /v1/keyset?wait=30` gets
//! its answer (304, same revision) as soon as the server starts shutting down, so a stop or a
//! rolling restart is not held up for the length of the longest poll.

mod common;

use std::time::{Duration, Instant};

use common::{Engine, InProcessServer};
use keygate_control_plane::http::keys::IssuedKey;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_long_polls_with_304() {
    let server = InProcessServer::start(Engine::Sqlite).await;
    let IssuedKey { secret: edge, .. } =
        server.create(json!({"name": "edge", "kind": "edge"})).await;
    let head = server
        .http
        .get(server.url("/v1/keyset"))
        .bearer_auth(&edge)
        .send()
        .await
        .expect("snapshot");
    assert_eq!(head.status(), StatusCode::OK);
    let revision: u64 = head.headers()["x-keygate-revision"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");

    let poll = server
        .http
        .get(server.url(&format!("/v1/keyset?since={revision}&wait=30")))
        .bearer_auth(&edge)
        .send();
    let poll = tokio::spawn(poll);
    // Let the poll reach its wait; no change lands, so it would wait 30 s.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "the long-poll answered before any change"
    );

    let started = Instant::now();
    server.stop().await;
    let answer = poll.await.expect("join").expect("answered");
    assert_eq!(answer.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        answer.headers()["x-keygate-revision"]
            .to_str()
            .expect("ascii"),
        revision.to_string()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown waited {:?} for the long-poll",
        started.elapsed()
    );
}
