//! The host calls and VM entries of each kind of request, pinned: BENCHMARKS.md states them as
//! figures of record (`cargo run -p keygate-plugin-artifacts --example host_calls`), and each
//! host call costs on the order of a microsecond in Envoy, so a change that adds one to the
//! request path must say so.

use std::sync::Arc;

use keygate_host_harness::Plugin;
use keygate_plugin_artifacts::calls::{
    ALLOWED, KindCounts, MALFORMED_KEY, NO_KEY, UNKNOWN_KEY, markdown_table, per_kind_call_counts,
};
use keygate_plugin_artifacts::{BenchKinds, KEYGATE_PLUGIN_WASM};
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
