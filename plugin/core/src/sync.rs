//! Key-set sync: one leader per VM polls the control plane, every worker follows via shared data.
//!
//! * **Lease.** Shared data `<ns>/lease` holds `<owner hex> <expiry ms>`. A worker becomes (or
//!   stays) leader by writing it with compare-and-swap when it is free, lapsed or its own; a dead
//!   leader's lease lapses after [`lease_ttl_ms`]. Only the leader calls the control plane.
//! * **Publication.** After applying a response, the leader publishes what it applied:
//!   a snapshot under `<ns>/snap` (the bytes it received, or its own re-encoding when the delta
//!   chain gets long), deltas under `<ns>/delta/<target revision>`, and last the small
//!   `<ns>/head` record `{rev, ok_ms, snap_rev, chain:[[base,target],…]}` naming them.
//! * **Following.** Each worker reads `head` when the leader wakes it and on every tick; if it is
//!   behind, it applies the chain of deltas starting at its own revision, or else the snapshot
//!   and the chain after it. `KeySet::apply` is atomic and checks delta bases, so a torn or
//!   garbled read changes nothing.
//! * **Wake-up.** Each worker that keeps a set registers the shared queue `<ns>/wake/<vm index>`;
//!   after publishing, the leader enqueues its revision to every other VM's queue, and the host
//!   runs that VM's `on_queue_ready` on its own thread at once. A change reaches every worker in
//!   the time of a callback, not of a tick; the tick remains the fallback (a VM whose queue the
//!   host refused, a wake-up lost). A VM that dies with its queue registered leaves that queue
//!   behind: each later publication adds one small item to it until the process restarts (VMs
//!   die only on a crash, which Envoy does not recover from in place).
//! * **Staleness.** A worker's set is as fresh as the last successful control-plane answer it
//!   reflects (`ok_ms` of the head it caught up to). Before any: fail closed. Past
//!   `max_staleness_s`: the configured failure mode.
//! * **Failures.** Unreachable, non-2xx, unauthorized, garbled or out-of-sequence responses are
//!   logged and counted and never touch the set; the leader backs off exponentially with jitter.

use keygate_protocol::keyset::{ApplyError, KeySet};
use keygate_protocol::wire;
use keygate_protocol::wire::MessageKind;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::decision::KeySetState;
use crate::host::{Host, HttpCall, HttpResponse, LogLevel, SharedDataError};

/// Longest delta chain kept in shared data before the leader publishes a fresh snapshot.
pub const MAX_CHAIN: usize = 32;
/// Longest backoff after repeated failures, in milliseconds: after an outage of any length the
/// leader tries again within this (±20 %) of the control plane's return, so the set is fresh
/// (and revocations made meanwhile enforced) seconds after it, not half a minute. One failed
/// connection attempt per proxy every few seconds costs a control plane nothing.
pub const MAX_BACKOFF_MS: u64 = 4_000;

/// Shortest time from the start of one key-set call to the start of the next, with long-poll:
/// an answer that brings changes is followed by the next poll at once, except while changes
/// arrive faster than this, when they are coalesced. This bounds a proxy's calls to 10 a second
/// under any churn (a fleet of 1,000 proxies: 10,000, not one per change each), and adds at
/// most this much to a revocation's way to the edge while keys churn; an isolated change still
/// arrives in milliseconds (the parked poll answers at once).
pub const MIN_POLL_GAP_MS: u64 = 100;

/// Why a sync attempt failed (metric `keygate.sync.failure.<code>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncFailure {
    /// The call could not be started.
    Dispatch,
    /// No HTTP answer (connection refused or reset, no healthy host).
    Unreachable,
    /// 401 or 403: the edge key was refused.
    Unauthorized,
    /// Another non-success status. Envoy answers a call that ran past its timeout with its own
    /// 504 ("upstream request timeout"), so a slow control plane is counted here (the log names
    /// the status).
    Status,
    /// The body did not decode as a key-set message.
    Garbled,
    /// A delta whose base is not our revision.
    BaseMismatch,
}

