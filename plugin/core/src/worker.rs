//! One worker's filter state: configuration, key-set sync and usage, behind the [`Host`] seam.
//!
//! The proxy-wasm glue owns one [`Worker`] per root context (one per Envoy worker thread) and
//! forwards timer ticks, HTTP call answers and requests to it.

use keygate_protocol::KeyId;

use crate::canary::CanaryReporter;
use crate::config::Config;
use crate::decision::{Decision, Reason, Request, decide};
use crate::host::{Host, HttpCall, HttpResponse, LogLevel};
use crate::sync::Syncer;
use crate::usage::UsageTracker;

/// Metric names of usage reporting.
pub mod metrics {
    /// Counter: usage batches acknowledged.
    pub const USAGE_SENT: &str = "keygate.usage.batches_sent";
    /// Counter: usage batch sends that failed (to be retried).
    pub const USAGE_FAILED: &str = "keygate.usage.batches_failed";
    /// Counter: usage batches the control plane refused for good (`400`), dropped so that
    /// they never block later counts.
    pub const USAGE_DROPPED: &str = "keygate.usage.batches_dropped";
    /// Counter: requests whose usage was in a dropped batch.
    pub const USAGE_DROPPED_REQUESTS: &str = "keygate.usage.requests_dropped";
}

/// A worker's filter state.
#[derive(Debug)]
pub struct Worker {
    config: Config,
    syncer: Syncer,
    usage: UsageTracker<KeyId>,
    usage_token: Option<u32>,
    next_usage_ms: u64,
    canary: CanaryReporter,
}

