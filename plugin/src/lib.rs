//! Keygate proxy-wasm filter: validates prefixed API keys at the edge.
//!
//! The crate is a pure core — [`config`], [`decision`], [`sync`], [`usage`], tied together by
//! [`worker`] behind the [`host::Host`] seam — and a thin proxy-wasm [`glue`] (with [`pairs`],
//! the in-place reader of the host's header maps, and `raw`, three host calls made without the
//! SDK's wrappers; these two hold the crate's only `unsafe`). The core compiles
//! and is tested natively; `cargo build -p keygate-plugin --target wasm32-wasip1 --profile wasm`
//! makes the filter module.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod callbacks;
pub mod config;
pub mod decision;
pub mod glue;
pub mod host;
pub mod pairs;
mod raw;
pub mod sync;
pub mod usage;
pub mod worker;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(glue::KeygateRoot::new())
    });
}}
#[cfg(test)]
mod fake;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod testutil;
