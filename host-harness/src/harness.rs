//! The test-facing driver: N workers over one module, a clock, clusters, and observations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::abi::LogLevel;
use crate::clock::{Clock, DEFAULT_VIRTUAL_START_NANOS};
use crate::cluster::{Cluster, TimeoutDelivery};
use crate::counts::CallCounts;
use crate::error::{HarnessError, Result};
use crate::plugin::Plugin;
use crate::shared::{
    CalloutRecord, LogEntry, MetricValue, Metrics, Recorder, SharedData, SharedQueues, TrapReport,
};
use crate::state::{Env, FailurePolicy, LocalResponse};
use crate::stream::{Disposition, Request, StreamId, StreamOutcome};
use crate::worker::Worker;

/// Most `proxy_on_queue_ready` deliveries processed in one settling pass (guards against two
/// filters feeding each other forever).
const MAX_QUEUE_DELIVERIES: usize = 100_000;

/// Configures and builds a [`Harness`].
#[derive(Debug)]
pub struct HarnessBuilder {
    plugin: Arc<Plugin>,
    workers: usize,
    vm_id: String,
    root_id: String,
    vm_configuration: Vec<u8>,
    plugin_configuration: Vec<u8>,
    clusters: HashMap<String, Cluster>,
    clock: Clock,
    log_level: LogLevel,
    environment: Vec<(String, String)>,
    properties: HashMap<String, Vec<u8>>,
    timeout_delivery: TimeoutDelivery,
    failure_policy: FailurePolicy,
    shared_data: Arc<SharedData>,
    max_memory_bytes: Option<usize>,
    count_calls: bool,
}

impl HarnessBuilder {
    /// Number of workers (instances), at least 1. Default 1.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// The `vm_id` (scope of shared data and queues). Default empty, as in Envoy.
    pub fn vm_id(mut self, vm_id: impl Into<String>) -> Self {
        self.vm_id = vm_id.into();
        self
    }

    /// The plugin name / root id (property `plugin_root_id`). Default empty.
    pub fn root_id(mut self, root_id: impl Into<String>) -> Self {
        self.root_id = root_id.into();
        self
    }

    /// Bytes given to `proxy_on_vm_start`.
    pub fn vm_configuration(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.vm_configuration = bytes.into();
        self
    }

    /// Bytes given to `proxy_on_configure`.
    pub fn plugin_configuration(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.plugin_configuration = bytes.into();
        self
    }

    /// Routes `proxy_http_call`s for `name`.
    pub fn cluster(mut self, name: impl Into<String>, cluster: Cluster) -> Self {
        self.clusters.insert(name.into(), cluster);
        self
    }

    /// Uses the real clock instead of the virtual one.
    pub fn real_time(mut self) -> Self {
        self.clock = Clock::real();
        self
    }

    /// Starts the virtual clock at this many nanoseconds since the epoch.
    pub fn virtual_start(mut self, nanos: u64) -> Self {
        self.clock = Clock::virtual_at(nanos);
        self
    }

