//! The seam between the pure core and proxy-wasm: everything the core needs from its host.
//!
//! The glue implements [`Host`] with proxy-wasm calls; tests implement it with a fake that
//! shares data between simulated workers and records the calls made.

/// Log levels the core uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Routine events.
    Info,
    /// Something failed but the filter carries on.
    Warn,
    /// Configuration or invariant failures.
    Error,
}

/// Failure of a compare-and-swap write to shared data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SharedDataError {
    /// Another worker wrote the key since it was read.
    #[error("shared data changed since it was read (compare-and-swap mismatch)")]
    CasMismatch,
    /// The host refused the write.
    #[error("the host refused the shared data write")]
    Refused,
}

/// An outgoing HTTP call could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the host could not dispatch the HTTP call (unknown cluster or bad request)")]
pub struct DispatchError;

/// An outgoing HTTP call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall<'a> {
    /// Envoy cluster name.
    pub cluster: &'a str,
    /// Headers including `:method`, `:path`, `:authority`.
    pub headers: Vec<(&'a str, String)>,
    /// Optional request body.
    pub body: Option<Vec<u8>>,
    /// Timeout in milliseconds.
    pub timeout_ms: u64,
}

/// The answer to an [`HttpCall`], as the core sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpResponse {
    /// `:status`, if the call reached a server (none on timeout, reset or no upstream).
    pub status: Option<u16>,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the core needs from the proxy.
pub trait Host {
    /// Wall-clock (or virtual) time, milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// A random number (lease owner ids, backoff jitter).
    fn random_u64(&mut self) -> u64;
    /// Reads shared data: the value and its compare-and-swap token.
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes shared data; with `cas`, only if nobody wrote since that token was read.
    fn shared_set(
        &mut self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedDataError>;
    /// Starts an HTTP call; the answer comes back through the core's `on_response` with the token.
    fn dispatch(&mut self, call: HttpCall<'_>) -> Result<u32, DispatchError>;
    /// Logs a line (never with secrets in it).
    fn log(&mut self, level: LogLevel, message: &str);
    /// Adds to a counter.
    fn counter_add(&mut self, name: &str, delta: u64);
    /// Sets a gauge.
    fn gauge_set(&mut self, name: &str, value: u64);
    /// Registers this VM's shared queue `name` (in its own `vm_id`): whenever a VM enqueues to
    /// it, the host calls this VM's root context back (`on_queue_ready`) on this VM's thread.
    /// Its token, `None` if the host refused.
    fn queue_register(&mut self, name: &str) -> Option<u32>;
    /// Enqueues `value` to the queue `name` of this VM's `vm_id`; false if no VM registered it.
    fn queue_enqueue(&mut self, name: &str, value: &[u8]) -> bool;
    /// Takes every item waiting in the queue `token`; how many there were.
    fn queue_drain(&mut self, token: u32) -> usize;
    /// Reads the host property at `path` (proxy-wasm's `proxy_get_property`, e.g.
    /// `["node", "id"]`); `None` when the host has none or refuses.
    fn property(&mut self, path: &[&str]) -> Option<Vec<u8>>;
    /// Whether other VMs read what this one publishes in shared data (proxy-wasm: one VM per
    /// worker, so yes). A shell that runs one VM for its whole process says no: the syncer
    /// then publishes nothing (no delta chain, no snapshot encoded every `MAX_CHAIN` changes).
    fn has_other_vms(&self) -> bool {
        true
    }
}
