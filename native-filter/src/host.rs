//! [`Host`] for one process: the core's sync runs as a single VM on the module's sync thread.
//!
//! - Clock: the system clock. Randomness: a xorshift generator seeded from the OS (lease owner
//!   ids, backoff jitter).
//! - Shared data and queues: in-process maps owned by the sync thread. A single VM leads, so
//!   the core's lease and VM counters work as written (the VM always wins). It says it has no
//!   other VMs ([`Host::has_other_vms`]), so the core publishes nothing for followers (no head
//!   record, no delta chain, no snapshot encoded every `MAX_CHAIN` changes); should a snapshot
//!   (`…/snap`) or a delta (`…/delta/<rev>`) be written anyway, it is stored empty, never as a
//!   second copy of the set.
//! - HTTP calls: [`Host::dispatch`] queues the call ([`NativeHost::take_calls`]); the sync thread
//!   runs it on a thread of its own with the blocking client and feeds the answer back to the
//!   core's `on_response` with the token.
//! - Counters and gauges: [`SyncMetrics`], flushed to Envoy by the request path.
//! - Log: a function given by the shell (Envoy's log in the module, nothing in unit tests).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use keygate_filter_core::host::{DispatchError, Host, HttpCall, LogLevel, SharedDataError};

use crate::metrics::SyncMetrics;

/// Where log lines go.
pub type LogFn = fn(LogLevel, &str);

/// A call the core dispatched, owned, for the sync thread to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `:method`.
    pub method: String,
    /// `:path` (with the query).
    pub path: String,
    /// The other headers (`:authority` becomes the client's `Host`, from the URL).
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
    /// Timeout of the whole call.
    pub timeout_ms: u64,
}

/// The milliseconds since the Unix epoch by the system clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The sync thread's host.
#[derive(Debug)]
pub struct NativeHost {
    shared: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    queues: HashMap<String, (u32, usize)>,
    next_token: u32,
    calls: Vec<(u32, Call)>,
    metrics: Arc<SyncMetrics>,
    log: LogFn,
    rng: u64,
}

impl NativeHost {
    /// A host whose counters and gauges go to `metrics` and log lines to `log`.
    pub fn new(metrics: Arc<SyncMetrics>, log: LogFn) -> Self {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(now_ms());
        Self {
            shared: HashMap::new(),
            next_cas: 0,
            queues: HashMap::new(),
            next_token: 0,
            calls: Vec::new(),
            metrics,
            log,
            rng: h.finish() | 1,
        }
    }

    /// The calls dispatched since the last time, with their tokens.
    pub fn take_calls(&mut self) -> Vec<(u32, Call)> {
        std::mem::take(&mut self.calls)
    }

    /// Whether shared data `key` is one of the copies published for other VMs.
    fn for_other_vms(key: &str) -> bool {
        key.ends_with("/snap") || key.contains("/delta/")
    }
}

impl Host for NativeHost {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    /// One VM for the whole process: nothing reads a publication, so the syncer makes none
    /// (no delta chain, no snapshot encoded every `MAX_CHAIN` changes).
    fn has_other_vms(&self) -> bool {
        false
    }

