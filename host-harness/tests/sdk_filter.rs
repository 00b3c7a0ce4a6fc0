//! The official-SDK test filter under the harness: every host function group, as Envoy behaves.

use std::time::Duration;

use keygate_harness_test_artifacts::SDK_FILTER;
use keygate_host_harness::{
    CalloutReply, CalloutResult, Cluster, Disposition, FailurePolicy, Harness, HarnessBuilder,
    HarnessError, LogLevel, MetricType, Plugin, Request, Status, TimeoutDelivery, UpstreamResponse,
};

fn builder(mode: &str) -> HarnessBuilder {
    let plugin = Plugin::load_file(SDK_FILTER).expect("load the sdk filter");
    Harness::builder(plugin).plugin_configuration(mode.as_bytes().to_vec())
}

fn harness(mode: &str) -> Harness {
    builder(mode).build().expect("configure")
}

#[test]
fn continue_mode_forwards_request_and_response_untouched() {
    let mut h = harness("continue");
    let out = h
        .run_request(
            Request::get("/a")
                .header("x-k", "v")
                .upstream(UpstreamResponse::status(201).body("up")),
        )
        .unwrap();
    assert_eq!(out.disposition, Disposition::Completed);
    assert_eq!(out.request_header("x-k"), Some("v"));
    assert_eq!(out.status(), Some(201));
    assert_eq!(out.response.as_ref().unwrap().body, b"up");
    assert_eq!(h.take_outcome(out.id), Some(out.clone()));
    assert!(h.outcome(out.id).is_err(), "taken outcomes are gone");
    assert!(
        h.logs_at(LogLevel::Info)
            .iter()
            .any(|m| m == "configured mode continue")
    );
}

#[test]
fn header_manipulation_is_visible_upstream_and_downstream() {
    let mut h = harness("headers");
    let out = h
        .run_request(
            Request::get("/p?q=1")
                .header("x-replace", "old")
                .header("x-remove", "gone")
                .header("X-Replace", "dup"),
        )
        .unwrap();
    assert_eq!(out.disposition, Disposition::Completed);
    assert_eq!(out.request_header("x-added"), Some("yes"));
    assert_eq!(out.request_header("x-replace"), Some("new"));
    let replaced = out
        .request
        .as_ref()
        .unwrap()
        .headers
        .iter()
        .filter(|(k, _)| k == "x-replace")
        .count();
    assert_eq!(replaced, 1, "replace drops duplicates");
    assert_eq!(out.request_header("x-remove"), None);
    assert_eq!(out.request_header("x-path-seen"), Some("/p?q=1"));
    assert_eq!(out.request_header("x-header-count"), Some("7"));
    assert_eq!(
        out.response.as_ref().unwrap().header("x-response-seen"),
        Some("yes")
    );
    // Changes after a map was sent reach neither peer, though the filter reads them back.
    assert_eq!(out.request_header("x-late"), None);
    assert_eq!(out.response.as_ref().unwrap().header("x-late"), None);
    assert!(
        h.logs_at(LogLevel::Debug)
            .iter()
            .any(|m| m.ends_with("late after-upstream status 200")),
        "{:?}",
        h.logs()
    );
}

#[test]
fn local_response_ends_the_stream_and_passes_the_response_callbacks() {
    let mut h = harness("deny");
    let out = h.run_request(Request::get("/secret")).unwrap();
    assert_eq!(out.disposition, Disposition::LocalResponse);
    assert!(out.request.is_none(), "the upstream never saw it");
    let response = out.response.clone().unwrap();
    assert_eq!(response.status, 403);
    assert_eq!(response.body, b"denied\n");
    assert_eq!(response.header("x-denied"), Some("by-filter"));
    assert_eq!(response.header("content-length"), Some("7"));
    assert_eq!(response.header("x-response-seen"), Some("yes"));
    assert_eq!(h.local_responses().len(), 1);

    let allowed = h
        .run_request(Request::get("/open").header("x-allow", "yes"))
        .unwrap();
    assert_eq!(allowed.disposition, Disposition::Completed);
}

