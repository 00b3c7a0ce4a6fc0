//! Keygate as an Envoy dynamic module: a second shell, native code loaded by Envoy's
//! `envoy.filters.http.dynamic_modules` filter, around the same pure core the proxy-wasm filter
//! uses (`keygate_filter_core::config` and `keygate_filter_core::decision::decide`).
//!
//! A prototype, built to measure what the shell costs in real Envoy 1.40 (issue 23, point 3):
//! the key set is read once, from a snapshot file in the protocol's wire format, when Envoy
//! creates the filter configuration, and held once per process (every worker thread reads the
//! same configuration object). No sync loop, no usage reports.
//!
//! - [`shell`]: the configuration (`filter_config`) and the per-request work, behind the small
//!   [`shell::Stream`] seam; no `unsafe`, unit-tested without Envoy.
//! - `ffi`: the dynamic-module ABI (our own declarations of the subset used), the event hooks
//!   Envoy calls, and the [`shell::Stream`] over Envoy's callbacks. The crate's only `unsafe`;
//!   left out of unit-test builds, whose binaries cannot resolve Envoy's callbacks.
//!
//! Three filters in one module, chosen by the filter configuration's `filter_name`: `keygate`;
//! `noop` (does nothing: the baseline price of a dynamic module in Envoy); and `host-calls`
//! (reads the request headers and makes the callbacks Keygate makes on an allowed request, with
//! no logic: the floor of this shell, as `benches/envoy.rs`'s host-calls filter is the wasm
//! shell's).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

#[cfg(not(test))]
mod ffi;
pub mod shell;
