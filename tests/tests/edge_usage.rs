//! Usage reports from the real filter `.wasm` reach the real control plane (`last_used_at` and
//! `usage_count` set), and a batch whose acknowledgement was lost is re-sent and counted once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate_e2e::{
    CLUSTER, ControlPlane, edge_harness, eventually, harness_builder, metric, unix_secs,
};
use keygate_host_harness::{CalloutReply, CalloutResponse, Cluster, Disposition, Request};
use serde_json::{Value, json};

fn usage_of(cp: &ControlPlane, id: &str) -> (i64, Option<i64>) {
    let k = cp.api.key(id);
    (k.usage_count, k.last_used_at)
}

#[test]
fn usage_reports_set_last_used_at_and_counts() {
    let cp = ControlPlane::start_sqlite();
    let a = cp
        .api
        .create_key(json!({"name": "a", "scopes": ["repo:read"], "resources": ["acme"]}));
    let b = cp
        .api
        .create_key(json!({"name": "b", "scopes": ["repo:read"]}));
    assert_eq!(usage_of(&cp, &a.id), (0, None));
    let mut h = edge_harness(&cp, 2, r#""usage_report_interval_ms":1000"#);
    h.advance(Duration::from_millis(500));
    let start = unix_secs();
    for i in 0..5 {
        let o = h
            .run_request_on(
                i % 2,
                Request::get("/repos/acme/x").header("x-api-key", &a.secret),
            )
            .unwrap();
        assert_eq!(o.disposition, Disposition::Completed);
    }
    let o = h
        .run_request_on(
            0,
            Request::get("/repos/acme/x").header("x-api-key", &b.secret),
        )
        .unwrap();
    assert_eq!(o.disposition, Disposition::Completed);
    // denied requests are not usage
    let o = h
        .run_request_on(
            1,
            Request::get("/repos/globex/x").header("x-api-key", &a.secret),
        )
        .unwrap();
    assert_eq!(o.disposition, Disposition::LocalResponse);
    h.advance(Duration::from_secs(2));
    assert!(metric(&h, "keygate.usage.batches_sent") >= 1);
    let (count_a, last_a) = eventually(
        "usage of a recorded",
        50,
        Duration::from_millis(100),
        || {
            let u = usage_of(&cp, &a.id);
            (u.0 == 5).then_some(u)
        },
    );
    assert_eq!(count_a, 5);
    let last_a = last_a.expect("last_used_at set");
    assert!(
        (start - 5..=start + 10).contains(&last_a),
        "last_used_at {last_a}, start {start}"
    );
    assert_eq!(usage_of(&cp, &b.id).0, 1);
    // Nothing more is reported when nothing more happens.
    h.advance(Duration::from_secs(3));
    assert_eq!(usage_of(&cp, &a.id).0, 5);
    assert_eq!(metric(&h, "keygate.usage.batches_failed"), 0);
}

#[test]
fn a_retried_usage_batch_counts_once() {
    let cp = ControlPlane::start_sqlite();
    let a = cp
        .api
        .create_key(json!({"name": "a", "scopes": ["repo:read"]}));
    // Usage goes through a relay that delivers the first batch to the control plane but loses
    // its acknowledgement (a connection reset), so the filter must re-send that batch.
    let posts: Arc<Mutex<Vec<(Value, Value)>>> = Arc::new(Mutex::new(Vec::new()));
    let rt = cp.runtime();
    let base = cp.base.clone();
    let seen = posts.clone();
    let http = keygate_e2e::reqwest::Client::new();
    let relay = Cluster::handler(move |req| {
        let auth = req.header("authorization").unwrap_or_default().to_owned();
        let body = req.body.clone();
        let answer = rt.block_on(async {
            let resp = http
                .post(format!("{base}/v1/usage"))
                .header("authorization", auth)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .ok()?;
            let status = resp.status().as_u16();
            let text = resp.text().await.ok()?;
            Some((status, text))
        });
        let Some((status, text)) = answer else {
            return CalloutReply::reset();
        };
        let mut seen = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let sent: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let ack: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        seen.push((sent, ack));
        if seen.len() == 1 {
            return CalloutReply::reset(); // the control plane applied it; the filter never hears
        }
        CalloutReply::response(CalloutResponse {
            headers: vec![
                (":status".into(), status.to_string().into()),
                ("content-type".into(), "application/json".into()),
            ],
            body: text.into_bytes(),
            trailers: Vec::new(),
        })
    });
    let mut h = harness_builder(
        1,
        &cp.edge_key,
        r#""usage_report_interval_ms":1000,"usage_cluster":"usage""#,
    )
    .cluster(CLUSTER, Cluster::http(cp.base.clone()))
    .cluster("usage", relay)
    .build()
    .unwrap();
    h.advance(Duration::from_millis(500));
    for _ in 0..4 {
        let o = h
            .run_request_on(
                0,
                Request::get("/repos/acme/x").header("x-api-key", &a.secret),
            )
            .unwrap();
        assert_eq!(o.disposition, Disposition::Completed);
    }
    h.advance(Duration::from_millis(1200));
    assert_eq!(posts.lock().unwrap().len(), 1, "first batch sent");
    assert_eq!(metric(&h, "keygate.usage.batches_failed"), 1);
    // one more request while the first batch is unacknowledged: it waits for a later batch
    let o = h
        .run_request_on(
            0,
            Request::get("/repos/acme/x").header("x-api-key", &a.secret),
        )
        .unwrap();
    assert_eq!(o.disposition, Disposition::Completed);
    h.advance(Duration::from_secs(10));
    let posts = posts.lock().unwrap().clone();
    assert!(posts.len() >= 3, "re-sent and a new batch: {posts:#?}");
    let (first, first_ack) = &posts[0];
    let (retry, retry_ack) = &posts[1];
    assert_eq!(first, retry, "the retry re-sends the same batch");
    assert_eq!(first_ack["applied"], true);
    assert_eq!(
        retry_ack["applied"], false,
        "the control plane saw the batch id before"
    );
    assert_eq!(first["entries"][0]["count"], 4);
    assert_ne!(posts[2].0["batch_id"], first["batch_id"]);
    assert_eq!(posts[2].0["entries"][0]["count"], 1);
    let total = eventually("usage recorded", 50, Duration::from_millis(100), || {
        let (count, last) = usage_of(&cp, &a.id);
        (count >= 5 && last.is_some()).then_some(count)
    });
    assert_eq!(total, 5, "4 + 1 requests, the retried batch counted once");
    assert!(metric(&h, "keygate.usage.batches_sent") >= 2);
}
