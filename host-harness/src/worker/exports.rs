//! The guest's export table: instantiating the module and resolving, once, the typed handles of
//! the callbacks Envoy calls (ABI v0.2.1), each under a type named for what it takes.

use std::sync::Arc;

use wasmtime::{Extern, Instance, Store, TypedFunc, WasmParams, WasmResults};

use super::driver::Phase;
use crate::counts::{Counter, call_export};
use crate::error::{HarnessError, Result};
use crate::memory::ALLOCATORS;
use crate::plugin::Plugin;
use crate::state::{Env, HostState};

/// `(context_id)`: `proxy_on_log`, `proxy_on_delete`, `proxy_on_tick`.
pub(super) type ContextFn = TypedFunc<i32, ()>;
/// `(context_id) -> done`: `proxy_on_done`.
pub(super) type DoneFn = TypedFunc<i32, i32>;
/// `(context_id, parent_context_id)`: `proxy_on_context_create`.
pub(super) type ContextCreateFn = TypedFunc<(i32, i32), ()>;
/// `(root_context_id, configuration_size) -> success`: `proxy_on_vm_start`,
/// `proxy_on_configure`.
pub(super) type ConfigureFn = TypedFunc<(i32, i32), i32>;
/// `(root_context_id, queue_id)`: `proxy_on_queue_ready`.
pub(super) type QueueReadyFn = TypedFunc<(i32, i32), ()>;
/// `(context_id, header_count or body_size, end_of_stream) -> action`: the headers and body
/// callbacks of either direction.
pub(super) type HeadersOrBodyFn = TypedFunc<(i32, i32, i32), i32>;
/// `(context_id, trailer_count) -> action`: the trailers callback of either direction.
pub(super) type TrailersFn = TypedFunc<(i32, i32), i32>;
/// `(context_id, token, header_count, body_size, trailer_count)`: `proxy_on_http_call_response`.
pub(super) type HttpCallResponseFn = TypedFunc<(i32, i32, i32, i32, i32), ()>;

/// Cached callback exports (absent ones are skipped, as Envoy does).
pub(super) struct Exports {
    pub(super) on_context_create: Option<ContextCreateFn>,
    pub(super) on_vm_start: Option<ConfigureFn>,
    pub(super) on_configure: Option<ConfigureFn>,
    /// `proxy_on_request_{headers,body,trailers}`.
    request: StreamExports,
    /// `proxy_on_response_{headers,body,trailers}`.
    response: StreamExports,
    pub(super) on_done: Option<DoneFn>,
    pub(super) on_log: Option<ContextFn>,
    pub(super) on_delete: Option<ContextFn>,
    pub(super) on_tick: Option<ContextFn>,
    pub(super) on_queue_ready: Option<QueueReadyFn>,
    pub(super) on_http_call_response: Option<HttpCallResponseFn>,
}

/// The three callbacks of one direction of a stream.
pub(super) struct StreamExports {
    pub(super) headers: Option<HeadersOrBodyFn>,
    pub(super) body: Option<HeadersOrBodyFn>,
    pub(super) trailers: Option<TrailersFn>,
}

/// One of a direction's stream callbacks, with the flag it takes (trailers end the stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamCallback {
    Headers { end_of_stream: bool },
    Body { end_of_stream: bool },
    Trailers,
}

impl StreamCallback {
    /// The export this callback is in `phase`: the table of the six stream callbacks.
    pub(super) const fn export(self, phase: Phase) -> &'static str {
        match (phase, self) {
            (Phase::Request, Self::Headers { .. }) => "proxy_on_request_headers",
            (Phase::Request, Self::Body { .. }) => "proxy_on_request_body",
            (Phase::Request, Self::Trailers) => "proxy_on_request_trailers",
            (Phase::Response, Self::Headers { .. }) => "proxy_on_response_headers",
            (Phase::Response, Self::Body { .. }) => "proxy_on_response_body",
            (Phase::Response, Self::Trailers) => "proxy_on_response_trailers",
        }
    }
}

