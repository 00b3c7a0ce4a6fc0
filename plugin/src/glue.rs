//! Thin proxy-wasm glue: root context (configuration, timer, HTTP call answers) and HTTP context
//! (one decision per request). All logic lives in the pure core behind [`Host`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MetricType, Status};

use crate::pairs;
use crate::raw;
use keygate_filter_core::config::Config;
use keygate_filter_core::decision::{self, Decision, Deny, DenyBodies, Reason, Request};
use keygate_filter_core::host::{
    DispatchError, Host, HttpCall, HttpResponse, LogLevel, SharedDataError,
};
use keygate_filter_core::limits::{self, Leased, Leases, Outcome};
use keygate_filter_core::worker::Worker;

fn now_ms() -> u64 {
    raw::now_nanos().map_or(0, |n| n / 1_000_000)
}

fn random_u64() -> u64 {
    // RandomState is seeded from the WASI random source.
    let mut h = RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.finish()
}

fn log(level: LogLevel, message: &str) {
    let level = match level {
        LogLevel::Info => proxy_wasm::types::LogLevel::Info,
        LogLevel::Warn => proxy_wasm::types::LogLevel::Warn,
        LogLevel::Error => proxy_wasm::types::LogLevel::Error,
    };
    let _ = hostcalls::log(level, message);
}

/// Metric ids, defined once per root context.
#[derive(Debug, Default)]
struct Metrics {
    ids: HashMap<String, u32>,
    decisions: Vec<u32>,
}

impl Metrics {
    fn id(&mut self, name: &str, kind: MetricType) -> Option<u32> {
        if let Some(id) = self.ids.get(name) {
            return Some(*id);
        }
        let id = hostcalls::define_metric(kind, name).ok()?;
        self.ids.insert(name.to_owned(), id);
        Some(id)
    }

    fn define_decisions(&mut self) {
        self.decisions = Reason::ALL
            .iter()
            .map(|r| {
                self.id(&r.metric_name(), MetricType::Counter)
                    .unwrap_or(u32::MAX)
            })
            .collect();
    }

    fn decision(&self, reason: Reason) -> Option<u32> {
        self.decisions
            .get(reason.index())
            .copied()
            .filter(|id| *id != u32::MAX)
    }
}

/// [`Host`] over the proxy-wasm host calls.
struct ProxyHost<'a> {
    metrics: &'a mut Metrics,
}

impl Host for ProxyHost<'_> {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn random_u64(&mut self) -> u64 {
        random_u64()
    }

    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn shared_set(
        &mut self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedDataError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SharedDataError::CasMismatch),
            Err(_) => Err(SharedDataError::Refused),
        }
    }

    fn dispatch(&mut self, call: HttpCall<'_>) -> Result<u32, DispatchError> {
        let headers: Vec<(&str, &str)> =
            call.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        hostcalls::dispatch_http_call(
            call.cluster,
            headers,
            call.body.as_deref(),
            Vec::new(),
            Duration::from_millis(call.timeout_ms),
        )
        .map_err(|_| DispatchError)
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        log(level, message);
    }

    fn counter_add(&mut self, name: &str, delta: u64) {
        if let Some(id) = self.metrics.id(name, MetricType::Counter) {
            let _ = hostcalls::increment_metric(id, delta as i64);
        }
    }

    fn gauge_set(&mut self, name: &str, value: u64) {
        if let Some(id) = self.metrics.id(name, MetricType::Gauge) {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    fn queue_register(&mut self, name: &str) -> Option<u32> {
        hostcalls::register_shared_queue(name).ok()
    }

    fn queue_enqueue(&mut self, name: &str, value: &[u8]) -> bool {
        // An empty `vm_id` names this VM's own (Envoy's proxy-wasm host).
        match hostcalls::resolve_shared_queue("", name) {
            Ok(Some(token)) => hostcalls::enqueue_shared_queue(token, Some(value)).is_ok(),
            _ => false,
        }
    }

    fn property(&mut self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }

    fn queue_drain(&mut self, token: u32) -> usize {
        let mut n = 0;
        while let Ok(Some(_)) = hostcalls::dequeue_shared_queue(token) {
            n += 1;
        }
        n
    }
}

fn linear_memory_bytes() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        (core::arch::wasm32::memory_size(0) as u64) * 65_536
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}

