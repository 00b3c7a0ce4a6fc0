//! One worker: the `Worker` type (one wasm instance with its root context, its streams, ticks
//! and callouts), its start-up and rebuild after a trap, and its public API.
//! A `Worker` is `Send`, so it can live on a dedicated thread; all time comes from the
//! shared [`Clock`](crate::Clock) and all cross-worker state from the shared environment.
//!
//! * `exports`: instantiation and the guest's table of typed callback exports.
//! * `scheduler`: the tick timer and HTTP callouts, and what is due when.
//! * `driver`: driving each request/response stream through the filter to its outcome.

mod driver;
mod exports;
mod scheduler;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Store, TypedFunc, WasmParams, WasmResults};

use self::driver::{StreamDriver, derived_properties};
use self::exports::{Exports, instantiate};
use self::scheduler::{Due, PendingCall};
use crate::counts::{CallCounts, Counter, call_export};
use crate::error::{HarnessError, Result};
use crate::plugin::Plugin;
use crate::shared::TrapReport;
use crate::state::{Env, HostState, StreamData};
use crate::stream::{Disposition, Request, StreamId, StreamOutcome};

/// The root context id of every instance (one plugin per VM, as configured by the harness).
pub(crate) const ROOT_CONTEXT_ID: u32 = 1;

/// The guest trapped; the worker is poisoned and its streams have been failed.
#[derive(Debug)]
pub(crate) struct Trapped;

