//! Host calls and VM entries per request of each kind the benches use, and per timer tick when
//! nothing happens, counted by the harness ([`HarnessBuilder::count_calls`]): the same `.wasm`
//! through the same ABI as in Envoy, so the same calls, which Envoy cannot count. A
//! deterministic figure, not a timing: `cargo run -p keygate-plugin-artifacts --example
//! host_calls` prints it, `tests/host_calls.rs` pins the allowed request's.
//!
//! [`HarnessBuilder::count_calls`]: keygate_host_harness::HarnessBuilder::count_calls

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use keygate_host_harness::{
    CallCounts, CalloutReply, Cluster, Disposition, Harness, Plugin, Request,
};

use crate::{BENCH_FILTER_CONFIG, BenchKinds, keyset_reply};

/// The filter's timer period under [`BENCH_FILTER_CONFIG`] (`sync_interval_ms` 500 → 50 ms).
pub const BENCH_TICK: Duration = Duration::from_millis(50);

/// Workers of the counting harness: the leader (the first to tick takes the lease), the VM
/// configured second (presumed Envoy's main-thread VM: it keeps no key set) and a follower.
const WORKERS: usize = 3;

/// Timer periods watched for idle ticks (one key-set poll every ten of them).
const TICKS_WATCHED: usize = 40;

/// One row: what one request of a kind, or one tick of a worker, costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindCounts {
    /// The request kind or tick.
    pub kind: &'static str,
    /// Its host calls and VM entries (every request of the kind measured alike; the idle ticks:
    /// alike every time).
    pub counts: CallCounts,
    /// How many requests or ticks gave these very counts.
    pub samples: usize,
}

/// Request kinds, in the table's order.
pub const ALLOWED: &str = "allowed request";
/// A well-formed key that is not in the set.
pub const UNKNOWN_KEY: &str = "denied: unknown key";
/// A key whose checksum does not match.
pub const MALFORMED_KEY: &str = "denied: malformed key (bad checksum)";
/// No key at all.
pub const NO_KEY: &str = "denied: no key";
/// The leader's tick when no poll is due and no answer arrives.
pub const IDLE_LEADER_TICK: &str = "tick: idle leader";
/// A follower's tick when nothing was published.
pub const IDLE_FOLLOWER_TICK: &str = "tick: idle follower";
/// The leader's tick after allowed requests: the idle tick and their decisions' counter.
pub const LEADER_TICK_AFTER_ALLOWED: &str = "tick: leader after allowed requests";
/// The tick of the VM that keeps no key set (Envoy's main-thread VM, as the filter presumes).
pub const IDLE_MAIN_THREAD_TICK: &str = "tick: VM without a key set (Envoy's main thread)";

/// Counts, with `plugin` under [`BENCH_FILTER_CONFIG`] synced to `snapshot`, one request at a
/// time on the leader for each kind of `kinds` (at most `samples` requests of each, after one
/// uncounted), and each worker's idle timer tick. Requests of one kind must all cost the same,
/// as must a worker's idle ticks: otherwise this is an error naming the difference.
///
/// # Errors
/// The harness's; a request that does not end as its kind says; counts that differ within a
/// kind; a harness without a leader or follower.
pub fn per_kind_call_counts(
    plugin: Plugin,
    snapshot: Arc<Vec<u8>>,
    kinds: &BenchKinds,
    samples: usize,
) -> anyhow::Result<Vec<KindCounts>> {
    let mut h = Harness::builder(plugin)
        .workers(WORKERS)
        .plugin_configuration(BENCH_FILTER_CONFIG.as_bytes().to_vec())
        .cluster(
            "keygate",
            Cluster::handler(move |req| match req.header(":path") {
                Some("/v1/keyset") => keyset_reply(snapshot.to_vec()),
                Some("/v1/usage") => CalloutReply::status(200),
                _ => CalloutReply::status(304),
            }),
        )
        .count_calls(true)
        .build()?;
    h.advance(Duration::from_secs(1));
    let (leader, idle, follower) = roles(&h)?;

    let [allowed, unknown, malformed] = kinds.requests();
    let no_key: Vec<Request> = kinds
        .allowed
        .iter()
        .map(|(path, _)| Request::get(path).header("user-agent", "bench"))
        .collect();
    let mut rows = Vec::new();
    for (kind, requests, expect) in [
        (ALLOWED, allowed, Disposition::Completed),
        (UNKNOWN_KEY, unknown, Disposition::LocalResponse),
        (MALFORMED_KEY, malformed, Disposition::LocalResponse),
        (NO_KEY, no_key, Disposition::LocalResponse),
    ] {
        ensure!(requests.len() >= 2, "{kind}: too few requests");
        let mut seen: Option<CallCounts> = None;
        let mut n = 0;
        for (i, request) in requests.into_iter().take(samples + 1).enumerate() {
            h.reset_call_counts();
            let out = h.run_request_taken_on(leader, request)?;
            ensure!(
                out.disposition == expect,
                "{kind}: ended {:?}, not {expect:?}: {out:?}",
                out.disposition
            );
            // All workers: a request that made another VM work would count here too.
            let counts = h.call_counts();
            if i == 0 {
                continue; // the first of a kind may set up what the others reuse
            }
            cross_check(kind, &counts)?;
            match &seen {
                None => seen = Some(counts),
                Some(first) if same_calls(first, &counts) => {}
                Some(first) => bail!(
                    "{kind}: request {i} made other calls than the first measured:\n{counts:?}\n\
                     vs {first:?}"
                ),
            }
            n += 1;
        }
        rows.push(KindCounts {
            kind,
            counts: seen.context("no request measured")?,
            samples: n,
        });
    }

    // Ticks: first let every decision counted above reach its counter (added on the next
    // tick) and every answer arrive, then watch tick after tick.
    h.advance(BENCH_TICK * 4);
    let mut ticks: [Vec<CallCounts>; WORKERS] = Default::default();
    for _ in 0..TICKS_WATCHED {
        h.reset_call_counts();
        h.advance(BENCH_TICK);
        for (worker, seen) in ticks.iter_mut().enumerate() {
            let counts = h.worker(worker).context("worker")?.call_counts();
            ensure!(
                counts.vm_entry("proxy_on_tick") == 1,
                "worker {worker} ticked {} times in {BENCH_TICK:?}: is the tick period still \
                 {BENCH_TICK:?}?",
                counts.vm_entry("proxy_on_tick")
            );
            cross_check("tick", &counts)?;
            seen.push(counts);
        }
    }
    for (kind, worker) in [
        (IDLE_LEADER_TICK, leader),
        (IDLE_FOLLOWER_TICK, follower),
        (IDLE_MAIN_THREAD_TICK, idle),
    ] {
        let (counts, samples) =
            idle_tick(&ticks[worker]).with_context(|| format!("{kind} (worker {worker})"))?;
        rows.push(KindCounts {
            kind,
            counts,
            samples,
        });
    }

    // The tick after requests adds their decisions to Envoy's counters.
    for request in kinds.requests()[0].iter().take(samples) {
        h.run_request_taken_on(leader, request.clone())?;
    }
    h.reset_call_counts();
    h.advance(BENCH_TICK);
    let after = h.worker(leader).context("leader")?.call_counts();
    cross_check(LEADER_TICK_AFTER_ALLOWED, &after)?;
    rows.push(KindCounts {
        kind: LEADER_TICK_AFTER_ALLOWED,
        counts: after,
        samples: 1,
    });
    Ok(rows)
}

