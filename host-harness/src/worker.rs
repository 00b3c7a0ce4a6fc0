//! One worker: one wasm instance with its root context, its streams, ticks and callouts.
//! A `Worker` is `Send`, so it can live on a dedicated thread; all time comes from the
//! shared [`Clock`](crate::Clock) and all cross-worker state from the shared environment.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Duration;

use wasmtime::{Extern, Instance, Store, TypedFunc, WasmParams, WasmResults};

use crate::abi::{HeaderMap, Status};
use crate::cluster::{
    CalloutReply, CalloutResponse, CalloutResult, Cluster, ReplyOutcome, TimeoutDelivery,
    spawn_http_call,
};
use crate::counts::{CallCounts, Counter, call_export};
use crate::error::{HarnessError, Result};
use crate::memory::ALLOCATORS;
use crate::plugin::Plugin;
use crate::shared::{CalloutRecord, TrapReport};
use crate::state::{CallDelivery, Env, FailurePolicy, HostState, LocalResponse, StreamData};
use crate::stream::{
    Disposition, FinalResponse, ForwardedRequest, Request, StreamId, StreamOutcome,
};

/// The root context id of every instance (one plugin per VM, as configured by the harness).
pub(crate) const ROOT_CONTEXT_ID: u32 = 1;

/// Headers a filter can add to a stream's header map before it reallocates.
const HEADER_ROOM: usize = 8;

type F1 = TypedFunc<i32, ()>;
type F2 = TypedFunc<(i32, i32), ()>;
type B2 = TypedFunc<(i32, i32), i32>;
type A2 = TypedFunc<(i32, i32), i32>;
type A3 = TypedFunc<(i32, i32, i32), i32>;
type CallResponseFn = TypedFunc<(i32, i32, i32, i32, i32), ()>;

/// Cached callback exports (absent ones are skipped, as Envoy does).
struct Exports {
    on_context_create: Option<F2>,
    on_vm_start: Option<B2>,
    on_configure: Option<B2>,
    on_request_headers: Option<A3>,
    on_request_body: Option<A3>,
    on_request_trailers: Option<A2>,
    on_response_headers: Option<A3>,
    on_response_body: Option<A3>,
    on_response_trailers: Option<A2>,
    on_done: Option<TypedFunc<i32, i32>>,
    on_log: Option<F1>,
    on_delete: Option<F1>,
    on_tick: Option<F1>,
    on_queue_ready: Option<F2>,
    on_http_call_response: Option<CallResponseFn>,
}

fn export<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<HostState>,
    name: &str,
) -> Result<Option<TypedFunc<P, R>>> {
    match instance.get_func(&mut *store, name) {
        None => Ok(None),
        Some(func) => func.typed::<P, R>(&*store).map(Some).map_err(|_| {
            HarnessError::InvalidModule(format!(
                "export `{name}` has the wrong signature for ABI v0.2.1"
            ))
        }),
    }
}

impl Exports {
    fn resolve(instance: &Instance, store: &mut Store<HostState>) -> Result<Self> {
        Ok(Self {
            on_context_create: export(instance, store, "proxy_on_context_create")?,
            on_vm_start: export(instance, store, "proxy_on_vm_start")?,
            on_configure: export(instance, store, "proxy_on_configure")?,
            on_request_headers: export(instance, store, "proxy_on_request_headers")?,
            on_request_body: export(instance, store, "proxy_on_request_body")?,
            on_request_trailers: export(instance, store, "proxy_on_request_trailers")?,
            on_response_headers: export(instance, store, "proxy_on_response_headers")?,
            on_response_body: export(instance, store, "proxy_on_response_body")?,
            on_response_trailers: export(instance, store, "proxy_on_response_trailers")?,
            on_done: export(instance, store, "proxy_on_done")?,
            on_log: export(instance, store, "proxy_on_log")?,
            on_delete: export(instance, store, "proxy_on_delete")?,
            on_tick: export(instance, store, "proxy_on_tick")?,
            on_queue_ready: export(instance, store, "proxy_on_queue_ready")?,
            on_http_call_response: export(instance, store, "proxy_on_http_call_response")?,
        })
    }
}

