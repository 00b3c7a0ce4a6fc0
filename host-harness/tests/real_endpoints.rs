//! Real HTTP endpoints as clusters, and the real-time clock.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use keygate_harness_test_artifacts::SDK_FILTER;
use keygate_host_harness::{
    CONNECT_FAILURE_BODY, CalloutReply, CalloutResult, Cluster, Disposition, Harness, Plugin,
    Request,
};

/// Serves one connection: records the request head and body, answers `response` (or never
/// answers when `None`). Returns the base URL and a handle yielding the request text.
fn one_shot_server(response: Option<&'static str>) -> (String, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
            head.push_str(&line);
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        head.push_str(&String::from_utf8_lossy(&body));
        match response {
            Some(response) => {
                let mut stream = stream;
                stream.write_all(response.as_bytes()).unwrap();
            }
            None => std::thread::sleep(Duration::from_secs(2)),
        }
        head
    });
    (url, handle)
}

fn plugin() -> Plugin {
    Plugin::load_file(SDK_FILTER).unwrap()
}

#[test]
fn a_large_real_response_arrives_whole() {
    // Larger than ureq's default 10 MB read limit (a million-key snapshot is 60 MB).
    const SIZE: usize = 12 << 20;
    let response: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {SIZE}\r\nconnection: close\r\n\r\n{}",
            "k".repeat(SIZE)
        )
        .into_boxed_str(),
    );
    let (url, _server) = one_shot_server(Some(response));
    let mut h = Harness::builder(plugin())
        .plugin_configuration(b"callout".to_vec())
        .cluster("auth", Cluster::http(url))
        .build()
        .unwrap();
    h.run_request(Request::get("/x")).unwrap();
    match &h.callouts()[0].result {
        Some(CalloutResult::Response(r)) => assert_eq!(r.body.len(), SIZE),
        other => panic!("expected the whole response, got {other:?}"),
    }
}

#[test]
fn a_real_endpoint_answers_a_callout_in_zero_virtual_time() {
    let (url, server) = one_shot_server(Some(
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nbob!!",
    ));
    let mut h = Harness::builder(plugin())
        .plugin_configuration(b"callout".to_vec())
        .cluster("auth", Cluster::http(url))
        .build()
        .unwrap();
    let before = h.now_nanos();
    let out = h
        .run_request(Request::get("/x").header("x-key", "k1"))
        .unwrap();
    assert_eq!(out.disposition, Disposition::Completed);
    assert_eq!(out.request_header("x-auth"), Some("bob!!"));
    assert_eq!(h.now_nanos(), before, "virtual time did not move");
    let seen = server.join().unwrap();
    assert!(seen.starts_with("POST /check HTTP/1.1\r\n"), "{seen}");
    assert!(seen.to_ascii_lowercase().contains("x-key: k1"), "{seen}");
    assert!(
        seen.to_ascii_lowercase().contains("host: auth.local"),
        "{seen}"
    );
    assert!(seen.ends_with("check"), "{seen}");
}

#[test]
fn a_silent_real_endpoint_times_out_with_the_call_timeout() {
    let (url, _server) = one_shot_server(None);
    let mut h = Harness::builder(plugin())
        .plugin_configuration(b"callout".to_vec())
        .cluster("auth", Cluster::http(url))
        .build()
        .unwrap();
    let out = h
        .run_request(Request::get("/x").header("x-timeout-ms", "200"))
        .unwrap();
    assert_eq!(out.status(), Some(403));
    assert_eq!(
        out.response.unwrap().header("x-upstream-status"),
        Some("504")
    );
    assert_eq!(h.callouts()[0].result, Some(CalloutResult::Timeout));
}

#[test]
fn an_unreachable_endpoint_is_answered_with_envoys_503_not_a_reset() {
    // Envoy 1.40 answers a call whose connection is refused with its router's local reply,
    // delivered as a response (observed: 3 headers, a 98-byte text body), not as a failure.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut h = Harness::builder(plugin())
        .plugin_configuration(b"callout".to_vec())
        .cluster("auth", Cluster::http(format!("http://127.0.0.1:{port}")))
        .build()
        .unwrap();
    let out = h.run_request(Request::get("/x")).unwrap();
    assert_eq!(out.status(), Some(403));
    let response = out.response.unwrap();
    assert_eq!(response.header("x-upstream-status"), Some("503"));
    assert_eq!(response.body, CONNECT_FAILURE_BODY.as_bytes());
    match &h.callouts()[0].result {
        Some(CalloutResult::Response(r)) => {
            let headers: Vec<(&str, &str)> = r
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_text()))
                .collect();
            assert_eq!(
                headers,
                [
                    (":status", "503"),
                    ("content-length", "98"),
                    ("content-type", "text/plain")
                ]
            );
            assert_eq!(r.body, CONNECT_FAILURE_BODY.as_bytes());
        }
        other => panic!("expected Envoy's 503, got {other:?}"),
    }
}

#[test]
fn a_connection_closed_before_the_response_is_a_reset() {
    // A connection that is accepted and then closed without an answer stays a reset.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        drop(stream);
        line
    });
    let mut h = Harness::builder(plugin())
        .plugin_configuration(b"callout".to_vec())
        .cluster("auth", Cluster::http(url))
        .build()
        .unwrap();
    let out = h.run_request(Request::get("/x")).unwrap();
    assert!(server.join().unwrap().starts_with("POST /check"));
    assert_eq!(out.status(), Some(502));
    assert_eq!(
        out.response.unwrap().header("x-call-message"),
        Some("reset")
    );
    assert_eq!(h.callouts()[0].result, Some(CalloutResult::Reset));
}

#[test]
fn real_time_mode_fires_ticks_and_waits_for_delayed_callouts() {
    let mut h = Harness::builder(plugin())
        .plugin_configuration(b"ticks".to_vec())
        .real_time()
        .build()
        .unwrap();
    h.run_for(Duration::from_millis(350));
    let ticks: u64 = String::from_utf8(h.shared_data("ticks").expect("ticks ran").0)
        .unwrap()
        .parse()
        .unwrap();
    assert!(ticks >= 1, "{ticks}");

    let mut h = Harness::builder(plugin())
        .plugin_configuration(b"callout".to_vec())
        .cluster(
            "auth",
            Cluster::handler(|_| {
                CalloutReply::status(200)
                    .body("later")
                    .after(Duration::from_millis(30))
            }),
        )
        .real_time()
        .build()
        .unwrap();
    let out = h.run_request(Request::get("/x")).unwrap();
    assert_eq!(out.disposition, Disposition::Completed);
    assert_eq!(out.request_header("x-auth"), Some("later"));
}
