//! The sync thread's counters and gauges, on their way to Envoy's stats.
//!
//! The sync thread's [`Host`](keygate_filter_core::host::Host) adds to atomics here and marks
//! them dirty; after each step of its loop the thread [`flush`es](ConfigSinks::flush) what
//! changed to Envoy itself, through a filter configuration still alive ([`ConfigSinks`]: each
//! configuration that shares the sync registers one when Envoy creates it and takes it back
//! before Envoy destroys it). Envoy 1.40 exports configuration-level stat callbacks
//! (`…_http_filter_config_increment_counter`, `…_http_filter_config_set_gauge`: no stream
//! needed; Envoy's counters and gauges are atomic), so the gauges are current whether or not
//! requests flow, and the request path does no stat work for the sync.
//!
//! The names are those of the proxy-wasm filter (`keygate.sync.*`, `keygate.usage.*`,
//! `keygate.keyset.*`), plus [`SYNCS`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use keygate_filter_core::canary::metrics as canary_metrics;
use keygate_filter_core::sync::{SyncFailure, metrics as sync_metrics};
use keygate_filter_core::worker::metrics as usage_metrics;

/// Gauge: key-set syncs running in this process (one per distinct control-plane source: a
/// reload or a second listener with the same source shares the running one).
pub const SYNCS: &str = "keygate.native.syncs";

/// Syncs running in this process (the [`SYNCS`] gauge).
pub static LIVE_SYNCS: AtomicUsize = AtomicUsize::new(0);

/// The counters the sync thread adds to, in a fixed order (their index is their id here).
pub fn counter_names() -> Vec<String> {
    let mut names: Vec<String> = [
        sync_metrics::CALLS,
        sync_metrics::SUCCESS,
        sync_metrics::FOLLOWED,
        sync_metrics::WOKEN,
        usage_metrics::USAGE_SENT,
        usage_metrics::USAGE_FAILED,
        usage_metrics::USAGE_DROPPED,
        usage_metrics::USAGE_DROPPED_REQUESTS,
    ]
    .map(str::to_owned)
    .to_vec();
    names.extend(SyncFailure::ALL.iter().map(|f| f.metric_name()));
    names.extend(
        [
            canary_metrics::HITS,
            canary_metrics::HITS_REPORTED,
            canary_metrics::REPORTS_SENT,
            canary_metrics::REPORTS_FAILED,
            canary_metrics::HITS_DROPPED,
        ]
        .map(str::to_owned),
    );
    names
}

/// The gauges the sync thread sets, in a fixed order; [`SYNCS`] last.
pub const GAUGE_NAMES: [&str; 5] = [
    sync_metrics::REVISION,
    sync_metrics::KEYS,
    sync_metrics::HEAP_BYTES,
    sync_metrics::STALENESS,
    SYNCS,
];

/// What a flush does to Envoy's stats.
pub trait MetricSink {
    /// Adds `delta` to counter `index` of [`counter_names`].
    fn counter_add(&mut self, index: usize, delta: u64);
    /// Sets gauge `index` of [`GAUGE_NAMES`].
    fn gauge_set(&mut self, index: usize, value: u64);
}

/// The counts and values not yet flushed.
#[derive(Debug)]
pub struct SyncMetrics {
    counter_names: Vec<String>,
    counters: Vec<AtomicU64>,
    gauges: [AtomicU64; GAUGE_NAMES.len()],
    /// Gauges ever set (an unset gauge is not flushed).
    gauges_set: [AtomicBool; GAUGE_NAMES.len()],
    dirty: AtomicBool,
}

impl Default for SyncMetrics {
    fn default() -> Self {
        let counter_names = counter_names();
        let counters = counter_names.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            counter_names,
            counters,
            gauges: Default::default(),
            gauges_set: Default::default(),
            dirty: AtomicBool::new(false),
        }
    }
}

