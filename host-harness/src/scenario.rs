//! Scenario files for the CLI: configuration, clusters and steps in JSON, run to an outcome
//! report (also JSON).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::abi::HeaderMap;
use crate::cluster::{CalloutReply, CalloutResponse, Cluster, TimeoutDelivery};
use crate::error::{HarnessError, Result};
use crate::harness::Harness;
use crate::plugin::Plugin;
use crate::shared::{CalloutRecord, LogEntry, MetricValue, TrapReport};
use crate::state::FailurePolicy;
use crate::stream::{Request, StreamOutcome};

/// A scenario: how to configure the filter and what to do with it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// VM configuration (string).
    #[serde(default)]
    pub vm_configuration: String,
    /// Plugin configuration (string; JSON configurations are passed as their text).
    #[serde(default)]
    pub plugin_configuration: Option<serde_json::Value>,
    /// Worker count (default 1).
    #[serde(default)]
    pub workers: Option<usize>,
    /// `vm_id` (default empty).
    #[serde(default)]
    pub vm_id: String,
    /// Root id / plugin name.
    #[serde(default)]
    pub root_id: String,
    /// `fail_closed` (default) or `fail_open`.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// `gateway_timeout` (default, Envoy) or `reset`.
    #[serde(default)]
    pub timeout_delivery: TimeoutDelivery,
    /// WASI environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Clusters by name.
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterSpec>,
    /// Steps, in order.
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// A cluster: a real endpoint or canned replies (used in order, the last one repeats).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum ClusterSpec {
    /// `{"url": "http://127.0.0.1:8080"}`.
    Url {
        /// Base URL.
        url: String,
    },
    /// `{"replies": [...]}`.
    Replies {
        /// Replies in order.
        replies: Vec<ReplySpec>,
    },
}

/// One canned callout reply.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplySpec {
    /// Status (default 200).
    #[serde(default)]
    pub status: Option<u16>,
    /// Extra headers.
    #[serde(default)]
    pub headers: HeaderMap,
    /// Body.
    #[serde(default)]
    pub body: String,
    /// Delay before the reply is delivered.
    #[serde(default)]
    pub delay_ms: u64,
    /// Reset the connection instead of answering.
    #[serde(default)]
    pub reset: bool,
    /// Never answer (the call's timeout decides).
    #[serde(default)]
    pub silent: bool,
}

/// One step.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Step {
    /// Run a request (optionally on a given worker).
    Request {
        /// The request.
        request: Request,
        /// Worker index (default round robin).
        #[serde(default)]
        worker: Option<usize>,
    },
    /// Advance the clock.
    Advance {
        /// Milliseconds.
        advance_ms: u64,
    },
}

/// What the CLI prints.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Final outcome of every stream, in the order the requests were made.
    pub streams: Vec<StreamOutcome>,
    /// Captured logs.
    pub logs: Vec<LogEntry>,
    /// Metrics by name.
    pub metrics: HashMap<String, MetricValue>,
    /// Callouts made.
    pub callouts: Vec<CalloutRecord>,
    /// Traps.
    pub traps: Vec<TrapReport>,
    /// Virtual (or real) time at the end, ns since the epoch.
    pub end_time_ns: u64,
}

fn reply(spec: &ReplySpec) -> CalloutReply {
    let reply = if spec.reset {
        CalloutReply::reset()
    } else if spec.silent {
        CalloutReply::silent()
    } else {
        let mut headers = vec![(
            ":status".to_owned(),
            spec.status.unwrap_or(200).to_string().into(),
        )];
        headers.extend(
            spec.headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
        );
        CalloutReply::response(CalloutResponse {
            headers,
            body: spec.body.clone().into_bytes(),
            trailers: Vec::new(),
        })
    };
    reply.after(Duration::from_millis(spec.delay_ms))
}

impl Scenario {
    /// Parses a scenario from JSON.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| HarnessError::InvalidInput(format!("scenario: {e}")))
    }

    /// Runs the scenario against a plugin.
    pub fn run(&self, plugin: Plugin) -> Result<Report> {
        let plugin_configuration = match &self.plugin_configuration {
            None => Vec::new(),
            Some(serde_json::Value::String(s)) => s.clone().into_bytes(),
            Some(other) => other.to_string().into_bytes(),
        };
        let mut builder = Harness::builder(plugin)
            .workers(self.workers.unwrap_or(1))
            .vm_id(self.vm_id.clone())
            .root_id(self.root_id.clone())
            .vm_configuration(self.vm_configuration.clone().into_bytes())
            .plugin_configuration(plugin_configuration)
            .failure_policy(self.failure_policy)
            .timeout_delivery(self.timeout_delivery);
        for (key, value) in &self.env {
            builder = builder.env_var(key.clone(), value.clone());
        }
        for (name, spec) in &self.clusters {
            let cluster = match spec {
                ClusterSpec::Url { url } => Cluster::http(url.clone()),
                ClusterSpec::Replies { replies } => {
                    if replies.is_empty() {
                        return Err(HarnessError::InvalidInput(format!(
                            "cluster `{name}` has no replies"
                        )));
                    }
                    let replies: Vec<CalloutReply> = replies.iter().map(reply).collect();
                    let next = AtomicUsize::new(0);
                    let replies = Mutex::new(replies);
                    Cluster::handler(move |_| {
                        let replies = replies
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        let i = next.fetch_add(1, Ordering::SeqCst).min(replies.len() - 1);
                        replies[i].clone()
                    })
                }
            };
            builder = builder.cluster(name.clone(), cluster);
        }
        let mut harness = builder.build()?;
        let mut ids = Vec::new();
        for step in &self.steps {
            match step {
                Step::Request { request, worker } => {
                    let outcome = match worker {
                        Some(worker) => harness.run_request_on(*worker, request.clone())?,
                        None => harness.run_request(request.clone())?,
                    };
                    ids.push(outcome.id);
                }
                Step::Advance { advance_ms } => harness.advance(Duration::from_millis(*advance_ms)),
            }
        }
        let streams = ids
            .into_iter()
            .map(|id| harness.outcome(id))
            .collect::<Result<Vec<_>>>()?;
        Ok(Report {
            streams,
            logs: harness.logs(),
            metrics: harness.metrics(),
            callouts: harness.callouts(),
            traps: harness.traps(),
            end_time_ns: harness.now_nanos(),
        })
    }
}
