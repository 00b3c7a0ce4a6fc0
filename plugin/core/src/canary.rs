//! Canary hits: a canary key presented to this worker is denied as an unknown key (the
//! decision's [`Reason::CanaryKey`](crate::decision::Reason::CanaryKey)) and reported to the
//! control plane at once, `POST /v1/canary-hits` (`keygate_protocol::canary`), not in the next
//! usage batch.
//!
//! * **What a hit says:** the canary's key id, the time, the path without its query string (a key
//!   may travel in the query; the key itself is never reported), the client address as the
//!   shell read it, and the user agent cut to 256 bytes.
//! * **Bounded:** at most [`MAX_QUEUED`] hits per worker wait or travel at once; more are
//!   dropped and counted (`keygate.canary.hits_dropped`). Hits that arrive while a report is in
//!   flight wait and go together in the next one, sent as soon as that one is answered.
//! * **Retried:** a report that fails (no answer, a `5xx`, a refused edge key) is sent again,
//!   with the same hit ids (the control plane raises each id once), after the key-set sync's
//!   backoff; after [`MAX_ATTEMPTS`] attempts its hits are dropped and counted. A `400` is
//!   dropped at once.

use std::collections::VecDeque;

use keygate_protocol::KeyId;
use keygate_protocol::canary::{
    MAX_CLIENT_BYTES, MAX_HITS, MAX_USER_AGENT_BYTES, reported_path, truncate,
};
use serde::Serialize;

use crate::config::Config;
use crate::host::{Host, HttpCall, LogLevel};
use crate::sync::backoff_ms;

/// Most hits a worker holds (waiting and in flight).
pub const MAX_QUEUED: usize = MAX_HITS;
/// Attempts at one report before its hits are dropped.
pub const MAX_ATTEMPTS: u32 = 8;

/// Metric names of canary reporting.
pub mod metrics {
    /// Counter: canary hits seen (denied as unknown keys).
    pub const HITS: &str = "keygate.canary.hits";
    /// Counter: hits the control plane acknowledged.
    pub const HITS_REPORTED: &str = "keygate.canary.hits_reported";
    /// Counter: reports sent and acknowledged.
    pub const REPORTS_SENT: &str = "keygate.canary.reports_sent";
    /// Counter: report attempts that failed (to be retried).
    pub const REPORTS_FAILED: &str = "keygate.canary.reports_failed";
    /// Counter: hits dropped: the queue was full, the report was refused as invalid, or it
    /// failed [`super::MAX_ATTEMPTS`] times.
    pub const HITS_DROPPED: &str = "keygate.canary.hits_dropped";
}

/// One canary hit, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CanaryHit {
    /// Unique per hit (worker id and sequence), kept across retries.
    pub id: String,
    /// `key_<hex>` of the canary.
    pub key_id: String,
    /// Unix seconds.
    pub at: u64,
    /// Path without query string.
    pub path: String,
    /// Client address.
    pub client: String,
    /// User agent.
    pub user_agent: String,
}

#[derive(Serialize)]
struct Report<'a> {
    hits: &'a [CanaryHit],
}

/// One worker's canary hits and their report.
#[derive(Debug)]
pub struct CanaryReporter {
    waiting: VecDeque<CanaryHit>,
    in_flight: Option<(u32, Vec<CanaryHit>)>,
    attempts: u32,
    failures: u32,
    retry_at_ms: u64,
    worker: u64,
    seq: u64,
}

impl CanaryReporter {
    /// A reporter for the worker with this random id (it makes hit ids unique).
    pub fn new(worker: u64) -> Self {
        Self {
            waiting: VecDeque::new(),
            in_flight: None,
            attempts: 0,
            failures: 0,
            retry_at_ms: 0,
            worker,
            seq: 0,
        }
    }

    /// Hits waiting to be sent (not in flight).
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Hits held, waiting and in flight.
    pub fn held(&self) -> usize {
        self.waiting.len() + self.in_flight.as_ref().map_or(0, |(_, h)| h.len())
    }

    /// Whether `token` is this reporter's call.
    pub fn owns(&self, token: u32) -> bool {
        self.in_flight.as_ref().is_some_and(|(t, _)| *t == token)
    }