/// One instance of the filter (a simulated Envoy worker thread).
pub struct Worker {
    index: usize,
    plugin: Arc<Plugin>,
    env: Arc<Env>,
    store: Store<HostState>,
    /// Shared so that a callback borrows its export without cloning a `TypedFunc` (a clone
    /// registers its type again, which showed in profiles of every callback).
    exports: Arc<Exports>,
    poisoned: bool,
    rebuilds: u32,
    next_context_id: u32,
    /// Live streams by context id.
    drivers: BTreeMap<u32, StreamDriver>,
    finished: BTreeMap<u32, StreamOutcome>,
    calls: Vec<PendingCall>,
    tick_period: Option<Duration>,
    next_tick: Option<Due>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index)
            .field("poisoned", &self.poisoned)
            .field("rebuilds", &self.rebuilds)
            .field("streams", &self.drivers.len())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Creates the instance and runs Envoy's start-up: `_initialize`, root context,
    /// `proxy_on_vm_start` (VM configuration), `proxy_on_configure` (plugin configuration).
    pub(crate) fn start(plugin: Arc<Plugin>, env: Arc<Env>, index: usize) -> Result<Self> {
        let (store, exports) = instantiate(&plugin, &env, index)?;
        let mut worker = Self {
            index,
            plugin,
            env,
            store,
            exports,
            poisoned: false,
            rebuilds: 0,
            next_context_id: ROOT_CONTEXT_ID + 1,
            drivers: BTreeMap::new(),
            finished: BTreeMap::new(),
            calls: Vec::new(),
            tick_period: None,
            next_tick: None,
        };
        worker.configure()?;
        Ok(worker)
    }

    /// Root context, `proxy_on_vm_start`, `proxy_on_configure` (at start and after a rebuild).
    fn configure(&mut self) -> Result<()> {
        let root = ROOT_CONTEXT_ID as i32;
        let vm_size = self.env.vm_configuration.len() as i32;
        let plugin_size = self.env.plugin_configuration.len() as i32;
        let trap = |during: &str, worker: &mut Self| HarnessError::Trap {
            during: during.to_owned(),
            message: worker
                .env
                .recorder
                .traps()
                .last()
                .map(|t| {
                    format!(
                        "{}{}",
                        t.guest_message
                            .as_deref()
                            .map(|m| format!("{m}\n"))
                            .unwrap_or_default(),
                        t.trap
                    )
                })
                .unwrap_or_default(),
        };
        if self
            .invoke(
                "proxy_on_context_create",
                |e| e.on_context_create.as_ref(),
                ROOT_CONTEXT_ID,
                (root, 0),
            )
            .is_err()
        {
            return Err(trap("proxy_on_context_create", self));
        }
        match self.invoke(
            "proxy_on_vm_start",
            |e| e.on_vm_start.as_ref(),
            ROOT_CONTEXT_ID,
            (root, vm_size),
        ) {
            Err(Trapped) => return Err(trap("proxy_on_vm_start", self)),
            Ok(Some(0)) => return Err(HarnessError::VmStartFailed),
            Ok(_) => {}
        }
        self.store.data_mut().in_configure = true;
        let result = self.invoke(
            "proxy_on_configure",
            |e| e.on_configure.as_ref(),
            ROOT_CONTEXT_ID,
            (root, plugin_size),
        );
        self.store.data_mut().in_configure = false;
        match result {
            Err(Trapped) => Err(trap("proxy_on_configure", self)),
            Ok(Some(0)) => Err(HarnessError::ConfigureFailed),
            Ok(_) => Ok(()),
        }
    }

    /// Worker index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many times the instance was rebuilt after a trap.
    pub fn rebuilds(&self) -> u32 {
        self.rebuilds
    }

    /// The host calls and VM entries this worker counted (across rebuilds after traps) since
    /// it started or [`Worker::reset_call_counts`]; empty unless the harness counts them
    /// ([`HarnessBuilder::count_calls`](crate::HarnessBuilder::count_calls)).
    pub fn call_counts(&self) -> CallCounts {
        self.store
            .data()
            .counter
            .as_deref()
            .map(Counter::counts)
            .unwrap_or_default()
    }

    /// Starts this worker's counts again from zero.
    pub fn reset_call_counts(&mut self) {
        if let Some(counter) = self.store.data_mut().counter.as_deref_mut() {
            counter.reset();
        }
    }

    /// Whether the instance trapped and could not be rebuilt yet.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Calls the guest's callback `export` (`pick` finds its handle in the table) with the host
    /// state pointed at `context`; collects side effects.
    fn invoke<P: WasmParams, R: WasmResults>(
        &mut self,
        export: &'static str,
        pick: impl Fn(&Exports) -> Option<&TypedFunc<P, R>>,
        context: u32,
        params: P,
    ) -> Result<Option<R>, Trapped> {
        // The export is borrowed through a handle on the shared table, not cloned.
        let exports = Arc::clone(&self.exports);
        let Some(func) = pick(&exports) else {
            return Ok(None);
        };
        if self.poisoned {
            return Err(Trapped);
        }
        {
            let state = self.store.data_mut();
            state.effective_context = context;
            state.callback_errors.clear();
        }
        let result = call_export(&mut self.store, export, func, params);
        self.collect_side_effects();
        match result {
            Ok(value) => Ok(Some(value)),
            Err(error) => {
                let state = self.store.data_mut();
                let guest_message =
                    (!state.callback_errors.is_empty()).then(|| state.callback_errors.join("\n"));
                self.env.recorder.trap(TrapReport {
                    worker: self.index,
                    during: export.to_owned(),
                    guest_message,
                    trap: format!("{error:?}"),
                });
                self.poisoned = true;
                Err(Trapped)
            }
        }
    }

    /// Delivers `proxy_on_queue_ready` to this worker's root context.
    pub(crate) fn deliver_queue_ready(&mut self, root_context_id: u32, token: u32) {
        let result = self.invoke(
            "proxy_on_queue_ready",
            |e| e.on_queue_ready.as_ref(),
            root_context_id,
            (root_context_id as i32, token as i32),
        );
        self.after_event(result.map(|_| ()));
    }

    /// After a callback outside a stream's own events: settles the streams, or fails them all
    /// if the guest trapped.
    fn after_event(&mut self, result: Result<(), Trapped>) {
        if result.is_ok() {
            self.pump_all();
        } else {
            self.fail_all();
        }
    }

    /// Starts a stream: creates its context and delivers the request as far as the filter lets it.
    pub fn start_stream(&mut self, spec: Request) -> StreamId {
        if self.poisoned {
            self.rebuild();
        }
        let id = self.next_context_id;
        self.next_context_id += 1;
        let stream_id = StreamId {
            worker: self.index,
            context_id: id,
        };
        let mut data = StreamData::default();
        for (path, value) in derived_properties(&spec) {
            data.properties.insert(path, value);
        }
        self.drivers.insert(id, StreamDriver::new(spec));
        if self.poisoned {
            self.fail_all();
            return stream_id;
        }
        self.store.data_mut().streams.insert(id, data);
        let created = self.invoke(
            "proxy_on_context_create",
            |e| e.on_context_create.as_ref(),
            id,
            (id as i32, ROOT_CONTEXT_ID as i32),
        );
        if created.is_err() || self.pump(id).is_err() {
            self.fail_all();
        } else {
            // A stream may resume or answer others via the root context; settle all.
            self.pump_all();
        }
        stream_id
    }

    /// The outcome of a stream (a `Pending` snapshot while it runs).
    pub fn outcome(&self, id: StreamId) -> Option<StreamOutcome> {
        if let Some(done) = self.finished.get(&id.context_id) {
            return Some(done.clone());
        }
        let driver = self.drivers.get(&id.context_id)?;
        let data = self.store.data().streams.get(&id.context_id);
        Some(StreamOutcome {
            id,
            disposition: Disposition::Pending,
            request: driver.headers_forwarded.then(|| {
                let mut request = driver.request.clone();
                if let Some(headers) = data.and_then(|d| d.sent_request.view(&d.request_headers)) {
                    request.headers = headers.clone();
                }
                request
            }),
            response: None,
            local_response: driver.local_response.clone().or_else(|| {
                self.store
                    .data()
                    .streams
                    .get(&id.context_id)
                    .and_then(|s| s.local_response.clone())
            }),
            filter_state: data.map(|d| d.filter_state.clone()).unwrap_or_default(),
        })
    }

    /// Replaces a poisoned instance with a fresh one and re-runs start-up (vm_start, configure).
    fn rebuild(&mut self) {
        if !self.poisoned {
            return;
        }
        self.calls.clear();
        self.tick_period = None;
        self.next_tick = None;
        match instantiate(&self.plugin, &self.env, self.index) {
            Ok((mut store, exports)) => {
                // The worker's counts go on across the new instance.
                if let (Some(new), Some(old)) = (
                    store.data_mut().counter.as_deref_mut(),
                    self.store.data().counter.as_deref(),
                ) {
                    new.absorb(old);
                }
                self.store = store;
                self.exports = exports;
                self.poisoned = false;
                self.rebuilds += 1;
                if let Err(error) = self.configure() {
                    self.poisoned = true;
                    self.env.recorder.trap(TrapReport {
                        worker: self.index,
                        during: "rebuild".to_owned(),
                        guest_message: None,
                        trap: error.to_string(),
                    });
                }
            }
            Err(error) => self.env.recorder.trap(TrapReport {
                worker: self.index,
                during: "rebuild".to_owned(),
                guest_message: None,
                trap: error.to_string(),
            }),
        }
    }

    /// Removes and returns a finished stream's outcome (long runs use this to bound memory).
    pub fn take_outcome(&mut self, id: StreamId) -> Option<StreamOutcome> {
        self.finished.remove(&id.context_id)
    }

    /// Outcomes of finished streams, oldest first.
    pub fn finished(&self) -> impl Iterator<Item = &StreamOutcome> {
        self.finished.values()
    }

    /// Ids of streams still running.
    pub fn pending_streams(&self) -> Vec<StreamId> {
        self.drivers
            .keys()
            .map(|&context_id| StreamId {
                worker: self.index,
                context_id,
            })
            .collect()
    }
}
