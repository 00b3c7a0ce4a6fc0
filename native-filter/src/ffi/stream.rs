//! A stream's own filter object (`PerStream`), made only for a configuration with
//! `rate_limit_headers`: an allowed request of a limited key keeps its `RateLimit-Policy` and
//! `RateLimit` there from its request headers to its response headers, where the hook adds them.
//! Without the option a stream's filter is the configuration itself, as before: no allocation,
//! and the response-headers hook checks one bit.
#![allow(unsafe_code)]

use std::ffi::c_void;

use keygate_filter_core::limits::AllowedFields;

use super::Module;
use super::abi::*;

/// A stream's own filter object, made only for a configuration with `rate_limit_headers`: the
/// fields an allowed request of a limited key answers with, kept from its request headers to
/// its response headers. Without the option a stream's filter is the configuration itself.
pub(super) struct PerStream {
    module: *const Module,
    pub(super) fields: Option<AllowedFields>,
}

/// The low bit that marks a filter pointer as a [`PerStream`] (both it and [`Module`] are
/// aligned to 8, so neither pointer has it).
const PER_STREAM: usize = 1;

const _: () = assert!(align_of::<Module>() > PER_STREAM && align_of::<PerStream>() > PER_STREAM);

/// The configuration and, with `rate_limit_headers`, the stream's own object, from what
/// `envoy_dynamic_module_on_http_filter_new` returned.
///
/// # Safety
/// `filter_module_ptr` came from `envoy_dynamic_module_on_http_filter_new`, its stream is live,
/// and no other borrow of its [`PerStream`] exists (Envoy calls a stream's hooks one at a time,
/// on its worker thread).
pub(super) unsafe fn resolve<'a>(
    filter_module_ptr: *const c_void,
) -> (&'a Module, Option<&'a mut PerStream>) {
    if filter_module_ptr.addr() & PER_STREAM == 0 {
        // SAFETY: an untagged pointer is the configuration, alive while its filters are.
        return (unsafe { &*filter_module_ptr.cast::<Module>() }, None);
    }
    let stream = filter_module_ptr
        .map_addr(|a| a & !PER_STREAM)
        .cast::<PerStream>()
        .cast_mut();
    // SAFETY: made by `Box::into_raw` in `filter_new`, freed only in `filter_destroy`; its
    // configuration outlives it.
    unsafe {
        let stream = &mut *stream;
        (&*stream.module, Some(stream))
    }
}

/// A stream's filter: the configuration itself (no allocation), or with `rate_limit_headers` a
/// [`PerStream`] of its own, marked by [`PER_STREAM`].
///
/// # Safety
/// Envoy's contract: `config` came from `envoy_dynamic_module_on_http_filter_config_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _filter_envoy_ptr: *mut c_void,
) -> *const c_void {
    // SAFETY: the configuration outlives its filters; only shared borrows of it exist.
    let module = unsafe { &*config.cast::<Module>() };
    if !module
        .filter
        .keygate()
        .is_some_and(|k| k.fields_on_allowed())
    {
        return config;
    }
    let stream = Box::into_raw(Box::new(PerStream {
        module: config.cast(),
        fields: None,
    }));
    stream.map_addr(|a| a | PER_STREAM).cast_const().cast()
}

/// A stream's filter goes: its [`PerStream`], if it has one, is freed.
///
/// # Safety
/// `filter_module_ptr` came from `envoy_dynamic_module_on_http_filter_new` and is not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(
    filter_module_ptr: *const c_void,
) {
    if filter_module_ptr.addr() & PER_STREAM != 0 {
        let stream = filter_module_ptr
            .map_addr(|a| a & !PER_STREAM)
            .cast::<PerStream>()
            .cast_mut();
        // SAFETY: made by `Box::into_raw` in `filter_new`; Envoy destroys a filter once.
        drop(unsafe { Box::from_raw(stream) });
    }
}

/// The response's headers: an allowed request's kept fields, added (a stream without a
/// [`PerStream`], or whose request kept none, is only a bit or an `Option` checked).
///
/// # Safety
/// Envoy's contract: `filter_envoy_ptr` is the live filter, `filter_module_ptr` what
/// `envoy_dynamic_module_on_http_filter_new` returned.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: by this function's contract.
    if let (_, Some(stream)) = unsafe { resolve(filter_module_ptr) }
        && let Some(fields) = stream.fields.take()
    {
        for (name, value) in &fields {
            // SAFETY: the filter is live for this hook; both buffers are alive for the call
            // and copied by Envoy.
            unsafe {
                envoy_dynamic_module_callback_http_add_header(
                    filter_envoy_ptr,
                    RESPONSE_HEADER,
                    Buffer::of(name.as_bytes()),
                    Buffer::of(value.as_bytes()),
                );
            }
        }
    }
    CONTINUE
}
