//! Per-instance host state (`Store<HostState>`) and the environment shared by all workers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;
use wasmtime::{Memory, TypedFunc};

use crate::abi::{HeaderMap, LogLevel, MapType};
use crate::clock::Clock;
use crate::cluster::{CalloutRequest, Cluster, TimeoutDelivery};
use crate::counts::Counter;
use crate::shared::{Metrics, QueueOwner, Recorder, SharedData, SharedQueues};

/// How a stream is treated when the filter traps (Envoy's `failure_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Answer 503 (Envoy's default `FAIL_CLOSED`).
    #[default]
    FailClosed,
    /// Let the stream through as if the filter were absent (`FAIL_OPEN`).
    FailOpen,
}

/// Property key: path segments joined by NUL (the ABI's own path encoding).
pub(crate) type PropertyKey = String;

/// Immutable configuration and shared stores, one per harness, shared by every worker.
#[derive(Debug)]
pub(crate) struct Env {
    pub(crate) vm_id: String,
    pub(crate) vm_configuration: Vec<u8>,
    pub(crate) plugin_configuration: Vec<u8>,
    pub(crate) clusters: HashMap<String, Cluster>,
    pub(crate) clock: Clock,
    pub(crate) log_level: LogLevel,
    pub(crate) environment: Vec<(String, String)>,
    pub(crate) properties: HashMap<PropertyKey, Vec<u8>>,
    pub(crate) timeout_delivery: TimeoutDelivery,
    pub(crate) failure_policy: FailurePolicy,
    /// Cap of each worker's linear memory, if any.
    pub(crate) max_memory_bytes: Option<usize>,
    /// Whether each worker counts its host calls and VM entries.
    pub(crate) count_calls: bool,
    pub(crate) shared_data: Arc<SharedData>,
    pub(crate) queues: SharedQueues,
    pub(crate) metrics: Metrics,
    pub(crate) recorder: Recorder,
    /// `proxy_on_queue_ready` notifications not yet delivered: (owner, token).
    pub(crate) queue_ready: Mutex<Vec<(QueueOwner, u32)>>,
    pub(crate) sequence: std::sync::atomic::AtomicU64,
}

/// The body of a local response the filter sent (`proxy_send_local_response`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LocalResponse {
    /// HTTP status.
    pub status: u16,
    /// Response code details (Envoy's `response_code_details`).
    pub details: String,
    /// Body.
    #[serde(with = "crate::serde_bytes_lossy")]
    pub body: Vec<u8>,
    /// Additional headers.
    pub headers: HeaderMap,
    /// gRPC status, -1 when not set.
    pub grpc_status: i32,
}

/// What one stream context can see through the maps and buffers.
#[derive(Debug, Default)]
pub(crate) struct StreamData {
    pub(crate) request_headers: Option<HeaderMap>,
    pub(crate) request_trailers: Option<HeaderMap>,
    pub(crate) request_body: Option<Vec<u8>>,
    pub(crate) response_headers: Option<HeaderMap>,
    pub(crate) response_trailers: Option<HeaderMap>,
    pub(crate) response_body: Option<Vec<u8>>,
    /// The filter's local response, until the worker takes it to send.
    pub(crate) local_response: Option<LocalResponse>,
    /// A local response was sent: a second one is ignored, as in Envoy.
    pub(crate) local_sent: bool,
    pub(crate) resume_request: bool,
    pub(crate) resume_response: bool,
    pub(crate) closed: bool,
    pub(crate) properties: HashMap<PropertyKey, Vec<u8>>,
    /// What the filter set with `proxy_set_property` on this stream, in order (Envoy keeps each
    /// as the filter-state object `wasm.<path>`).
    pub(crate) filter_state: Vec<(PropertyKey, Vec<u8>)>,
    /// Whether the request headers went upstream (and what went, once changed since).
    pub(crate) sent_request: Sent,
    /// Whether the response headers went downstream (and what went, once changed since).
    pub(crate) sent_response: Sent,
}

/// A header map sent on is kept without a copy: what was sent is the live map until the filter
/// changes it, and a copy of what was sent is taken just before that.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    sent: bool,
    copy: Option<HeaderMap>,
}

impl Sent {
    /// Marks the map as sent.
    pub(crate) fn mark(&mut self) {
        self.sent = true;
    }

    /// Called before `live` changes: keeps what was sent.
    fn before_change(&mut self, live: &Option<HeaderMap>) {
        if self.sent && self.copy.is_none() {
            self.copy.clone_from(live);
        }
    }

    /// What was sent, if it was.
    pub(crate) fn view<'a>(&'a self, live: &'a Option<HeaderMap>) -> Option<&'a HeaderMap> {
        self.sent.then(|| self.copy.as_ref().or(live.as_ref()))?
    }

    /// Takes what was sent (the stream has ended).
    pub(crate) fn take(&mut self, live: &mut Option<HeaderMap>) -> Option<HeaderMap> {
        self.sent.then(|| self.copy.take().or(live.take()))?
    }
}