fn auth_cluster() -> Cluster {
    Cluster::handler(|req| match req.header("x-key") {
        Some("good") => CalloutReply::status(200).body("user-1"),
        Some("slow") => CalloutReply::status(200)
            .body("late")
            .after(Duration::from_millis(300)),
        Some("reset") => CalloutReply::reset(),
        Some("silent") => CalloutReply::silent(),
        _ => CalloutReply::status(401).body("bad key"),
    })
}

fn callout_harness(timeouts: TimeoutDelivery) -> Harness {
    builder("callout")
        .cluster("auth", auth_cluster())
        .timeout_delivery(timeouts)
        .build()
        .unwrap()
}

#[test]
fn callout_success_pauses_then_resumes_with_the_answer() {
    let mut h = callout_harness(TimeoutDelivery::default());
    let out = h
        .run_request(Request::get("/x").header("x-key", "good"))
        .unwrap();
    assert_eq!(out.disposition, Disposition::Completed);
    assert_eq!(out.request_header("x-auth"), Some("user-1"));
    let calls = h.callouts();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].request.cluster, "auth");
    assert_eq!(calls[0].request.header(":method"), Some("POST"));
    assert_eq!(calls[0].request.body, b"check");
    assert_eq!(calls[0].request.timeout, Some(Duration::from_millis(1000)));
    assert!(matches!(calls[0].result, Some(CalloutResult::Response(_))));

    let denied = h
        .run_request(Request::get("/x").header("x-key", "nope"))
        .unwrap();
    assert_eq!(denied.disposition, Disposition::LocalResponse);
    assert_eq!(denied.status(), Some(403));
    assert_eq!(denied.response.unwrap().body, b"bad key");

    // A long-running host drains the records: taken once, in order, then gone.
    let taken = h.take_callouts();
    assert_eq!(taken.len(), 2);
    assert_eq!(taken[0].request.body, b"check");
    assert!(h.callouts().is_empty());
    assert!(h.take_callouts().is_empty());
    let logs = h.logs();
    assert_eq!(h.take_logs(), logs);
    assert!(h.logs().is_empty() && h.take_logs().is_empty());
}

#[test]
fn callout_latency_keeps_the_stream_pending_until_the_clock_moves() {
    let mut h = callout_harness(TimeoutDelivery::default());
    let out = h
        .run_request(Request::get("/x").header("x-key", "slow"))
        .unwrap();
    assert_eq!(out.disposition, Disposition::Pending);
    h.advance(Duration::from_millis(299));
    assert_eq!(h.outcome(out.id).unwrap().disposition, Disposition::Pending);
    h.advance(Duration::from_millis(1));
    let done = h.outcome(out.id).unwrap();
    assert_eq!(done.disposition, Disposition::Completed);
    assert_eq!(done.request_header("x-auth"), Some("late"));
}

#[test]
fn callout_reset_arrives_with_no_headers_and_a_broken_connection_status() {
    let mut h = callout_harness(TimeoutDelivery::default());
    let out = h
        .run_request(Request::get("/x").header("x-key", "reset"))
        .unwrap();
    let response = out.response.unwrap();
    assert_eq!(response.status, 502);
    assert_eq!(
        response.header("x-call-status"),
        Some(&*(Status::BrokenConnection as u32).to_string())
    );
    assert_eq!(response.header("x-call-message"), Some("reset"));
}

#[test]
fn callout_timeout_is_a_504_like_envoy_or_a_reset_when_asked() {
    let mut h = callout_harness(TimeoutDelivery::default());
    let out = h
        .run_request(
            Request::get("/x")
                .header("x-key", "silent")
                .header("x-timeout-ms", "250"),
        )
        .unwrap();
    assert_eq!(out.disposition, Disposition::Pending);
    h.advance(Duration::from_millis(250));
    let done = h.outcome(out.id).unwrap();
    assert_eq!(done.status(), Some(403));
    let response = done.response.unwrap();
    assert_eq!(response.header("x-upstream-status"), Some("504"));
    assert_eq!(response.body, b"upstream request timeout");
    assert_eq!(h.callouts()[0].result, Some(CalloutResult::Timeout));

    let mut h = callout_harness(TimeoutDelivery::Reset);
    let out = h
        .run_request(
            Request::get("/x")
                .header("x-key", "slow")
                .header("x-timeout-ms", "100"),
        )
        .unwrap();
    h.advance(Duration::from_secs(1));
    let done = h.outcome(out.id).unwrap();
    assert_eq!(done.status(), Some(502));
    assert_eq!(
        done.response.unwrap().header("x-call-message"),
        Some("reset")
    );
}

