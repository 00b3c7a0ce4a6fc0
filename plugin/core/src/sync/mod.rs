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
//!
//! [`Syncer`], its state and its tick are here; its parts are in `lease` (who leads), `poll`
//! (the leader's calls to the control plane and their answers), `failure` (why a call failed,
//! backoff), `publish` (the head record, snapshot and deltas in shared data), `follow` (catching
//! up with them), `wake` (the wake-up queues), `vm` (a VM's index, the idle main-thread VM),
//! `gauges` (per-VM gauges), `identity` (the edge id and report each call carries) and `metrics` (every metric name). Their public items are
//! re-exported: every path is `sync::…`.

mod failure;
mod follow;
mod gauges;
mod identity;
mod lease;
pub mod metrics;
mod poll;
mod publish;
mod vm;
mod wake;

use std::sync::Arc;

use keygate_protocol::keyset::KeySet;

pub use failure::{MAX_BACKOFF_MS, SyncFailure, backoff_ms};
pub use identity::VERSION;
pub use lease::lease_ttl_ms;
pub use poll::MIN_POLL_GAP_MS;
pub use publish::{Head, MAX_CHAIN};

use crate::config::Config;
use crate::decision::KeySetState;
use crate::host::{Host, LogLevel};

/// Per-worker sync state.
#[derive(Debug)]
pub struct Syncer {
    ns: String,
    worker: u64,
    /// Behind an `Arc` so that a shell running one VM for a whole process can share it with
    /// its request threads ([`Syncer::shared_key_set`]); changes go through `Arc::make_mut`,
    /// a copy only while a shell holds it (never in proxy-wasm, where nothing else does), and
    /// a cheap one: `KeySet`'s clone shares its main array and copies only the overlay.
    set: Option<Arc<KeySet>>,
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
    /// The process's edge id once read or drawn (`identity`).
    edge_id: Option<String>,
    /// Envoy's node id and cluster, read once by the first call that reports them.
    node: Option<identity::Node>,
    /// Whether this VM counted itself in `<ns>/workers`.
    counted_worker: bool,
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
            edge_id: None,
            node: None,
            counted_worker: false,
        }
    }

    /// This worker's key set, if any sync succeeded.
    pub fn key_set(&self) -> Option<&KeySet> {
        self.set.as_deref()
    }

    /// This worker's key set as a shared reference (a shell that serves requests from other
    /// threads publishes it to them; the next change then copies its overlay).
    pub fn shared_key_set(&self) -> Option<&Arc<KeySet>> {
        self.set.as_ref()
    }

    /// When the control plane last answered successfully, as the set reflects it (ms).
    pub fn fresh_at_ms(&self) -> Option<u64> {
        self.fresh_at_ms
    }

    /// The set's state for decisions at `now_ms`.
    pub fn state(&self, config: &Config, now_ms: u64) -> KeySetState<'_> {
        state_of(self.key_set(), self.fresh_at_ms, config, now_ms)
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
        self.set.as_deref().and_then(KeySet::revision)
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
        self.count_worker(host);
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
}

/// The state for decisions at `now_ms` of `set`, fresh as of `fresh_at_ms` (the last successful
/// control-plane answer it reflects): none or never fresh, unavailable; older than
/// `max_staleness_s`, stale; else fresh.
pub fn state_of<'a>(
    set: Option<&'a KeySet>,
    fresh_at_ms: Option<u64>,
    config: &Config,
    now_ms: u64,
) -> KeySetState<'a> {
    match (set, fresh_at_ms) {
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