    /// Records a hit on `key` at `now_ms`; `false` when the queue is full (dropped, counted).
    pub fn record(
        &mut self,
        host: &mut impl Host,
        key: KeyId,
        now_ms: u64,
        path: &str,
        client: &str,
        user_agent: &str,
    ) -> bool {
        host.counter_add(metrics::HITS, 1);
        if self.held() >= MAX_QUEUED {
            host.counter_add(metrics::HITS_DROPPED, 1);
            return false;
        }
        self.seq += 1;
        self.waiting.push_back(CanaryHit {
            id: format!("{:016x}-{}", self.worker, self.seq),
            key_id: key.text().as_str().to_owned(),
            at: now_ms / 1000,
            path: reported_path(path).to_owned(),
            client: truncate(client, MAX_CLIENT_BYTES).to_owned(),
            user_agent: truncate(user_agent, MAX_USER_AGENT_BYTES).to_owned(),
        });
        true
    }

    /// Sends the waiting hits in one report, unless one is in flight or a retry is not due.
    pub fn send(&mut self, host: &mut impl Host, config: &Config, edge_id: Option<&str>) {
        if self.in_flight.is_some() || self.waiting.is_empty() {
            return;
        }
        let now = host.now_ms();
        if now < self.retry_at_ms {
            return;
        }
        let Some(edge_key) = config.edge_key.as_deref() else {
            return;
        };
        let hits: Vec<CanaryHit> = self.waiting.drain(..).collect();
        let body = match serde_json::to_vec(&Report { hits: &hits }) {
            Ok(b) => b,
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!("canary report did not encode: {e}"),
                );
                host.counter_add(metrics::HITS_DROPPED, hits.len() as u64);
                return;
            }
        };
        let mut headers = vec![
            (":method", "POST".to_owned()),
            (":path", "/v1/canary-hits".to_owned()),
            (":authority", config.authority.clone()),
            ("authorization", format!("Bearer {edge_key}")),
            ("content-type", "application/json".to_owned()),
        ];
        if let Some(id) = edge_id {
            headers.push((keygate_protocol::edge::ID_HEADER, id.to_owned()));
        }
        let call = HttpCall {
            cluster: &config.usage_cluster,
            headers,
            body: Some(body),
            timeout_ms: config.request_timeout_ms,
        };
        match host.dispatch(call) {
            Ok(token) => self.in_flight = Some((token, hits)),
            Err(e) => {
                host.log(LogLevel::Warn, &format!("canary report not sent: {e}"));
                self.failed(host, config, hits);
            }
        }
    }

    /// The answer to this reporter's call: acknowledged, the next report goes at once if hits
    /// wait; `400`, dropped; anything else, retried after the backoff.
    pub fn on_response(
        &mut self,
        host: &mut impl Host,
        config: &Config,
        status: Option<u16>,
        edge_id: Option<&str>,
    ) {
        let Some((_, hits)) = self.in_flight.take() else {
            return;
        };
        match status {
            Some(200..=299) => {
                self.attempts = 0;
                self.failures = 0;
                self.retry_at_ms = 0;
                host.counter_add(metrics::REPORTS_SENT, 1);
                host.counter_add(metrics::HITS_REPORTED, hits.len() as u64);
                self.send(host, config, edge_id);
            }
            Some(400) => {
                self.attempts = 0;
                host.counter_add(metrics::HITS_DROPPED, hits.len() as u64);
                host.log(
                    LogLevel::Error,
                    &format!(
                        "canary report refused as invalid (400); dropped {} hits",
                        hits.len()
                    ),
                );
            }
            _ => {
                host.log(
                    LogLevel::Warn,
                    &format!("canary report failed (status {status:?}); will retry"),
                );
                self.failed(host, config, hits);
            }
        }
    }

    fn failed(&mut self, host: &mut impl Host, config: &Config, hits: Vec<CanaryHit>) {
        host.counter_add(metrics::REPORTS_FAILED, 1);
        self.attempts += 1;
        self.failures = self.failures.saturating_add(1);
        self.retry_at_ms = host.now_ms() + backoff_ms(host, config, self.failures);
        if self.attempts >= MAX_ATTEMPTS {
            self.attempts = 0;
            host.counter_add(metrics::HITS_DROPPED, hits.len() as u64);
            host.log(
                LogLevel::Error,
                &format!(
                    "canary report failed {MAX_ATTEMPTS} times; dropped {} hits",
                    hits.len()
                ),
            );
            return;
        }
        // The failed hits go first, before those that arrived meanwhile: one report of all.
        for h in hits.into_iter().rev() {
            self.waiting.push_front(h);
        }
    }
}