/// The guest trapped; the worker is poisoned and its streams have been failed.
#[derive(Debug)]
pub(crate) struct Trapped;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Request,
    Response,
}

struct Driver {
    spec: Request,
    phase: Phase,
    /// Next input event: 0 = headers, 1..=n body chunks, n+1 trailers, beyond = all delivered.
    next_event: usize,
    stopped: bool,
    headers_forwarded: bool,
    request: ForwardedRequest,
    response: FinalResponse,
    local_response: Option<LocalResponse>,
}

impl Driver {
    fn events(&self) -> usize {
        let (body, trailers) = match self.phase {
            Phase::Request => (self.spec.body.len(), !self.spec.trailers.is_empty()),
            Phase::Response => (
                self.spec.upstream.body.len(),
                !self.spec.upstream.trailers.is_empty(),
            ),
        };
        1 + body + usize::from(trailers)
    }
}

enum CallState {
    Ready(CalloutResult),
    InFlight(Receiver<CalloutResult>),
    Never,
}

struct PendingCall {
    token: u32,
    context: u32,
    due: Option<u64>,
    sequence: u64,
    timeout_due: Option<u64>,
    state: CallState,
}

/// The next thing a worker has to do at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Due {
    pub(crate) at: u64,
    pub(crate) sequence: u64,
}

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
    drivers: BTreeMap<u32, Driver>,
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

