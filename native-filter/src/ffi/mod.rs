//! Envoy's dynamic-module ABI, the subset this module uses (Envoy 1.40.0 reports ABI version
//! `v0.2.0`): the event hooks Envoy calls (exported, `no_mangle`), here, and the callbacks into
//! Envoy, declared in [`abi`] from the ABI's specification.
//!
//! Envoy resolves every HTTP filter hook when it creates a filter configuration and refuses the
//! configuration if one is missing, so the hooks this module has no use for (bodies, trailers,
//! callouts, scheduling, watermarks) are exported as no-ops.
//!
//! The crate's only `unsafe`: the FFI calls, the slices over Envoy's buffers (valid for the
//! duration of the hook that reads them), and the configuration pointer handed to Envoy
//! (`Box::into_raw` in `config_new`, `Box::from_raw` in `config_destroy`; in between only shared
//! borrows, from every worker thread: the configuration is immutable and `Sync`), and, only for
//! a configuration with `rate_limit_headers`, each stream's own filter object (`Box::into_raw`
//! in `filter_new`, marked by the pointer's low bit; `Box::from_raw` in `filter_destroy`; in
//! between borrowed by one hook at a time, on the stream's worker thread).
//!
//! No panic crosses into Envoy: each hook that runs the module's code runs it under
//! `catch_unwind`; a request whose handling panicked gets the core's fail-closed reply (`503
//! keyset_unavailable`), a configuration that panicked is refused.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use keygate_filter_core::decision::Reason;
use keygate_filter_core::host::LogLevel;
use keygate_filter_core::limits::AllowedFields;
use smallvec::SmallVec;

use crate::config::{FilterConfig, Keys};
use crate::host::now_ms;
use crate::metrics::{GAUGE_NAMES, MetricSink, counter_names};
use crate::shell::{Stream, Verdict, fail_closed};

mod abi;
mod stream;

use abi::*;
use stream::resolve;

fn log_error(message: &str) {
    log(LogLevel::Error, message);
}

/// Envoy's log, from any thread (the sync thread logs through it too).
fn log(level: LogLevel, message: &str) {
    let level = match level {
        LogLevel::Info => LOG_INFO,
        LogLevel::Warn => LOG_WARN,
        LogLevel::Error => LOG_ERROR,
    };
    // SAFETY: the buffer describes `message`, alive for the call; Envoy copies it.
    unsafe { envoy_dynamic_module_callback_log(level, Buffer::of(message.as_bytes())) }
}

/// What Envoy holds for a filter configuration: the shell's configuration, the ids of its
/// decision counters (`keygate.decision.<outcome>.<code>`, as the proxy-wasm filter's) and, for
/// a synced configuration, the token of the [`ConfigSink`] through which its sync's thread
/// sets the sync's counters and gauges ([`crate::metrics`]).
struct Module {
    filter: FilterConfig,
    counters: [Option<usize>; Reason::ALL.len()],
    /// The token of this configuration's [`ConfigSink`] in its sync's sinks.
    sink: Option<u64>,
}

impl Drop for Module {
    /// Takes this configuration's sink back from the sync before Envoy frees the configuration:
    /// the sync thread never flushes through a pointer Envoy has destroyed.
    fn drop(&mut self) {
        if let (Some(token), Some(Keys::Synced(sync))) =
            (self.sink, self.filter.keygate().map(|k| k.keys()))
        {
            sync.shared_state().sinks.unregister(token);
        }
    }
}

/// The sync's counters and gauges on one filter configuration: Envoy's configuration-level
/// stat callbacks, called by the sync thread.
struct ConfigSink {
    config: *mut c_void,
    counters: Vec<Option<usize>>,
    gauges: [Option<usize>; GAUGE_NAMES.len()],
}

// SAFETY: the pointer is Envoy's filter configuration, alive until `config_destroy`, which
// unregisters the sink (waiting out a flush in progress) before it returns; Envoy's
// configuration-level stat callbacks may be called from any thread (atomic stats, no labels).
unsafe impl Send for ConfigSink {}

impl MetricSink for ConfigSink {
    fn counter_add(&mut self, index: usize, delta: u64) {
        if let Some(Some(id)) = self.counters.get(index) {
            // SAFETY: see `Send` above; `id` was defined on this configuration; no labels.
            unsafe {
                envoy_dynamic_module_callback_http_filter_config_increment_counter(
                    self.config,
                    *id,
                    std::ptr::null(),
                    0,
                    delta,
                );
            }
        }
    }