    fn random_u64(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.shared.get(key) {
            Some((value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    fn shared_set(
        &mut self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedDataError> {
        if let (Some(expected), Some((_, current))) = (cas, self.shared.get(key))
            && expected != *current
        {
            return Err(SharedDataError::CasMismatch);
        }
        self.next_cas = self.next_cas.wrapping_add(1);
        let stored = if Self::for_other_vms(key) {
            Vec::new()
        } else {
            value.to_vec()
        };
        self.shared.insert(key.to_owned(), (stored, self.next_cas));
        Ok(())
    }

    fn dispatch(&mut self, call: HttpCall<'_>) -> Result<u32, DispatchError> {
        let mut method = None;
        let mut path = None;
        let mut headers = Vec::new();
        for (name, value) in call.headers {
            match name {
                ":method" => method = Some(value),
                ":path" => path = Some(value),
                n if n.starts_with(':') => {}
                n => headers.push((n.to_owned(), value)),
            }
        }
        let (Some(method), Some(path)) = (method, path) else {
            return Err(DispatchError);
        };
        self.next_token = self.next_token.wrapping_add(1);
        let token = self.next_token;
        self.calls.push((
            token,
            Call {
                method,
                path,
                headers,
                body: call.body,
                timeout_ms: call.timeout_ms,
            },
        ));
        Ok(token)
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        (self.log)(level, message);
    }

    fn counter_add(&mut self, name: &str, delta: u64) {
        self.metrics.counter_add(name, delta);
    }

    fn gauge_set(&mut self, name: &str, value: u64) {
        self.metrics.gauge_set(name, value);
    }

    fn queue_register(&mut self, name: &str) -> Option<u32> {
        if let Some((token, _)) = self.queues.get(name) {
            return Some(*token);
        }
        let token = u32::try_from(self.queues.len()).ok()?;
        self.queues.insert(name.to_owned(), (token, 0));
        Some(token)
    }

    fn queue_enqueue(&mut self, name: &str, _value: &[u8]) -> bool {
        match self.queues.get_mut(name) {
            Some((_, waiting)) => {
                *waiting += 1;
                true
            }
            None => false,
        }
    }

    fn queue_drain(&mut self, token: u32) -> usize {
        self.queues
            .values_mut()
            .find(|(t, _)| *t == token)
            .map_or(0, |(_, waiting)| std::mem::take(waiting))
    }

    /// The dynamic-module ABI this shell uses reads no node properties from a background
    /// thread: its edge reports carry no `node.id`/`node.cluster`.
    fn property(&mut self, _path: &[&str]) -> Option<Vec<u8>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> NativeHost {
        NativeHost::new(Arc::new(SyncMetrics::default()), |_, _| {})
    }

    #[test]
    fn shared_data_compares_and_swaps() {
        let mut h = host();
        assert_eq!(h.shared_get("k"), (None, None));
        h.shared_set("k", b"1", None).unwrap();
        let (v, cas) = h.shared_get("k");
        assert_eq!(v.as_deref(), Some(&b"1"[..]));
        h.shared_set("k", b"2", cas).unwrap();
        assert_eq!(
            h.shared_set("k", b"3", cas),
            Err(SharedDataError::CasMismatch)
        );
        assert_eq!(h.shared_get("k").0.as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn copies_for_other_vms_are_not_kept() {
        let mut h = host();
        h.shared_set("keygate/cp/snap", &[1; 100], None).unwrap();
        h.shared_set("keygate/cp/delta/7", &[1; 100], None).unwrap();
        h.shared_set("keygate/cp/head", b"{}", None).unwrap();
        assert_eq!(h.shared_get("keygate/cp/snap").0, Some(Vec::new()));
        assert_eq!(h.shared_get("keygate/cp/delta/7").0, Some(Vec::new()));
        assert_eq!(
            h.shared_get("keygate/cp/head").0.as_deref(),
            Some(&b"{}"[..])
        );
    }

    #[test]
    fn a_dispatched_call_is_queued_with_its_token() {
        let mut h = host();
        let token = h
            .dispatch(HttpCall {
                cluster: "cp",
                headers: vec![
                    (":method", "GET".into()),
                    (":path", "/v1/keyset?since=3".into()),
                    (":authority", "cp".into()),
                    ("authorization", "Bearer k".into()),
                ],
                body: None,
                timeout_ms: 100,
            })
            .unwrap();
        let calls = h.take_calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].0, token);
        assert_eq!(calls[0].1.path, "/v1/keyset?since=3");
        assert_eq!(
            calls[0].1.headers,
            vec![("authorization".to_owned(), "Bearer k".to_owned())]
        );
        assert!(h.take_calls().is_empty());
        assert_ne!(h.random_u64(), h.random_u64());
    }
}
