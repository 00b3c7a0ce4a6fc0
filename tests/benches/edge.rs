//! Edge-validation benchmarks, in one run: the filter's per-request cost in the host harness
//! with 1,000,000 keys loaded next to the same decision natively and a remote
//! `POST /v1/keys/verify` over loopback; wasm memory per key and the full-snapshot apply time at
//! 1,000,000 keys; revocation-to-denial latency (poll interval and long-poll) over real HTTP in
//! real time; 1,000 concurrent long-polling readers on one `keygate` process.
//!
//! ```text
//! cargo build --release -p keygate-control-plane --bin keygate
//! cargo bench -p keygate-e2e --bench edge
//! ```
//! The control plane runs as a child process, the real `keygate` binary next to the bench's own
//! target directory (`target/release/keygate`), supervised (`keygate_e2e::stack::ServeProcess`).
//! `KEYGATE_BENCH_KEYS` (default 1,000,000), `KEYGATE_BENCH_READERS` (default 1,000) and
//! `KEYGATE_BENCH_REVOCATIONS` (default 50) and `KEYGATE_BENCH_ROUNDS` (rounds of 1,000 requests per
//! kind in the harness, default 20) change the sizes.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use keygate_e2e::stack::ServeProcess;
use keygate_e2e::{ADMIN_TOKEN, Api, CLUSTER, filter_config, harness_builder, metric};
use keygate_filter_core::config::Config as FilterConfig;
use keygate_filter_core::decision::{KeySetState, Reason, Request as DecisionRequest, decide};
use keygate_host_harness::baseline::{self, Kind};
use keygate_host_harness::{CalloutReply, Cluster, Disposition, Request};
use keygate_plugin_artifacts::{BenchKinds, bench_requests, keyset_reply};
use keygate_protocol::keyset::KeySet;
use keygate_protocol::wire::Snapshot;
use keygate_testkit::bench::{
    env_usize, every_thousandth, key_set, load_average, median_p99, percentile,
};
use serde_json::{Value, json};

/// The host allocates on every request (streams, header maps, copies into the guest); Envoy
/// links tcmalloc, this process mimalloc (glibc's malloc made the host's share larger).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// `(utime + stime)` in clock ticks and VmRSS in kB of a process.
fn proc_usage(pid: u32) -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // fields after the parenthesised command name; utime and stime are fields 14 and 15
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("VmRSS")?
        .parse()?;
    Ok((ticks, rss))
}

fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

