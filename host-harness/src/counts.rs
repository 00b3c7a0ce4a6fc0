//! Opt-in counts of the calls across the VM boundary, per worker: every host call the module
//! makes (by import) and every entry into the VM (by export). See
//! [`HarnessBuilder::count_calls`](crate::HarnessBuilder::count_calls).
//!
//! * Host calls are counted by the counting linker (`hostcalls::add_counting_to_linker`): the
//!   same host functions, each wrapped at link time with a bump of its own counter. A harness
//!   that does not count links the unwrapped functions, so its host calls cost nothing more.
//! * VM entries are counted in [`call_export`], the one place where the host calls into the
//!   guest (callbacks, `_initialize`, the allocator from inside host calls). When not counting
//!   that is one test of an `Option` per entry.
//! * With the crate feature `call-hook`, wasmtime's own call hook tallies the same crossings
//!   independently ([`WasmtimeTally`]), as a check on both.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::{AsContextMut, TypedFunc, WasmParams, WasmResults};

use crate::state::HostState;

/// Calls across the VM boundary counted on one worker or several (the sum), since the harness
/// was built or last reset. Empty unless the harness was built with
/// [`HarnessBuilder::count_calls`](crate::HarnessBuilder::count_calls).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CallCounts {
    /// Host calls the module made, by import: the name for `env` imports
    /// (`proxy_get_header_map_pairs`), `module.name` for the others
    /// (`wasi_snapshot_preview1.fd_write`). Imports never called are absent.
    pub host_calls: BTreeMap<String, u64>,
    /// Entries into the VM (host → wasm calls), by export: the callbacks
    /// (`proxy_on_request_headers`, `proxy_on_tick`, …), `_initialize`, and the allocator
    /// (`proxy_on_memory_allocate` or `malloc`), which the host calls from inside the host
    /// calls that hand data to the guest. Exports never called are absent.
    pub vm_entries: BTreeMap<String, u64>,
    /// wasmtime's own tally of the same crossings (crate feature `call-hook`), else `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wasmtime: Option<WasmtimeTally>,
}

/// The boundary crossings wasmtime's call hook saw (crate feature `call-hook`): an independent
/// check of [`CallCounts`]' totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WasmtimeTally {
    /// `CallHook::CallingHost`: every host call, and also wasmtime's own libcalls that can
    /// fail (`memory.grow` and the like), so it exceeds the host-call total by the times the
    /// guest grew its memory.
    pub calling_host: u64,
    /// `CallHook::CallingWasm`: every entry into the VM (and a start function, if a module had
    /// one).
    pub calling_wasm: u64,
}

impl CallCounts {
    /// How many times the module called `import` (0 if never).
    pub fn host_call(&self, import: &str) -> u64 {
        self.host_calls.get(import).copied().unwrap_or(0)
    }

    /// How many times the host entered the VM through `export` (0 if never).
    pub fn vm_entry(&self, export: &str) -> u64 {
        self.vm_entries.get(export).copied().unwrap_or(0)
    }

    /// All host calls.
    pub fn host_call_total(&self) -> u64 {
        self.host_calls.values().sum()
    }

    /// All entries into the VM.
    pub fn vm_entry_total(&self) -> u64 {
        self.vm_entries.values().sum()
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.host_calls.is_empty() && self.vm_entries.is_empty()
    }

    /// Adds `other`'s counts to these (the sum over workers).
    pub fn add(&mut self, other: &CallCounts) {
        for (name, n) in &other.host_calls {
            *self.host_calls.entry(name.clone()).or_default() += n;
        }
        for (name, n) in &other.vm_entries {
            *self.vm_entries.entry(name.clone()).or_default() += n;
        }
        if let Some(theirs) = other.wasmtime {
            let ours = self.wasmtime.get_or_insert_default();
            ours.calling_host += theirs.calling_host;
            ours.calling_wasm += theirs.calling_wasm;
        }
    }
}

/// One store's counters (in [`HostState`] when counting).
#[derive(Debug)]
pub(crate) struct Counter {
    /// The counting linker's function names, by counter index.
    names: Arc<[String]>,
    host_calls: Vec<u64>,
    /// By export name; a filter enters through a handful of exports, so a list is enough.
    vm_entries: Vec<(&'static str, u64)>,
    hooked: WasmtimeTally,
}

impl Counter {
    pub(crate) fn new(names: Arc<[String]>) -> Self {
        let host_calls = vec![0; names.len()];
        Self {
            names,
            host_calls,
            vm_entries: Vec::new(),
            hooked: WasmtimeTally::default(),
        }
    }

    /// The module called host function `index` of the counting linker.
    #[inline]
    pub(crate) fn host_call(&mut self, index: usize) {
        if let Some(n) = self.host_calls.get_mut(index) {
            *n += 1;
        }
    }

    /// The host enters the VM through `export`.
    pub(crate) fn vm_entry(&mut self, export: &'static str) {
        match self.vm_entries.iter_mut().find(|(name, _)| *name == export) {
            Some((_, n)) => *n += 1,
            None => self.vm_entries.push((export, 1)),
        }
    }

    /// What wasmtime's call hook saw (crate feature `call-hook`).
    #[cfg(feature = "call-hook")]
    pub(crate) fn hook(&mut self, hook: wasmtime::CallHook) {
        match hook {
            wasmtime::CallHook::CallingHost => self.hooked.calling_host += 1,
            wasmtime::CallHook::CallingWasm => self.hooked.calling_wasm += 1,
            _ => {}
        }
    }

    /// Adds the counts of an earlier store of the same worker (one replaced after a trap).
    pub(crate) fn absorb(&mut self, earlier: &Counter) {
        for (mine, theirs) in self.host_calls.iter_mut().zip(&earlier.host_calls) {
            *mine += theirs;
        }
        for &(name, n) in &earlier.vm_entries {
            match self.vm_entries.iter_mut().find(|(mine, _)| *mine == name) {
                Some((_, mine)) => *mine += n,
                None => self.vm_entries.push((name, n)),
            }
        }
        self.hooked.calling_host += earlier.hooked.calling_host;
        self.hooked.calling_wasm += earlier.hooked.calling_wasm;
    }

    pub(crate) fn reset(&mut self) {
        self.host_calls.fill(0);
        self.vm_entries.clear();
        self.hooked = WasmtimeTally::default();
    }

    pub(crate) fn counts(&self) -> CallCounts {
        CallCounts {
            host_calls: self
                .names
                .iter()
                .zip(&self.host_calls)
                .filter(|(_, n)| **n > 0)
                .map(|(name, n)| (name.clone(), *n))
                .collect(),
            vm_entries: self
                .vm_entries
                .iter()
                .map(|(name, n)| ((*name).to_owned(), *n))
                .collect(),
            wasmtime: cfg!(feature = "call-hook").then_some(self.hooked),
        }
    }
}

/// Calls the guest's `export`: every entry into the VM goes through here, so that it is
/// counted when the harness counts.
#[inline]
pub(crate) fn call_export<P: WasmParams, R: WasmResults>(
    mut store: impl AsContextMut<Data = HostState>,
    export: &'static str,
    func: &TypedFunc<P, R>,
    params: P,
) -> wasmtime::Result<R> {
    let mut ctx = store.as_context_mut();
    if let Some(counter) = ctx.data_mut().counter.as_deref_mut() {
        counter.vm_entry(export);
    }
    func.call(ctx, params)
}