#[test]
fn unknown_cluster_and_missing_pseudo_headers_are_bad_argument() {
    let mut h = callout_harness(TimeoutDelivery::default());
    let out = h
        .run_request(Request::get("/x").header("x-cluster", "nowhere"))
        .unwrap();
    assert_eq!(out.response.unwrap().body, b"dispatch failed: BadArgument");
    let out = h
        .run_request(Request::get("/x").header("x-no-method", "1"))
        .unwrap();
    assert_eq!(out.response.unwrap().body, b"dispatch failed: BadArgument");
    assert!(h.callouts().is_empty());
}

#[test]
fn body_buffering_and_rewriting() {
    let mut h = harness("body");
    let out = h
        .run_request(
            Request::new("POST", "/b")
                .body("hello ")
                .body("world")
                .upstream(UpstreamResponse::status(200).body("resp")),
        )
        .unwrap();
    assert_eq!(out.disposition, Disposition::Completed);
    assert_eq!(out.request.unwrap().body, b"HELLO WORLD");
    assert_eq!(out.response.unwrap().body, b"resp [filtered]");
}

#[test]
fn ticks_fire_per_worker_and_count_through_shared_cas() {
    let mut h = builder("ticks").workers(2).build().unwrap();
    h.advance(Duration::from_millis(99));
    assert_eq!(h.shared_data("ticks"), None);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.shared_data("ticks").unwrap().0, b"2");
    h.advance(Duration::from_millis(1000));
    let (value, cas) = h.shared_data("ticks").unwrap();
    assert_eq!(value, b"22", "11 ticks on each of 2 workers");
    assert!(cas >= 22);
    let ticks = h.metric("ticks_total").unwrap();
    assert_eq!((ticks.kind, ticks.value), (MetricType::Counter, 22));
}

#[test]
fn shared_data_cas_race_between_workers() {
    let mut h = builder("shared").workers(2).build().unwrap();
    h.set_shared_data("k", "v0", 0).unwrap();
    let read = |h: &mut Harness, worker| {
        h.run_request_on(worker, Request::get("/").header("x-op", "read"))
            .unwrap()
    };
    let write = |h: &mut Harness, worker, value: &str| {
        h.run_request_on(
            worker,
            Request::get("/")
                .header("x-op", "write")
                .header("x-value", value),
        )
        .unwrap()
        .status()
    };
    let a = read(&mut h, 0);
    let b = read(&mut h, 1);
    assert_eq!(a.response.as_ref().unwrap().body, b"v0");
    assert_eq!(
        a.response.unwrap().header("x-cas"),
        b.response.unwrap().header("x-cas")
    );
    assert_eq!(write(&mut h, 0, "from-0"), Some(200));
    assert_eq!(write(&mut h, 1, "from-1"), Some(409), "stale cas loses");
    assert_eq!(h.shared_data("k").unwrap().0, b"from-0");
    // cas 0 is unconditional.
    let out = h
        .run_request_on(
            1,
            Request::get("/")
                .header("x-op", "write")
                .header("x-value", "forced")
                .header("x-cas", "0"),
        )
        .unwrap();
    assert_eq!(out.status(), Some(200));
    assert_eq!(h.shared_data("k").unwrap().0, b"forced");
}

