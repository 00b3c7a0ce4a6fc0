//! Keygate proxy-wasm filter: validates prefixed API keys at the edge.
//!
//! The thin proxy-wasm shell around the pure core in `keygate-filter-core` (configuration,
//! decision, sync, usage, the worker behind its `Host` seam): [`glue`] implements that seam with
//! host calls, [`pairs`] reads the host's header maps in place, and `raw` makes three host calls
//! without the SDK's wrappers (it holds the crate's only `unsafe`); [`callbacks`] lists the
//! callbacks the module keeps exported. `cargo build -p keygate-plugin --target wasm32-wasip1
//! --profile wasm` makes the filter module.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod callbacks;
pub mod glue;
pub mod pairs;
mod raw;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(glue::KeygateRoot::new())
    });
}}