/// The same host calls and VM entries (wasmtime's tally aside: it also counts libcalls).
fn same_calls(a: &CallCounts, b: &CallCounts) -> bool {
    a.host_calls == b.host_calls && a.vm_entries == b.vm_entries
}

/// With the harness's feature `call-hook`: wasmtime saw as many VM entries, and at least as
/// many calls out of the VM (the host calls, and a libcall such as `memory.grow`).
fn cross_check(kind: &str, counts: &CallCounts) -> anyhow::Result<()> {
    if let Some(tally) = counts.wasmtime {
        ensure!(
            tally.calling_wasm == counts.vm_entry_total()
                && tally.calling_host >= counts.host_call_total(),
            "{kind}: wasmtime's call hook saw {tally:?}, the harness counted {} host calls and \
             {} VM entries",
            counts.host_call_total(),
            counts.vm_entry_total()
        );
    }
    Ok(())
}

/// The leader (it made the key-set calls), the VM without a key set (it logged so) and a
/// follower (the other).
fn roles(h: &Harness) -> anyhow::Result<(usize, usize, usize)> {
    let mut leaders: Vec<usize> = h
        .callouts()
        .iter()
        .filter(|c| {
            c.request
                .header(":path")
                .is_some_and(|p| p.starts_with("/v1/keyset"))
        })
        .map(|c| c.worker)
        .collect();
    leaders.sort_unstable();
    leaders.dedup();
    let [leader] = leaders[..] else {
        bail!("expected one worker to call for the key set, got {leaders:?}");
    };
    let idle = h
        .logs()
        .iter()
        .find(|l| l.message.contains("keeps no key set"))
        .map(|l| l.worker)
        .context("no VM said it keeps no key set (Envoy's main-thread VM)")?;
    let follower = (0..h.worker_count())
        .find(|w| *w != leader && *w != idle)
        .context("no follower")?;
    ensure!(leader != idle, "the leader keeps no key set");
    Ok((leader, idle, follower))
}

/// A worker's idle tick: those without an HTTP call made or answered, which must all be alike.
fn idle_tick(ticks: &[CallCounts]) -> anyhow::Result<(CallCounts, usize)> {
    let idle: Vec<&CallCounts> = ticks
        .iter()
        .filter(|c| {
            c.host_call("proxy_http_call") == 0 && c.vm_entry("proxy_on_http_call_response") == 0
        })
        .collect();
    let first = *idle.first().context("no idle tick")?;
    if let Some(other) = idle.iter().find(|c| **c != first) {
        bail!("idle ticks differ:\n{other:?}\nvs {first:?}");
    }
    Ok((first.clone(), idle.len()))
}

/// The rows as a markdown table: per kind the host calls by import and the VM entries by
/// export, each with its total.
pub fn markdown_table(rows: &[KindCounts]) -> String {
    let list = |m: &std::collections::BTreeMap<String, u64>| {
        m.iter()
            .map(|(name, n)| format!("`{name}` {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::from(
        "| kind | host calls | total | VM entries | total |\n| --- | --- | --- | --- | --- |\n",
    );
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            row.kind,
            list(&row.counts.host_calls),
            row.counts.host_call_total(),
            list(&row.counts.vm_entries),
            row.counts.vm_entry_total()
        );
    }
    out
}
