//! The key-set sync of a process: one background thread per control-plane source running the
//! core's [`Worker`] (sync, backoff, long-poll, staleness, usage batching) against
//! [`NativeHost`], publishing the set to the request path ([`PublishedSet`]) and taking its
//! usage counts ([`UsageShards`]).
//!
//! **One per process and source.** [`KeySync::shared`] returns the sync already running for the
//! same source (control-plane URL and the configuration's sync settings), or starts one. Every
//! filter configuration holds an `Arc` to its sync: a reload, which creates the new
//! configuration before it destroys the old one, or a second listener with the same source,
//! shares the running sync and its one set; the sync stops when the last configuration holding
//! it is destroyed ([`Drop`]: the thread is told to stop, the HTTP calls in flight are
//! interrupted, and every thread the sync started is joined before Envoy's
//! `config_destroy` returns, so no code of this module runs after Envoy unloads it).
//!
//! **The loop.** The thread ticks at the configuration's tick period (the first tick at once:
//! the first key set is asked for when the configuration is created), handing the uses counted
//! since the last tick to the worker first. A call the core dispatches runs on a thread of its
//! own (a long poll parks there while reports still go out); its answer comes back to the loop
//! through a channel and goes to the core's `on_response`. After each event, the worker's set
//! is published if it changed, and the sync's counters and gauges go to Envoy
//! ([`crate::metrics::ConfigSinks`]).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keygate_filter_core::config::Config;
use keygate_filter_core::decision::Reason;
use keygate_filter_core::host::{Host, HttpResponse, LogLevel};
use keygate_filter_core::worker::Worker;

use crate::canary::CanaryInbox;
use crate::host::{LogFn, NativeHost};
use crate::http::{Client, Trust};
use crate::metrics::{ConfigSinks, LIVE_SYNCS, SyncMetrics};
use crate::published::PublishedSet;
use crate::usage::UsageShards;

/// What the loop waits for.
enum Event {
    /// The answer to the call with this token.
    Response(u32, HttpResponse),
    /// A request left a canary hit in [`Shared::canary`]: report it now.
    Canary,
    /// Stop.
    Stop,
}

/// What the sync thread shares with the request path.
#[derive(Debug, Default)]
pub struct Shared {
    /// The set, as last published.
    pub published: PublishedSet,
    /// Uses not yet taken by the sync thread.
    pub usage: UsageShards,
    /// Counters and gauges not yet flushed to Envoy.
    pub metrics: Arc<SyncMetrics>,
    /// Where they are flushed: the live configurations sharing this sync.
    pub sinks: ConfigSinks,
    /// Canary hits left by the request path.
    pub canary: CanaryInbox,
}

/// A running sync; stopped when dropped.
#[derive(Debug)]
pub struct KeySync {
    source: String,
    shared: Arc<Shared>,
    stop: Mutex<Sender<Event>>,
    client: Client,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Response(t, r) => write!(f, "Response({t}, {:?})", r.status),
            Event::Canary => f.write_str("Canary"),
            Event::Stop => f.write_str("Stop"),
        }
    }
}

/// Unit tests that start syncs hold this: [`LIVE_SYNCS`] is the process's.
#[cfg(test)]
pub(crate) static SERIAL: Mutex<()> = Mutex::new(());

/// The syncs running in this process, by source.
static RUNNING: Mutex<Vec<Weak<KeySync>>> = Mutex::new(Vec::new());

/// What makes two configurations' syncs the same: where the set comes from and how.
fn source_of(config: &Config, url: &str, ca_file: Option<&str>) -> String {
    format!(
        "{url}\n{ca_file:?}\n{}\n{}\n{:?}\n{}\n{}\n{}\n{}\n{}",
        config.cluster,
        config.authority,
        config.edge_key,
        config.sync_interval_ms,
        config.long_poll_wait_s,
        config.request_timeout_ms,
        config.usage_report_interval_ms,
        config.usage_cluster,
    )
}