    /// The level `proxy_get_log_level` reports; lower logs are dropped. Default `Trace`.
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.log_level = level;
        self
    }

    /// A WASI environment variable (Envoy's `environment_variables`).
    pub fn env_var(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.environment.push((key.into(), value.into()));
        self
    }

    /// A property visible to every context (dotted path, raw bytes).
    pub fn property(mut self, path: &str, value: impl Into<Vec<u8>>) -> Self {
        self.properties
            .insert(path.replace('.', "\0"), value.into());
        self
    }

    /// How timed-out callouts are delivered. Default: Envoy's 504 response.
    pub fn timeout_delivery(mut self, delivery: TimeoutDelivery) -> Self {
        self.timeout_delivery = delivery;
        self
    }

    /// What a stream gets when the filter traps. Default fail closed (503).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    /// Caps each worker's linear memory at `bytes`: a `memory.grow` past it fails (the guest
    /// sees -1, its allocator runs out), as a VM's memory limit would. Default: wasm32's 4 GiB.
    pub fn max_memory(mut self, bytes: usize) -> Self {
        self.max_memory_bytes = Some(bytes);
        self
    }

    /// Counts, per worker, every host call the module makes (by import) and every entry into
    /// the VM (by export, the allocator called back from inside host calls included): read
    /// them with [`Harness::call_counts`] or [`Worker::call_counts`]. Deterministic, unlike a
    /// timing. Off by default, and then free: the module is linked to the plain host functions.
    pub fn count_calls(mut self, count: bool) -> Self {
        self.count_calls = count;
        self
    }

    /// Shares this shared-data store with other harnesses (as Envoy's worker threads of one
    /// process share it): a gateway running one harness per thread passes the same store to each.
    /// Default: a store of this harness's own.
    pub fn shared_data(mut self, store: Arc<SharedData>) -> Self {
        self.shared_data = store;
        self
    }

    /// Starts every worker: instance, `_initialize`, root context, vm_start, configure.
    pub fn build(self) -> Result<Harness> {
        let mut properties = self.properties;
        properties
            .entry("plugin_name".to_owned())
            .or_insert_with(|| self.root_id.clone().into_bytes());
        properties
            .entry("plugin_root_id".to_owned())
            .or_insert_with(|| self.root_id.clone().into_bytes());
        properties
            .entry("plugin_vm_id".to_owned())
            .or_insert_with(|| self.vm_id.clone().into_bytes());
        let env = Arc::new(Env {
            vm_id: self.vm_id,
            vm_configuration: self.vm_configuration,
            plugin_configuration: self.plugin_configuration,
            clusters: self.clusters,
            clock: self.clock,
            log_level: self.log_level,
            environment: self.environment,
            properties,
            timeout_delivery: self.timeout_delivery,
            failure_policy: self.failure_policy,
            max_memory_bytes: self.max_memory_bytes,
            count_calls: self.count_calls,
            shared_data: self.shared_data,
            queues: SharedQueues::default(),
            metrics: Metrics::default(),
            recorder: Recorder::default(),
            queue_ready: Mutex::new(Vec::new()),
            sequence: std::sync::atomic::AtomicU64::new(0),
        });
        let workers = (0..self.workers)
            .map(|index| Worker::start(self.plugin.clone(), env.clone(), index))
            .collect::<Result<Vec<_>>>()?;
        let mut harness = Harness {
            env,
            workers,
            next_worker: 0,
        };
        harness.drain_queue_ready();
        Ok(harness)
    }
}

/// Drives a filter as Envoy would. See the crate documentation for an example.
#[derive(Debug)]
pub struct Harness {
    env: Arc<Env>,
    workers: Vec<Worker>,
    next_worker: usize,
}

impl Harness {
    /// Starts configuring a harness for a loaded plugin.
    pub fn builder(plugin: Plugin) -> HarnessBuilder {
        Self::builder_shared(Arc::new(plugin))
    }

    /// Same as [`Harness::builder`] with a plugin shared between harnesses (compiled once).
    pub fn builder_shared(plugin: Arc<Plugin>) -> HarnessBuilder {
        HarnessBuilder {
            plugin,
            workers: 1,
            vm_id: String::new(),
            root_id: String::new(),
            vm_configuration: Vec::new(),
            plugin_configuration: Vec::new(),
            clusters: HashMap::new(),
            clock: Clock::virtual_at(DEFAULT_VIRTUAL_START_NANOS),
            log_level: LogLevel::Trace,
            environment: Vec::new(),
            properties: HashMap::new(),
            timeout_delivery: TimeoutDelivery::default(),
            failure_policy: FailurePolicy::default(),
            shared_data: Arc::default(),
            max_memory_bytes: None,
            count_calls: false,
        }
    }

    /// Number of workers.
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// A worker (read-only: rebuild count, pending streams, finished outcomes).
    pub fn worker(&self, index: usize) -> Option<&Worker> {
        self.workers.get(index)
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.env.clock
    }

    /// Current host time in nanoseconds since the epoch.
    pub fn now_nanos(&self) -> u64 {
        self.env.clock.now_nanos()
    }

    /// Runs a request on the next worker (round robin) and settles: delivers everything due
    /// now (zero-latency callouts, real HTTP exchanges). Returns the outcome, `Pending` if the
    /// stream still waits (e.g. for a callout with latency; then [`Harness::advance`]).
    pub fn run_request(&mut self, request: Request) -> Result<StreamOutcome> {
        let worker = self.next_worker;
        self.next_worker = (self.next_worker + 1) % self.workers.len();
        self.run_request_on(worker, request)
    }

