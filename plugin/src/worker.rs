//! One worker's filter state: configuration, key-set sync and usage, behind the [`Host`] seam.
//!
//! The proxy-wasm glue owns one [`Worker`] per root context (one per Envoy worker thread) and
//! forwards timer ticks, HTTP call answers and requests to it.

use keygate_protocol::KeyId;

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
}

/// A worker's filter state.
#[derive(Debug)]
pub struct Worker {
    config: Config,
    syncer: Syncer,
    usage: UsageTracker<KeyId>,
    usage_token: Option<u32>,
    next_usage_ms: u64,
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

    /// Timer tick: sync, then usage reporting when due.
    pub fn tick(&mut self, host: &mut impl Host) {
        self.usage.fold();
        self.syncer.tick(host, &self.config);
        let now = host.now_ms();
        if now >= self.next_usage_ms {
            self.next_usage_ms = now + self.config.usage_report_interval_ms;
            self.send_usage(host);
        }
    }

    fn send_usage(&mut self, host: &mut impl Host) {
        let Some(batch) = self.usage.next_batch() else {
            return;
        };
        let body = match serde_json::to_vec(batch) {
            Ok(b) => b,
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!("keygate: usage batch did not encode: {e}"),
                );
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
                ("authorization", format!("Bearer {}", self.config.edge_key)),
                ("content-type", "application/json".to_owned()),
            ],
            body: Some(body),
            timeout_ms: self.config.request_timeout_ms,
        };
        match host.dispatch(call) {
            Ok(token) => self.usage_token = Some(token),
            Err(e) => {
                host.log(
                    LogLevel::Warn,
                    &format!("keygate: usage report not sent: {e}"),
                );
                host.counter_add(metrics::USAGE_FAILED, 1);
                self.usage.finish(false);
            }
        }
    }

    /// The answer to a call this worker made (key-set or usage).
    pub fn on_response(&mut self, host: &mut impl Host, token: u32, resp: &HttpResponse) {
        if self.usage_token == Some(token) {
            self.usage_token = None;
            let ok = resp.status.is_some_and(|s| (200..300).contains(&s));
            self.usage.finish(ok);
            if ok {
                host.counter_add(metrics::USAGE_SENT, 1);
            } else {
                host.counter_add(metrics::USAGE_FAILED, 1);
                host.log(
                    LogLevel::Warn,
                    &format!(
                        "keygate: usage report failed (status {:?}); will retry the same batch",
                        resp.status
                    ),
                );
            }
            return;
        }
        self.syncer.on_response(host, &self.config, token, resp);
    }
}
