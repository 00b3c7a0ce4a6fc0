//! Prometheus text metrics, hand-rolled atomic counters (no global recorder, so several
//! servers can live in one test process).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use keygate_filter_core::decision::Reason;

use crate::domain::VerifyCode;

/// Counters exported at `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    http_by_class: [AtomicU64; 5],
    keys_created: AtomicU64,
    verifications: [AtomicU64; 10],
    auth_failures: AtomicU64,
    rate_limited: AtomicU64,
    keyset_snapshots: AtomicU64,
    keyset_deltas: AtomicU64,
    keyset_not_modified: AtomicU64,
    usage_batches_applied: AtomicU64,
    usage_batches_duplicate: AtomicU64,
    forward_auth: [AtomicU64; Reason::ALL.len()],
    edge_writes: AtomicU64,
    credits_exhausted: AtomicU64,
    credit_refills: AtomicU64,
    limited_reported: AtomicU64,
    limited_by: [[AtomicU64; 2]; 3],
}

/// Where a refused request was refused (the `source` label of `keygate_limited_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// Reported by an edge (`POST /v1/usage`).
    Edge,
    /// `POST /v1/keys/verify`.
    Verify,
    /// `/v1/forward-auth`.
    ForwardAuth,
}

/// Why a request was refused (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitedBy {
    /// Over a rate limit (`rate_limited`).
    RateLimit,
    /// Out of credits (`credits_exhausted`).
    Credits,
}

const SOURCES: [&str; 3] = ["edge", "verify", "forward_auth"];
const REASONS: [&str; 2] = ["rate_limited", "credits_exhausted"];

const CODES: [(VerifyCode, &str); 10] = [
    (VerifyCode::Valid, "VALID"),
    (VerifyCode::Malformed, "MALFORMED"),
    (VerifyCode::NotFound, "NOT_FOUND"),
    (VerifyCode::Expired, "EXPIRED"),
    (VerifyCode::Suspended, "SUSPENDED"),
    (VerifyCode::Revoked, "REVOKED"),
    (VerifyCode::InsufficientScope, "INSUFFICIENT_SCOPE"),
    (VerifyCode::ResourceNotAllowed, "RESOURCE_NOT_ALLOWED"),
    (VerifyCode::CreditsExhausted, "CREDITS_EXHAUSTED"),
    (VerifyCode::RateLimited, "RATE_LIMITED"),
];

/// Which key-set answer was sent.
#[derive(Debug, Clone, Copy)]
pub enum KeysetAnswer {
    /// Full snapshot.
    Snapshot,
    /// Delta.
    Delta,
    /// 304 at a long-poll timeout.
    NotModified,
}

