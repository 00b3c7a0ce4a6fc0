//! Every `env.proxy_*` import of ABI v0.2.1 and the WASI preview1 functions, grouped as the spec.

use std::sync::Arc;

use wasmtime::{Caller, Linker, WasmRet, WasmTy};

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
    add_all(&mut HostLinker {
        linker,
        counted: None,
    })
}

/// As [`add_to_linker`], each function wrapped so that a call bumps its counter in the store's
/// [`Counter`](crate::counts::Counter) (if it has one). Returns the counters' names, by index.
pub(crate) fn add_counting_to_linker(
    linker: &mut Linker<HostState>,
) -> wasmtime::Result<Arc<[String]>> {
    let mut names = Vec::new();
    add_all(&mut HostLinker {
        linker,
        counted: Some(&mut names),
    })?;
    Ok(names.into())
}

fn add_all(linker: &mut HostLinker<'_>) -> wasmtime::Result<()> {
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

/// The linker the host functions are defined in: as they are, or (counting) each wrapped with
/// a bump of its own counter, named in `counted` at its index.
pub(crate) struct HostLinker<'a> {
    linker: &'a mut Linker<HostState>,
    counted: Option<&'a mut Vec<String>>,
}

impl HostLinker<'_> {
    /// Defines host function `module.name` (as [`Linker::func_wrap`]).
    pub(crate) fn func_wrap<Args>(
        &mut self,
        module: &str,
        name: &str,
        func: impl HostFn<Args>,
    ) -> wasmtime::Result<()> {
        match self.counted.as_deref_mut() {
            None => func.define(self.linker, module, name),
            Some(names) => {
                let index = names.len();
                names.push(if module == "env" {
                    name.to_owned()
                } else {
                    format!("{module}.{name}")
                });
                func.define_counted(self.linker, module, name, index)
            }
        }
    }
}

/// A host function: a closure of the host state's `Caller` and wasm arguments, as
/// [`Linker::func_wrap`] takes it, that can also be defined with a call counter around it.
pub(crate) trait HostFn<Args>: Send + Sync + 'static {
    /// Defines the function as it is.
    fn define(
        self,
        linker: &mut Linker<HostState>,
        module: &str,
        name: &str,
    ) -> wasmtime::Result<()>;

    /// Defines the function behind a bump of counter `index`.
    fn define_counted(
        self,
        linker: &mut Linker<HostState>,
        module: &str,
        name: &str,
        index: usize,
    ) -> wasmtime::Result<()>;
}

macro_rules! host_fn {
    ($($arg:ident: $ty:ident),*) => {
        impl<F, R, $($ty,)*> HostFn<($($ty,)*)> for F
        where
            F: Fn(Caller<'_, HostState>, $($ty),*) -> R + Send + Sync + 'static,
            $($ty: WasmTy,)*
            R: WasmRet,
        {
            fn define(
                self,
                linker: &mut Linker<HostState>,
                module: &str,
                name: &str,
            ) -> wasmtime::Result<()> {
                linker.func_wrap(module, name, self)?;
                Ok(())
            }

            fn define_counted(
                self,
                linker: &mut Linker<HostState>,
                module: &str,
                name: &str,
                index: usize,
            ) -> wasmtime::Result<()> {
                linker.func_wrap(
                    module,
                    name,
                    move |mut caller: Caller<'_, HostState>, $($arg: $ty),*| {
                        if let Some(counter) = caller.data_mut().counter.as_deref_mut() {
                            counter.host_call(index);
                        }
                        self(caller, $($arg),*)
                    },
                )?;
                Ok(())
            }
        }
    };
}

host_fn!();
host_fn!(a1: A1);
host_fn!(a1: A1, a2: A2);
host_fn!(a1: A1, a2: A2, a3: A3);
host_fn!(a1: A1, a2: A2, a3: A3, a4: A4);
host_fn!(a1: A1, a2: A2, a3: A3, a4: A4, a5: A5);
host_fn!(a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, a6: A6);
host_fn!(a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, a6: A6, a7: A7);
host_fn!(a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, a6: A6, a7: A7, a8: A8);
host_fn!(a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, a6: A6, a7: A7, a8: A8, a9: A9);
host_fn!(a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, a6: A6, a7: A7, a8: A8, a9: A9, a10: A10);
host_fn!(
    a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, a6: A6, a7: A7, a8: A8, a9: A9, a10: A10, a11: A11
);
host_fn!(
    a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, a6: A6, a7: A7, a8: A8, a9: A9, a10: A10, a11: A11,
    a12: A12
);
