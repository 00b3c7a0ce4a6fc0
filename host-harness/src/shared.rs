//! State shared by all workers: shared data, shared queues, metrics and the test recorder.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::abi::{LogLevel, MetricType, Status};
use crate::cluster::{CalloutRequest, CalloutResult};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Envoy's shared-data store: per `vm_id`, key → (value, cas). Every write takes a fresh cas.
#[derive(Debug, Default)]
pub struct SharedData {
    inner: Mutex<SharedDataInner>,
}

#[derive(Debug, Default)]
struct SharedDataInner {
    next_cas: u32,
    values: HashMap<(String, String), (Vec<u8>, u32)>,
}

impl SharedData {
    /// `proxy_get_shared_data`: the value and its cas, or `NotFound`.
    pub fn get(&self, vm_id: &str, key: &str) -> Result<(Vec<u8>, u32), Status> {
        lock(&self.inner)
            .values
            .get(&(vm_id.to_owned(), key.to_owned()))
            .cloned()
            .ok_or(Status::NotFound)
    }

    /// `proxy_set_shared_data`: cas 0 sets unconditionally; a non-zero cas must match the
    /// stored one (a missing key accepts any cas, as in Envoy).
    pub fn set(&self, vm_id: &str, key: &str, value: Vec<u8>, cas: u32) -> Result<(), Status> {
        let mut inner = lock(&self.inner);
        let id = (vm_id.to_owned(), key.to_owned());
        if let Some((_, current)) = inner.values.get(&id)
            && cas != 0
            && cas != *current
        {
            return Err(Status::CasMismatch);
        }
        inner.next_cas = inner.next_cas.wrapping_add(1).max(1);
        let next = inner.next_cas;
        inner.values.insert(id, (value, next));
        Ok(())
    }
}

/// Who gets `proxy_on_queue_ready` for a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueOwner {
    pub(crate) worker: usize,
    pub(crate) root_context_id: u32,
}

#[derive(Debug)]
struct Queue {
    owner: QueueOwner,
    items: VecDeque<Vec<u8>>,
}

/// Envoy's shared queues: per `(vm_id, name)` one queue with a token; the first registration
/// owns it and is notified of enqueues.
#[derive(Debug, Default)]
pub struct SharedQueues {
    inner: Mutex<QueuesInner>,
}

#[derive(Debug, Default)]
struct QueuesInner {
    next_token: u32,
    tokens: HashMap<(String, String), u32>,
    queues: HashMap<u32, Queue>,
}

impl SharedQueues {
    pub(crate) fn register(&self, vm_id: &str, name: &str, owner: QueueOwner) -> u32 {
        let mut inner = lock(&self.inner);
        if let Some(token) = inner.tokens.get(&(vm_id.to_owned(), name.to_owned())) {
            return *token;
        }
        inner.next_token += 1;
        let token = inner.next_token;
        inner
            .tokens
            .insert((vm_id.to_owned(), name.to_owned()), token);
        inner.queues.insert(
            token,
            Queue {
                owner,
                items: VecDeque::new(),
            },
        );
        token
    }

    pub(crate) fn resolve(&self, vm_id: &str, name: &str) -> Result<u32, Status> {
        lock(&self.inner)
            .tokens
            .get(&(vm_id.to_owned(), name.to_owned()))
            .copied()
            .ok_or(Status::NotFound)
    }

    pub(crate) fn enqueue(&self, token: u32, value: Vec<u8>) -> Result<QueueOwner, Status> {
        let mut inner = lock(&self.inner);
        let queue = inner.queues.get_mut(&token).ok_or(Status::NotFound)?;
        queue.items.push_back(value);
        Ok(queue.owner)
    }

    pub(crate) fn dequeue(&self, token: u32) -> Result<Vec<u8>, Status> {
        let mut inner = lock(&self.inner);
        let queue = inner.queues.get_mut(&token).ok_or(Status::NotFound)?;
        queue.items.pop_front().ok_or(Status::Empty)
    }