    /// Runs a request on a given worker and settles.
    pub fn run_request_on(&mut self, worker: usize, request: Request) -> Result<StreamOutcome> {
        let id = self.run_to_rest(worker, request)?;
        self.outcome(id)
    }

    /// As [`Harness::run_request_on`], and a finished stream's outcome is moved out of the
    /// harness instead of copied (as [`Harness::take_outcome`] would): what benchmarks and long
    /// runs use. A stream still pending stays, and its snapshot is returned.
    pub fn run_request_taken_on(
        &mut self,
        worker: usize,
        request: Request,
    ) -> Result<StreamOutcome> {
        let id = self.run_to_rest(worker, request)?;
        match self.take_outcome(id) {
            Some(outcome) => Ok(outcome),
            None => self.outcome(id),
        }
    }

    /// Starts a request and settles (virtual clock), or waits while its callouts are in flight.
    fn run_to_rest(&mut self, worker: usize, request: Request) -> Result<StreamId> {
        let id = self.start_request_on(worker, request)?;
        if self.env.clock.is_virtual() {
            self.settle();
        } else {
            // Real time: wait while the stream has callouts in flight.
            loop {
                self.poll();
                let w = &self.workers[worker];
                let waiting = w
                    .outcome(id)
                    .is_some_and(|o| o.disposition == Disposition::Pending)
                    && w.has_calls_for(id.context_id);
                if !waiting {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(id)
    }

    /// Starts a request on a worker without settling.
    pub fn start_request_on(&mut self, worker: usize, request: Request) -> Result<StreamId> {
        let count = self.workers.len();
        let w = self
            .workers
            .get_mut(worker)
            .ok_or_else(|| HarnessError::Unknown {
                kind: "worker",
                name: format!("{worker} (have {count})"),
            })?;
        let id = w.start_stream(request);
        self.drain_queue_ready();
        Ok(id)
    }

    /// The outcome of a stream (`Pending` while it runs).
    pub fn outcome(&self, id: StreamId) -> Result<StreamOutcome> {
        self.workers
            .get(id.worker)
            .and_then(|w| w.outcome(id))
            .ok_or_else(|| HarnessError::Unknown {
                kind: "stream",
                name: format!("{}/{}", id.worker, id.context_id),
            })
    }

    /// Removes a finished stream's outcome from the harness (`None` if unknown or still
    /// pending). Long runs use it to keep memory bounded.
    pub fn take_outcome(&mut self, id: StreamId) -> Option<StreamOutcome> {
        self.workers.get_mut(id.worker)?.take_outcome(id)
    }

    /// Virtual clock: moves time forward by `by`, firing due ticks and delivering due callout
    /// responses in time order (ties in scheduling order) across all workers. Real clock:
    /// runs the event loop for `by` of wall time.
    pub fn advance(&mut self, by: Duration) {
        if !self.env.clock.is_virtual() {
            self.run_for(by);
            return;
        }
        let target = self.env.clock.after(by);
        loop {
            for worker in &mut self.workers {
                worker.collect_in_flight(true);
            }
            self.drain_queue_ready();
            let next = self
                .workers
                .iter()
                .enumerate()
                .filter_map(|(i, w)| w.next_due().map(|d| (d, i)))
                .min();
            let Some((due, index)) = next.filter(|(d, _)| d.at <= target) else {
                break;
            };
            self.env.clock.set_nanos(due.at);
            self.workers[index].fire_next(due.at);
        }
        self.env.clock.set_nanos(target);
        self.drain_queue_ready();
    }

    /// Delivers everything due now without moving virtual time (`advance(0)`).
    pub fn settle(&mut self) {
        self.advance(Duration::ZERO);
    }

    /// Real clock: delivers finished HTTP exchanges and fires everything due now.
    pub fn poll(&mut self) {
        loop {
            for worker in &mut self.workers {
                worker.collect_in_flight(false);
            }
            self.drain_queue_ready();
            let now = self.env.clock.now_nanos();
            let next = self
                .workers
                .iter()
                .enumerate()
                .filter_map(|(i, w)| w.next_due().map(|d| (d, i)))
                .min();
            let Some((due, index)) = next.filter(|(d, _)| d.at <= now) else {
                break;
            };
            self.workers[index].fire_next(due.at);
        }
    }

    /// Real clock: polls for `duration`, sleeping until the next due event (at most 5 ms).
    pub fn run_for(&mut self, duration: Duration) {
        let deadline = std::time::Instant::now() + duration;
        loop {
            self.poll();
            let now = std::time::Instant::now();
            if now >= deadline {
                break;
            }
            let host_now = self.env.clock.now_nanos();
            let until_next = self
                .workers
                .iter()
                .filter_map(Worker::next_due)
                .min()
                .map(|d| Duration::from_nanos(d.at.saturating_sub(host_now)))
                .unwrap_or(Duration::from_millis(5));
            std::thread::sleep(until_next.min(Duration::from_millis(5)).min(deadline - now));
        }
    }

    fn drain_queue_ready(&mut self) {
        for _ in 0..MAX_QUEUE_DELIVERIES {
            let next = {
                let mut pending = self
                    .env
                    .queue_ready
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if pending.is_empty() {
                    return;
                }
                pending.remove(0)
            };
            let (owner, token) = next;
            if let Some(worker) = self.workers.get_mut(owner.worker) {
                worker.deliver_queue_ready(owner.root_context_id, token);
            }
        }
    }

    /// The host calls and VM entries of all workers together, since the harness was built or
    /// [`Harness::reset_call_counts`]; per worker: [`Worker::call_counts`]. Empty unless built
    /// with [`HarnessBuilder::count_calls`].
    pub fn call_counts(&self) -> CallCounts {
        let mut sum = CallCounts::default();
        for worker in &self.workers {
            sum.add(&worker.call_counts());
        }
        sum
    }

    /// Starts every worker's counts again from zero (say after start-up and a first sync, to
    /// count what one request costs).
    pub fn reset_call_counts(&mut self) {
        for worker in &mut self.workers {
            worker.reset_call_counts();
        }
    }

    /// All captured logs (`proxy_log` and WASI stdout/stderr), in order.
    pub fn logs(&self) -> Vec<LogEntry> {
        self.env.recorder.logs()
    }

    /// Messages logged at exactly `level`.
    pub fn logs_at(&self, level: LogLevel) -> Vec<String> {
        self.logs()
            .into_iter()
            .filter(|l| l.level == level)
            .map(|l| l.message)
            .collect()
    }

    /// All metrics by name.
    pub fn metrics(&self) -> HashMap<String, MetricValue> {
        self.env.metrics.snapshot()
    }

    /// One metric's value (counter/gauge value; see [`MetricValue`] for histograms).
    pub fn metric(&self, name: &str) -> Option<MetricValue> {
        self.env.metrics.snapshot().remove(name)
    }

    /// All callouts made, with their results once delivered.
    pub fn callouts(&self) -> Vec<CalloutRecord> {
        self.env.recorder.callouts()
    }

    /// Takes the captured logs out of the harness, oldest first. The harness records every log
    /// line and callout for inspection; a long-running host (the gateway) drains both with this
    /// and [`Harness::take_callouts`] so memory stays flat.
    pub fn take_logs(&self) -> Vec<LogEntry> {
        self.env.recorder.take_logs()
    }

    /// Takes the callout records out of the harness; a callout still in flight is then no
    /// longer updated with its result.
    pub fn take_callouts(&self) -> Vec<CalloutRecord> {
        self.env.recorder.take_callouts()
    }

    /// All traps (guest message and backtrace).
    pub fn traps(&self) -> Vec<TrapReport> {
        self.env.recorder.traps()
    }

    /// Local responses the filter sent, in stream order per worker.
    pub fn local_responses(&self) -> Vec<LocalResponse> {
        self.workers
            .iter()
            .flat_map(Worker::finished)
            .filter_map(|o| o.local_response.clone())
            .collect()
    }

    /// Reads shared data as the filter sees it (value, cas).
    pub fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.env.shared_data.get(&self.env.vm_id, key).ok()
    }

    /// Writes shared data (cas 0 = unconditional), as another VM would.
    pub fn set_shared_data(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        cas: u32,
    ) -> Result<(), crate::Status> {
        self.env
            .shared_data
            .set(&self.env.vm_id, key, value.into(), cas)
    }

    /// Items waiting in a shared queue, by name (for this harness's `vm_id`).
    pub fn queue_len(&self, name: &str) -> Option<usize> {
        let token = self.env.queues.resolve(&self.env.vm_id, name).ok()?;
        self.env.queues.len(token)
    }
}
