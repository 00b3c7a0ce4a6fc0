//! The host calls and VM entries of each kind of request, pinned: BENCHMARKS.md states them as
//! figures of record (`cargo run -p keygate-plugin-artifacts --example host_calls`), and each
//! host call costs on the order of a microsecond in Envoy, so a change that adds one to the
//! request path must say so.

use std::sync::Arc;
use std::time::Duration;

use keygate_host_harness::{
    CallCounts, CalloutReply, Cluster, Disposition, Harness, Plugin, Request,
};
use keygate_plugin_artifacts::calls::{
    ALLOWED, KindCounts, MALFORMED_KEY, NO_KEY, UNKNOWN_KEY, markdown_table, per_kind_call_counts,
};
use keygate_plugin_artifacts::{
    BENCH_FILTER_CONFIG, BenchKinds, KEYGATE_PLUGIN_WASM, keyset_reply,
};
use keygate_protocol::policy::{LimitPool, RateLimit};
use keygate_protocol::wire::Snapshot;
use keygate_testkit::bench::repo_key_set;

fn rows() -> Vec<KindCounts> {
    let keys = repo_key_set(200).unwrap();
    let kinds = BenchKinds::new(&keys.secrets).unwrap();
    let snapshot = Snapshot {
        revision: 1,
        entries: keys.entries,
    }
    .encode()
    .unwrap();
    per_kind_call_counts(
        Plugin::load_file(KEYGATE_PLUGIN_WASM).unwrap(),
        Arc::new(snapshot),
        &kinds,
        10,
    )
    .unwrap()
}

#[test]
fn each_kind_of_request_makes_the_host_calls_and_vm_entries_of_record() {
    let rows = rows();
    // (kind, host calls, VM entries) per request, as the code does today.
    let of_record = [
        // the header map (read in place; its allocation callback), one remove, three adds;
        // context create, request headers and delete
        (ALLOWED, 5, 4),
        // the header map, the local reply
        (UNKNOWN_KEY, 2, 4),
        (MALFORMED_KEY, 2, 4),
        (NO_KEY, 2, 4),
    ];
    for (kind, host_calls, vm_entries) in of_record {
        let row = rows
            .iter()
            .find(|r| r.kind == kind)
            .unwrap_or_else(|| panic!("no row {kind}"));
        let got = (row.counts.host_call_total(), row.counts.vm_entry_total());
        assert_eq!(
            got,
            (host_calls, vm_entries),
            "{kind}: the filter now makes {} host calls and {} VM entries per request \
             (of record: {host_calls} and {vm_entries}). If that is intended, update the \
             host-call table in BENCHMARKS.md (`cargo run -p keygate-plugin-artifacts \
             --example host_calls`) and the figures here. Now:\n{}",
            got.0,
            got.1,
            markdown_table(&rows)
        );
    }
}

/// One request's host calls and VM entries after a first, uncounted one with the same key (the
/// first of a limited key leases its chunk of quota: two shared-data calls, then none for the
/// next 63 requests with a limit of 1,000,000,000 per hour).
fn per_request(h: &mut Harness, secret: &str, index: usize) -> CallCounts {
    let request = || {
        Request::get(&format!("/repos/org{}/widgets", index % 100))
            .header("user-agent", "bench")
            .header("x-api-key", secret)
    };
    let out = h.run_request_taken_on(0, request()).unwrap();
    assert_eq!(out.disposition, Disposition::Completed, "{out:?}");
    let mut seen: Option<CallCounts> = None;
    for _ in 0..10 {
        h.reset_call_counts();
        let out = h.run_request_taken_on(0, request()).unwrap();
        assert_eq!(out.disposition, Disposition::Completed, "{out:?}");
        let counts = h.call_counts();
        if let Some(first) = &seen {
            assert_eq!(
                (first.host_calls.clone(), first.vm_entries.clone()),
                (counts.host_calls.clone(), counts.vm_entries.clone())
            );
        }
        seen = Some(counts);
    }
    seen.unwrap()
}

#[test]
fn rate_limit_headers_add_two_host_calls_for_a_limited_key_and_none_otherwise() {
    let mut keys = repo_key_set(4).unwrap();
    // Key 0 has one rate limit (never tripped here), key 1 none.
    keys.entries[0].policy.limits = vec![RateLimit {
        name: "hourly".into(),
        limit: 1_000_000_000,
        window_s: 3600,
        pool: LimitPool::Key,
    }];
    let snapshot = Arc::new(
        Snapshot {
            revision: 1,
            entries: keys.entries,
        }
        .encode()
        .unwrap(),
    );
    let secret = |i: usize| {
        keys.secrets
            .iter()
            .find(|(_, index)| *index == i)
            .map(|(s, _)| s.clone())
            .unwrap()
    };
    let (limited, plain) = (secret(0), secret(1));
    for headers in [false, true] {
        let config =
            BENCH_FILTER_CONFIG.replacen('{', &format!(r#"{{"rate_limit_headers":{headers},"#), 1);
        let snapshot = Arc::clone(&snapshot);
        let mut h = Harness::builder(Plugin::load_file(KEYGATE_PLUGIN_WASM).unwrap())
            .workers(1)
            .plugin_configuration(config.into_bytes())
            .cluster(
                "keygate",
                Cluster::handler(move |req| match req.header(":path") {
                    Some("/v1/keyset") => keyset_reply(snapshot.to_vec()),
                    _ => CalloutReply::status(304),
                }),
            )
            .count_calls(true)
            .build()
            .unwrap();
        h.advance(Duration::from_secs(1));
        // A key without limits: the allowed request of record (5 host calls, 4 VM entries).
        let c = per_request(&mut h, &plain, 1);
        assert_eq!((c.host_call_total(), c.vm_entry_total()), (5, 4), "{c:?}");
        assert_eq!(c.host_call("proxy_set_property"), 0);
        // A limited key: the same, plus with the option the two fields' properties
        // (`proxy_set_property` twice); never a VM entry more.
        let c = per_request(&mut h, &limited, 0);
        let extra = if headers { 2 } else { 0 };
        assert_eq!(
            (c.host_call_total(), c.vm_entry_total()),
            (5 + extra, 4),
            "rate_limit_headers {headers}: {c:?}"
        );
        assert_eq!(c.host_call("proxy_set_property"), extra);
    }
}