    /// Number of items waiting in a queue (for tests).
    pub fn len(&self, token: u32) -> Option<usize> {
        lock(&self.inner).queues.get(&token).map(|q| q.items.len())
    }
}

/// A metric's current value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MetricValue {
    /// Counter, gauge or histogram.
    #[serde(rename = "type")]
    pub kind: MetricType,
    /// Counter or gauge value (counters and gauges are u64 in Envoy's ABI).
    pub value: u64,
    /// Recorded histogram values, in order.
    pub recorded: Vec<u64>,
}

/// Metrics shared by all workers (Envoy's stats are per name, not per worker).
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<MetricsInner>,
}

#[derive(Debug, Default)]
struct MetricsInner {
    ids: HashMap<(u32, String), u32>,
    /// Indexed by `(id >> 2) - 1`: ids are handed out in order.
    by_id: Vec<(String, MetricValue)>,
}

impl MetricsInner {
    fn slot(&self, id: u32) -> Option<&(String, MetricValue)> {
        let index = (id >> 2).checked_sub(1)? as usize;
        self.by_id
            .get(index)
            .filter(|(_, m)| m.kind as u32 == id & 3)
    }

    fn slot_mut(&mut self, id: u32) -> Option<&mut (String, MetricValue)> {
        let index = (id >> 2).checked_sub(1)? as usize;
        self.by_id
            .get_mut(index)
            .filter(|(_, m)| m.kind as u32 == id & 3)
    }
}

impl Metrics {
    /// Envoy encodes the type in the low two bits of the id.
    pub(crate) fn define(&self, kind: MetricType, name: &str) -> u32 {
        let mut inner = lock(&self.inner);
        if let Some(id) = inner.ids.get(&(kind as u32, name.to_owned())) {
            return *id;
        }
        let id = ((inner.by_id.len() as u32 + 1) << 2) | kind as u32;
        inner.ids.insert((kind as u32, name.to_owned()), id);
        inner.by_id.push((
            name.to_owned(),
            MetricValue {
                kind,
                value: 0,
                recorded: Vec::new(),
            },
        ));
        id
    }

    pub(crate) fn increment(&self, id: u32, offset: i64) -> Result<(), Status> {
        let mut inner = lock(&self.inner);
        let (_, metric) = inner.slot_mut(id).ok_or(Status::NotFound)?;
        match metric.kind {
            MetricType::Counter if offset > 0 => {
                metric.value = metric.value.wrapping_add(offset as u64);
                Ok(())
            }
            MetricType::Counter => Err(Status::BadArgument),
            MetricType::Gauge => {
                metric.value = metric.value.wrapping_add_signed(offset);
                Ok(())
            }
            MetricType::Histogram => Err(Status::BadArgument),
        }
    }

    pub(crate) fn record(&self, id: u32, value: u64) -> Result<(), Status> {
        let mut inner = lock(&self.inner);
        let (_, metric) = inner.slot_mut(id).ok_or(Status::NotFound)?;
        match metric.kind {
            MetricType::Counter => metric.value = metric.value.wrapping_add(value),
            MetricType::Gauge => metric.value = value,
            MetricType::Histogram => metric.recorded.push(value),
        }
        Ok(())
    }

    pub(crate) fn get(&self, id: u32) -> Result<u64, Status> {
        let inner = lock(&self.inner);
        let (_, metric) = inner.slot(id).ok_or(Status::NotFound)?;
        match metric.kind {
            MetricType::Histogram => Err(Status::BadArgument),
            _ => Ok(metric.value),
        }
    }

    /// All metrics by name (a name defined with two types keeps the one defined last).
    pub fn snapshot(&self) -> HashMap<String, MetricValue> {
        lock(&self.inner)
            .by_id
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    }
}

/// One captured log line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogEntry {
    /// Worker index.
    pub worker: usize,
    /// Level.
    pub level: LogLevel,
    /// `proxy_log`, `stdout` or `stderr` (WASI `fd_write`).
    pub source: &'static str,
    /// The text.
    pub message: String,
}