impl Metrics {
    /// Counts a response by status class.
    pub fn http(&self, status: u16) {
        let i = usize::from(status / 100).clamp(1, 5) - 1;
        self.http_by_class[i].fetch_add(1, Relaxed);
    }
    /// Counts an issued key.
    pub fn key_created(&self) {
        self.keys_created.fetch_add(1, Relaxed);
    }
    /// Counts a verification outcome.
    pub fn verification(&self, code: VerifyCode) {
        if let Some(i) = CODES.iter().position(|(c, _)| *c == code) {
            self.verifications[i].fetch_add(1, Relaxed);
        }
    }
    /// Counts a failed authentication.
    pub fn auth_failure(&self) {
        self.auth_failures.fetch_add(1, Relaxed);
    }
    /// Counts a 429.
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Relaxed);
    }
    /// Counts a key-set answer.
    pub fn keyset(&self, a: KeysetAnswer) {
        match a {
            KeysetAnswer::Snapshot => &self.keyset_snapshots,
            KeysetAnswer::Delta => &self.keyset_deltas,
            KeysetAnswer::NotModified => &self.keyset_not_modified,
        }
        .fetch_add(1, Relaxed);
    }
    /// Counts a usage batch.
    pub fn usage_batch(&self, applied: bool) {
        if applied {
            &self.usage_batches_applied
        } else {
            &self.usage_batches_duplicate
        }
        .fetch_add(1, Relaxed);
    }

    /// Counts keys whose credits this process's writes took to 0.
    pub fn credits_exhausted(&self, n: usize) {
        self.credits_exhausted.fetch_add(n as u64, Relaxed);
    }

    /// Counts a refill made by this process.
    pub fn credit_refill(&self) {
        self.credit_refills.fetch_add(1, Relaxed);
    }

    /// Counts requests the edges reported refused by a rate limit.
    pub fn limited_reported(&self, n: u64) {
        self.limited_reported.fetch_add(n, Relaxed);
    }

    /// Counts `n` requests refused by `reason` at `source`.
    pub fn limited(&self, source: Limited, reason: LimitedBy, n: u64) {
        self.limited_by[source as usize][reason as usize].fetch_add(n, Relaxed);
    }

    /// Counts an edge-registry write.
    pub fn edge_write(&self) {
        self.edge_writes.fetch_add(1, Relaxed);
    }

    /// Counts a forward-auth decision.
    pub fn forward_auth(&self, reason: Reason) {
        if let Some(c) = self.forward_auth.get(reason.index()) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Renders the Prometheus text exposition format; `revision` is the current key-set revision.
    pub fn render(&self, revision: i64) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP keygate_http_responses_total HTTP responses by status class."
        );
        let _ = writeln!(o, "# TYPE keygate_http_responses_total counter");
        for (i, c) in self.http_by_class.iter().enumerate() {
            let _ = writeln!(
                o,
                "keygate_http_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                c.load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP keygate_keys_created_total Keys issued, including exchanged children."
        );
        let _ = writeln!(o, "# TYPE keygate_keys_created_total counter");
        let _ = writeln!(
            o,
            "keygate_keys_created_total {}",
            self.keys_created.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP keygate_verifications_total Verifications by outcome code."
        );
        let _ = writeln!(o, "# TYPE keygate_verifications_total counter");
        for (i, (_, name)) in CODES.iter().enumerate() {
            let _ = writeln!(
                o,
                "keygate_verifications_total{{code=\"{name}\"}} {}",
                self.verifications[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP keygate_auth_failures_total Failed caller authentications."
        );
        let _ = writeln!(o, "# TYPE keygate_auth_failures_total counter");
        let _ = writeln!(
            o,
            "keygate_auth_failures_total {}",
            self.auth_failures.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP keygate_rate_limited_total Requests refused with 429."
        );
        let _ = writeln!(o, "# TYPE keygate_rate_limited_total counter");
        let _ = writeln!(
            o,
            "keygate_rate_limited_total {}",
            self.rate_limited.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP keygate_keyset_responses_total Key-set feed answers by kind."
        );
        let _ = writeln!(o, "# TYPE keygate_keyset_responses_total counter");
        let _ = writeln!(
            o,
            "keygate_keyset_responses_total{{kind=\"snapshot\"}} {}",
            self.keyset_snapshots.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "keygate_keyset_responses_total{{kind=\"delta\"}} {}",
            self.keyset_deltas.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "keygate_keyset_responses_total{{kind=\"not_modified\"}} {}",
            self.keyset_not_modified.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP keygate_usage_batches_total Usage batches by result."
        );
        let _ = writeln!(o, "# TYPE keygate_usage_batches_total counter");
        let _ = writeln!(
            o,
            "keygate_usage_batches_total{{result=\"applied\"}} {}",
            self.usage_batches_applied.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "keygate_usage_batches_total{{result=\"duplicate\"}} {}",
            self.usage_batches_duplicate.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP keygate_forward_auth_decisions_total Forward-auth decisions by the filter's reason code."
        );
        let _ = writeln!(o, "# TYPE keygate_forward_auth_decisions_total counter");
        for r in Reason::ALL {
            let _ = writeln!(
                o,
                "keygate_forward_auth_decisions_total{{reason=\"{}\"}} {}",
                r.code(),
                self.forward_auth[r.index()].load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP keygate_edge_registry_writes_total Edge-registry rows written by this process."
        );
        let _ = writeln!(o, "# TYPE keygate_edge_registry_writes_total counter");
        let _ = writeln!(
            o,
            "keygate_edge_registry_writes_total {}",
            self.edge_writes.load(Relaxed)
        );
        for (name, help, v) in [
            (
                "keygate_credits_exhaustions_total",
                "Keys whose credits this process's usage intake or verification took to 0.",
                &self.credits_exhausted,
            ),
            (
                "keygate_credit_refills_total",
                "Credit refills made by this process.",
                &self.credit_refills,
            ),
            (
                "keygate_usage_limited_total",
                "Requests the edges reported refused by a rate limit (429 rate_limited).",
                &self.limited_reported,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}");
            let _ = writeln!(o, "# TYPE {name} counter");
            let _ = writeln!(o, "{name} {}", v.load(Relaxed));
        }
        let _ = writeln!(
            o,
            "# HELP keygate_limited_requests_total Requests refused by a rate limit or for credits, by where (edge reports, verify, forward-auth) and reason."
        );
        let _ = writeln!(o, "# TYPE keygate_limited_requests_total counter");
        for (si, source) in SOURCES.iter().enumerate() {
            for (ri, reason) in REASONS.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "keygate_limited_requests_total{{source=\"{source}\",reason=\"{reason}\"}} {}",
                    self.limited_by[si][ri].load(Relaxed)
                );
            }
        }
        let _ = writeln!(
            o,
            "# HELP keygate_keyset_revision Current key-set revision known to this process."
        );
        let _ = writeln!(o, "# TYPE keygate_keyset_revision gauge");
        let _ = writeln!(o, "keygate_keyset_revision {revision}");
        o
    }
}
