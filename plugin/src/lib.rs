//! Keygate proxy-wasm filter: validates prefixed API keys at the edge.
//!
//! Work in progress: the configuration, the host seam and usage batching are here; the
//! decision, sync and proxy-wasm glue follow once the protocol crate's key set lands.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod config;
pub mod host;
pub mod usage;