impl StreamData {
    pub(crate) fn map(&self, map: MapType) -> Option<&HeaderMap> {
        match map {
            MapType::RequestHeaders => self.request_headers.as_ref(),
            MapType::RequestTrailers => self.request_trailers.as_ref(),
            MapType::ResponseHeaders => self.response_headers.as_ref(),
            MapType::ResponseTrailers => self.response_trailers.as_ref(),
            _ => None,
        }
    }

    /// A map to change. A header map that was already sent is copied first, so what was sent
    /// stays as it was (Envoy has encoded it; a later change does not reach the peer).
    pub(crate) fn map_mut(&mut self, map: MapType) -> Option<&mut HeaderMap> {
        match map {
            MapType::RequestHeaders => {
                self.sent_request.before_change(&self.request_headers);
                self.request_headers.as_mut()
            }
            MapType::RequestTrailers => self.request_trailers.as_mut(),
            MapType::ResponseHeaders => {
                self.sent_response.before_change(&self.response_headers);
                self.response_headers.as_mut()
            }
            MapType::ResponseTrailers => self.response_trailers.as_mut(),
            _ => None,
        }
    }
}

/// The callout response being delivered by `proxy_on_http_call_response`.
#[derive(Debug, Default)]
pub(crate) struct CallDelivery {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
    pub(crate) trailers: HeaderMap,
}

/// The `T` of `Store<T>`: one per wasm instance (worker).
pub struct HostState {
    pub(crate) env: Arc<Env>,
    pub(crate) worker: usize,
    pub(crate) root_context_id: u32,
    /// Context of the callback in progress, or of `proxy_set_effective_context`.
    pub(crate) effective_context: u32,
    /// Looked up on nearly every host call: a fast hasher for small integer keys.
    pub(crate) streams: FxHashMap<u32, StreamData>,
    pub(crate) root_properties: HashMap<PropertyKey, Vec<u8>>,
    pub(crate) tick_period_ms: Option<u32>,
    pub(crate) next_call_token: u32,
    pub(crate) new_calls: Vec<(u32, u32, CalloutRequest)>,
    pub(crate) call_delivery: Option<CallDelivery>,
    pub(crate) status: (u32, String),
    pub(crate) in_configure: bool,
    pub(crate) in_log: bool,
    /// Error/critical log lines of the callback in progress (the guest's panic message).
    pub(crate) callback_errors: Vec<String>,
    pub(crate) memory: Option<Memory>,
    pub(crate) allocator: Option<TypedFunc<i32, i32>>,
    /// The export `allocator` is (`proxy_on_memory_allocate` or `malloc`).
    pub(crate) allocator_name: &'static str,
    /// Calls across the VM boundary, when the harness counts them.
    pub(crate) counter: Option<Box<Counter>>,
    /// WASI `proc_exit` code, when the guest exited.
    pub(crate) exit_code: Option<i32>,
    /// The memory cap, enforced by wasmtime's store limiter.
    pub(crate) limits: wasmtime::StoreLimits,
}

impl HostState {
    pub(crate) fn new(env: Arc<Env>, worker: usize) -> Self {
        Self {
            worker,
            root_context_id: crate::worker::ROOT_CONTEXT_ID,
            effective_context: crate::worker::ROOT_CONTEXT_ID,
            streams: FxHashMap::default(),
            root_properties: HashMap::new(),
            tick_period_ms: None,
            next_call_token: 0,
            new_calls: Vec::new(),
            call_delivery: None,
            status: (0, String::new()),
            in_configure: false,
            in_log: false,
            callback_errors: Vec::new(),
            memory: None,
            allocator: None,
            allocator_name: "proxy_on_memory_allocate",
            counter: None,
            exit_code: None,
            limits: match env.max_memory_bytes {
                Some(bytes) => wasmtime::StoreLimitsBuilder::new()
                    .memory_size(bytes)
                    .build(),
                None => wasmtime::StoreLimits::default(),
            },
            env,
        }
    }

    /// The stream of the effective context, if it is a stream.
    pub(crate) fn stream(&self) -> Option<&StreamData> {
        self.streams.get(&self.effective_context)
    }

    pub(crate) fn stream_mut(&mut self) -> Option<&mut StreamData> {
        self.streams.get_mut(&self.effective_context)
    }

    pub(crate) fn context_exists(&self, id: u32) -> bool {
        id == self.root_context_id || self.streams.contains_key(&id)
    }
}

impl Env {
    /// An environment used only to probe the linker at load time.
    pub(crate) fn placeholder() -> Self {
        Self {
            vm_id: String::new(),
            vm_configuration: Vec::new(),
            plugin_configuration: Vec::new(),
            clusters: HashMap::new(),
            clock: Clock::virtual_at(0),
            log_level: LogLevel::Trace,
            environment: Vec::new(),
            properties: HashMap::new(),
            timeout_delivery: TimeoutDelivery::default(),
            failure_policy: FailurePolicy::default(),
            max_memory_bytes: None,
            count_calls: false,
            shared_data: Arc::default(),
            queues: SharedQueues::default(),
            metrics: Metrics::default(),
            recorder: Recorder::default(),
            queue_ready: Mutex::new(Vec::new()),
            sequence: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A global, increasing sequence number: orders events due at the same instant.
    pub(crate) fn next_sequence(&self) -> u64 {
        self.sequence
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }
}