    fn gauge_set(&mut self, index: usize, value: u64) {
        if let Some(Some(id)) = self.gauges.get(index) {
            // SAFETY: as above.
            unsafe {
                envoy_dynamic_module_callback_http_filter_config_set_gauge(
                    self.config,
                    *id,
                    std::ptr::null(),
                    0,
                    value,
                );
            }
        }
    }
}

/// Every worker thread reads the one `Module` of a configuration at once.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Module>();
};

/// The [`Stream`] of one request: Envoy's callbacks on its filter.
struct EnvoyStream<'a> {
    filter: *mut c_void,
    module: &'a Module,
    /// Where an allowed request's fields are kept (`rate_limit_headers`).
    kept: Option<&'a mut Option<AllowedFields>>,
}

impl Stream for EnvoyStream<'_> {
    fn client_address(&mut self) -> Option<String> {
        let mut value = Buffer::NULL;
        // SAFETY: `filter` is the live filter of the current hook; Envoy writes a buffer it
        // owns, valid during the hook, copied here before returning.
        unsafe {
            if !envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.filter,
                ATTRIBUTE_SOURCE_ADDRESS,
                &raw mut value,
            ) || value.ptr.is_null()
            {
                return None;
            }
            Some(String::from_utf8_lossy(value.bytes()).into_owned())
        }
    }

    fn remove_header(&mut self, name: &[u8]) {
        // SAFETY: `filter` is the live filter of the current hook; the key buffer is alive for
        // the call (Envoy copies it); a null value asks for a removal.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.filter,
                REQUEST_HEADER,
                Buffer::of(name),
                Buffer::NULL,
            );
        }
    }

    fn set_header(&mut self, name: &[u8], value: &[u8]) {
        // SAFETY: as above; both buffers are alive for the call and copied by Envoy.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.filter,
                REQUEST_HEADER,
                Buffer::of(name),
                Buffer::of(value),
            );
        }
    }

    fn add_header(&mut self, name: &[u8], value: &[u8]) {
        // SAFETY: as above.
        unsafe {
            envoy_dynamic_module_callback_http_add_header(
                self.filter,
                REQUEST_HEADER,
                Buffer::of(name),
                Buffer::of(value),
            );
        }
    }

    fn send_reply(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let headers: SmallVec<[HttpHeader; 4]> = headers
            .iter()
            .map(|(k, v)| HttpHeader {
                key_ptr: k.as_ptr().cast(),
                key_length: k.len(),
                value_ptr: v.as_ptr().cast(),
                value_length: v.len(),
            })
            .collect();
        // SAFETY: the header array and every buffer are alive for the call; Envoy copies them
        // into its local reply. No details (null), as the proxy-wasm filter sends none.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.filter,
                u32::from(status),
                headers.as_ptr(),
                headers.len(),
                Buffer::of(body),
                Buffer::NULL,
            );
        }
    }

    fn keep_fields(&mut self, fields: AllowedFields) {
        if let Some(slot) = self.kept.as_deref_mut() {
            *slot = Some(fields);
        }
    }

    fn count(&mut self, reason: Reason) {
        if let Some(Some(id)) = self.module.counters.get(reason.index()) {
            // SAFETY: `id` was defined on the configuration this filter was created from; no
            // labels (null, 0).
            unsafe {
                envoy_dynamic_module_callback_http_filter_increment_counter(
                    self.filter,
                    *id,
                    std::ptr::null(),
                    0,
                    1,
                );
            }
        }
    }
}

/// Called once, when Envoy loads this library.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    ABI_VERSION.as_ptr()
}

/// A filter configuration; null refuses it (the reason is in Envoy's log).
///
/// # Safety
/// Envoy's contract: the buffers are valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    filter_config_envoy_ptr: *mut c_void,
    name: Buffer,
    config: Buffer,
) -> *const c_void {
    // SAFETY: Envoy's buffers are valid for this call, and only read during it.
    let (name, config) = unsafe { (name.bytes(), config.bytes()) };
    let made = catch_unwind(AssertUnwindSafe(|| {
        new_module(filter_config_envoy_ptr, name, config)
    }));
    match made {
        Ok(Some(module)) => Box::into_raw(Box::new(module)).cast_const().cast(),
        Ok(None) => std::ptr::null(),
        Err(_) => {
            log_error("keygate-native-filter: the configuration failed (a panic); refused");
            std::ptr::null()
        }
    }
}