impl SyncMetrics {
    /// Adds to the counter `name` (ignored if not one of [`counter_names`]).
    pub fn counter_add(&self, name: &str, delta: u64) {
        if let Some(i) = self.counter_names.iter().position(|n| n == name)
            && let Some(c) = self.counters.get(i)
        {
            c.fetch_add(delta, Ordering::Relaxed);
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Sets the gauge `name` (ignored if not one of [`GAUGE_NAMES`]: the core's per-VM names,
    /// which a process with one VM does not need).
    pub fn gauge_set(&self, name: &str, value: u64) {
        if let Some(i) = GAUGE_NAMES.iter().position(|n| *n == name) {
            self.set_gauge_at(i, value);
        }
    }

    fn set_gauge_at(&self, i: usize, value: u64) {
        if let (Some(g), Some(s)) = (self.gauges.get(i), self.gauges_set.get(i)) {
            let changed = g.swap(value, Ordering::Relaxed) != value;
            let first = !s.swap(true, Ordering::Relaxed);
            if changed || first {
                self.dirty.store(true, Ordering::Release);
            }
        }
    }

    /// Marks everything dirty (a new filter configuration shares this sync: its gauges need
    /// values).
    pub fn touch(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// Sends what changed since the last flush to `sink` (one load when nothing did).
    pub fn flush(&self, sink: &mut (impl MetricSink + ?Sized)) {
        if !self.dirty.load(Ordering::Acquire) || !self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let syncs = GAUGE_NAMES.len() - 1;
        if let (Some(g), Some(s)) = (self.gauges.get(syncs), self.gauges_set.get(syncs)) {
            g.store(LIVE_SYNCS.load(Ordering::Relaxed) as u64, Ordering::Relaxed);
            s.store(true, Ordering::Relaxed);
        }
        for (i, c) in self.counters.iter().enumerate() {
            let delta = c.swap(0, Ordering::Relaxed);
            if delta > 0 {
                sink.counter_add(i, delta);
            }
        }
        for (i, (g, s)) in self.gauges.iter().zip(&self.gauges_set).enumerate() {
            if s.load(Ordering::Relaxed) {
                sink.gauge_set(i, g.load(Ordering::Relaxed));
            }
        }
    }
}

/// Where the sync thread flushes: one sink per live filter configuration sharing the sync. The
/// stats of every configuration are the same stats (same names, one scope), so a flush goes to
/// one of them, the oldest.
#[derive(Default)]
pub struct ConfigSinks {
    sinks: Mutex<Vec<(u64, Box<dyn MetricSink + Send>)>>,
    next: AtomicU64,
}

impl std::fmt::Debug for ConfigSinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.sinks.lock().map_or(0, |s| s.len());
        f.debug_struct("ConfigSinks").field("sinks", &n).finish()
    }
}

impl ConfigSinks {
    /// Adds a configuration's sink; the token takes it back.
    pub fn register(&self, sink: Box<dyn MetricSink + Send>) -> u64 {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        self.sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((token, sink));
        token
    }

    /// Takes a sink back; once this returns, no flush uses it (a flush in progress holds the
    /// lock this waits for).
    pub fn unregister(&self, token: u64) {
        self.sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(t, _)| *t != token);
    }

    /// Flushes `metrics` to the oldest live configuration; with none, what changed waits for
    /// the next one.
    pub fn flush(&self, metrics: &SyncMetrics) {
        let mut sinks = self.sinks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, sink)) = sinks.first_mut() {
            metrics.flush(sink.as_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Sink(Vec<(char, usize, u64)>);
    impl MetricSink for Sink {
        fn counter_add(&mut self, index: usize, delta: u64) {
            self.0.push(('c', index, delta));
        }
        fn gauge_set(&mut self, index: usize, value: u64) {
            self.0.push(('g', index, value));
        }
    }

    #[test]
    fn counts_reach_the_sink_once_and_gauges_their_last_value() {
        let m = SyncMetrics::default();
        let mut s = Sink::default();
        m.flush(&mut s);
        assert!(s.0.is_empty(), "nothing changed");
        m.counter_add(sync_metrics::CALLS, 2);
        m.counter_add(sync_metrics::CALLS, 1);
        m.counter_add("keygate.vm.0.keygate.keyset.keys", 1);
        m.gauge_set(sync_metrics::KEYS, 7);
        m.gauge_set(sync_metrics::KEYS, 9);
        m.flush(&mut s);
        assert!(s.0.contains(&('c', 0, 3)), "{:?}", s.0);
        assert!(s.0.contains(&('g', 1, 9)), "{:?}", s.0);
        assert!(s.0.iter().any(|(k, i, _)| *k == 'g' && *i == 4), "syncs");
        let before = s.0.len();
        m.flush(&mut s);
        assert_eq!(s.0.len(), before, "flushed once");
        let failure = SyncFailure::Unreachable.metric_name();
        m.counter_add(&failure, 1);
        m.flush(&mut s);
        let i = counter_names().iter().position(|n| *n == failure).unwrap();
        assert!(s.0.contains(&('c', i, 1)));
    }

    /// A sink that records into a shared log (the registry takes ownership of its sinks).
    struct Shared(std::sync::Arc<Mutex<Vec<(char, usize, u64)>>>, char);
    impl MetricSink for Shared {
        fn counter_add(&mut self, index: usize, delta: u64) {
            self.0.lock().unwrap().push((self.1, index, delta));
        }
        fn gauge_set(&mut self, _: usize, _: u64) {}
    }

    #[test]
    fn a_flush_goes_to_the_oldest_live_configuration_and_waits_for_one() {
        let m = SyncMetrics::default();
        let sinks = ConfigSinks::default();
        let log = std::sync::Arc::new(Mutex::new(Vec::new()));
        m.counter_add(sync_metrics::CALLS, 2);
        sinks.flush(&m);
        let a = sinks.register(Box::new(Shared(log.clone(), 'a')));
        let _b = sinks.register(Box::new(Shared(log.clone(), 'b')));
        sinks.flush(&m);
        assert_eq!(
            *log.lock().unwrap(),
            vec![('a', 0, 2)],
            "kept until a sink came, then once"
        );
        sinks.unregister(a);
        m.counter_add(sync_metrics::CALLS, 5);
        sinks.flush(&m);
        assert_eq!(log.lock().unwrap().last(), Some(&('b', 0, 5)), "a is gone");
    }
}