#[test]
fn queue_items_reach_the_registering_root_context() {
    let mut h = builder("queue").workers(2).build().unwrap();
    h.run_request_on(1, Request::get("/one")).unwrap();
    h.run_request_on(0, Request::get("/two")).unwrap();
    let dequeued: Vec<_> = h
        .logs()
        .into_iter()
        .filter(|l| l.message.starts_with("dequeued"))
        .collect();
    assert_eq!(dequeued.len(), 2);
    assert!(
        dequeued.iter().all(|l| l.worker == 0),
        "worker 0 registered first and owns the queue"
    );
    assert_eq!(dequeued[0].message, "dequeued /one");
    assert_eq!(h.queue_len("events"), Some(0));
}

#[test]
fn metrics_follow_envoy_rules() {
    let mut h = builder("metrics").workers(2).build().unwrap();
    h.run_request(Request::get("/abc")).unwrap();
    let out = h.run_request(Request::get("/abcdef")).unwrap();
    assert_eq!(
        out.request_header("x-requests"),
        Some("2"),
        "counters are shared across workers"
    );
    assert_eq!(out.request_header("x-negative"), Some("Err(BadArgument)"));
    assert_eq!(
        out.request_header("x-histogram-get"),
        Some("Err(BadArgument)")
    );
    assert_eq!(h.metric("inflight").unwrap().value, 6);
    assert_eq!(h.metric("path_length").unwrap().recorded, vec![4, 7]);
}

#[test]
fn properties_read_derived_configured_and_written_values() {
    let mut h = builder("properties").root_id("my-plugin").build().unwrap();
    let out = h
        .run_request(Request::get("/prop").property("source.address", "10.0.0.1:5000"))
        .unwrap();
    assert_eq!(out.request_header("x-prop-path"), Some("/prop"));
    assert_eq!(out.request_header("x-prop-plugin"), Some("my-plugin"));
    assert_eq!(out.request_header("x-prop-source"), Some("10.0.0.1:5000"));
    assert_eq!(out.request_header("x-prop-missing"), Some("<none>"));
    assert_eq!(out.request_header("x-prop-written"), Some("written"));
}

#[test]
fn trap_reports_the_panic_fails_closed_and_rebuilds_the_instance() {
    let mut h = harness("trap");
    let out = h
        .run_request(Request::get("/").header("x-panic", "1"))
        .unwrap();
    assert_eq!(out.disposition, Disposition::FailedClosed);
    assert_eq!(out.status(), Some(503));
    let traps = h.traps();
    assert_eq!(traps.len(), 1);
    assert_eq!(traps[0].during, "proxy_on_request_headers");
    assert!(
        traps[0]
            .guest_message
            .as_deref()
            .unwrap()
            .contains("boom requested by context 2"),
        "{traps:?}"
    );
    assert!(
        traps[0].trap.contains("wasm backtrace"),
        "{}",
        traps[0].trap
    );
    assert_eq!(h.worker(0).unwrap().rebuilds(), 1);
    let configured = h
        .logs_at(LogLevel::Info)
        .iter()
        .filter(|m| *m == "configured mode trap")
        .count();
    assert_eq!(configured, 2, "the fresh instance was configured again");
    let next = h.run_request(Request::get("/fine")).unwrap();
    assert_eq!(next.disposition, Disposition::Completed);
}

#[test]
fn trap_with_fail_open_lets_the_stream_through() {
    let mut h = builder("trap")
        .failure_policy(FailurePolicy::FailOpen)
        .build()
        .unwrap();
    let out = h
        .run_request(Request::get("/p").header("x-panic", "1"))
        .unwrap();
    assert_eq!(out.disposition, Disposition::FailedOpen);
    assert_eq!(out.status(), Some(200));
    assert_eq!(out.request_header(":path"), Some("/p"));
}

