//! Keygate as an Envoy dynamic module: a second shell, native code loaded by Envoy's
//! `envoy.filters.http.dynamic_modules` filter, around the same pure core the proxy-wasm filter
//! uses (`keygate_filter_core`: configuration, decision, sync, usage), with **one key set per
//! process** where the wasm filter keeps one per worker thread.
//!
//! When Envoy creates a Keygate filter configuration whose `filter_config` names a
//! `control_plane_url` ([`config`]), the module joins the process's sync of that source or
//! starts it: a background thread ([`sync_thread`]) running the core's own `Worker` (the same
//! sync, backoff, long-poll, staleness and usage batching as the wasm filter) against a native
//! [`host::Host`](keygate_filter_core::host::Host) ([`host`]): system clock, in-process shared
//! data and queues, HTTP calls made by a small blocking client ([`http`], `ureq`) to the
//! control plane's `GET /v1/keyset?since=&wait=` and `POST /v1/usage` with the edge key (from
//! the environment variable the configuration names, Envoy's own environment), ticks from the
//! thread's own timer. The sync stops when the last configuration using it is destroyed (a
//! reload or a second listener with the same source shares it: no second thread, no second set).
//!
//! Requests never wait on it: Envoy's worker threads read the last published set lock-free
//! ([`published`], `arc-swap`) and decide on its state (Fresh, Stale past `max_staleness_s`,
//! Unavailable before the first sync, with `failure_mode` applied) exactly as the wasm filter
//! does ([`shell`]); an allowed request is counted in a per-thread shard ([`usage`]) that the
//! sync thread hands to the core's usage batching. The sync's counters and gauges
//! (`keygate.sync.*`, `keygate.usage.*`, `keygate.keyset.*`, and `keygate.native.syncs`, the
//! syncs running in the process) are set in Envoy's stats by the sync thread ([`metrics`]).
//!
//! A `snapshot_file` instead of a `control_plane_url` gives a fixed set read once, always
//! fresh (benchmarks).
//!
//! - `ffi`: the dynamic-module ABI (our own declarations of the subset used), the event hooks
//!   Envoy calls, and the [`shell::Stream`] over Envoy's callbacks. The crate's only `unsafe`,
//!   and the only place a panic could reach Envoy: every hook catches it (a request fails closed
//!   with the core's `503 keyset_unavailable`). Left out of unit-test builds, whose binaries
//!   cannot resolve Envoy's callbacks.
//!
//! Four filters in one module, chosen by the filter configuration's `filter_name`: `keygate`;
//! `noop` (does nothing: the baseline price of a dynamic module in Envoy); `host-calls` (reads
//! the request headers and makes the callbacks Keygate makes on an allowed request, with no
//! logic: the floor of this shell, as `benches/envoy.rs`'s host-calls filter is the wasm
//! shell's); and `decide-only` (Keygate's decision, then `host-calls`' callbacks).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod canary;
pub mod config;
#[cfg(not(test))]
mod ffi;
pub mod host;
pub mod http;
pub mod metrics;
pub mod published;
pub mod shell;
pub mod sync_thread;
pub mod usage;
