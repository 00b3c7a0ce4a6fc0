//! Worker threads, each owning one harness instance of the filter (as an Envoy worker owns its
//! VM), and the hand-off of requests to them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use keygate_host_harness::{
    Cluster, Disposition, Harness, HeaderMap, LogLevel, Plugin, Request, SharedData, StreamId,
    StreamOutcome,
};
use tokio::sync::oneshot;

use crate::error::GatewayError;
use crate::settings::PluginSettings;

/// How long an idle worker sleeps between event-loop turns (ticks fire at most this late).
const IDLE_POLL: Duration = Duration::from_millis(5);
/// How often a worker with streams waiting on callouts checks them.
const BUSY_POLL: Duration = Duration::from_millis(1);

/// What the filter decided for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send it upstream with these headers (pseudo-headers `:method`, `:path`, `:authority`
    /// included, as the filter left them).
    Forward {
        /// The request headers.
        headers: HeaderMap,
        /// What the filter set with `proxy_set_property` on the stream (Envoy's filter state
        /// `wasm.<path>`): path → value.
        filter_state: Vec<(String, Vec<u8>)>,
    },
    /// Answer the client directly (a local reply, or 503 when the filter failed closed).
    Reply {
        /// HTTP status.
        status: u16,
        /// Response headers (no pseudo-headers).
        headers: HeaderMap,
        /// Response body.
        body: Vec<u8>,
    },
    /// The filter closed the stream: reset the client connection.
    Reset,
}

struct Job {
    request: Request,
    reply: oneshot::Sender<Verdict>,
}

/// N worker threads running the filter; requests are dispatched round robin.
#[derive(Debug)]
pub struct FilterPool {
    senders: Vec<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    next: AtomicUsize,
}