impl SyncFailure {
    /// Every failure, for pre-registering metrics.
    pub const ALL: [SyncFailure; 6] = [
        SyncFailure::Dispatch,
        SyncFailure::Unreachable,
        SyncFailure::Unauthorized,
        SyncFailure::Status,
        SyncFailure::Garbled,
        SyncFailure::BaseMismatch,
    ];

    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            SyncFailure::Dispatch => "dispatch",
            SyncFailure::Unreachable => "unreachable",
            SyncFailure::Unauthorized => "unauthorized",
            SyncFailure::Status => "status",
            SyncFailure::Garbled => "garbled",
            SyncFailure::BaseMismatch => "base_mismatch",
        }
    }

    /// `keygate.sync.failure.<code>`.
    pub fn metric_name(self) -> String {
        format!("keygate.sync.failure.{}", self.code())
    }
}

/// Metric names used by the sync machine.
pub mod metrics {
    /// Counter: calls made to the key-set feed.
    pub const CALLS: &str = "keygate.sync.calls";
    /// Counter: successful answers (200 applied, 304, or no change).
    pub const SUCCESS: &str = "keygate.sync.success";
    /// Counter: revisions picked up from shared data by following.
    pub const FOLLOWED: &str = "keygate.sync.followed";
    /// Counter: of those, revisions picked up at once because the leader woke the VM.
    pub const WOKEN: &str = "keygate.sync.woken";
    /// Gauge: revision of the set (the leader's, for the process; per VM under `keygate.vm.<n>.`).
    pub const REVISION: &str = "keygate.keyset.revision";
    /// Gauge: keys in the set (likewise).
    pub const KEYS: &str = "keygate.keyset.keys";
    /// Gauge: heap bytes of the set (likewise).
    pub const HEAP_BYTES: &str = "keygate.keyset.heap_bytes";
    /// Gauge: seconds since the last successful sync the set reflects (likewise).
    pub const STALENESS: &str = "keygate.keyset.staleness_seconds";
    /// Gauge: the VM's linear memory in bytes (likewise).
    pub const MEMORY: &str = "keygate.wasm.memory_bytes";

    /// The per-VM name of a gauge: `keygate.vm.<index>.<rest>` for `keygate.<rest>`. Envoy
    /// keeps one value per name for the whole process (every VM writes the same stat), so a
    /// VM's own value needs its own name; `envoy/envoy.yaml`'s `stats_tags` turn the index
    /// back into a `keygate_vm` label.
    pub fn per_vm(index: u32, gauge: &str) -> String {
        let rest = gauge.strip_prefix("keygate.").unwrap_or(gauge);
        format!("keygate.vm.{index}.{rest}")
    }
}

/// The lease's time to live: long enough to survive a few missed ticks.
pub fn lease_ttl_ms(config: &Config) -> u64 {
    (config.tick_period_ms() * 10).max(2000)
}

/// The head record in shared data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Head {
    /// Latest published revision.
    pub rev: u64,
    /// When the leader last heard successfully from the control plane (ms).
    pub ok_ms: u64,
    /// Revision of the published snapshot.
    pub snap_rev: u64,
    /// Published deltas ending at `rev`, `(base, target)`, in order: those after the snapshot,
    /// and after a compaction also the one delta that led to it.
    pub chain: Vec<(u64, u64)>,
}

/// What a response did to the set: a snapshot (`base: None`) or a delta from `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    /// `Some(base)` for a delta, `None` for a snapshot.
    base: Option<u64>,
    /// The revision it brought the set to.
    target: u64,
}

/// Per-worker sync state.
#[derive(Debug)]
pub struct Syncer {
    ns: String,
    worker: u64,
    set: Option<KeySet>,
    fresh_at_ms: Option<u64>,
    leader: bool,
    in_flight: Option<u32>,
    /// When the call in flight was dispatched: the next plain poll is due one interval after
    /// it, so answer time and tick rounding do not stretch the period.
    poll_started_ms: u64,
    next_poll_ms: u64,
    failures: u32,
    force_snapshot: bool,
    /// This VM's index among the VMs of its process that ever ticked (a counter in shared
    /// data), for its per-VM gauges; claimed on the first tick.
    vm_index: Option<u32>,
    /// Presumed Envoy's main-thread VM, which never serves a request: it keeps no key set,
    /// neither follows nor leads, until a request proves otherwise ([`Syncer::wake`]).
    idle: bool,
    /// The token of this VM's wake-up queue (`<ns>/wake/<vm index>`), once registered.
    wake_queue: Option<u32>,
}