/// One callout the filter made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CalloutRecord {
    /// Worker index.
    pub worker: usize,
    /// Context that made the call.
    pub context_id: u32,
    /// Token returned to the filter.
    pub token: u32,
    /// The request as issued.
    pub request: CalloutRequest,
    /// How it ended (`None` while in flight).
    pub result: Option<CalloutResult>,
}

/// A trap report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TrapReport {
    /// Worker index.
    pub worker: usize,
    /// The callback that trapped (`proxy_on_request_headers`, …).
    pub during: String,
    /// Critical/error logs the guest emitted during that callback (the Rust SDK's panic message).
    pub guest_message: Option<String>,
    /// Wasmtime's trap message with the wasm backtrace.
    pub trap: String,
}

/// What tests observe, shared by all workers.
#[derive(Debug, Default)]
pub struct Recorder {
    pub(crate) logs: Mutex<Vec<LogEntry>>,
    pub(crate) callouts: Mutex<Vec<CalloutRecord>>,
    pub(crate) traps: Mutex<Vec<TrapReport>>,
}

impl Recorder {
    pub(crate) fn log(&self, entry: LogEntry) {
        lock(&self.logs).push(entry);
    }

    pub(crate) fn callout(&self, record: CalloutRecord) {
        lock(&self.callouts).push(record);
    }

    pub(crate) fn callout_result(&self, worker: usize, token: u32, result: &CalloutResult) {
        if let Some(record) = lock(&self.callouts)
            .iter_mut()
            .rev()
            .find(|r| r.worker == worker && r.token == token)
        {
            record.result = Some(result.clone());
        }
    }

    pub(crate) fn trap(&self, report: TrapReport) {
        lock(&self.traps).push(report);
    }

    /// Takes the captured logs out (a long-running host drains them so they do not pile up).
    pub fn take_logs(&self) -> Vec<LogEntry> {
        std::mem::take(&mut *lock(&self.logs))
    }

    /// Takes the callout records out; a callout answered later is then no longer updated.
    pub fn take_callouts(&self) -> Vec<CalloutRecord> {
        std::mem::take(&mut *lock(&self.callouts))
    }

    /// All captured logs.
    pub fn logs(&self) -> Vec<LogEntry> {
        lock(&self.logs).clone()
    }

    /// All callouts made so far.
    pub fn callouts(&self) -> Vec<CalloutRecord> {
        lock(&self.callouts).clone()
    }

    /// All traps so far.
    pub fn traps(&self) -> Vec<TrapReport> {
        lock(&self.traps).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_semantics_match_envoy() {
        let data = SharedData::default();
        assert_eq!(data.get("vm", "k"), Err(Status::NotFound));
        data.set("vm", "k", b"a".to_vec(), 0).unwrap();
        let (_, cas) = data.get("vm", "k").unwrap();
        assert_eq!(
            data.set("vm", "k", b"b".to_vec(), cas + 1),
            Err(Status::CasMismatch)
        );
        data.set("vm", "k", b"b".to_vec(), cas).unwrap();
        assert_eq!(
            data.set("vm", "k", b"c".to_vec(), cas),
            Err(Status::CasMismatch)
        );
        assert_eq!(data.get("vm", "k").unwrap().0, b"b");
        assert_eq!(data.get("other", "k"), Err(Status::NotFound));
    }

    #[test]
    fn metric_rules_match_envoy() {
        let m = Metrics::default();
        let c = m.define(MetricType::Counter, "c");
        assert_eq!(m.define(MetricType::Counter, "c"), c);
        assert_eq!(m.increment(c, -1), Err(Status::BadArgument));
        m.increment(c, 2).unwrap();
        assert_eq!(m.get(c), Ok(2));
        let h = m.define(MetricType::Histogram, "h");
        assert_eq!(m.get(h), Err(Status::BadArgument));
        assert_eq!(m.get(999), Err(Status::NotFound));
    }
}