/// Defines the stat `name` of `kind` on the configuration; its id, or none (logged).
fn define(
    filter_config_envoy_ptr: *mut c_void,
    name: &str,
    define: unsafe extern "C" fn(*mut c_void, Buffer, *const Buffer, usize, *mut usize) -> u32,
) -> Option<usize> {
    let mut id = 0usize;
    // SAFETY: the configuration pointer is Envoy's for the `config_new` call this runs in; the
    // name is alive for the call; no labels; `id` is writable. Stats must be defined there:
    // Envoy freezes stat creation once that hook returns.
    let result = unsafe {
        define(
            filter_config_envoy_ptr,
            Buffer::of(name.as_bytes()),
            std::ptr::null(),
            0,
            &mut id,
        )
    };
    if result == METRICS_SUCCESS {
        Some(id)
    } else {
        log_error(&format!(
            "keygate-native-filter: stat {name} not defined (result {result})"
        ));
        None
    }
}

/// The configuration and its stats, or none (the reason logged).
fn new_module(filter_config_envoy_ptr: *mut c_void, name: &[u8], config: &[u8]) -> Option<Module> {
    let filter = match FilterConfig::new(name, config, log) {
        Ok(f) => f,
        Err(e) => {
            log_error(&e);
            return None;
        }
    };
    let counter = envoy_dynamic_module_callback_http_filter_config_define_counter;
    let mut counters = [None; Reason::ALL.len()];
    if !matches!(filter, FilterConfig::Noop) {
        for (reason, slot) in Reason::ALL.iter().zip(counters.iter_mut()) {
            *slot = define(filter_config_envoy_ptr, &reason.metric_name(), counter);
        }
    }
    let mut sink = None;
    if let Some(Keys::Synced(sync)) = filter.keygate().map(|k| k.keys()) {
        let counters = counter_names()
            .iter()
            .map(|n| define(filter_config_envoy_ptr, n, counter))
            .collect();
        let gauge = envoy_dynamic_module_callback_http_filter_config_define_gauge;
        let mut gauges = [None; GAUGE_NAMES.len()];
        for (name, slot) in GAUGE_NAMES.iter().zip(gauges.iter_mut()) {
            *slot = define(filter_config_envoy_ptr, name, gauge);
        }
        sink = Some(sync.shared_state().sinks.register(Box::new(ConfigSink {
            config: filter_config_envoy_ptr,
            counters,
            gauges,
        })));
    }
    Some(Module {
        filter,
        counters,
        sink,
    })
}

/// The configuration goes: every filter made from it has gone.
///
/// # Safety
/// `config` came from `envoy_dynamic_module_on_http_filter_config_new` and is not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    if !config.is_null() {
        // SAFETY: made by `Box::into_raw` in `config_new`; Envoy destroys it once.
        let module = unsafe { Box::from_raw(config.cast_mut().cast::<Module>()) };
        // Stops its sync if it was the last configuration holding it (joins its threads).
        if catch_unwind(AssertUnwindSafe(|| drop(module))).is_err() {
            log_error("keygate-native-filter: destroying a configuration failed (a panic)");
        }
    }
}

/// The request's headers: the whole of Keygate's work.
///
/// # Safety
/// Envoy's contract: `filter_envoy_ptr` is the live filter, `filter_module_ptr` what
/// `envoy_dynamic_module_on_http_filter_new` returned.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: the configuration outlives its filters (Envoy destroys it after them); only
    // shared borrows exist between `config_new` and `config_destroy`; the stream's own object
    // is borrowed by this hook only.
    let (module, mut per_stream) = unsafe { resolve(filter_module_ptr) };
    let run = catch_unwind(AssertUnwindSafe(|| {
        let kept = per_stream.as_deref_mut().map(|s| &mut s.fields);
        // SAFETY: the filter is live for this hook.
        unsafe { request_headers(filter_envoy_ptr, module, kept) }
    }));
    let verdict = run.unwrap_or_else(|_| {
        log_error("keygate-native-filter: a request failed (a panic); answered 503");
        let mut stream = EnvoyStream {
            filter: filter_envoy_ptr,
            module,
            kept: None,
        };
        catch_unwind(AssertUnwindSafe(|| fail_closed(&mut stream))).unwrap_or(Verdict::Stop)
    });
    match verdict {
        Verdict::Continue => CONTINUE,
        Verdict::Stop => STOP_ITERATION,
    }
}