fn instantiate(
    plugin: &Plugin,
    env: &Arc<Env>,
    index: usize,
) -> Result<(Store<HostState>, Arc<Exports>)> {
    let mut store = Store::new(&plugin.engine, HostState::new(env.clone(), index));
    if env.max_memory_bytes.is_some() {
        store.limiter(|state| &mut state.limits);
    }
    let pre = if env.count_calls {
        let counting = plugin.counting()?;
        store.data_mut().counter = Some(Box::new(Counter::new(counting.names.clone())));
        #[cfg(feature = "call-hook")]
        store.call_hook(|mut store, hook| {
            if let Some(counter) = store.data_mut().counter.as_deref_mut() {
                counter.hook(hook);
            }
            Ok(())
        });
        &counting.pre
    } else {
        &plugin.pre
    };
    let instance = pre
        .instantiate(&mut store)
        .map_err(|e| HarnessError::Trap {
            during: "instantiation".to_owned(),
            message: format!("{e:?}"),
        })?;
    let memory = match instance.get_export(&mut store, "memory") {
        Some(Extern::Memory(memory)) => memory,
        _ => return Err(HarnessError::MissingExport("memory".to_owned())),
    };
    store.data_mut().memory = Some(memory);
    let allocator = ALLOCATORS.into_iter().find_map(|name| {
        export::<i32, i32>(&instance, &mut store, name)
            .ok()
            .flatten()
            .map(|func| (func, name))
    });
    if let Some((func, name)) = allocator {
        let state = store.data_mut();
        state.allocator = Some(func);
        state.allocator_name = name;
    }
    let exports = Exports::resolve(&instance, &mut store)?;
    // Envoy runs the WASI reactor (or command) initializer first.
    for init in ["_initialize", "_start"] {
        if let Some(func) = export::<(), ()>(&instance, &mut store, init)? {
            call_export(&mut store, init, &func, ()).map_err(|e| HarnessError::Trap {
                during: init.to_owned(),
                message: format!("{e:?}"),
            })?;
            break;
        }
    }
    Ok((store, Arc::new(exports)))
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

    /// Calls the guest's callback `export` with the host state pointed at `context`; collects
    /// side effects.
    fn invoke<P: WasmParams, R: WasmResults>(
        &mut self,
        export: &'static str,
        pick: fn(&Exports) -> Option<&TypedFunc<P, R>>,
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

    /// Tick period changes and new callouts made during the last callback.
    fn collect_side_effects(&mut self) {
        let now = self.env.clock.now_nanos();
        if let Some(ms) = self.store.data_mut().tick_period_ms.take() {
            if ms == 0 {
                self.tick_period = None;
                self.next_tick = None;
            } else {
                let period = Duration::from_millis(u64::from(ms));
                self.tick_period = Some(period);
                self.next_tick = Some(Due {
                    at: now.saturating_add(period.as_nanos() as u64),
                    sequence: self.env.next_sequence(),
                });
            }
        }
        let calls = std::mem::take(&mut self.store.data_mut().new_calls);
        for (token, context, request) in calls {
            self.env.recorder.callout(CalloutRecord {
                worker: self.index,
                context_id: context,
                token,
                request: request.clone(),
                result: None,
            });
            let timeout_due = request
                .timeout
                .map(|t| now.saturating_add(t.as_nanos() as u64));
            let (due, state) = match self.env.clusters.get(&request.cluster) {
                Some(Cluster::Handler(handler)) => {
                    let CalloutReply { outcome, latency } = handler(&request);
                    let ready_at = now.saturating_add(latency.as_nanos() as u64);
                    let result = match outcome {
                        ReplyOutcome::Response(response) => Some(CalloutResult::Response(response)),
                        ReplyOutcome::Reset => Some(CalloutResult::Reset),
                        ReplyOutcome::Silent => None,
                    };
                    match (result, timeout_due) {
                        (Some(_), Some(t)) if t <= ready_at => {
                            (Some(t), CallState::Ready(CalloutResult::Timeout))
                        }
                        (Some(result), _) => (Some(ready_at), CallState::Ready(result)),
                        (None, Some(t)) => (Some(t), CallState::Ready(CalloutResult::Timeout)),
                        (None, None) => (None, CallState::Never),
                    }
                }
                Some(Cluster::Http { base_url }) => (
                    None,
                    CallState::InFlight(spawn_http_call(base_url, &request)),
                ),
                // The host call already refused unknown clusters.
                None => (Some(now), CallState::Ready(CalloutResult::Reset)),
            };
            self.calls.push(PendingCall {
                token,
                context,
                due,
                sequence: self.env.next_sequence(),
                timeout_due,
                state,
            });
        }
    }

    /// Moves finished real HTTP exchanges to "due now". With `block`, waits for all of them
    /// (used with the virtual clock: a real exchange takes zero virtual time).
    pub(crate) fn collect_in_flight(&mut self, block: bool) {
        let now = self.env.clock.now_nanos();
        for call in &mut self.calls {
            let CallState::InFlight(rx) = &call.state else {
                continue;
            };
            let result = if block {
                rx.recv().unwrap_or(CalloutResult::Reset)
            } else {
                match rx.try_recv() {
                    Ok(result) => result,
                    Err(TryRecvError::Empty) => match call.timeout_due {
                        Some(t) if t <= now => CalloutResult::Timeout,
                        _ => continue,
                    },
                    Err(TryRecvError::Disconnected) => CalloutResult::Reset,
                }
            };
            call.state = CallState::Ready(result);
            call.due = Some(now);
        }
    }

    /// Whether any callout is pending for a context.
    pub(crate) fn has_calls_for(&self, context: u32) -> bool {
        self.calls.iter().any(|c| c.context == context)
    }

    /// The earliest scheduled event (tick or callout delivery).
    pub(crate) fn next_due(&self) -> Option<Due> {
        let calls = self.calls.iter().filter_map(|c| {
            c.due
                .filter(|_| matches!(c.state, CallState::Ready(_)))
                .map(|at| Due {
                    at,
                    sequence: c.sequence,
                })
        });
        calls.chain(self.next_tick).min()
    }

    /// Fires the earliest event if it is due at or before `now`.
    pub(crate) fn fire_next(&mut self, now: u64) {
        let Some(due) = self.next_due().filter(|d| d.at <= now) else {
            return;
        };
        if self.next_tick == Some(due) {
            self.next_tick = self.tick_period.map(|p| Due {
                at: due.at.saturating_add(p.as_nanos() as u64),
                sequence: self.env.next_sequence(),
            });
            let result = self.invoke(
                "proxy_on_tick",
                |e| e.on_tick.as_ref(),
                ROOT_CONTEXT_ID,
                ROOT_CONTEXT_ID as i32,
            );
            self.after_event(result.map(|_| ()));
            return;
        }
        let Some(position) = self.calls.iter().position(|c| c.sequence == due.sequence) else {
            return;
        };
        let call = self.calls.remove(position);
        let CallState::Ready(result) = call.state else {
            return;
        };
        self.deliver_call(call.token, call.context, result);
    }

    fn deliver_call(&mut self, token: u32, context: u32, result: CalloutResult) {
        self.env.recorder.callout_result(self.index, token, &result);
        if !self.store.data().context_exists(context) {
            return; // Envoy cancels a stream's calls when the stream goes away.
        }
        let timeout_as_reset = self.env.timeout_delivery == TimeoutDelivery::Reset;
        let (delivery, status) = match result {
            CalloutResult::Response(CalloutResponse {
                headers,
                body,
                trailers,
            }) => (
                CallDelivery {
                    headers,
                    body,
                    trailers,
                },
                (Status::Ok as u32, String::new()),
            ),
            CalloutResult::Timeout if !timeout_as_reset => {
                let body = b"upstream request timeout".to_vec();
                (
                    CallDelivery {
                        headers: vec![
                            (":status".to_owned(), "504".into()),
                            ("content-length".to_owned(), body.len().to_string().into()),
                            ("content-type".to_owned(), "text/plain".into()),
                        ],
                        body,
                        trailers: Vec::new(),
                    },
                    (Status::Ok as u32, String::new()),
                )
            }
            CalloutResult::Reset | CalloutResult::Timeout => (
                CallDelivery::default(),
                (Status::BrokenConnection as u32, "reset".to_owned()),
            ),
        };
        let args = (
            context as i32,
            token as i32,
            delivery.headers.len() as i32,
            delivery.body.len() as i32,
            delivery.trailers.len() as i32,
        );
        {
            let state = self.store.data_mut();
            state.call_delivery = Some(delivery);
            state.status = status;
        }
        let result = self.invoke(
            "proxy_on_http_call_response",
            |e| e.on_http_call_response.as_ref(),
            context,
            args,
        );
        self.store.data_mut().call_delivery = None;
        self.after_event(result.map(|_| ()));
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

    fn after_event(&mut self, result: Result<(), Trapped>) {
        if result.is_ok() {
            self.pump_all();
        } else {
            self.fail_all();
        }
    }

    fn pump_all(&mut self) {
        let ids: Vec<u32> = self.drivers.keys().copied().collect();
        for id in ids {
            if self.pump(id).is_err() {
                self.fail_all();
                return;
            }
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
        self.drivers.insert(
            id,
            Driver {
                spec,
                phase: Phase::Request,
                next_event: 0,
                stopped: false,
                headers_forwarded: false,
                request: ForwardedRequest::default(),
                response: FinalResponse::default(),
                local_response: None,
            },
        );
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
        })
    }

    /// Advances one stream as far as possible.
    fn pump(&mut self, id: u32) -> Result<(), Trapped> {
        loop {
            let Some(driver) = self.drivers.get(&id) else {
                return Ok(());
            };
            let phase = driver.phase;
            let Some(data) = self.store.data_mut().streams.get_mut(&id) else {
                return Ok(());
            };
            if let Some(local) = data.local_response.take() {
                return self.local_reply(id, local);
            }
            if data.closed {
                return self.finish(id, Disposition::Reset);
            }
            let resumed = match phase {
                Phase::Request => std::mem::take(&mut data.resume_request),
                Phase::Response => std::mem::take(&mut data.resume_response),
            };
            if resumed {
                self.forward(id);
            }
            let driver = self.drivers.get(&id).ok_or(Trapped)?;
            if driver.next_event < driver.events() {
                self.deliver_event(id)?;
                continue;
            }
            if driver.stopped {
                return Ok(());
            }
            self.forward(id);
            match phase {
                Phase::Request => {
                    let driver = self.drivers.get_mut(&id).ok_or(Trapped)?;
                    driver.phase = Phase::Response;
                    driver.next_event = 0;
                    let status = driver
                        .spec
                        .upstream
                        .headers
                        .iter()
                        .find(|(k, _)| k == ":status")
                        .and_then(|(_, v)| v.as_text().parse::<i64>().ok());
                    if let (Some(code), Some(data)) =
                        (status, self.store.data_mut().streams.get_mut(&id))
                    {
                        data.properties
                            .insert("response\0code".to_owned(), code.to_le_bytes().to_vec());
                    }
                }
                Phase::Response => return self.finish(id, Disposition::Completed),
            }
        }
    }

    /// Lets everything the filter has seen through (headers, buffered body, trailers).
    fn forward(&mut self, id: u32) {
        let Some(driver) = self.drivers.get_mut(&id) else {
            return;
        };
        driver.stopped = false;
        let Some(data) = self.store.data_mut().streams.get_mut(&id) else {
            return;
        };
        match driver.phase {
            Phase::Request => {
                // Sent without a copy: the map is copied only if the filter changes it later.
                if !driver.headers_forwarded && data.request_headers.is_some() {
                    data.sent_request.mark();
                    driver.headers_forwarded = true;
                }
                if let Some(body) = data.request_body.take() {
                    driver.request.body.extend(body);
                }
                if let Some(trailers) = &data.request_trailers {
                    driver.request.trailers = trailers.clone();
                }
            }
            Phase::Response => {
                if data.response_headers.is_some() {
                    data.sent_response.mark();
                }
                if let Some(body) = data.response_body.take() {
                    driver.response.body.extend(body);
                }
                if let Some(trailers) = &data.response_trailers {
                    driver.response.trailers = trailers.clone();
                }
            }
        }
    }

    fn deliver_event(&mut self, id: u32) -> Result<(), Trapped> {
        let driver = self.drivers.get_mut(&id).ok_or(Trapped)?;
        let index = driver.next_event;
        driver.next_event += 1;
        let (headers, chunks, trailers) = match driver.phase {
            Phase::Request => (
                &driver.spec.headers,
                &driver.spec.body,
                &driver.spec.trailers,
            ),
            Phase::Response => (
                &driver.spec.upstream.headers,
                &driver.spec.upstream.body,
                &driver.spec.upstream.trailers,
            ),
        };
        let has_trailers = !trailers.is_empty();
        let phase = driver.phase;
        enum Event {
            Headers(HeaderMap, bool),
            Body(Vec<u8>, bool),
            Trailers(HeaderMap),
        }
        let event = if index == 0 {
            // Room for a filter's added headers: Envoy's header map is a list, where an add
            // never moves the others; a `Vec` filled to its length would reallocate at once.
            let mut map = HeaderMap::with_capacity(headers.len() + HEADER_ROOM);
            map.extend(headers.iter().cloned());
            Event::Headers(map, chunks.is_empty() && !has_trailers)
        } else if index <= chunks.len() {
            Event::Body(
                chunks[index - 1].clone(),
                index == chunks.len() && !has_trailers,
            )
        } else {
            Event::Trailers(trailers.clone())
        };
        let data = self.store.data_mut().streams.get_mut(&id).ok_or(Trapped)?;
        let (name, action) = match (phase, event) {
            (Phase::Request, Event::Headers(map, eos)) => {
                let n = map.len() as i32;
                data.request_headers = Some(map);
                (
                    "proxy_on_request_headers",
                    self.invoke(
                        "proxy_on_request_headers",
                        |e| e.on_request_headers.as_ref(),
                        id,
                        (id as i32, n, i32::from(eos)),
                    )?,
                )
            }
            (Phase::Request, Event::Body(chunk, eos)) => {
                let buffer = data.request_body.get_or_insert_with(Vec::new);
                buffer.extend(chunk);
                let n = buffer.len() as i32;
                (
                    "proxy_on_request_body",
                    self.invoke(
                        "proxy_on_request_body",
                        |e| e.on_request_body.as_ref(),
                        id,
                        (id as i32, n, i32::from(eos)),
                    )?,
                )
            }
            (Phase::Request, Event::Trailers(map)) => {
                let n = map.len() as i32;
                data.request_trailers = Some(map);
                (
                    "proxy_on_request_trailers",
                    self.invoke(
                        "proxy_on_request_trailers",
                        |e| e.on_request_trailers.as_ref(),
                        id,
                        (id as i32, n),
                    )?,
                )
            }
            (Phase::Response, Event::Headers(map, eos)) => {
                let n = map.len() as i32;
                data.response_headers = Some(map);
                (
                    "proxy_on_response_headers",
                    self.invoke(
                        "proxy_on_response_headers",
                        |e| e.on_response_headers.as_ref(),
                        id,
                        (id as i32, n, i32::from(eos)),
                    )?,
                )
            }
            (Phase::Response, Event::Body(chunk, eos)) => {
                let buffer = data.response_body.get_or_insert_with(Vec::new);
                buffer.extend(chunk);
                let n = buffer.len() as i32;
                (
                    "proxy_on_response_body",
                    self.invoke(
                        "proxy_on_response_body",
                        |e| e.on_response_body.as_ref(),
                        id,
                        (id as i32, n, i32::from(eos)),
                    )?,
                )
            }
            (Phase::Response, Event::Trailers(map)) => {
                let n = map.len() as i32;
                data.response_trailers = Some(map);
                (
                    "proxy_on_response_trailers",
                    self.invoke(
                        "proxy_on_response_trailers",
                        |e| e.on_response_trailers.as_ref(),
                        id,
                        (id as i32, n),
                    )?,
                )
            }
        };
        let _ = name;
        // Action: 0 Continue; anything else stops iteration (Envoy's StopIteration / buffer).
        if action.unwrap_or(0) == 0 {
            self.forward(id);
        } else if let Some(driver) = self.drivers.get_mut(&id) {
            driver.stopped = true;
        }
        Ok(())
    }

    /// Sends the filter's local response. Before the response started, it passes through the
    /// filter's own response callbacks, as Envoy's local replies go through the encoder chain.
    fn local_reply(&mut self, id: u32, local: LocalResponse) -> Result<(), Trapped> {
        let driver = self.drivers.get_mut(&id).ok_or(Trapped)?;
        let mut headers = Vec::with_capacity(local.headers.len() + 3);
        headers.push((":status".to_owned(), local.status.to_string().into()));
        headers.extend(local.headers.iter().cloned());
        if !local.body.is_empty() {
            if !headers.iter().any(|(k, _)| k == "content-length") {
                headers.push((
                    "content-length".to_owned(),
                    local.body.len().to_string().into(),
                ));
            }
            if !headers.iter().any(|(k, _)| k == "content-type") {
                headers.push(("content-type".to_owned(), "text/plain".into()));
            }
        }
        let body = local.body.clone();
        driver.local_response = Some(local);
        if driver.phase == Phase::Response {
            driver.response = FinalResponse::from_headers(headers, body, Vec::new());
            return self.finish(id, Disposition::LocalResponse);
        }
        driver.phase = Phase::Response;
        let data = self.store.data_mut().streams.get_mut(&id).ok_or(Trapped)?;
        let n = headers.len() as i32;
        data.response_headers = Some(headers);
        data.response_body = None;
        let eos = body.is_empty();
        self.invoke(
            "proxy_on_response_headers",
            |e| e.on_response_headers.as_ref(),
            id,
            (id as i32, n, i32::from(eos)),
        )?;
        if !eos {
            let len = body.len() as i32;
            if let Some(data) = self.store.data_mut().streams.get_mut(&id) {
                data.response_body = Some(body);
            }
            self.invoke(
                "proxy_on_response_body",
                |e| e.on_response_body.as_ref(),
                id,
                (id as i32, len, 1),
            )?;
        }
        let data = self.store.data_mut().streams.get_mut(&id).ok_or(Trapped)?;
        // The filter may still read the response headers in `proxy_on_log`: they are taken
        // when the stream ends.
        data.sent_response.mark();
        let body = data.response_body.take().unwrap_or_default();
        if let Some(driver) = self.drivers.get_mut(&id) {
            driver.response = FinalResponse::from_headers(Vec::new(), body, Vec::new());
        }
        self.finish(id, Disposition::LocalResponse)
    }

    /// Ends a stream: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`, then records the outcome.
    fn finish(&mut self, id: u32, disposition: Disposition) -> Result<(), Trapped> {
        let Some(driver) = self.drivers.remove(&id) else {
            return Ok(());
        };
        let ended = self.end_callbacks(id);
        // The maps stay readable through `proxy_on_log`; the outcome takes them afterwards.
        let data = self.store.data_mut().streams.remove(&id);
        self.calls.retain(|c| c.context != id);
        self.record(id, driver, disposition, data);
        ended
    }

    /// `proxy_on_done`, `proxy_on_log`, `proxy_on_delete` (the first trap ends them).
    fn end_callbacks(&mut self, id: u32) -> Result<(), Trapped> {
        self.invoke("proxy_on_done", |e| e.on_done.as_ref(), id, id as i32)?;
        self.store.data_mut().in_log = true;
        let logged = self.invoke("proxy_on_log", |e| e.on_log.as_ref(), id, id as i32);
        self.store.data_mut().in_log = false;
        logged?;
        self.invoke("proxy_on_delete", |e| e.on_delete.as_ref(), id, id as i32)?;
        Ok(())
    }

    /// Records how a stream ended; the header maps it sent are taken from its `data`.
    fn record(
        &mut self,
        id: u32,
        mut driver: Driver,
        disposition: Disposition,
        data: Option<StreamData>,
    ) {
        if let Some(mut data) = data {
            if let Some(headers) = data.sent_request.take(&mut data.request_headers) {
                driver.request.headers = headers;
            }
            // A response already set here (a local reply after the response began, fail-closed)
            // is the one the client got.
            if driver.response.headers.is_empty()
                && let Some(headers) = data.sent_response.take(&mut data.response_headers)
            {
                let response = std::mem::take(&mut driver.response);
                driver.response =
                    FinalResponse::from_headers(headers, response.body, response.trailers);
            }
        }
        let reached_upstream =
            driver.headers_forwarded || matches!(disposition, Disposition::Completed);
        let response = match disposition {
            Disposition::Reset | Disposition::Pending => None,
            _ => Some(driver.response),
        };
        self.finished.insert(
            id,
            StreamOutcome {
                id: StreamId {
                    worker: self.index,
                    context_id: id,
                },
                disposition,
                request: reached_upstream.then_some(driver.request),
                response,
                local_response: driver.local_response,
            },
        );
    }

    /// After a trap: every live stream gets the failure policy, then the instance is rebuilt.
    fn fail_all(&mut self) {
        let drivers = std::mem::take(&mut self.drivers);
        for (id, mut driver) in drivers {
            match self.env.failure_policy {
                FailurePolicy::FailClosed => {
                    driver.response = FinalResponse::from_headers(
                        vec![(":status".to_owned(), "503".into())],
                        Vec::new(),
                        Vec::new(),
                    );
                    let data = self.store.data_mut().streams.remove(&id);
                    self.record(id, driver, Disposition::FailedClosed, data);
                }
                FailurePolicy::FailOpen => {
                    driver.request = ForwardedRequest {
                        headers: driver.spec.headers.clone(),
                        body: driver.spec.body.concat(),
                        trailers: driver.spec.trailers.clone(),
                    };
                    driver.headers_forwarded = true;
                    let upstream = &driver.spec.upstream;
                    driver.response = FinalResponse::from_headers(
                        upstream.headers.clone(),
                        upstream.body.concat(),
                        upstream.trailers.clone(),
                    );
                    self.record(id, driver, Disposition::FailedOpen, None);
                }
            }
        }
        self.rebuild();
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

/// Envoy-style request properties derived from the headers, plus the request's own.
fn derived_properties(spec: &Request) -> Vec<(String, Vec<u8>)> {
    let header = |name: &str| {
        spec.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_bytes().to_vec())
    };
    let mut out = Vec::new();
    let mut put = |path: &str, value: Option<Vec<u8>>| {
        if let Some(value) = value {
            out.push((path.replace('.', "\0"), value));
        }
    };
    put("request.path", header(":path"));
    put(
        "request.url_path",
        header(":path").map(|mut p| {
            p.truncate(p.iter().position(|&b| b == b'?').unwrap_or(p.len()));
            p
        }),
    );
    put("request.host", header(":authority"));
    put("request.method", header(":method"));
    put("request.scheme", header(":scheme"));
    put("request.id", header("x-request-id"));
    put("request.protocol", Some(b"HTTP/1.1".to_vec()));
    for (path, value) in &spec.properties {
        put(path, Some(value.as_bytes().to_vec()));
    }
    out
}
