//! Every `env.proxy_*` import of ABI v0.2.1 and the WASI preview1 functions, grouped as the spec.

use wasmtime::Linker;

use crate::state::HostState;

mod buffers;
mod headers;
mod http;
mod lifecycle;
pub(crate) mod logging;
mod metrics;
mod properties;
mod queues;
mod shared_data;
mod timers;
mod wasi;

/// Adds all host functions (proxy-wasm `env` and WASI `wasi_snapshot_preview1`/`wasi_unstable`).
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    logging::add(linker)?;
    properties::add(linker)?;
    headers::add(linker)?;
    buffers::add(linker)?;
    http::add(linker)?;
    timers::add(linker)?;
    shared_data::add(linker)?;
    queues::add(linker)?;
    metrics::add(linker)?;
    lifecycle::add(linker)?;
    wasi::add(linker)?;
    Ok(())
}
