//! `keygate-host-harness`: a general proxy-wasm ABI v0.2.1 host on wasmtime — what Envoy
//! provides to a filter — for loading and driving any compiled filter without Envoy.
//!
//! * [`Plugin::load`] compiles a module, checks its ABI version export and that every import
//!   (`env.proxy_*`, WASI preview1) is provided; otherwise a [`HarnessError`] names them all.
//! * [`Harness::builder`] sets VM/plugin configuration, workers, clusters, clock and failure
//!   policy; [`HarnessBuilder::build`] runs Envoy's start-up on every worker.
//! * [`Harness::run_request`] drives one HTTP stream through the filter (headers, body,
//!   trailers, upstream response, done/log/delete) and returns a [`StreamOutcome`].
//! * [`Harness::advance`] moves the virtual clock: ticks fire and callout responses arrive.
//! * Observations: [`Harness::logs`], [`Harness::metrics`], [`Harness::callouts`],
//!   [`Harness::traps`], [`Harness::local_responses`], [`Harness::shared_data`].
//! * [`HarnessBuilder::count_calls`]: host calls by import and VM entries by export, per
//!   worker ([`Harness::call_counts`], a [`CallCounts`]).
//! * [`baseline`]: no-op filters and an interleaved timing loop, for a filter's own cost per
//!   request (its figure minus the harness alone's on the same requests).
//!
//! ```no_run
//! use std::time::Duration;
//! use keygate_host_harness::{CalloutReply, Cluster, Harness, Plugin, Request};
//!
//! let plugin = Plugin::load_file("filter.wasm")?;
//! let mut harness = Harness::builder(plugin)
//!     .plugin_configuration(br#"{"cluster":"auth"}"#.to_vec())
//!     .workers(2)
//!     .cluster("auth", Cluster::handler(|_req| CalloutReply::status(200).body("ok")))
//!     .build()?;
//! let outcome = harness.run_request(Request::get("/hello").header("x-api-key", "k"))?;
//! println!("{:?} {:?}", outcome.disposition, outcome.status());
//! harness.advance(Duration::from_secs(5)); // ticks, delayed callouts
//! # Ok::<(), keygate_host_harness::HarnessError>(())
//! ```
//!
//! Time: with the virtual clock (default), callouts to in-process handlers are delivered
//! `latency` after the call (0 = on the next settle/advance, never inside the call itself); a
//! call to a real HTTP endpoint takes zero virtual time: the next `settle`/`advance` waits for
//! the exchange (bounded by the call's timeout) and delivers it first. With the real clock,
//! [`Harness::poll`] / [`Harness::run_for`] deliver whatever is due.

mod abi;
pub mod baseline;
mod clock;
mod cluster;
mod counts;
mod error;
mod harness;
mod hostcalls;
mod memory;
mod plugin;
mod scenario;
mod shared;
mod state;
mod stream;
mod worker;

pub use abi::{HeaderMap, HeaderValue, LogLevel, MetricType, Status};
pub use clock::{Clock, DEFAULT_VIRTUAL_START_NANOS};
pub use cluster::{
    CONNECT_FAILURE_BODY, CalloutReply, CalloutRequest, CalloutResponse, CalloutResult, Cluster,
    Handler, TimeoutDelivery,
};
pub use counts::{CallCounts, WasmtimeTally};
pub use error::{HarnessError, Result};
pub use harness::{Harness, HarnessBuilder};
pub use hostcalls::add_to_linker;
pub use memory::MAX_GUEST_BUFFER;
pub use plugin::{AbiVersion, Plugin};
pub use scenario::{ClusterSpec, ReplySpec, Report, Scenario, Step};
pub use shared::{CalloutRecord, LogEntry, MetricValue, SharedData, TrapReport};
pub use state::{FailurePolicy, HostState, LocalResponse};
pub use stream::{
    Disposition, FinalResponse, ForwardedRequest, Request, StreamId, StreamOutcome,
    UpstreamResponse,
};
pub use worker::Worker;

#[cfg(test)]
mod thread_safety {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn workers_can_live_on_their_own_threads() {
        send::<super::Worker>();
        send::<super::Harness>();
        send_sync::<super::Plugin>();
        send_sync::<super::Cluster>();
    }
}

/// Serializes bytes as a (lossy) UTF-8 string in JSON, and reads them back from a string.
pub(crate) mod serde_bytes_lossy {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(String::deserialize(d)?.into_bytes())
    }
}

/// Body chunks in JSON: a string (one chunk) or a list of strings.
pub(crate) mod serde_chunks {
    use serde::{Deserialize, Deserializer, Serializer, ser::SerializeSeq};

    pub(crate) fn serialize<S: Serializer>(chunks: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(chunks.len()))?;
        for chunk in chunks {
            seq.serialize_element(&String::from_utf8_lossy(chunk))?;
        }
        seq.end()
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Chunks {
        One(String),
        Many(Vec<String>),
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Ok(match Chunks::deserialize(d)? {
            Chunks::One(s) if s.is_empty() => Vec::new(),
            Chunks::One(s) => vec![s.into_bytes()],
            Chunks::Many(v) => v.into_iter().map(String::into_bytes).collect(),
        })
    }
}
