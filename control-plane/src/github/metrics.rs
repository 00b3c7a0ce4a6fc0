//! Broker metrics in Prometheus text format: tokens minted, cache hits and misses, GitHub
//! request latency (histogram per operation) and GitHub answers by status.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The broker's counters.
#[derive(Debug, Default)]
pub struct GithubMetrics {
    tokens_minted: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    /// (operation, status or `network`) → answers.
    responses: Mutex<BTreeMap<(&'static str, String), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
}

impl GithubMetrics {
    /// A token was minted at GitHub.
    pub fn minted(&self) {
        self.tokens_minted.fetch_add(1, Ordering::Relaxed);
    }
    /// A token request was served from the cache.
    pub fn hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }
    /// A token request missed the cache.
    pub fn miss(&self) {
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
    }
    /// Tokens minted so far.
    pub fn tokens_minted(&self) -> u64 {
        self.tokens_minted.load(Ordering::Relaxed)
    }
    /// Cache hits so far.
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.load(Ordering::Relaxed)
    }

    /// Records one GitHub call: its operation, outcome (`"201"`, `"404"`, `"network"`) and time.
    pub fn github_call(&self, operation: &'static str, outcome: String, elapsed: Duration) {
        *self
            .responses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((operation, outcome))
            .or_default() += 1;
        let secs = elapsed.as_secs_f64();
        let mut lat = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let h = lat.entry(operation).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Appends the metrics in Prometheus text exposition format.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP keygate_github_tokens_minted_total Installation tokens minted at GitHub."
        );
        let _ = writeln!(out, "# TYPE keygate_github_tokens_minted_total counter");
        let _ = writeln!(
            out,
            "keygate_github_tokens_minted_total {}",
            self.tokens_minted()
        );
        let _ = writeln!(
            out,
            "# HELP keygate_github_token_cache_hits_total Token requests served from the cache."
        );
        let _ = writeln!(out, "# TYPE keygate_github_token_cache_hits_total counter");
        let _ = writeln!(
            out,
            "keygate_github_token_cache_hits_total {}",
            self.cache_hits()
        );
        let _ = writeln!(
            out,
            "# HELP keygate_github_token_cache_misses_total Token requests that missed the cache."
        );
        let _ = writeln!(
            out,
            "# TYPE keygate_github_token_cache_misses_total counter"
        );
        let _ = writeln!(
            out,
            "keygate_github_token_cache_misses_total {}",
            self.cache_misses.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP keygate_github_responses_total GitHub answers by operation and status."
        );
        let _ = writeln!(out, "# TYPE keygate_github_responses_total counter");
        for ((op, status), n) in self
            .responses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "keygate_github_responses_total{{operation=\"{op}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP keygate_github_errors_total GitHub calls that failed, by status."
        );
        let _ = writeln!(out, "# TYPE keygate_github_errors_total counter");
        let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
        let responses = self.responses.lock().unwrap_or_else(|p| p.into_inner());
        for ((_, status), n) in responses.iter() {
            if !status.starts_with('2') {
                *errors.entry(status.as_str()).or_default() += n;
            }
        }
        for (status, n) in errors {
            let _ = writeln!(
                out,
                "keygate_github_errors_total{{status=\"{status}\"}} {n}"
            );
        }
        drop(responses);
        let _ = writeln!(
            out,
            "# HELP keygate_github_request_duration_seconds Latency of GitHub calls."
        );
        let _ = writeln!(
            out,
            "# TYPE keygate_github_request_duration_seconds histogram"
        );
        for (op, h) in self
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "keygate_github_request_duration_seconds_bucket{{operation=\"{op}\",le=\"{le}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "keygate_github_request_duration_seconds_bucket{{operation=\"{op}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "keygate_github_request_duration_seconds_sum{{operation=\"{op}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "keygate_github_request_duration_seconds_count{{operation=\"{op}\"}} {}",
                h.count
            );
        }
    }
}