impl Worker {
    /// A worker with this configuration and random id, started at `now_ms`.
    pub fn new(config: Config, worker_id: u64, now_ms: u64) -> Self {
        let syncer = Syncer::new(&config, worker_id);
        let next_usage_ms = now_ms + config.usage_report_interval_ms;
        Self {
            config,
            syncer,
            usage: UsageTracker::new(worker_id),
            usage_token: None,
            next_usage_ms,
            canary: CanaryReporter::new(worker_id),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The sync machine (for inspection).
    pub fn syncer(&self) -> &Syncer {
        &self.syncer
    }

    /// The usage tracker (for inspection).
    pub fn usage(&self) -> &UsageTracker<KeyId> {
        &self.usage
    }

    /// Called once when the VM is configured (see [`Syncer::on_configure`]).
    pub fn on_configure(&mut self, host: &mut impl Host) {
        self.syncer.on_configure(host);
    }

    /// A request arrives (before [`Worker::decide`]): an idle VM catches up first.
    pub fn on_request(&mut self, host: &mut impl Host) {
        self.syncer.wake(host);
    }

    /// The leader woke this VM through its queue (see [`Syncer::on_queue_ready`]), or a
    /// request of this VM did, to report a canary hit at once.
    pub fn on_queue_ready(&mut self, host: &mut impl Host) {
        self.syncer.on_queue_ready(host, &self.config);
        self.send_canary_hits(host);
    }

    /// The canary reporter (for inspection).
    pub fn canary(&self) -> &CanaryReporter {
        &self.canary
    }

    /// A canary `key` was presented (the decision denied it as [`Reason::CanaryKey`]): the hit
    /// is queued, and this VM is woken through its own queue so the report goes out from its
    /// root context at once (a call made from a request's context would die with the request);
    /// without a queue it goes at the next tick (every 20-100 ms). `path` is `:path` (the query
    /// is cut off), `client` the client's address as the shell read it.
    pub fn record_canary_hit(
        &mut self,
        host: &mut impl Host,
        key: KeyId,
        now_ms: u64,
        path: &str,
        client: &str,
        user_agent: &str,
    ) {
        if self
            .canary
            .record(host, key, now_ms, path, client, user_agent)
        {
            self.syncer.wake_self(host);
        }
    }

    /// Sends the waiting canary hits now, unless a report is in flight or a retry is not due.
    pub fn send_canary_hits(&mut self, host: &mut impl Host) {
        if self.canary.waiting() == 0 {
            return;
        }
        let edge_id = self.syncer.edge_id(host);
        self.canary.send(host, &self.config, edge_id.as_deref());
    }

    /// Decides one request at `now_ms`.
    pub fn decide<'a>(&'a self, req: &Request<'a>, now_ms: u64) -> Decision<'a> {
        decide(
            req,
            self.syncer.state(&self.config, now_ms),
            now_ms / 1000,
            &self.config,
        )
    }

    /// Counts an allowed request for usage reporting.
    pub fn record_use(&mut self, reason: Reason, key: Option<KeyId>, now_ms: u64) {
        if let (Reason::Allowed, Some(k)) = (reason, key) {
            self.usage.record(k, now_ms / 1000);
        }
    }

    /// Counts a request of `key` refused by a rate limit or for its credits, for the usage
    /// report's `limited` and `credits_exhausted`; other refusals are not a key's usage.
    pub fn record_refused(&mut self, reason: Reason, key: Option<KeyId>, now_ms: u64) {
        match (reason, key) {
            (Reason::RateLimited, Some(k)) => self.usage.record_limited(k, now_ms / 1000),
            (Reason::CreditsExhausted, Some(k)) => {
                self.usage.record_credits_exhausted(k, now_ms / 1000);
            }
            _ => {}
        }
    }

    /// Timer tick: sync, then usage reporting when due.
    pub fn tick(&mut self, host: &mut impl Host) {
        self.usage.fold();
        self.syncer.tick(host, &self.config);
        let now = host.now_ms();
        if now >= self.next_usage_ms {
            self.next_usage_ms = now + self.config.usage_report_interval_ms;
            self.send_usage(host);
        }
        self.send_canary_hits(host);
    }

    fn send_usage(&mut self, host: &mut impl Host) {
        let Some(edge_key) = self.config.edge_key.as_deref() else {
            return;
        };
        let Some(batch) = self.usage.next_batch() else {
            return;
        };
        let body = match serde_json::to_vec(batch) {
            Ok(b) => b,
            Err(e) => {
                host.log(LogLevel::Error, &format!("usage batch did not encode: {e}"));
                self.usage.finish(false);
                return;
            }
        };
        let call = HttpCall {
            cluster: &self.config.usage_cluster,
            headers: vec![
                (":method", "POST".to_owned()),
                (":path", "/v1/usage".to_owned()),
                (":authority", self.config.authority.clone()),
                ("authorization", format!("Bearer {edge_key}")),
                ("content-type", "application/json".to_owned()),
            ],
            body: Some(body),
            timeout_ms: self.config.request_timeout_ms,
        };
        match host.dispatch(call) {
            Ok(token) => self.usage_token = Some(token),
            Err(e) => {
                host.log(LogLevel::Warn, &format!("usage report not sent: {e}"));
                host.counter_add(metrics::USAGE_FAILED, 1);
                self.usage.finish(false);
            }
        }
    }

    /// The answer to a usage report. Acknowledged: the next batch goes at once while counts
    /// are waiting (a backlog drains in one interval, a batch at a time). `413`: the batch is
    /// split and sent again at once. `400`: dropped, never resent. Anything else (no answer,
    /// `5xx`, a refused edge key): the same batch, same id, at the next interval.
    fn on_usage_response(&mut self, host: &mut impl Host, status: Option<u16>) {
        match status {
            Some(200..=299) => {
                self.usage.finish(true);
                host.counter_add(metrics::USAGE_SENT, 1);
                if self.usage.has_backlog() {
                    self.send_usage(host);
                }
            }
            Some(413) => {
                self.usage.split_pending();
                host.counter_add(metrics::USAGE_FAILED, 1);
                host.log(
                    LogLevel::Warn,
                    "usage report refused as too large (413); sending it again in smaller batches",
                );
                self.send_usage(host);
            }
            Some(400) => {
                let requests = self.usage.drop_pending();
                host.counter_add(metrics::USAGE_DROPPED, 1);
                host.counter_add(metrics::USAGE_DROPPED_REQUESTS, requests);
                host.log(
                    LogLevel::Error,
                    &format!(
                        "usage report refused as invalid (400); dropped it ({requests} requests) so later counts are not blocked"
                    ),
                );
            }
            _ => {
                self.usage.finish(false);
                host.counter_add(metrics::USAGE_FAILED, 1);
                host.log(
                    LogLevel::Warn,
                    &format!("usage report failed (status {status:?}); will retry the same batch"),
                );
            }
        }
    }

    /// The answer to a call this worker made (key-set, usage or canary hits).
    pub fn on_response(&mut self, host: &mut impl Host, token: u32, resp: &HttpResponse) {
        if self.canary.owns(token) {
            let edge_id = self.syncer.edge_id(host);
            self.canary
                .on_response(host, &self.config, resp.status, edge_id.as_deref());
            return;
        }
        if self.usage_token == Some(token) {
            self.usage_token = None;
            self.on_usage_response(host, resp.status);
            return;
        }
        self.syncer.on_response(host, &self.config, token, resp);
    }
}