impl KeySync {
    /// The sync of `config`'s source at `url`: the running one, or a new one.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn shared(
        config: &Config,
        url: &str,
        ca_file: Option<&str>,
        trust: &Trust,
        log: LogFn,
    ) -> Result<Arc<KeySync>, String> {
        let source = source_of(config, url, ca_file);
        let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
        running.retain(|w| w.strong_count() > 0);
        if let Some(sync) = running
            .iter()
            .filter_map(Weak::upgrade)
            .find(|s| s.source == source)
        {
            sync.shared.metrics.touch();
            return Ok(sync);
        }
        let sync = Arc::new(KeySync::start(config.clone(), url, trust, source, log)?);
        running.push(Arc::downgrade(&sync));
        Ok(sync)
    }

    fn start(
        config: Config,
        url: &str,
        trust: &Trust,
        source: String,
        log: LogFn,
    ) -> Result<KeySync, String> {
        let shared = Arc::new(Shared::default());
        let client = Client::new(url, trust);
        let (tx, rx) = mpsc::channel();
        let wake = Mutex::new(tx.clone());
        shared.canary.set_wake(Box::new(move || {
            let _ = wake
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .send(Event::Canary);
        }));
        let thread = {
            let shared = Arc::clone(&shared);
            let client = client.clone();
            let tx = tx.clone();
            std::thread::Builder::new()
                .name("keygate-sync".into())
                .spawn(move || {
                    let run = catch_unwind(AssertUnwindSafe(|| {
                        run(&shared, config, &client, &tx, &rx, log);
                    }));
                    if run.is_err() {
                        log(
                            LogLevel::Error,
                            "keygate-native-filter: the sync thread panicked and stopped; the key set will turn stale",
                        );
                    }
                })
                .map_err(|e| format!("keygate-native-filter: cannot start the sync thread: {e}"))?
        };
        LIVE_SYNCS.fetch_add(1, Ordering::Relaxed);
        shared.metrics.touch();
        Ok(KeySync {
            source,
            shared,
            stop: Mutex::new(tx),
            client,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// What the request path reads and writes.
    pub fn shared_state(&self) -> &Shared {
        &self.shared
    }
}

impl Drop for KeySync {
    fn drop(&mut self) {
        let _ = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(Event::Stop);
        self.client.shutdown();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
        LIVE_SYNCS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Hands the hits the request path left to the core's reporter (which bounds and counts them).
fn take_canary_hits(shared: &Shared, worker: &mut Worker, host: &mut NativeHost) {
    let (hits, dropped) = shared.canary.take();
    if dropped > 0 {
        host.counter_add(keygate_filter_core::canary::metrics::HITS, dropped);
        host.counter_add(keygate_filter_core::canary::metrics::HITS_DROPPED, dropped);
    }
    for h in hits {
        worker.record_canary_hit(host, h.key, h.now_ms, &h.path, &h.client, &h.user_agent);
    }
}

/// The sync thread.
fn run(
    shared: &Shared,
    config: Config,
    client: &Client,
    tx: &Sender<Event>,
    rx: &Receiver<Event>,
    log: LogFn,
) {
    let mut host = NativeHost::new(Arc::clone(&shared.metrics), log);
    let tick = Duration::from_millis(config.tick_period_ms().max(1));
    let id = host.random_u64();
    let mut worker = Worker::new(config, id, host.now_ms());
    worker.on_configure(&mut host);
    let mut calls: Vec<JoinHandle<()>> = Vec::new();
    let mut next_tick = Instant::now();
    loop {
        match rx.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
            Ok(Event::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(Event::Response(token, response)) => {
                worker.on_response(&mut host, token, &response);
            }
            Ok(Event::Canary) => {
                take_canary_hits(shared, &mut worker, &mut host);
                worker.send_canary_hits(&mut host);
            }
            Err(RecvTimeoutError::Timeout) => {
                take_canary_hits(shared, &mut worker, &mut host);
                shared.usage.drain(|key, secs| {
                    worker.record_use(Reason::Allowed, Some(key), secs.saturating_mul(1000));
                });
                shared.usage.drain_refused(|key, secs, reason| {
                    worker.record_refused(reason, Some(key), secs.saturating_mul(1000));
                });
                worker.tick(&mut host);
                next_tick = Instant::now() + tick;
            }
        }
        let syncer = worker.syncer();
        shared
            .published
            .publish(syncer.shared_key_set(), syncer.fresh_at_ms());
        shared.sinks.flush(&shared.metrics);
        for (token, call) in host.take_calls() {
            let client = client.clone();
            let answer = tx.clone();
            let spawned = std::thread::Builder::new()
                .name("keygate-call".into())
                .spawn(move || {
                    let response = client.call(&call);
                    let _ = answer.send(Event::Response(token, response));
                });
            match spawned {
                Ok(handle) => calls.push(handle),
                Err(e) => {
                    log(
                        LogLevel::Warn,
                        &format!("keygate-native-filter: cannot start a call thread: {e}"),
                    );
                    let _ = tx.send(Event::Response(token, HttpResponse::default()));
                }
            }
        }
        let (done, running): (Vec<_>, Vec<_>) = calls.drain(..).partition(JoinHandle::is_finished);
        calls = running;
        for handle in done {
            let _ = handle.join();
        }
    }
    client.shutdown();
    for handle in calls {
        let _ = handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    use keygate_protocol::KeyId;
    use keygate_protocol::key;
    use keygate_protocol::wire::{self, KeyEntry, Snapshot};

    fn no_log(_: LogLevel, _: &str) {}

    /// A control plane on loopback: `GET /v1/keyset` answers `snapshot` (then `304` to every
    /// `since`, after a short park), `POST /v1/usage` is acknowledged and its body kept.
    fn fake_control_plane(snapshot: Vec<u8>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let reports = Arc::new(Mutex::new(Vec::new()));
        let kept = reports.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let snapshot = snapshot.clone();
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let mut length = 0;
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let (head, body): (String, Vec<u8>) = if line.starts_with("POST /v1/usage") {
                        kept.lock().unwrap().push(String::from_utf8(body).unwrap());
                        ("200 OK".into(), b"{}".to_vec())
                    } else if line.contains("since=") {
                        std::thread::sleep(Duration::from_millis(200));
                        ("304 Not Modified".into(), Vec::new())
                    } else {
                        ("200 OK".into(), snapshot)
                    };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {head}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        wire::CONTENT_TYPE,
                        body.len()
                    );
                    let _ = stream.write_all(&body);
                });
            }
        });
        (url, reports)
    }

    fn config(cluster: &str) -> Config {
        let json = serde_json::json!({
            "cluster": cluster, "authority": "cp", "edge_key": "kg_edge_x",
            "long_poll_wait_s": 1, "usage_report_interval_ms": 100,
        });
        Config::from_json(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn syncs_publishes_reports_usage_and_stops_when_the_last_holder_goes() {
        let k = key::generate("kg_live").unwrap();
        let key_id = KeyId::from_bytes([9; 16]);
        let snapshot = Snapshot {
            revision: 4,
            entries: vec![KeyEntry {
                policy: Default::default(),
                digest: k.digest(),
                key_id,
                owner: "acme".into(),
                expires_at: None,
                scopes: Vec::new(),
                resources: Vec::new(),
            }],
        }
        .encode()
        .unwrap();
        let (url, reports) = fake_control_plane(snapshot);
        let cfg = config("sync-thread-test");
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let before = LIVE_SYNCS.load(Ordering::Relaxed);
        let sync = KeySync::shared(&cfg, &url, None, &Trust::WebPki, no_log).unwrap();
        let again = KeySync::shared(&cfg, &url, None, &Trust::WebPki, no_log).unwrap();
        assert!(Arc::ptr_eq(&sync, &again), "same source, same sync");
        assert_eq!(LIVE_SYNCS.load(Ordering::Relaxed), before + 1);
        let other = KeySync::shared(
            &config(&"other".repeat(2)),
            &url,
            None,
            &Trust::WebPki,
            no_log,
        )
        .unwrap();
        assert!(!Arc::ptr_eq(&sync, &other));
        drop(other);

        let deadline = Instant::now() + Duration::from_secs(5);
        while sync.shared_state().published.load().set().is_none() {
            assert!(Instant::now() < deadline, "no set published");
            std::thread::sleep(Duration::from_millis(10));
        }
        let published = sync.shared_state().published.load();
        let set = published.set().unwrap();
        assert_eq!(set.revision(), Some(4));
        assert!(set.lookup(&k.digest()).is_some());
        drop(published);

        for _ in 0..3 {
            sync.shared_state().usage.record(key_id, 1_700_000_000);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let sent = reports.lock().unwrap().clone();
            if let Some(r) = sent.first() {
                let v: serde_json::Value = serde_json::from_str(r).unwrap();
                assert_eq!(v["entries"][0]["key_id"], key_id.text().as_str());
                assert_eq!(v["entries"][0]["count"], 3);
                assert_eq!(v["entries"][0]["last_used_at"], 1_700_000_000u64);
                break;
            }
            assert!(Instant::now() < deadline, "no usage report");
            std::thread::sleep(Duration::from_millis(10));
        }

        // A long poll is parked at the fake control plane: dropping the last holder stops the
        // sync at once, all of its threads joined.
        drop(again);
        let stopping = Instant::now();
        drop(sync);
        assert!(
            stopping.elapsed() < Duration::from_secs(2),
            "{:?}",
            stopping.elapsed()
        );
        assert_eq!(LIVE_SYNCS.load(Ordering::Relaxed), before);
    }
}