/// The request's headers, read and decided.
///
/// # Safety
/// `filter_envoy_ptr` is the live filter of the current hook.
unsafe fn request_headers(
    filter_envoy_ptr: *mut c_void,
    module: &Module,
    kept: Option<&mut Option<AllowedFields>>,
) -> Verdict {
    let (keygate, decide_only) = match &module.filter {
        FilterConfig::Noop => return Verdict::Continue,
        FilterConfig::HostCalls => (None, false),
        FilterConfig::Keygate(k) => (Some(k), false),
        FilterConfig::DecideOnly(k) => (Some(k), true),
    };

    // SAFETY: the filter is live for this hook.
    let count = unsafe {
        envoy_dynamic_module_callback_http_get_headers_size(filter_envoy_ptr, REQUEST_HEADER)
    };
    let mut raw: SmallVec<[HttpHeader; 32]> = SmallVec::from_elem(HttpHeader::EMPTY, count);
    // SAFETY: `raw` has room for the `count` headers Envoy writes.
    let ok = unsafe {
        envoy_dynamic_module_callback_http_get_headers(
            filter_envoy_ptr,
            REQUEST_HEADER,
            raw.as_mut_ptr(),
        )
    };
    if !ok {
        raw.clear();
    }
    let headers: SmallVec<[(&[u8], &[u8]); 32]> = raw
        .iter()
        .map(|h| {
            // SAFETY: Envoy's header map, valid until this hook returns or the map is edited;
            // the shell copies what it needs before its first edit.
            unsafe {
                (
                    Buffer {
                        ptr: h.key_ptr,
                        length: h.key_length,
                    }
                    .bytes(),
                    Buffer {
                        ptr: h.value_ptr,
                        length: h.value_length,
                    }
                    .bytes(),
                )
            }
        })
        .collect();
    let now = now_ms();
    let mut stream = EnvoyStream {
        filter: filter_envoy_ptr,
        module,
        kept,
    };
    match keygate {
        Some(k) if decide_only => k.decide_then_host_calls(&headers, now, &mut stream),
        Some(k) => k.on_request_headers(&headers, now, &mut stream),
        None => crate::shell::host_calls_only(&mut stream),
    }
}

/// Defines hooks that only continue (their status enums' `Continue` is 0).
macro_rules! continue_hooks {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[unsafe(no_mangle)]
        pub extern "C" fn $name($(_: $ty),*) -> u32 {
            CONTINUE
        }
    )*};
}

/// Defines hooks that do nothing.
macro_rules! no_op_hooks {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[unsafe(no_mangle)]
        pub extern "C" fn $name($(_: $ty),*) {}
    )*};
}

type Ptr = *const c_void;

continue_hooks! {
    envoy_dynamic_module_on_http_filter_request_body(e: Ptr, m: Ptr, eos: bool);
    envoy_dynamic_module_on_http_filter_request_trailers(e: Ptr, m: Ptr);
    envoy_dynamic_module_on_http_filter_response_body(e: Ptr, m: Ptr, eos: bool);
    envoy_dynamic_module_on_http_filter_response_trailers(e: Ptr, m: Ptr);
}

no_op_hooks! {
    envoy_dynamic_module_on_http_filter_stream_complete(e: Ptr, m: Ptr);
    envoy_dynamic_module_on_http_filter_http_callout_done(
        e: Ptr, m: Ptr, id: u64, result: u32, headers: Ptr, n: usize, body: Ptr, chunks: usize);
    envoy_dynamic_module_on_http_filter_http_stream_headers(
        e: Ptr, m: Ptr, id: u64, headers: Ptr, n: usize, end: bool);
    envoy_dynamic_module_on_http_filter_http_stream_data(
        e: Ptr, m: Ptr, id: u64, data: Ptr, n: usize, end: bool);
    envoy_dynamic_module_on_http_filter_http_stream_trailers(
        e: Ptr, m: Ptr, id: u64, trailers: Ptr, n: usize);
    envoy_dynamic_module_on_http_filter_http_stream_complete(e: Ptr, m: Ptr, id: u64);
    envoy_dynamic_module_on_http_filter_http_stream_reset(e: Ptr, m: Ptr, id: u64, reason: u32);
    envoy_dynamic_module_on_http_filter_scheduled(e: Ptr, m: Ptr, id: u64);
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(e: Ptr, m: Ptr);
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(e: Ptr, m: Ptr);
}
