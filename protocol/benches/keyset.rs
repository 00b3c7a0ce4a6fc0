//! Key-set benchmark: 1,000,000 keys (10,000 owners, 50 grants); prints sizes and timings.
//!
//! `cargo bench -p keygate-protocol --bench keyset` (set `KEYGATE_BENCH_KEYS` for another size).
//! Figures: snapshot size and encode time, decode and `KeySet::apply` time, heap bytes per key,
//! parse+digest+lookup per key (median and p99 over batches), and delta apply times.

use std::hint::black_box;
use std::time::{Duration, Instant};

use keygate_protocol::keyset::KeySet;
use keygate_protocol::wire::{self, Delta, KeyEntry, Snapshot};
use keygate_protocol::{KeyId, key};

const OWNERS: usize = 10_000;
const GRANTS: usize = 50;
const BATCH: usize = 64;

/// A small deterministic generator for picking keys (not for secrets).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn grants() -> Vec<(Vec<String>, Vec<String>)> {
    let scopes = [
        "keys:read",
        "keys:write",
        "graphs:execute",
        "github:tokens",
        "usage:read",
    ];
    (0..GRANTS)
        .map(|g| {
            let s: Vec<String> = scopes
                .iter()
                .enumerate()
                .filter(|(i, _)| (g >> i) & 1 == 1 || *i == g % scopes.len())
                .map(|(_, s)| (*s).to_owned())
                .collect();
            // A fifth of the grants are repository-scoped.
            let r: Vec<String> = if g % 5 == 0 {
                vec![format!("acme/repo{g}"), format!("team{g}/*")]
            } else {
                Vec::new()
            };
            (s, r)
        })
        .collect()
}

