//! A fake [`Host`] for native tests: a virtual clock, shared data with compare-and-swap shared by
//! several simulated workers, and a record of calls, logs and metrics.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use crate::host::{DispatchError, Host, HttpCall, LogLevel, SharedDataError};

/// A call the fake recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCall {
    /// Which worker made it.
    pub worker: usize,
    /// Its token.
    pub token: u32,
    /// Cluster.
    pub cluster: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Option<Vec<u8>>,
    /// Virtual time of the dispatch, ms.
    pub at_ms: u64,
}

impl RecordedCall {
    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// State shared by every worker of one fake VM.
#[derive(Debug, Default)]
pub struct World {
    /// Virtual time, ms since the epoch.
    pub now_ms: u64,
    /// Shared data: value and cas token.
    pub shared: HashMap<String, (Vec<u8>, u32)>,
    /// Reads of shared data that found a value, by key.
    pub shared_reads: HashMap<String, u64>,
    next_cas: u32,
    next_token: u32,
    /// Every call dispatched, in order.
    pub calls: Vec<RecordedCall>,
    /// Log lines.
    pub logs: Vec<(LogLevel, String)>,
    /// Counters.
    pub counters: HashMap<String, u64>,
    /// Gauges, per worker.
    pub gauges: HashMap<(usize, String), u64>,
    /// When set, dispatch fails.
    pub refuse_dispatch: bool,
    /// Shared queues by name: the worker that registered it, its token, its items.
    pub queues: HashMap<String, (usize, u32, VecDeque<Vec<u8>>)>,
    /// Workers whose queue got an item since the test last delivered `on_queue_ready`, in order.
    pub queue_ready: Vec<usize>,
    /// When set, queue registration fails (a host without shared queues).
    pub refuse_queues: bool,
    /// When set, the host says it runs one VM for the process (`Host::has_other_vms` false).
    pub single_vm: bool,
    /// Host properties by path (segments joined with `.`), e.g. `node.id`.
    pub properties: HashMap<String, Vec<u8>>,
    /// Property reads, by path.
    pub property_reads: HashMap<String, u64>,
    /// The random generator's state (a test may reseed it).
    pub rng: u64,
}

impl World {
    /// A world at `now_ms`.
    pub fn new(now_ms: u64) -> Rc<RefCell<World>> {
        Rc::new(RefCell::new(World {
            now_ms,
            rng: 0x9e37_79b9_7f4a_7c15,
            ..World::default()
        }))
    }

    /// A counter's value (0 if never touched).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

/// One worker's view of the [`World`].
#[derive(Debug, Clone)]
pub struct FakeHost {
    /// The shared world.
    pub world: Rc<RefCell<World>>,
    /// This worker's index.
    pub worker: usize,
}

impl FakeHost {
    /// Worker `worker` of `world`.
    pub fn new(world: &Rc<RefCell<World>>, worker: usize) -> Self {
        Self {
            world: world.clone(),
            worker,
        }
    }
}

impl Host for FakeHost {
    fn now_ms(&self) -> u64 {
        self.world.borrow().now_ms
    }

    fn has_other_vms(&self) -> bool {
        !self.world.borrow().single_vm
    }

    fn random_u64(&mut self) -> u64 {
        let mut w = self.world.borrow_mut();
        // xorshift64
        let mut x = w.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.rng = x;
        x
    }

    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        let mut w = self.world.borrow_mut();
        let found = w.shared.get(key).map(|(v, cas)| (v.clone(), *cas));
        match found {
            Some((v, cas)) => {
                *w.shared_reads.entry(key.to_owned()).or_default() += 1;
                (Some(v), Some(cas))
            }
            None => (None, None),
        }
    }

    fn shared_set(
        &mut self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedDataError> {
        let mut w = self.world.borrow_mut();
        if let (Some(expected), Some((_, current))) = (cas, w.shared.get(key))
            && expected != *current
        {
            return Err(SharedDataError::CasMismatch);
        }
        w.next_cas += 1;
        let c = w.next_cas;
        w.shared.insert(key.to_owned(), (value.to_vec(), c));
        Ok(())
    }

    fn dispatch(&mut self, call: HttpCall<'_>) -> Result<u32, DispatchError> {
        let mut w = self.world.borrow_mut();
        if w.refuse_dispatch {
            return Err(DispatchError);
        }
        w.next_token += 1;
        let token = w.next_token;
        let rec = RecordedCall {
            worker: self.worker,
            token,
            cluster: call.cluster.to_owned(),
            headers: call
                .headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            body: call.body,
            at_ms: w.now_ms,
        };
        w.calls.push(rec);
        Ok(token)
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        self.world
            .borrow_mut()
            .logs
            .push((level, message.to_owned()));
    }

    fn counter_add(&mut self, name: &str, delta: u64) {
        *self
            .world
            .borrow_mut()
            .counters
            .entry(name.to_owned())
            .or_default() += delta;
    }

    fn gauge_set(&mut self, name: &str, value: u64) {
        let worker = self.worker;
        self.world
            .borrow_mut()
            .gauges
            .insert((worker, name.to_owned()), value);
    }

    fn queue_register(&mut self, name: &str) -> Option<u32> {
        let mut w = self.world.borrow_mut();
        if w.refuse_queues {
            return None;
        }
        w.next_token += 1;
        let token = w.next_token;
        let worker = self.worker;
        // As in proxy-wasm hosts: registering again takes the queue over, keeping its items.
        let entry = w
            .queues
            .entry(name.to_owned())
            .or_insert((worker, token, VecDeque::new()));
        entry.0 = worker;
        Some(entry.1)
    }

    fn queue_enqueue(&mut self, name: &str, value: &[u8]) -> bool {
        let mut w = self.world.borrow_mut();
        let Some((owner, _, items)) = w.queues.get_mut(name) else {
            return false;
        };
        items.push_back(value.to_vec());
        let owner = *owner;
        w.queue_ready.push(owner);
        true
    }

    fn queue_drain(&mut self, token: u32) -> usize {
        let mut w = self.world.borrow_mut();
        w.queues
            .values_mut()
            .find(|(_, t, _)| *t == token)
            .map_or(0, |(_, _, items)| items.drain(..).count())
    }

    fn property(&mut self, path: &[&str]) -> Option<Vec<u8>> {
        let key = path.join(".");
        let mut w = self.world.borrow_mut();
        *w.property_reads.entry(key.clone()).or_default() += 1;
        w.properties.get(&key).cloned()
    }
}