/// The typed handle of export `name`, `None` when the module lacks it.
fn export<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<HostState>,
    name: &str,
) -> Result<Option<TypedFunc<P, R>>> {
    match instance.get_func(&mut *store, name) {
        None => Ok(None),
        Some(func) => func.typed::<P, R>(&*store).map(Some).map_err(|_| {
            HarnessError::InvalidModule(format!(
                "export `{name}` has the wrong signature for ABI v0.2.1"
            ))
        }),
    }
}

impl StreamExports {
    fn resolve(instance: &Instance, store: &mut Store<HostState>, phase: Phase) -> Result<Self> {
        // The flag does not change a callback's export name.
        let [headers, body, trailers] = [
            StreamCallback::Headers {
                end_of_stream: false,
            },
            StreamCallback::Body {
                end_of_stream: false,
            },
            StreamCallback::Trailers,
        ]
        .map(|callback| callback.export(phase));
        Ok(Self {
            headers: export(instance, store, headers)?,
            body: export(instance, store, body)?,
            trailers: export(instance, store, trailers)?,
        })
    }
}

impl Exports {
    fn resolve(instance: &Instance, store: &mut Store<HostState>) -> Result<Self> {
        Ok(Self {
            on_context_create: export(instance, store, "proxy_on_context_create")?,
            on_vm_start: export(instance, store, "proxy_on_vm_start")?,
            on_configure: export(instance, store, "proxy_on_configure")?,
            request: StreamExports::resolve(instance, store, Phase::Request)?,
            response: StreamExports::resolve(instance, store, Phase::Response)?,
            on_done: export(instance, store, "proxy_on_done")?,
            on_log: export(instance, store, "proxy_on_log")?,
            on_delete: export(instance, store, "proxy_on_delete")?,
            on_tick: export(instance, store, "proxy_on_tick")?,
            on_queue_ready: export(instance, store, "proxy_on_queue_ready")?,
            on_http_call_response: export(instance, store, "proxy_on_http_call_response")?,
        })
    }

    /// The stream callbacks of one direction.
    pub(super) fn stream(&self, phase: Phase) -> &StreamExports {
        match phase {
            Phase::Request => &self.request,
            Phase::Response => &self.response,
        }
    }
}

/// Builds an instance of `plugin` for worker `index`: its store (memory limit, call counter),
/// memory, allocator and export table, then runs the WASI initializer.
pub(super) fn instantiate(
    plugin: &Plugin,
    env: &Arc<Env>,
    index: usize,
) -> Result<(Store<HostState>, Arc<Exports>)> {
    let mut store = Store::new(&plugin.engine, HostState::new(env.clone(), index));
    if env.max_memory_bytes.is_some() {
        store.limiter(|state| &mut state.limits);
    }
    let pre = if env.count_calls {
        let counting = plugin.counting()?;
        store.data_mut().counter = Some(Box::new(Counter::new(counting.names.clone())));
        #[cfg(feature = "call-hook")]
        store.call_hook(|mut store, hook| {
            if let Some(counter) = store.data_mut().counter.as_deref_mut() {
                counter.hook(hook);
            }
            Ok(())
        });
        &counting.pre
    } else {
        &plugin.pre
    };
    let instance = pre
        .instantiate(&mut store)
        .map_err(|e| HarnessError::Trap {
            during: "instantiation".to_owned(),
            message: format!("{e:?}"),
        })?;
    let memory = match instance.get_export(&mut store, "memory") {
        Some(Extern::Memory(memory)) => memory,
        _ => return Err(HarnessError::MissingExport("memory".to_owned())),
    };
    store.data_mut().memory = Some(memory);
    let allocator = ALLOCATORS.into_iter().find_map(|name| {
        export::<i32, i32>(&instance, &mut store, name)
            .ok()
            .flatten()
            .map(|func| (func, name))
    });
    if let Some((func, name)) = allocator {
        let state = store.data_mut();
        state.allocator = Some(func);
        state.allocator_name = name;
    }
    let exports = Exports::resolve(&instance, &mut store)?;
    // Envoy runs the WASI reactor (or command) initializer first.
    for init in ["_initialize", "_start"] {
        if let Some(func) = export::<(), ()>(&instance, &mut store, init)? {
            call_export(&mut store, init, &func, ()).map_err(|e| HarnessError::Trap {
                during: init.to_owned(),
                message: format!("{e:?}"),
            })?;
            break;
        }
    }
    Ok((store, Arc::new(exports)))
}