/// What the root context shares with its HTTP contexts (one reference count per stream).
struct State {
    worker: RefCell<Option<Worker>>,
    metrics: RefCell<Metrics>,
    replies: RefCell<Replies>,
    /// The clock as read at the last timer tick (or at configure): requests read this, not
    /// the host's clock, which is a host call each. A tick comes every 20-100 ms on the same
    /// thread as the requests, so expiry and staleness are judged at most one tick late.
    clock_ms: Cell<u64>,
    /// Decisions since the last tick, per reason: added to Envoy's counters on the tick, one
    /// host call per reason that occurred instead of one per request.
    decisions: RefCell<[u64; Reason::ALL.len()]>,
    /// This worker's leases of rate-limit quota (`keygate_filter_core::limits`).
    leases: RefCell<Leases>,
}

/// The per-worker root context.
pub struct KeygateRoot {
    state: Rc<State>,
    id: u64,
}

impl KeygateRoot {
    /// A fresh, unconfigured root.
    pub fn new() -> Self {
        Self {
            state: Rc::new(State {
                worker: RefCell::new(None),
                metrics: RefCell::new(Metrics::default()),
                replies: RefCell::new(Replies::new()),
                clock_ms: Cell::new(now_ms()),
                decisions: RefCell::new([0; Reason::ALL.len()]),
                leases: RefCell::new(Leases::default()),
            }),
            id: random_u64(),
        }
    }

    /// Adds the decisions counted since the last tick to Envoy's counters.
    fn flush_decisions(&self) {
        let mut counts = self.state.decisions.borrow_mut();
        let metrics = self.state.metrics.borrow();
        for (reason, count) in Reason::ALL.iter().zip(counts.iter_mut()) {
            if *count > 0 {
                if let Some(id) = metrics.decision(*reason) {
                    let _ = hostcalls::increment_metric(id, *count as i64);
                }
                *count = 0;
            }
        }
    }

    fn with_worker(&self, f: impl FnOnce(&mut Worker, &mut ProxyHost<'_>)) {
        let mut metrics = self.state.metrics.borrow_mut();
        let mut host = ProxyHost {
            metrics: &mut metrics,
        };
        if let Some(w) = self.state.worker.borrow_mut().as_mut() {
            f(w, &mut host);
        }
    }
}

impl Default for KeygateRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl Context for KeygateRoot {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        // Read in place: a header that is not UTF-8 must not trap the root context.
        let mut raw = raw::header_map(raw::Map::HttpCallResponseHeaders).unwrap_or_default();
        let headers: Vec<(String, String)> = pairs::parse_str(&mut raw)
            .unwrap_or_default()
            .0
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let status = headers
            .iter()
            .find(|(k, _)| k == ":status")
            .and_then(|(_, v)| v.parse::<u16>().ok());
        let body = if body_size > 0 {
            hostcalls::get_buffer(
                proxy_wasm::types::BufferType::HttpCallResponseBody,
                0,
                body_size,
            )
            .ok()
            .flatten()
            .unwrap_or_default()
        } else {
            Vec::new()
        };
        let resp = HttpResponse {
            status,
            headers,
            body,
        };
        self.with_worker(|w, host| w.on_response(host, token, &resp));
    }
}

