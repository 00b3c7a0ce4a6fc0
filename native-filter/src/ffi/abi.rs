//! The declarations of Envoy's dynamic-module ABI this module uses, written from the ABI's
//! specification (`source/extensions/dynamic_modules/abi/abi.h` in Envoy's repository; Envoy
//! 1.40.0 reports ABI version `v0.2.0`): its buffer and header types, the enum values used, and
//! the callbacks into Envoy, resolved against the `envoy` executable when it `dlopen`s this
//! library. The hooks Envoy calls are in the parent module.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_void};

/// The ABI version this module was written against (Envoy 1.40.0). A mismatch is only a
/// warning in Envoy's log.
pub(super) const ABI_VERSION: &CStr = c"v0.2.0";

/// `envoy_dynamic_module_type_envoy_buffer` / `…_module_buffer`: bytes owned by Envoy or by the
/// module, by context.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Buffer {
    pub(crate) ptr: *const c_char,
    pub(crate) length: usize,
}

impl Buffer {
    pub(super) const NULL: Buffer = Buffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    pub(super) fn of(bytes: &[u8]) -> Self {
        Self {
            ptr: bytes.as_ptr().cast(),
            length: bytes.len(),
        }
    }

    /// The bytes, or none for a null buffer.
    ///
    /// # Safety
    /// `ptr` must point to `length` readable bytes that outlive `'a`.
    pub(super) unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            return &[];
        }
        // SAFETY: by this function's contract.
        unsafe { std::slice::from_raw_parts(self.ptr.cast(), self.length) }
    }
}

/// `envoy_dynamic_module_type_envoy_http_header` / `…_module_http_header`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct HttpHeader {
    pub(super) key_ptr: *const c_char,
    pub(super) key_length: usize,
    pub(super) value_ptr: *const c_char,
    pub(super) value_length: usize,
}

impl HttpHeader {
    pub(super) const EMPTY: HttpHeader = HttpHeader {
        key_ptr: std::ptr::null(),
        key_length: 0,
        value_ptr: std::ptr::null(),
        value_length: 0,
    };
}

/// `envoy_dynamic_module_type_http_header_type_RequestHeader`.
pub(super) const REQUEST_HEADER: u32 = 0;
/// `envoy_dynamic_module_type_http_header_type_ResponseHeader`.
pub(super) const RESPONSE_HEADER: u32 = 2;
/// `…_status_Continue` (every hook's status enum starts with it).
pub(super) const CONTINUE: u32 = 0;
/// `envoy_dynamic_module_type_on_http_filter_request_headers_status_StopIteration`.
pub(super) const STOP_ITERATION: u32 = 1;
/// `envoy_dynamic_module_type_log_level_Info`.
pub(super) const LOG_INFO: u32 = 2;
/// `envoy_dynamic_module_type_log_level_Warn`.
pub(super) const LOG_WARN: u32 = 3;
/// `envoy_dynamic_module_type_log_level_Error`.
pub(super) const LOG_ERROR: u32 = 4;
/// `envoy_dynamic_module_type_metrics_result_Success`.
pub(super) const METRICS_SUCCESS: u32 = 0;

/// `envoy_dynamic_module_type_attribute_id_SourceAddress` (`source.address`).
pub(super) const ATTRIBUTE_SOURCE_ADDRESS: u32 = 24;

unsafe extern "C" {
    /// An attribute's string value; `false` when it has none or is not a string.
    pub(super) fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter_envoy_ptr: *mut c_void,
        attribute_id: u32,
        result: *mut Buffer,
    ) -> bool;
    pub(super) fn envoy_dynamic_module_callback_log(level: u32, message: Buffer);
    pub(super) fn envoy_dynamic_module_callback_http_get_headers_size(
        filter_envoy_ptr: *mut c_void,
        header_type: u32,
    ) -> usize;
    pub(super) fn envoy_dynamic_module_callback_http_get_headers(
        filter_envoy_ptr: *mut c_void,
        header_type: u32,
        result_headers: *mut HttpHeader,
    ) -> bool;
    /// A null `value` removes the header.
    pub(super) fn envoy_dynamic_module_callback_http_set_header(
        filter_envoy_ptr: *mut c_void,
        header_type: u32,
        key: Buffer,
        value: Buffer,
    ) -> bool;
    pub(super) fn envoy_dynamic_module_callback_http_add_header(
        filter_envoy_ptr: *mut c_void,
        header_type: u32,
        key: Buffer,
        value: Buffer,
    ) -> bool;
    pub(super) fn envoy_dynamic_module_callback_http_send_response(
        filter_envoy_ptr: *mut c_void,
        status_code: u32,
        headers_vector: *const HttpHeader,
        headers_vector_size: usize,
        body: Buffer,
        details: Buffer,
    );
    pub(super) fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        filter_config_envoy_ptr: *mut c_void,
        name: Buffer,
        label_names: *const Buffer,
        label_names_length: usize,
        counter_id_ptr: *mut usize,
    ) -> u32;
    pub(super) fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter_envoy_ptr: *mut c_void,
        id: usize,
        label_values: *const Buffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub(super) fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        filter_config_envoy_ptr: *mut c_void,
        name: Buffer,
        label_names: *const Buffer,
        label_names_length: usize,
        gauge_id_ptr: *mut usize,
    ) -> u32;
    /// As `…_http_filter_increment_counter`, on the configuration (no stream; Envoy's counters
    /// are atomic, so any thread).
    pub(super) fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        filter_config_envoy_ptr: *mut c_void,
        id: usize,
        label_values: *const Buffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    /// As `…_http_filter_set_gauge`, on the configuration.
    pub(super) fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        filter_config_envoy_ptr: *mut c_void,
        id: usize,
        label_values: *const Buffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
}