fn entry(
    i: usize,
    digest: keygate_protocol::Digest,
    grants: &[(Vec<String>, Vec<String>)],
) -> KeyEntry {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(i as u64).to_be_bytes());
    id[6] |= 0x70;
    let (scopes, resources) = &grants[i % GRANTS];
    KeyEntry {
        policy: Default::default(),
        digest,
        key_id: KeyId::from_bytes(id),
        owner: format!("org_{:05}", (i * 7919) % OWNERS),
        expires_at: (i % 10 < 3).then_some(1_900_000_000 + (i as u64 % 86_400)),
        scopes: scopes.clone(),
        resources: resources.clone(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Times `op` over `inputs` in batches of [`BATCH`]; returns per-op (median, p90 and p99 of the
/// batch means) in ns, and how many calls returned true.
fn per_op<T>(inputs: &[T], mut op: impl FnMut(&T) -> bool) -> (Stats, usize) {
    let mut samples = Vec::with_capacity(inputs.len() / BATCH);
    let mut hits = 0;
    for batch in inputs.chunks_exact(BATCH) {
        let t = Instant::now();
        for x in batch {
            if black_box(op(black_box(x))) {
                hits += 1;
            }
        }
        samples.push(t.elapsed().as_secs_f64() * 1e9 / BATCH as f64);
    }
    samples.sort_by(f64::total_cmp);
    let stats = Stats {
        median: percentile(&samples, 0.5),
        p90: percentile(&samples, 0.9),
        p99: percentile(&samples, 0.99),
    };
    (stats, hits)
}

struct Stats {
    median: f64,
    p90: f64,
    p99: f64,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "median {:.0} ns, p90 {:.0} ns, p99 {:.0} ns",
            self.median, self.p90, self.p99
        )
    }
}

fn main() {
    let n: usize = std::env::var("KEYGATE_BENCH_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let grants = grants();
    println!("keygate-protocol key-set benchmark: {n} keys, {OWNERS} owners, {GRANTS} grants");

    let t = Instant::now();
    let keys: Vec<String> = (0..n)
        .map(|_| {
            key::generate("kg_live")
                .expect("valid prefix")
                .into_string()
        })
        .collect();
    println!("generate {n} keys: {:.0} ms", ms(t.elapsed()));
    let entries: Vec<KeyEntry> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| entry(i, keygate_protocol::Digest::of(k), &grants))
        .collect();

    let snapshot = Snapshot {
        revision: 1,
        entries,
    };
    let t = Instant::now();
    let bytes = snapshot.encode().expect("valid snapshot");
    let encode_time = t.elapsed();
    println!(
        "Snapshot::encode: {:.0} ms, {} bytes ({:.1} MB, {:.2} bytes/key)",
        ms(encode_time),
        bytes.len(),
        bytes.len() as f64 / 1e6,
        bytes.len() as f64 / n as f64
    );
    drop(snapshot);

    let t = Instant::now();
    let message = wire::decode(&bytes).expect("decodes");
    println!("wire::decode (to Vec<KeyEntry>): {:.0} ms", ms(t.elapsed()));
    drop(black_box(message));

    let mut set = KeySet::new();
    let t = Instant::now();
    set.apply(&bytes).expect("applies");
    let apply_time = t.elapsed();
    let heap = set.heap_bytes();
    println!(
        "KeySet::apply(snapshot): {:.0} ms; heap {} bytes = {:.2} bytes/key",
        ms(apply_time),
        heap,
        heap as f64 / n as f64
    );
    drop(bytes);

    // Lookups: 200,000 hits drawn from the set, 200,000 misses (well-formed keys not in it).
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let sample = 200_000.min(n);
    // The sampled keys are copied into one buffer, in the order they are used: a request's key
    // arrives in a header that is already in cache, unlike a key drawn from a 200 MB heap.
    let hit_buf: String = (0..sample).map(|_| keys[rng.below(n)].as_str()).collect();
    let key_len = keys[0].len();
    let hits: Vec<&str> = (0..sample)
        .map(|i| &hit_buf[i * key_len..(i + 1) * key_len])
        .collect();
    let miss_buf: String = (0..sample)
        .map(|_| key::generate("kg_live").expect("valid").into_string())
        .collect();
    let misses: Vec<&str> = (0..sample)
        .map(|i| &miss_buf[i * key_len..(i + 1) * key_len])
        .collect();
    // 1,000 hot keys, used over and over (their records stay in cache).
    let hot: Vec<&str> = (0..sample).map(|i| hits[i % 1000]).collect();
    let check = |k: &&str| -> bool {
        key::parse(k)
            .ok()
            .and_then(|p| set.lookup(&p.digest()))
            .is_some_and(|r| r.has_scope("keys:read") || r.allows_resource("acme/x"))
    };
    // Warm up, then measure.
    let _ = per_op(&hits[..sample / 10], check);
    let (st, found) = per_op(&hits, check);
    println!(
        "parse+digest+lookup (hit, + scope check): {st} per key ({found} of {} found a scope)",
        hits.len() / BATCH * BATCH
    );
    let (st, found) = per_op(&misses, check);
    println!("parse+digest+lookup (miss): {st} per key ({found} found)");
    let (st, _) = per_op(&hot, check);
    println!("parse+digest+lookup (1,000 hot keys): {st} per key");
    let digests: Vec<_> = hits
        .iter()
        .map(|k| keygate_protocol::Digest::of(k))
        .collect();
    let (st, _) = per_op(&digests, |d| set.lookup(d).is_some());
    println!("lookup only (digest given): {st}");
    let (st, _) = per_op(&hits, |k| key::parse(k).is_ok());
    println!("parse only: {st}");
    let (st, _) = per_op(&hits, |k| {
        key::parse(k).is_ok_and(|p| p.digest().as_bytes()[0] != 1)
    });
    println!("parse+digest: {st}");

    // Deltas of 1,000 upserts (600 new keys, 400 replaced) on top of the set; the overlay is
    // merged into the main array when it passes max(4096, n/128) records.
    let mut times = Vec::new();
    let mut next = n;
    for round in 0..12u64 {
        let revision = 1 + round;
        let upserts: Vec<KeyEntry> = (0..1000)
            .map(|j| {
                if j < 600 {
                    next += 1;
                    entry(
                        next,
                        keygate_protocol::Digest::of(&format!("new-{next}")),
                        &grants,
                    )
                } else {
                    let i = rng.below(n);
                    let mut e = entry(i, keygate_protocol::Digest::of(&keys[i]), &grants);
                    e.owner = format!("org_moved_{round}");
                    e
                }
            })
            .collect();
        let mut upserts = upserts;
        upserts.sort_by_key(|e| e.digest);
        upserts.dedup_by_key(|e| e.digest);
        let delta = Delta {
            base_revision: revision,
            revision: revision + 1,
            upserts,
            removals: Vec::new(),
        }
        .encode()
        .expect("valid delta");
        let t = Instant::now();
        set.apply(&delta).expect("applies");
        times.push(t.elapsed());
    }
    let mut sorted: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    let order: Vec<String> = sorted.iter().map(|us| format!("{us:.0}")).collect();
    let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
    sorted.sort_by(f64::total_cmp);
    println!("delta apply, 1,000 upserts: mean {mean:.0} µs (compaction amortized)");
    println!(
        "delta apply, 1,000 upserts: median {:.0} µs, max {:.0} µs (the max includes merging the overlay into the main array); in order, µs: {}",
        percentile(&sorted, 0.5),
        sorted[sorted.len() - 1],
        order.join(" ")
    );
    println!(
        "after deltas: {} keys, heap {:.2} bytes/key",
        set.len(),
        set.heap_bytes() as f64 / set.len() as f64
    );
    let t = Instant::now();
    let again = set.encode_snapshot();
    println!(
        "KeySet::encode_snapshot: {:.0} ms, {} bytes",
        ms(t.elapsed()),
        again.len()
    );
}