impl RootContext for KeygateRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            usize::MAX,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let config = match Config::from_json(&bytes) {
            Ok(c) => c,
            Err(e) => {
                log(LogLevel::Error, &e.to_string());
                return false;
            }
        };
        let tick = config.tick_period_ms();
        {
            let mut m = self.state.metrics.borrow_mut();
            m.define_decisions();
        }
        self.state.clock_ms.set(now_ms());
        *self.state.worker.borrow_mut() = Some(Worker::new(config, self.id, now_ms()));
        self.with_worker(|w, host| w.on_configure(host));
        let _ = hostcalls::set_tick_period(Duration::from_millis(tick));
        log(LogLevel::Info, &format!("configured (tick {tick} ms)"));
        // No work here beyond configuring: Envoy configures a throw-away copy of the VM first
        // (proxy-wasm's configuration canary) and destroys it at once. A sync started here
        // would take the lease for a VM about to die and hold every worker off until it
        // lapsed (2 s of 503s at every start). The first tick, one period from now, starts it.
        true
    }

    fn on_tick(&mut self) {
        self.state.clock_ms.set(now_ms());
        self.flush_decisions();
        self.state
            .leases
            .borrow_mut()
            .prune(self.state.clock_ms.get());
        self.with_worker(|w, host| {
            w.tick(host);
            // The VM's linear memory: its high-water mark (wasm memory never shrinks).
            w.syncer().gauge(
                host,
                keygate_filter_core::sync::metrics::MEMORY,
                linear_memory_bytes(),
            );
        });
    }

    fn on_queue_ready(&mut self, _queue_id: u32) {
        // The leader published a change: follow it now rather than at the next tick.
        self.state.clock_ms.set(now_ms());
        self.with_worker(|w, host| w.on_queue_ready(host));
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Only a VM presumed idle (Envoy's main thread's) has work to do here: a plain borrow
        // keeps the request path free of the host seam's set-up.
        let idle = self
            .state
            .worker
            .borrow()
            .as_ref()
            .is_some_and(|w| w.syncer().is_idle());
        if idle {
            self.with_worker(|w, host| w.on_request(host));
        }
        Some(Box::new(KeygateHttp {
            state: Rc::clone(&self.state),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct KeygateHttp {
    state: Rc<State>,
}

/// The properties an allowed request's `RateLimit-Policy` and `RateLimit` are set in (with
/// `rate_limit_headers`): Envoy keeps each as the filter-state object `wasm.<name>`.
const FIELD_PROPERTIES: [&str; 2] = ["keygate_ratelimit_policy", "keygate_ratelimit"];

impl Context for KeygateHttp {}

/// Local replies ready to send: per reason the serialized response headers, and the bodies.
#[derive(Debug)]
struct Replies {
    headers: Vec<Vec<u8>>,
    bodies: DenyBodies,
}

impl Replies {
    fn new() -> Self {
        let headers = Reason::ALL
            .iter()
            .map(|r| {
                let mut h = vec![
                    ("content-type", "application/json"),
                    ("cache-control", "no-store"),
                ];
                if let Some(w) = r.www_authenticate() {
                    h.push(("www-authenticate", w));
                }
                pairs::serialize(&h)
            })
            .collect();
        Self {
            headers,
            bodies: DenyBodies::default(),
        }
    }

    fn send(&mut self, deny: &Deny) {
        let headers = self
            .headers
            .get(deny.reason.index())
            .map_or(&[][..], Vec::as_slice);
        Self::reply(deny, headers, &self.bodies.body(deny));
    }

    /// A 429 `rate_limited` with its fields (`Retry-After`, `RateLimit-Policy`, `RateLimit`).
    fn send_limited(&mut self, deny: &Deny, fields: &[(&'static str, String)]) {
        let mut h: Vec<(&str, &str)> = vec![
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
        ];
        h.extend(fields.iter().map(|(k, v)| (*k, v.as_str())));
        Self::reply(deny, &pairs::serialize(&h), &self.bodies.body(deny));
    }

    fn reply(deny: &Deny, headers: &[u8], body: &str) {
        if let Err(status) = raw::send_local_response(deny.status(), headers, body.as_bytes()) {
            log(
                LogLevel::Error,
                &format!("the local reply was refused (status {status})"),
            );
        }
    }
}

impl KeygateHttp {
    /// Queues a canary hit (its client: Envoy's `source.address`, the downstream address after
    /// the connection manager's `X-Forwarded-For` handling, never a header the client sets); the
    /// worker wakes its root context through its own queue to send the report at once.
    fn report_canary(&self, key: keygate_protocol::KeyId, req: &Request<'_>, now: u64) {
        let client = hostcalls::get_property(vec!["source", "address"])
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let user_agent = req.header("user-agent").unwrap_or("");
        let mut metrics = self.state.metrics.borrow_mut();
        let mut host = ProxyHost {
            metrics: &mut metrics,
        };
        if let Some(w) = self.state.worker.borrow_mut().as_mut() {
            w.record_canary_hit(&mut host, key, now, req.path, &client, user_agent);
        }
    }

    /// Counts an allowed request against its key's rate limits (nothing for a key without
    /// any: no host call); over one, answers the 429 and says so. Within them and with
    /// `rate_limit_headers`, sets the two fields' [`FIELD_PROPERTIES`] (two host calls): a
    /// request-phase callback cannot add response headers, and the module exports no
    /// `proxy_on_response_headers` (a VM entry on every request, keys without limits included).
    fn over_limit(&self, a: &decision::Allow<'_>, worker: &Worker, now_ms: u64) -> bool {
        let Some(id) = a.identity.as_ref().filter(|i| !i.limits().is_empty()) else {
            return false;
        };
        let mut metrics = self.state.metrics.borrow_mut();
        let mut leases = self.state.leases.borrow_mut();
        let mut counters = Leased {
            leases: &mut leases,
            host: &mut ProxyHost {
                metrics: &mut metrics,
            },
        };
        let fleet = worker.config().rate_limit_fleet_size;
        match limits::check(
            id.limits(),
            id.key_id(),
            id.owner(),
            now_ms,
            fleet,
            &mut counters,
        ) {
            Outcome::Limited(status) => {
                self.state
                    .replies
                    .borrow_mut()
                    .send_limited(&limits::deny(), &status.limited_fields());
                true
            }
            Outcome::Within(status) if worker.config().rate_limit_headers => {
                // One filter-state object per field, which Envoy writes into the response
                // (`envoy/envoy.yaml`: `%FILTER_STATE(wasm.keygate_ratelimit...:PLAIN)%`).
                for ((_, value), name) in status.allowed_fields().iter().zip(FIELD_PROPERTIES) {
                    let _ = hostcalls::set_property(vec![name], Some(value.as_bytes()));
                }
                false
            }
            Outcome::Within(_) | Outcome::Unlimited => false,
        }
    }
}

impl HttpContext for KeygateHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // The host's buffer is read in place; a malformed one reads as no headers (a 401).
        let mut raw = raw::header_map(raw::Map::RequestHeaders).unwrap_or_default();
        let (view, as_sent) = pairs::parse_str(&mut raw).unwrap_or_default();
        let req = Request::from_pairs(view);
        let now = self.state.clock_ms.get();
        let (reason, key_id, canary) = {
            let guard = self.state.worker.borrow();
            let Some(worker) = guard.as_ref() else {
                let deny = Deny::new(Reason::KeysetUnavailable, "the filter is not configured");
                self.state.replies.borrow_mut().send(&deny);
                return Action::Pause;
            };
            let decision = worker.decide(&req, now);
            let reason = decision.reason();
            match decision {
                Decision::Allow(a) if self.over_limit(&a, worker, now) => {
                    (Reason::RateLimited, a.key_id(), None)
                }
                Decision::Allow(a) => {
                    for name in &a.remove {
                        let _ = hostcalls::remove_map_value(
                            proxy_wasm::types::MapType::HttpRequestHeaders,
                            name,
                        );
                    }
                    for (name, value) in &a.set {
                        let _ = hostcalls::set_map_value(
                            proxy_wasm::types::MapType::HttpRequestHeaders,
                            name,
                            Some(value),
                        );
                    }
                    if !a.strip_cookies.is_empty() {
                        let cookies = as_sent.values(&req.headers, "cookie");
                        let _ = hostcalls::set_map_value_bytes(
                            proxy_wasm::types::MapType::HttpRequestHeaders,
                            "cookie",
                            decision::cookies_without(cookies, &a.strip_cookies).as_deref(),
                        );
                    }
                    for (name, value) in a.identity.iter().flat_map(decision::Identity::headers) {
                        let _ = hostcalls::add_map_value(
                            proxy_wasm::types::MapType::HttpRequestHeaders,
                            name,
                            value,
                        );
                    }
                    (reason, a.key_id(), None)
                }
                Decision::Deny(d) => {
                    self.state.replies.borrow_mut().send(&d);
                    (reason, d.exhausted, d.canary)
                }
            }
        };
        if let Some(count) = self.state.decisions.borrow_mut().get_mut(reason.index()) {
            *count += 1;
        }
        if let Some(key) = canary {
            self.report_canary(key, &req, now);
        }
        if reason.is_allow() {
            if let Some(w) = self.state.worker.borrow_mut().as_mut() {
                w.record_use(reason, key_id, now);
            }
            Action::Continue
        } else {
            if let (Some(key), Some(w)) = (key_id, self.state.worker.borrow_mut().as_mut()) {
                w.record_refused(reason, Some(key), now);
            }
            Action::Pause
        }
    }
}