#[test]
fn configure_refusal_and_vm_start_refusal_are_reported() {
    assert!(matches!(
        builder("refuse").build(),
        Err(HarnessError::ConfigureFailed)
    ));
    assert!(matches!(
        builder("continue")
            .vm_configuration(b"refuse".to_vec())
            .build(),
        Err(HarnessError::VmStartFailed)
    ));
    match builder("trap-configure").build() {
        Err(HarnessError::Trap { during, message }) => {
            assert_eq!(during, "proxy_on_configure");
            assert!(message.contains("configure exploded"), "{message}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn wasi_output_environment_and_clock() {
    let mut h = builder("wasi")
        .env_var("HARNESS_TEST_VAR", "from-host")
        .build()
        .unwrap();
    let out = h.run_request(Request::get("/w")).unwrap();
    assert_eq!(out.disposition, Disposition::Completed);
    let logs = h.logs();
    assert!(logs.iter().any(|l| l.source == "stdout"
        && l.level == LogLevel::Info
        && l.message == "stdout line for /w"));
    assert!(
        logs.iter().any(|l| l.source == "stderr"
            && l.level == LogLevel::Error
            && l.message == "stderr line")
    );
    assert_eq!(out.request_header("x-env"), Some("from-host"));
    let virtual_secs = (h.now_nanos() / 1_000_000_000).to_string();
    assert_eq!(
        out.request_header("x-wasi-now"),
        Some(virtual_secs.as_str())
    );
    assert_eq!(
        out.request_header("x-host-now"),
        Some(virtual_secs.as_str())
    );
}

#[test]
fn trailers_pass_through_and_end_of_stream_moves_to_the_last_event() {
    let mut h = harness("continue");
    let mut upstream = UpstreamResponse::status(200).body("r");
    upstream.trailers = vec![("grpc-status".to_owned(), "0".into())];
    let out = h
        .run_request(
            Request::new("POST", "/t")
                .body("b")
                .trailer("x-checksum", "abc")
                .upstream(upstream),
        )
        .unwrap();
    assert_eq!(out.disposition, Disposition::Completed);
    let request = out.request.unwrap();
    assert_eq!(request.body, b"b");
    assert_eq!(
        request.trailers,
        vec![("x-checksum".to_owned(), "abc".into())]
    );
    assert_eq!(
        out.response.unwrap().trailers,
        vec![("grpc-status".to_owned(), "0".into())]
    );
}

#[test]
fn response_paused_for_a_callout_resumes_with_continue_stream() {
    let mut h = builder("response-callout")
        .cluster(
            "deco",
            Cluster::handler(|_| {
                CalloutReply::status(200)
                    .body("shiny")
                    .after(Duration::from_millis(10))
            }),
        )
        .build()
        .unwrap();
    let out = h
        .run_request(Request::get("/r").upstream(UpstreamResponse::status(204)))
        .unwrap();
    assert_eq!(out.disposition, Disposition::Pending);
    assert!(
        out.request.is_some(),
        "the request already reached the upstream"
    );
    h.advance(Duration::from_millis(10));
    let done = h.outcome(out.id).unwrap();
    assert_eq!(
        done.disposition,
        Disposition::Completed,
        "{:?} {:?} {:?}",
        h.callouts(),
        h.traps(),
        h.logs()
    );
    assert_eq!(done.response.unwrap().header("x-decoration"), Some("shiny"));
}

#[test]
fn a_body_callback_returning_continue_resumes_paused_headers_as_in_envoy() {
    // Envoy: after StopIteration from the headers callback, Continue from the data callback
    // resumes iteration. The SDK's default body callback returns Continue, so the response
    // goes out undecorated and the late callout is cancelled with the stream.
    let mut h = builder("response-callout")
        .cluster(
            "deco",
            Cluster::handler(|_| {
                CalloutReply::status(200)
                    .body("shiny")
                    .after(Duration::from_millis(10))
            }),
        )
        .build()
        .unwrap();
    let out = h
        .run_request(Request::get("/r").upstream(UpstreamResponse::status(200).body("payload")))
        .unwrap();
    assert_eq!(out.disposition, Disposition::Completed);
    let response = out.response.unwrap();
    assert_eq!(response.header("x-decoration"), None);
    assert_eq!(response.body, b"payload");
    h.advance(Duration::from_millis(10));
    assert!(h.traps().is_empty());
}

#[test]
fn close_stream_resets_the_stream() {
    let mut h = harness("reset");
    let out = h.run_request(Request::get("/")).unwrap();
    assert_eq!(out.disposition, Disposition::Reset);
    assert!(out.response.is_none());
    assert!(out.request.is_none());
}