fn main() -> anyhow::Result<()> {
    let n = env_usize("KEYGATE_BENCH_KEYS", 1_000_000);
    let readers = env_usize("KEYGATE_BENCH_READERS", 1_000);
    let revocations = env_usize("KEYGATE_BENCH_REVOCATIONS", 50);
    let started = Instant::now();
    println!(
        "== keygate edge benchmarks ({n} keys, {readers} long-poll readers, {revocations} revocations per mode); load average {}",
        load_average()
    );

    // ---- 1M keys: a snapshot encoded with keygate_protocol, as the control plane serves it.
    let t = Instant::now();
    let keys = key_set(
        n,
        |i, e| {
            e.owner = format!("owner-{}", i % 10_000);
            e.expires_at = (i % 3 == 0).then_some(4_000_000_000);
            e.scopes = vec![
                "repo:read".into(),
                if i % 2 == 0 { "repo:write" } else { "admin" }.into(),
            ];
            if i % 5 == 0 {
                e.resources = vec![format!("org{}", i % 100)];
            }
        },
        every_thousandth(n),
    )?;
    let (entries, sample) = (keys.entries, keys.secrets);
    let snapshot = Arc::new(
        Snapshot {
            revision: 1,
            entries,
        }
        .encode()?,
    );
    println!(
        "set: {n} keys generated and encoded in {:.1} s; snapshot {} bytes ({:.1} B/key)",
        t.elapsed().as_secs_f64(),
        snapshot.len(),
        snapshot.len() as f64 / n as f64
    );
    // Three kinds of request, 1,000 each: allowed; a well-formed key (valid checksum) that is
    // not in the set; the allowed keys with their last checksum character changed.
    let BenchKinds {
        allowed: requests,
        unknown,
        malformed,
    } = BenchKinds::new(&sample)?;

    // ---- wasm: snapshot apply time and memory per key.
    let body = snapshot.clone();
    let mut h = harness_builder(1, "kg_edge_bench", "")
        .cluster(
            CLUSTER,
            Cluster::handler(move |req| {
                if req.header(":path") == Some("/v1/keyset") {
                    // answered 1 s (virtual) after the call, so the empty filter can be measured first
                    keyset_reply(body.to_vec()).after(Duration::from_secs(1))
                } else {
                    CalloutReply::status(304)
                }
            }),
        )
        .build()?;
    h.advance(Duration::from_millis(500));
    let mem_empty = metric(&h, "keygate.wasm.memory_bytes");
    let t = Instant::now();
    h.advance(Duration::from_millis(600)); // delivers the snapshot: copy into the guest, apply, publish
    let apply_wall = t.elapsed();
    let keys = metric(&h, "keygate.keyset.keys");
    ensure!(
        keys == n as u64,
        "the filter holds {keys} keys, expected {n}"
    );
    let mem_full = metric(&h, "keygate.wasm.memory_bytes");
    let heap = metric(&h, "keygate.keyset.heap_bytes");
    println!(
        "wasm snapshot: delivered + decoded/applied + published to shared data in {:.3} s (wall, one advance)",
        apply_wall.as_secs_f64()
    );
    println!(
        "wasm memory: linear memory {mem_empty} → {mem_full} bytes = {:.1} B/key grown (a high-water mark), {:.1} B/key beyond the {}-byte snapshot buffer held while applying; key set heap {heap} bytes = {:.1} B/key",
        (mem_full.saturating_sub(mem_empty)) as f64 / n as f64,
        (mem_full.saturating_sub(mem_empty)).saturating_sub(snapshot.len() as u64) as f64
            / n as f64,
        snapshot.len(),
        heap as f64 / n as f64
    );

    // ---- per-request cost: harness alone, the filter in wasm, the decision natively.
    let kinds = [
        (
            "allowed",
            bench_requests(&requests),
            &requests,
            Disposition::Completed,
            Reason::Allowed,
        ),
        (
            "unknown key",
            bench_requests(&unknown),
            &unknown,
            Disposition::LocalResponse,
            Reason::UnknownKey,
        ),
        (
            "malformed key",
            bench_requests(&malformed),
            &malformed,
            Disposition::LocalResponse,
            Reason::MalformedKey,
        ),
    ];
    let rounds = env_usize("KEYGATE_BENCH_ROUNDS", 20);
    // The harness alone on the same requests: no-op filters, measured in rounds interleaved
    // with the filter's so that both see the same load.
    let timed: Vec<Kind<'_>> = kinds
        .iter()
        .map(|(_, requests, _, expect, _)| Kind {
            requests,
            expect: *expect,
        })
        .collect();
    let timings = baseline::interleaved(&mut h, &timed, rounds)?;
    // Per round, the filter's block against the harness alone's block timed right after it.
    let paired = timings
        .filter
        .iter()
        .zip(&timings.harness_alone)
        .map(|(f, a)| baseline::own_part_spread(f, a, requests.len()))
        .collect::<Option<Vec<_>>>()
        .context("no complete round was timed")?;
    let wasm: Vec<(u64, u64)> = timings.filter.into_iter().map(median_p99).collect();
    let base: Vec<(u64, u64)> = timings.harness_alone.into_iter().map(median_p99).collect();
    // The filter adds its decisions to the host's counters on its timer tick.
    h.advance(Duration::from_millis(100));
    let counted = [
        metric(&h, "keygate.decision.allow.allowed"),
        metric(&h, "keygate.decision.deny.unknown_key"),
        metric(&h, "keygate.decision.deny.malformed_key"),
    ];
    let per_kind = ((rounds + 1) * requests.len()) as u64;
    ensure!(
        counted[0] >= per_kind && counted[1] == per_kind && counted[2] == per_kind,
        "the filter's decision counters {counted:?} do not match {per_kind} per kind"
    );
    drop(h);

    let mut set = KeySet::new();
    let t = Instant::now();
    set.apply(&snapshot)?;
    let native_apply = t.elapsed();
    let cfg = FilterConfig::from_json(&filter_config("kg_edge_bench", ""))?;
    let now = keygate_e2e::unix_secs() as u64;
    let mut native = Vec::new();
    for (_, _, set_of, _, reason) in &kinds {
        let native_reqs: Vec<Vec<(String, String)>> = set_of
            .iter()
            .map(|(path, secret)| {
                vec![
                    (":method".into(), "GET".into()),
                    (":path".into(), path.clone()),
                    (":authority".into(), "api.example".into()),
                    ("user-agent".into(), "bench".into()),
                    ("x-api-key".into(), secret.clone()),
                ]
            })
            .collect();
        for hs in &native_reqs {
            let d = decide(
                &DecisionRequest::from_headers(hs),
                KeySetState::Fresh(&set),
                now,
                &cfg,
            );
            ensure!(
                d.reason() == *reason,
                "native: {:?}, expected {reason:?}",
                d.reason()
            );
        }
        let mut ns = Vec::with_capacity(200 * native_reqs.len());
        for _ in 0..200 {
            for hs in &native_reqs {
                let t = Instant::now();
                let d = decide(
                    &DecisionRequest::from_headers(hs),
                    KeySetState::Fresh(&set),
                    now,
                    &cfg,
                );
                std::hint::black_box(&d);
                ns.push(t.elapsed().as_nanos() as u64);
            }
        }
        native.push(median_p99(ns));
    }
    drop(set);
    println!(
        "native snapshot apply (KeySet::apply): {:.3} s",
        native_apply.as_secs_f64()
    );

    // ---- the control plane as a child process.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let http = reqwest::Client::new();
    let cp = ServeProcess::start_sqlite(&[]);
    let cp_url = cp.url();
    let pid = cp.pid().context("keygate serve has no pid")?;
    let api = Api::new(&cp_url);
    let edge_key = api
        .create_key(json!({"name": "edge", "kind": "edge"}))
        .secret;

    // remote verify over loopback
    let mut verify_keys = Vec::new();
    for i in 0..100 {
        verify_keys.push(
            api.create_key(
                json!({"name": format!("v{i}"), "scopes": ["repo:read"], "resources": ["acme"]}),
            )
            .secret,
        );
    }
    let vclient = reqwest::Client::new();
    let verify_url = format!("{cp_url}/v1/keys/verify");
    let remote_ns = rt.block_on(async {
        let mut out = Vec::with_capacity(5000);
        for i in 0..5200 {
            let body = json!({"key": verify_keys[i % verify_keys.len()], "scopes": ["repo:read"], "resource": "acme"});
            let t = Instant::now();
            let resp = vclient.post(&verify_url).bearer_auth(ADMIN_TOKEN).json(&body).send().await?;
            let v: Value = resp.json().await?;
            let el = t.elapsed().as_nanos() as u64;
            ensure!(v["valid"] == true, "verify: {v}");
            if i >= 200 {
                out.push(el);
            }
        }
        Ok::<_, anyhow::Error>(out)
    })?;
    let (remote_med, remote_p99) = median_p99(remote_ns);
    println!();
    println!(
        "per-request decision with {n} keys loaded; {rounds} x {} requests per kind in the harness, 200 x {} natively, each timed alone (load average now {}):",
        requests.len(),
        requests.len(),
        load_average()
    );
    println!(
        "  harness alone (no-op filters, same requests, rounds interleaved with the filter's): continue median {} ns (p99 {}), local 401 median {} / {} ns (p99 {} / {})",
        base[0].0, base[0].1, base[1].0, base[2].0, base[1].1, base[2].1
    );
    for (i, (label, ..)) in kinds.iter().enumerate() {
        println!(
            "  {label:<14} wasm in the harness: median {} ns, p99 {} ns; filter's own part (minus harness alone) {} ns; native decide(): median {} ns, p99 {} ns",
            wasm[i].0,
            wasm[i].1,
            wasm[i].0 as i64 - base[i].0 as i64,
            native[i].0,
            native[i].1
        );
        let baseline::RoundSpread {
            median,
            least,
            most,
        } = paired[i];
        println!(
            "  {:<14} own part round by round (each round's filter block minus the harness-alone block after it): median {median} ns over {rounds} rounds (least {least}, most {most})",
            ""
        );
    }
    let (wasm_med, wasm_p99) = wasm[0];
    let filter_part = wasm_med.saturating_sub(base[0].0).max(1);
    println!(
        "  remote POST /v1/keys/verify over loopback (valid key, scope + resource, 5,000 sequential on one connection): median {remote_med} ns, p99 {remote_p99} ns"
    );
    println!(
        "  remote / in-filter (allowed): {:.0}× the whole harness request at the median ({:.0}× at p99), {:.0}× the filter's own part",
        remote_med as f64 / wasm_med.max(1) as f64,
        remote_p99 as f64 / wasm_p99.max(1) as f64,
        remote_med as f64 / filter_part as f64
    );
    println!(
        "  remote / in-filter (allowed), own part round by round: {:.0}× at the median of the rounds",
        remote_med as f64 / paired[0].median.max(1) as f64
    );

    // ---- revocation-to-denial over real HTTP in real time.
    println!();
    for (label, extra) in [
        ("default settings (sync_interval_ms 500, no long-poll)", ""),
        (
            "long-poll (long_poll_wait_s 25)",
            r#""long_poll_wait_s":25"#,
        ),
    ] {
        let mut h = harness_builder(2, &edge_key, extra)
            .real_time()
            .cluster(CLUSTER, Cluster::http(cp_url.clone()))
            .build()?;
        let mut keys = Vec::new();
        for i in 0..revocations {
            let k = api.create_key(json!({"name": format!("r{i}"), "scopes": ["repo:read"]}));
            keys.push((k.secret, k.id));
        }
        // wait until every worker has every key
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            h.run_for(Duration::from_millis(20));
            let mut all = true;
            for w in 0..2 {
                for (s, _) in &keys {
                    if h.run_request_on(w, Request::get("/repos/acme/x").header("x-api-key", s))?
                        .disposition
                        != Disposition::Completed
                    {
                        all = false;
                    }
                }
            }
            if all {
                break;
            }
            ensure!(Instant::now() < deadline, "keys not synced within 15 s");
        }
        let mut first_ns = Vec::new();
        let mut first_sent_ns = Vec::new();
        let mut all_ns = Vec::new();
        let mut call_ns = Vec::new();
        for (i, (secret, id)) in keys.iter().enumerate() {
            // a pseudo-random phase relative to the poll interval
            let phase = Duration::from_millis(((i as u64 * 7919) % 1000) + 50);
            h.run_for(phase);
            let sent = Instant::now();
            api.key_action(id, "revoke");
            // the clock starts when the revoke call has been answered
            let t = Instant::now();
            call_ns.push((t - sent).as_nanos() as u64);
            let mut denied = [false; 2];
            let mut first = None;
            loop {
                h.poll();
                for (w, d) in denied.iter_mut().enumerate() {
                    if !*d {
                        let o = h.run_request_taken_on(
                            w,
                            Request::get("/repos/acme/x").header("x-api-key", secret),
                        )?;
                        if o.disposition == Disposition::LocalResponse {
                            *d = true;
                            first.get_or_insert(Instant::now());
                        }
                    }
                }
                if denied.iter().all(|d| *d) {
                    break;
                }
                ensure!(
                    t.elapsed() < Duration::from_secs(10),
                    "revocation not enforced within 10 s"
                );
                std::thread::sleep(Duration::from_micros(200));
            }
            all_ns.push(t.elapsed().as_nanos() as u64);
            let first = first.context("a denial was seen")?;
            first_ns.push(first.saturating_duration_since(t).as_nanos() as u64);
            first_sent_ns.push(first.saturating_duration_since(sent).as_nanos() as u64);
        }
        let (f50, f99) = median_p99(first_ns);
        let (s50, s99) = median_p99(first_sent_ns);
        let (a50, a99) = median_p99(all_ns);
        let (c50, c99) = median_p99(call_ns);
        println!(
            "revocation → denial, {label}, {revocations} revocations, 2 workers, real time (load average {}):",
            load_average()
        );
        println!(
            "  from the revoke call's response to the first denial at the filter: p50 {:.1} ms, p99 {:.1} ms; to denial on every worker: p50 {:.1} ms, p99 {:.1} ms",
            ms(f50),
            ms(f99),
            ms(a50),
            ms(a99)
        );
        println!(
            "  from sending the revoke to the first denial: p50 {:.1} ms, p99 {:.1} ms (the revoke call itself: p50 {:.1} ms, p99 {:.1} ms)",
            ms(s50),
            ms(s99),
            ms(c50),
            ms(c99)
        );
    }

    // ---- many long-polling readers on one control-plane process.
    println!();
    let probe_key = api
        .create_key(json!({"name": "probe", "scopes": ["repo:read"]}))
        .id;
    let (revision, base_rss) = rt.block_on(async {
        let r = http
            .get(format!("{cp_url}/v1/keyset"))
            .bearer_auth(&edge_key)
            .send()
            .await?;
        let rev: u64 = r
            .headers()
            .get("x-keygate-revision")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .context("x-keygate-revision")?;
        Ok::<_, anyhow::Error>((rev, proc_usage(pid)?.1))
    })?;
    let url = format!("{cp_url}/v1/keyset?since={revision}&wait=30");
    let sent = Instant::now();
    let handles: Vec<_> = (0..readers)
        .map(|_| {
            // one client (one connection) per reader, as separate proxies would have
            let client = reqwest::Client::new();
            let url = url.clone();
            let key = edge_key.clone();
            rt.spawn(async move {
                let resp = client.get(&url).bearer_auth(&key).send().await?;
                let at = Instant::now();
                let status = resp.status().as_u16();
                let _ = resp.bytes().await?;
                Ok::<_, anyhow::Error>((status, at))
            })
        })
        .collect();
    // let every reader connect and park
    std::thread::sleep(Duration::from_secs(3));
    let finished_early = handles.iter().filter(|h| h.is_finished()).count();
    ensure!(
        finished_early == 0,
        "{finished_early} readers answered before any change"
    );
    let tps = clock_ticks_per_sec();
    let (ticks0, rss_parked) = proc_usage(pid)?;
    let window = Duration::from_secs(5);
    std::thread::sleep(window);
    let (ticks1, rss_after) = proc_usage(pid)?;
    let cpu_pct = (ticks1 - ticks0) as f64 / tps as f64 / window.as_secs_f64() * 100.0;
    let t = Instant::now();
    api.key_action(&probe_key, "revoke");
    let answered = Instant::now();
    let results = rt.block_on(async {
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(h.await??);
        }
        Ok::<_, anyhow::Error>(out)
    })?;
    let mut reach_ns = Vec::with_capacity(results.len());
    for (status, at) in &results {
        ensure!(*status == 200, "a reader got {status}");
        reach_ns.push(at.saturating_duration_since(t).as_nanos() as u64);
    }
    reach_ns.sort_unstable();
    let mut reach_resp_ns: Vec<u64> = results
        .iter()
        .map(|(_, at)| at.saturating_duration_since(answered).as_nanos() as u64)
        .collect();
    reach_resp_ns.sort_unstable();
    println!(
        "{readers} concurrent long-polling readers on one keygate process (GET /v1/keyset?since={revision}&wait=30, one connection each; revoked {:.1} s after they were sent):",
        (t - sent).as_secs_f64()
    );
    println!(
        "  while parked: CPU {cpu_pct:.1} % of one core over {} s; RSS {} kB before the readers, {} kB parked, {} kB after {} s",
        window.as_secs(),
        base_rss,
        rss_parked,
        rss_after,
        window.as_secs()
    );
    println!(
        "  one revocation reaches them (from sending the revoke): p50 {:.1} ms, p99 {:.1} ms, all {:.1} ms; from the revoke's response: p50 {:.1} ms, p99 {:.1} ms (load average {})",
        ms(percentile(&reach_ns, 0.5)),
        ms(percentile(&reach_ns, 0.99)),
        ms(percentile(&reach_ns, 1.0)),
        ms(percentile(&reach_resp_ns, 0.5)),
        ms(percentile(&reach_resp_ns, 0.99)),
        load_average()
    );
    drop(cp);
    println!();
    println!(
        "total bench time {:.0} s; load average {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    Ok(())
}