impl FilterPool {
    /// Starts `workers` threads; each builds its harness (real clock, the given clusters as real
    /// HTTP endpoints) and runs Envoy's start-up. Fails if any worker's start-up fails.
    pub fn start(
        plugin: Arc<Plugin>,
        settings: &PluginSettings,
        clusters: &[(String, String)],
        workers: usize,
    ) -> Result<Self, GatewayError> {
        let environment = settings.environment();
        // One shared-data store for every worker thread, as in one Envoy process: the filter's
        // sync lease and the published key set are seen by all workers.
        let shared_data = Arc::new(SharedData::default());
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for index in 0..workers.max(1) {
            let (tx, rx) = mpsc::channel::<Job>();
            let (ready_tx, ready_rx) = mpsc::channel::<Result<(), GatewayError>>();
            let mut builder = Harness::builder_shared(plugin.clone())
                .real_time()
                .workers(1)
                .shared_data(shared_data.clone())
                .vm_id(settings.vm_id.clone())
                .root_id(settings.root_id.clone())
                .plugin_configuration(settings.configuration.clone())
                .log_level(LogLevel::Info);
            for (name, url) in clusters {
                builder = builder.cluster(name.clone(), Cluster::http(url.clone()));
            }
            for (key, value) in &environment {
                builder = builder.env_var(key.clone(), value.clone());
            }
            let thread = std::thread::Builder::new()
                .name(format!("filter-worker-{index}"))
                .spawn(move || match builder.build() {
                    Ok(harness) => {
                        let _ = ready_tx.send(Ok(()));
                        run_worker(harness, &rx, index);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                    }
                })
                .map_err(|e| GatewayError::Worker(e.to_string()))?;
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(GatewayError::Worker(format!(
                        "worker {index} died during start-up"
                    )));
                }
            }
            senders.push(tx);
            threads.push(thread);
        }
        Ok(Self {
            senders,
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.senders.len()
    }

    /// Runs a request's headers through the filter on the next worker and waits for its verdict.
    /// A worker that went away answers 503.
    pub async fn decide(&self, request: Request) -> Verdict {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        let (reply, rx) = oneshot::channel();
        if self.senders[index].send(Job { request, reply }).is_err() {
            return unavailable();
        }
        rx.await.unwrap_or_else(|_| unavailable())
    }

    /// Stops the workers (streams still waiting get 503) and joins their threads.
    pub fn shutdown(self) {
        drop(self.senders);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn unavailable() -> Verdict {
    Verdict::Reply {
        status: 503,
        headers: vec![("content-type".to_owned(), "text/plain".into())],
        body: b"filter worker unavailable\n".to_vec(),
    }
}

/// The worker's event loop: take requests, run them, poll callouts and ticks, answer finished
/// streams. Ends when the pool is dropped.
fn run_worker(mut harness: Harness, rx: &mpsc::Receiver<Job>, index: usize) {
    let mut waiting: Vec<(StreamId, oneshot::Sender<Verdict>)> = Vec::new();
    loop {
        let wait = if waiting.is_empty() {
            IDLE_POLL
        } else {
            BUSY_POLL
        };
        match rx.recv_timeout(wait) {
            Ok(job) => {
                start(&mut harness, job, &mut waiting);
                while let Ok(job) = rx.try_recv() {
                    start(&mut harness, job, &mut waiting);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        harness.poll();
        answer_finished(&mut harness, &mut waiting);
        forward_records(&harness, index);
    }
}

/// Moves the filter's log lines to the gateway's log and drops the callout records, so a
/// long-running gateway keeps neither (the harness records both for tests).
fn forward_records(harness: &Harness, worker: usize) {
    for entry in harness.take_logs() {
        let message = entry.message.as_str();
        match entry.level {
            LogLevel::Error | LogLevel::Critical => {
                tracing::error!(worker, source = entry.source, "{message}");
            }
            LogLevel::Warn => tracing::warn!(worker, source = entry.source, "{message}"),
            LogLevel::Info => tracing::info!(worker, source = entry.source, "{message}"),
            LogLevel::Debug | LogLevel::Trace => {
                tracing::debug!(worker, source = entry.source, "{message}");
            }
        }
    }
    drop(harness.take_callouts());
}

fn start(harness: &mut Harness, job: Job, waiting: &mut Vec<(StreamId, oneshot::Sender<Verdict>)>) {
    match harness.start_request_on(0, job.request) {
        Ok(id) => waiting.push((id, job.reply)),
        Err(_) => {
            let _ = job.reply.send(unavailable());
        }
    }
}

/// Answers every waiting request whose stream finished, taking its outcome out of the harness
/// (which otherwise keeps every finished stream for inspection: a leak in a long-running
/// gateway, found by the soak test).
fn answer_finished(harness: &mut Harness, waiting: &mut Vec<(StreamId, oneshot::Sender<Verdict>)>) {
    let mut i = 0;
    while i < waiting.len() {
        let id = waiting[i].0;
        let verdict = match harness.take_outcome(id) {
            Some(outcome) => verdict_of(outcome),
            None => match harness.outcome(id) {
                Ok(o) if o.disposition == Disposition::Pending => {
                    i += 1;
                    continue;
                }
                _ => unavailable(),
            },
        };
        let (_, reply) = waiting.swap_remove(i);
        let _ = reply.send(verdict);
    }
}

fn verdict_of(outcome: StreamOutcome) -> Verdict {
    match outcome.disposition {
        Disposition::Completed | Disposition::FailedOpen => match outcome.request {
            Some(forwarded) => Verdict::Forward {
                headers: forwarded.headers,
                filter_state: outcome.filter_state,
            },
            None => unavailable(),
        },
        Disposition::LocalResponse | Disposition::FailedClosed => match outcome.response {
            Some(response) => Verdict::Reply {
                status: response.status,
                headers: response
                    .headers
                    .into_iter()
                    .filter(|(k, _)| !k.starts_with(':'))
                    .collect(),
                body: response.body,
            },
            None => unavailable(),
        },
        Disposition::Reset => Verdict::Reset,
        Disposition::Pending => unavailable(),
    }
}