impl Syncer {
    /// A syncer for worker `worker` (random id), with shared data under `keygate/<cluster>/`.
    pub fn new(config: &Config, worker: u64) -> Self {
        Self {
            ns: format!("keygate/{}", config.cluster),
            worker,
            set: None,
            fresh_at_ms: None,
            leader: false,
            in_flight: None,
            poll_started_ms: 0,
            next_poll_ms: 0,
            failures: 0,
            force_snapshot: false,
            vm_index: None,
            idle: false,
            wake_queue: None,
        }
    }

    /// This worker's key set, if any sync succeeded.
    pub fn key_set(&self) -> Option<&KeySet> {
        self.set.as_ref()
    }

    /// The set's state for decisions at `now_ms`.
    pub fn state(&self, config: &Config, now_ms: u64) -> KeySetState<'_> {
        match (&self.set, self.fresh_at_ms) {
            (Some(set), Some(at)) => {
                if now_ms.saturating_sub(at) > config.max_staleness_s * 1000 {
                    KeySetState::Stale(set)
                } else {
                    KeySetState::Fresh(set)
                }
            }
            _ => KeySetState::Unavailable,
        }
    }

    /// Whether this worker held the lease at its last tick.
    pub fn is_leader(&self) -> bool {
        self.leader
    }

    /// The token of the call in flight, if any.
    pub fn in_flight(&self) -> Option<u32> {
        self.in_flight
    }

    /// Revision of this worker's set.
    pub fn revision(&self) -> Option<u64> {
        self.set.as_ref().and_then(KeySet::revision)
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.ns)
    }

    /// Timer tick: follow the published head, take or renew the lease, poll when due, update gauges.
    /// Without an edge key the worker neither leads nor calls: it repeats why once a minute.
    pub fn tick(&mut self, host: &mut impl Host, config: &Config) {
        let now = host.now_ms();
        self.claim_vm_index(host);
        if self.idle {
            return;
        }
        self.register_wake_queue(host);
        self.follow(host);
        if let Some(why) = config.missing_edge_key() {
            if now >= self.next_poll_ms {
                host.log(LogLevel::Error, &why);
                self.next_poll_ms = now + 60_000;
            }
            self.report_gauges(host, config, now);
            return;
        }
        self.leader = self.acquire_lease(host, config, now);
        if self.leader {
            self.maybe_poll(host, config, now);
        }
        self.report_gauges(host, config, now);
    }

    /// This VM's gauges: under its per-VM names always, under the plain names when it leads
    /// (the process's view: what its leader fetched).
    fn report_gauges(&self, host: &mut impl Host, _config: &Config, now: u64) {
        let mut values: [(&str, Option<u64>); 4] = [
            (metrics::REVISION, None),
            (metrics::KEYS, None),
            (metrics::HEAP_BYTES, None),
            (metrics::STALENESS, None),
        ];
        if let Some(set) = &self.set {
            values[0].1 = Some(set.revision().unwrap_or(0));
            values[1].1 = Some(set.len() as u64);
            values[2].1 = Some(set.heap_bytes() as u64);
        }
        values[3].1 = self.fresh_at_ms.map(|at| now.saturating_sub(at) / 1000);
        for (name, value) in values {
            if let Some(v) = value {
                self.gauge(host, name, v);
            }
        }
    }

    /// Sets `name` under this VM's per-VM name, and under the plain name when it leads.
    pub fn gauge(&self, host: &mut impl Host, name: &str, value: u64) {
        if let Some(index) = self.vm_index {
            host.gauge_set(&metrics::per_vm(index, name), value);
        }
        if self.leader {
            host.gauge_set(name, value);
        }
    }

    /// Called once when the VM is configured: catches up with a published set, unless presumed
    /// Envoy's main-thread VM. Envoy configures, for one filter, first a
    /// throw-away copy of the VM (proxy-wasm's configuration canary, destroyed at once), then
    /// the main thread's VM, then one per worker; only the workers' VMs ever see a request. The
    /// VM configured second in a process is therefore presumed the main thread's, and keeps no
    /// key set (a whole copy of it, otherwise, for nothing). Should that presumption be wrong
    /// (another host, another order), its first request wakes it ([`Syncer::wake`]).
    pub fn on_configure(&mut self, host: &mut impl Host) {
        if self.claim_counter(host, "configured") == Some(1) {
            self.idle = true;
            host.log(
                LogLevel::Info,
                "this VM was configured second in the process (Envoy's main-thread VM, which serves no request): it keeps no key set",
            );
            return;
        }
        // A VM configured while a set is published (a worker's VM rebuilt after a crash, a
        // new configuration) serves it from its first request. Reading shared data takes no
        // lease, so the canary may do it too; at a process's start nothing is published yet.
        self.follow(host);
    }

    /// Whether this VM keeps no key set (see [`Syncer::on_configure`]).
    pub fn is_idle(&self) -> bool {
        self.idle
    }

    /// The VM serves a request: if it was idle, it catches up with the published set now.
    pub fn wake(&mut self, host: &mut impl Host) {
        if self.idle {
            self.idle = false;
            self.follow(host);
        }
    }

    /// The leader woke this VM (its queue has items): follow the published head now.
    pub fn on_queue_ready(&mut self, host: &mut impl Host, config: &Config) {
        if let Some(token) = self.wake_queue {
            host.queue_drain(token);
        }
        if self.idle {
            return;
        }
        let before = self.revision();
        self.follow(host);
        if self.revision() != before {
            host.counter_add(metrics::WOKEN, 1);
        }
        let now = host.now_ms();
        self.report_gauges(host, config, now);
    }

    fn wake_queue_name(&self, index: u32) -> String {
        format!("{}/wake/{index}", self.ns)
    }

    /// Registers this VM's wake-up queue once it has an index (a VM that keeps a set only).
    fn register_wake_queue(&mut self, host: &mut impl Host) {
        if self.wake_queue.is_some() {
            return;
        }
        if let Some(index) = self.vm_index {
            self.wake_queue = host.queue_register(&self.wake_queue_name(index));
        }
    }

    /// Wakes every other VM of the process that registered a wake-up queue, with `revision`.
    fn wake_followers(&self, host: &mut impl Host, revision: u64) {
        let (count, _) = host.shared_get(&self.key("vms"));
        let count: u32 = count
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let message = revision.to_string();
        for index in (0..count).filter(|&i| Some(i) != self.vm_index) {
            host.queue_enqueue(&self.wake_queue_name(index), message.as_bytes());
        }
    }

    /// Claims this VM's index: the shared counter's value, incremented with compare-and-swap.
    fn claim_vm_index(&mut self, host: &mut impl Host) {
        if self.vm_index.is_none() {
            self.vm_index = self.claim_counter(host, "vms");
        }
    }

    /// Takes the current value of the shared counter `name` and increments it
    /// (compare-and-swap); `None` if shared data keeps refusing.
    fn claim_counter(&mut self, host: &mut impl Host, name: &str) -> Option<u32> {
        let key = self.key(name);
        for _ in 0..8 {
            let (value, cas) = host.shared_get(&key);
            let taken: u32 = value
                .as_deref()
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let next = (taken + 1).to_string();
            if host.shared_set(&key, next.as_bytes(), cas).is_ok() {
                if cas.is_some() {
                    return Some(taken);
                }
                // First write of the key is not compare-and-swapped: read back who won.
                let (v, _) = host.shared_get(&key);
                if v.as_deref() == Some(next.as_bytes()) {
                    return Some(taken);
                }
            }
        }
        None
    }

    fn read_head(&self, host: &impl Host) -> (Option<Head>, Option<u32>) {
        let (v, cas) = host.shared_get(&self.key("head"));
        let head = v.and_then(|b| serde_json::from_slice::<Head>(&b).ok());
        (head, cas)
    }

    /// Catches up with the published head (deltas from our revision, else snapshot + deltas).
    fn follow(&mut self, host: &mut impl Host) {
        let (Some(head), _) = self.read_head(host) else {
            return;
        };
        let mine = self.revision();
        if mine == Some(head.rev) {
            if self.fresh_at_ms.is_none_or(|t| t < head.ok_ms) {
                self.fresh_at_ms = Some(head.ok_ms);
            }
            return;
        }
        if mine.is_some_and(|m| m > head.rev) {
            // We are ahead (we were leader and published later, or head is being replaced).
            return;
        }
        let before = mine;
        if !self.apply_chain(host, &head) {
            // Not reachable by deltas: take the snapshot, then the chain after it.
            let (snap, _) = host.shared_get(&self.key("snap"));
            if let Some(bytes) = snap.filter(|b| !b.is_empty()) {
                let mut set = KeySet::new();
                match set.apply(&bytes) {
                    Ok(_) => {
                        // Replace only if it moves us forward.
                        if set.revision() > self.revision() {
                            self.set = Some(set);
                        }
                    }
                    Err(e) => host.log(
                        LogLevel::Warn,
                        &format!("published snapshot did not apply ({e}); will retry"),
                    ),
                }
            }
            self.apply_chain(host, &head);
        }
        if self.revision() == Some(head.rev) {
            self.fresh_at_ms = Some(self.fresh_at_ms.map_or(head.ok_ms, |t| t.max(head.ok_ms)));
        }
        if self.revision() != before {
            host.counter_add(metrics::FOLLOWED, 1);
        }
    }

    /// Applies published deltas starting at our revision; true when it reached `head.rev`.
    fn apply_chain(&mut self, host: &mut impl Host, head: &Head) -> bool {
        let Some(set) = self.set.as_mut() else {
            return false;
        };
        for &(base, target) in &head.chain {
            if set.revision() != Some(base) {
                continue;
            }
            let (bytes, _) = host.shared_get(&format!("{}/delta/{target}", self.ns));
            let Some(bytes) = bytes else { return false };
            if set.apply(&bytes).is_err() {
                return false;
            }
        }
        set.revision() == Some(head.rev)
    }

    fn acquire_lease(&mut self, host: &mut impl Host, config: &Config, now: u64) -> bool {
        let key = self.key("lease");
        let (value, cas) = host.shared_get(&key);
        let current = value.as_deref().and_then(parse_lease);
        let free = match current {
            None => true,
            Some((owner, until)) => owner == self.worker || until <= now,
        };
        if !free {
            return false;
        }
        let mine = format!("{:016x} {}", self.worker, now + lease_ttl_ms(config));
        match host.shared_set(&key, mine.as_bytes(), cas) {
            Ok(()) => {
                if cas.is_none() {
                    // First write of the key cannot be compare-and-swapped: read back who won.
                    let (v, _) = host.shared_get(&key);
                    v.as_deref()
                        .and_then(parse_lease)
                        .is_some_and(|(o, _)| o == self.worker)
                } else {
                    true
                }
            }
            Err(SharedDataError::CasMismatch) => false,
            Err(SharedDataError::Refused) => {
                host.log(LogLevel::Warn, "shared data refused the lease write");
                false
            }
        }
    }

    fn maybe_poll(&mut self, host: &mut impl Host, config: &Config, now: u64) {
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
        let call = HttpCall {
            cluster: &config.cluster,
            headers: vec![
                (":method", "GET".to_owned()),
                (":path", path),
                (":authority", config.authority.clone()),
                (
                    "authorization",
                    format!("Bearer {}", config.edge_key.as_deref().unwrap_or_default()),
                ),
                ("accept", wire::CONTENT_TYPE.to_owned()),
            ],
            body: None,
            timeout_ms: config.sync_timeout_ms(),
        };
        host.counter_add(metrics::CALLS, 1);
        match host.dispatch(call) {
            Ok(token) => {
                self.in_flight = Some(token);
                self.poll_started_ms = now;
            }
            Err(e) => self.fail(host, config, now, SyncFailure::Dispatch, &e.to_string()),
        }
    }

    fn fail(
        &mut self,
        host: &mut impl Host,
        config: &Config,
        now: u64,
        why: SyncFailure,
        detail: &str,
    ) {
        self.failures = self.failures.saturating_add(1);
        let exp = config
            .sync_interval_ms
            .saturating_mul(1u64 << self.failures.min(16))
            .min(MAX_BACKOFF_MS)
            .max(config.sync_interval_ms);
        // ±20 % jitter so that several proxies do not retry in step.
        let span = exp / 5;
        let jitter = if span == 0 {
            0
        } else {
            host.random_u64() % (2 * span + 1)
        };
        self.next_poll_ms = now + exp - span + jitter;
        host.counter_add(&why.metric_name(), 1);
        host.log(
            LogLevel::Warn,
            &format!(
                "key-set sync failed ({}): {detail}; keeping revision {:?}, retry in {} ms",
                why.code(),
                self.revision(),
                self.next_poll_ms - now
            ),
        );
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
        let result = set.apply(&resp.body);
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
        self.publish(host, now, applied);
        self.report_gauges(host, config, now);
        if config.long_poll_wait_s > 0 && self.leader {
            self.maybe_poll(host, config, now);
        }
    }

    /// Publishes what was applied (or just the fresh `ok_ms`) for the other workers.
    fn publish(&mut self, host: &mut impl Host, now: u64, applied: Option<(Shape, &[u8])>) {
        let Some(rev) = self.revision() else { return };
        let (head, cas) = self.read_head(host);
        let head_was_absent = head.is_none();
        let old = head.clone().unwrap_or_default();
        let new_head = match applied {
            None => {
                if head.is_none() || old.rev != rev {
                    // Nothing published matches us: publish our set as a snapshot.
                    match self.publish_snapshot(host, &old, None) {
                        Some(h) => h,
                        None => return,
                    }
                } else {
                    Head { ok_ms: now, ..old }
                }
            }
            Some((shape, bytes)) => match shape.base {
                Some(base) if head.is_some() && old.rev == base && old.chain.len() < MAX_CHAIN => {
                    if host
                        .shared_set(&format!("{}/delta/{}", self.ns, shape.target), bytes, None)
                        .is_err()
                    {
                        return;
                    }
                    let mut chain = old.chain.clone();
                    chain.push((base, shape.target));
                    Head {
                        rev: shape.target,
                        ok_ms: now,
                        snap_rev: old.snap_rev,
                        chain,
                    }
                }
                Some(base) if head.is_some() && old.rev == base => {
                    // The chain is full: compact it into a fresh snapshot, but keep this last
                    // delta, so that the followers one revision behind (all of them, woken on
                    // every change) catch up by it and never read the snapshot: reading it
                    // would build a second set beside theirs and grow their wasm memory for good.
                    let Some(mut h) = self.publish_snapshot(host, &old, None) else {
                        return;
                    };
                    if host
                        .shared_set(&format!("{}/delta/{}", self.ns, shape.target), bytes, None)
                        .is_ok()
                    {
                        h.chain = vec![(base, shape.target)];
                    }
                    h
                }
                Some(_) => match self.publish_snapshot(host, &old, None) {
                    Some(h) => h,
                    None => return,
                },
                None => match self.publish_snapshot(host, &old, Some(bytes)) {
                    Some(h) => h,
                    None => return,
                },
            },
        };
        let head = Head {
            ok_ms: now,
            ..new_head
        };
        let Ok(json) = serde_json::to_vec(&head) else {
            return;
        };
        if let Err(e) = host.shared_set(&self.key("head"), &json, cas) {
            host.log(
                LogLevel::Warn,
                &format!("could not publish revision {rev}: {e}"),
            );
        } else if old.rev != rev || head_was_absent {
            // The followers need the new revision now; a fresher `ok_ms` can wait for a tick.
            self.wake_followers(host, rev);
        }
    }

    fn publish_snapshot(
        &mut self,
        host: &mut impl Host,
        old: &Head,
        received: Option<&[u8]>,
    ) -> Option<Head> {
        let set = self.set.as_ref()?;
        let rev = set.revision()?;
        let encoded;
        let bytes = match received {
            Some(b) => b,
            None => {
                encoded = set.encode_snapshot();
                &encoded
            }
        };
        if let Err(e) = host.shared_set(&self.key("snap"), bytes, None) {
            host.log(
                LogLevel::Warn,
                &format!("could not publish the snapshot: {e}"),
            );
            return None;
        }
        // Free the superseded deltas.
        for &(_, t) in &old.chain {
            let _ = host.shared_set(&format!("{}/delta/{t}", self.ns), &[], None);
        }
        Some(Head {
            rev,
            ok_ms: 0,
            snap_rev: rev,
            chain: Vec::new(),
        })
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

fn parse_lease(v: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (owner, until) = s.split_once(' ')?;
    Some((u64::from_str_radix(owner, 16).ok()?, until.parse().ok()?))
}
