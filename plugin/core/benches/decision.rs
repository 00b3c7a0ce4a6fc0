//! Native cost of one filter decision with 1,000,000 keys loaded: median and p99 per request.
//!
//! `cargo bench -p keygate-filter-core --bench decision` (set `KEYGATE_BENCH_KEYS` to change the size).

use std::hint::black_box;
use std::time::Instant;

use keygate_filter_core::config::Config;
use keygate_filter_core::decision::{Decision, KeySetState, Reason, Request, decide};
use keygate_protocol::key;
use keygate_protocol::keyset::KeySet;
use keygate_protocol::wire::Snapshot;
use keygate_testkit::bench::{env_usize, percentile, repo_key_set};

fn main() -> anyhow::Result<()> {
    let n = env_usize("KEYGATE_BENCH_KEYS", 1_000_000);
    let t = Instant::now();
    let keys = repo_key_set(n)?;
    let (mut entries, secrets) = (keys.entries, keys.secrets);
    entries.sort_by(|a, b| a.digest.as_bytes().cmp(b.digest.as_bytes()));
    let bytes = Snapshot {
        revision: 1,
        entries,
    }
    .encode()?;
    let gen_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut set = KeySet::new();
    set.apply(&bytes)?;
    let apply_s = t.elapsed().as_secs_f64();
    println!(
        "keys: {n}; generate+encode {gen_s:.2} s; snapshot {} bytes; native apply {apply_s:.3} s; heap {} bytes ({:.1} B/key)",
        bytes.len(),
        set.heap_bytes(),
        set.heap_bytes() as f64 / n as f64
    );

    let config = Config::from_json(
        br#"{"cluster":"cp","authority":"cp","edge_key":"kg_edge_x",
            "routes":[{"path_prefix":"/repos/","required_scopes":["repo:read"],"resource_from_path_segment":1}]}"#,
    )?;
    let requests: Vec<Vec<(String, String)>> = secrets
        .iter()
        .map(|(s, i)| {
            vec![
                (":method".into(), "GET".into()),
                (":path".into(), format!("/repos/org{}/widgets", i % 100)),
                (":authority".into(), "api.example".into()),
                ("user-agent".into(), "bench".into()),
                ("x-api-key".into(), s.clone()),
            ]
        })
        .collect();
    // sanity: every request is allowed
    for h in &requests {
        let d = decide(
            &Request::from_headers(h),
            KeySetState::Fresh(&set),
            1_763_900_000,
            &config,
        );
        anyhow::ensure!(
            d.reason() == Reason::Allowed,
            "bench request not allowed: {:?}",
            d.reason()
        );
    }
    let rounds = 200;
    let mut samples = Vec::with_capacity(rounds * requests.len());
    for _ in 0..rounds {
        for h in &requests {
            let t = Instant::now();
            let d = decide(
                &Request::from_headers(h),
                KeySetState::Fresh(&set),
                1_763_900_000,
                &config,
            );
            if let Decision::Allow(a) = black_box(d) {
                black_box(a.set.len());
            }
            samples.push(t.elapsed().as_nanos() as u64);
        }
    }
    samples.sort_unstable();
    println!(
        "native decision (allowed, parse+digest+lookup+scope+resource+identity headers), {} samples: median {} ns, p99 {} ns",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99)
    );
    // deny path: unknown key (well-formed)
    let unknown = key::generate("kg_live")?;
    let h = vec![
        (":method".into(), "GET".into()),
        (":path".into(), "/repos/org1/x".into()),
        ("x-api-key".into(), unknown.expose_secret().to_owned()),
    ];
    let mut samples = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let t = Instant::now();
        black_box(decide(
            &Request::from_headers(&h),
            KeySetState::Fresh(&set),
            1_763_900_000,
            &config,
        ));
        samples.push(t.elapsed().as_nanos() as u64);
    }
    samples.sort_unstable();
    println!(
        "native decision (unknown key → 401): median {} ns, p99 {} ns",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99)
    );
    Ok(())
}
