//! Polling: the leader's calls to the control plane's key-set feed (plain or long-poll) and
//! what their answers do.

use std::sync::Arc;

use keygate_protocol::keyset::ApplyError;
use keygate_protocol::wire;
use keygate_protocol::wire::MessageKind;

use super::failure::SyncFailure;
use super::publish::Shape;
use super::{Syncer, metrics};
use crate::config::Config;
use crate::host::{Host, HttpCall, HttpResponse};

/// Shortest time from the start of one key-set call to the start of the next, with long-poll:
/// an answer that brings changes is followed by the next poll at once, except while changes
/// arrive faster than this, when they are coalesced. This bounds a proxy's calls to 10 a second
/// under any churn (a fleet of 1,000 proxies: 10,000, not one per change each), and adds at
/// most this much to a revocation's way to the edge while keys churn; an isolated change still
/// arrives in milliseconds (the parked poll answers at once).
pub const MIN_POLL_GAP_MS: u64 = 100;

impl Syncer {
    pub(super) fn maybe_poll(&mut self, host: &mut impl Host, config: &Config, now: u64) {
        if self.in_flight.is_some() || now < self.next_poll_ms {
            return;
        }
        let mut path = String::from("/v1/keyset");
        let mut sep = '?';
        if !self.force_snapshot
            && let Some(rev) = self.revision()
        {
            path.push_str(&format!("?since={rev}"));
            sep = '&';
        }
        if config.long_poll_wait_s > 0 && self.set.is_some() && !self.force_snapshot {
            path.push_str(&format!("{sep}wait={}", config.long_poll_wait_s));
        }
        let report = self.edge_headers(host, now);
        let mut call = HttpCall {
            cluster: &config.cluster,
            headers: vec![
                (":method", "GET".to_owned()),
                (":path", path),
                (":authority", config.authority.clone()),
                (
                    "authorization",
                    format!("Bearer {}", config.edge_key.as_deref().unwrap_or_default()),
                ),
                ("accept", wire::ACCEPT_V3.to_owned()),
            ],
            body: None,
            timeout_ms: config.sync_timeout_ms(),
        };
        call.headers.extend(report);
        host.counter_add(metrics::CALLS, 1);
        match host.dispatch(call) {
            Ok(token) => {
                self.in_flight = Some(token);
                self.poll_started_ms = now;
            }
            Err(e) => self.fail(host, config, now, SyncFailure::Dispatch, &e.to_string()),
        }
    }

    /// Handles the answer to a key-set call. Ignores tokens that are not ours.
    pub fn on_response(
        &mut self,
        host: &mut impl Host,
        config: &Config,
        token: u32,
        resp: &HttpResponse,
    ) {
        if self.in_flight != Some(token) {
            return;
        }
        self.in_flight = None;
        let now = host.now_ms();
        match resp.status {
            None => return self.fail(host, config, now, SyncFailure::Unreachable, "no response"),
            Some(304) => return self.succeed(host, config, now, None),
            Some(401 | 403) => {
                let s = resp.status.unwrap_or_default();
                return self.fail(
                    host,
                    config,
                    now,
                    SyncFailure::Unauthorized,
                    &format!("status {s}"),
                );
            }
            Some(200) => {}
            Some(503) if is_proxy_unreachable_reply(resp) => {
                return self.fail(
                    host,
                    config,
                    now,
                    SyncFailure::Unreachable,
                    "the proxy could not reach the control plane",
                );
            }
            Some(s) => {
                return self.fail(
                    host,
                    config,
                    now,
                    SyncFailure::Status,
                    &format!("status {s}"),
                );
            }
        }
        let ct_ok = resp.header("content-type").is_some_and(|c| {
            c.split(';')
                .next()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case(wire::CONTENT_TYPE))
        });
        if !ct_ok {
            return self.fail(
                host,
                config,
                now,
                SyncFailure::Garbled,
                "unexpected content type",
            );
        }
        let had_set = self.set.is_some();
        let mut set = self.set.take().unwrap_or_default();
        let before = set.revision();
        let result = Arc::make_mut(&mut set).apply(&resp.body);
        if had_set || result.is_ok() {
            self.set = Some(set);
        }
        match result {
            Ok(applied) => {
                let base = match applied.kind {
                    MessageKind::Snapshot => None,
                    MessageKind::Delta => before,
                };
                self.force_snapshot = false;
                let shape = Shape {
                    base,
                    target: applied.revision,
                };
                self.succeed(host, config, now, Some((shape, resp.body.as_slice())));
            }
            Err(ApplyError::NotNewer) => self.succeed(host, config, now, None),
            Err(ApplyError::BaseMismatch { .. }) => {
                self.force_snapshot = true;
                self.fail(
                    host,
                    config,
                    now,
                    SyncFailure::BaseMismatch,
                    "delta does not start at our revision",
                );
            }
            Err(e) => self.fail(host, config, now, SyncFailure::Garbled, &e.to_string()),
        }
    }

    fn succeed(
        &mut self,
        host: &mut impl Host,
        config: &Config,
        now: u64,
        applied: Option<(Shape, &[u8])>,
    ) {
        self.failures = 0;
        self.fresh_at_ms = Some(now);
        self.next_poll_ms = if config.long_poll_wait_s > 0 {
            (self.poll_started_ms + MIN_POLL_GAP_MS).max(now)
        } else {
            (self.poll_started_ms + config.sync_interval_ms).max(now)
        };
        host.counter_add(metrics::SUCCESS, 1);
        if host.has_other_vms() {
            self.publish(host, now, applied);
        }
        self.report_gauges(host, config, now);
        if config.long_poll_wait_s > 0 && self.leader {
            self.maybe_poll(host, config, now);
        }
    }
}

/// Whether a `503` is the proxy's own answer for a control plane it could not connect to: Envoy
/// answers a call whose connection was refused or reset, or whose cluster has no healthy host,
/// with a local `503` whose text body says so (`upstream connect error or disconnect/reset
/// before headers…`, `no healthy upstream`); the control plane's own 503s are JSON.
fn is_proxy_unreachable_reply(resp: &HttpResponse) -> bool {
    let body = resp.body.as_slice();
    body.starts_with(b"upstream connect error") || body.starts_with(b"no healthy upstream")
}
