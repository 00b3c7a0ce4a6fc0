//! The host calls the request path makes without the SDK's wrappers: reading a header map as
//! the host's serialized buffer, sending a local reply with pre-serialized headers, and the
//! clock as plain nanoseconds.
//!
//! Why: the SDK's `get_map` turns every header into two owned `String`s and traps the filter
//! (`String::from_utf8(..).unwrap()`) when a client sends a header value that is not UTF-8,
//! which Envoy lets through (obs-text); its `send_http_response` serializes the headers again
//! on every reply and traps on any status but `Ok`, as does its `get_current_time` (which also
//! goes through `SystemTime` on every request). Here the buffer is handed to [`crate::pairs`]
//! to be read in place, and every status is an error value.
//!
//! Its `unsafe` (the crate's only): three FFI calls with the
//! ABI v0.2.1 signatures, and taking ownership of the buffer the host allocated through the
//! SDK's `proxy_on_memory_allocate`.
#![allow(unsafe_code)]

/// Status `Ok` in the ABI.
#[cfg(target_arch = "wasm32")]
const OK: u32 = 0;

/// Header map types of the ABI used here.
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum Map {
    /// The downstream request's headers.
    RequestHeaders = 0,
    /// The headers of an HTTP call's response.
    HttpCallResponseHeaders = 6,
}

#[cfg(target_arch = "wasm32")]
mod ffi {
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        pub fn proxy_get_header_map_pairs(
            map_type: u32,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> u32;
        pub fn proxy_send_local_response(
            status_code: u32,
            status_code_details_data: *const u8,
            status_code_details_size: usize,
            body_data: *const u8,
            body_size: usize,
            headers_data: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
        pub fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    }
}

/// The host's clock: nanoseconds since the Unix epoch, `None` if the host refuses.
#[cfg(target_arch = "wasm32")]
pub fn now_nanos() -> Option<u64> {
    let mut nanos: u64 = 0;
    // SAFETY: the out-pointer is valid for a write for the duration of the call.
    let status = unsafe { ffi::proxy_get_current_time_nanoseconds(&mut nanos) };
    (status == OK).then_some(nanos)
}

/// The serialized header map `map` (see [`crate::pairs`]), or the host's status when it has
/// none (e.g. no response headers yet). An empty map may come back as an empty buffer.
#[cfg(target_arch = "wasm32")]
pub fn header_map(map: Map) -> Result<Vec<u8>, u32> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: both out-pointers are valid for writes for the duration of the call.
    let status = unsafe { ffi::proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
    if status != OK {
        return Err(status);
    }
    if data.is_null() || size == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: on `Ok` the host hands over `size` bytes at `data`, allocated through this
    // module's `proxy_on_memory_allocate` (the SDK's: a boxed `[u8]` of exactly `size` bytes,
    // alignment 1) and not referenced by the host afterwards; the Vec takes ownership with that
    // layout (length = capacity = size), as the SDK's own `get_map` does.
    Ok(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// Replies locally with `status`, pre-serialized `headers` and `body`; the host's status on
/// failure.
#[cfg(target_arch = "wasm32")]
pub fn send_local_response(status: u16, headers: &[u8], body: &[u8]) -> Result<(), u32> {
    // SAFETY: every pointer/size pair describes a live slice for the duration of the call; the
    // host only reads them. No details string (null, 0) and no gRPC status (-1), as the SDK.
    let result = unsafe {
        ffi::proxy_send_local_response(
            u32::from(status),
            std::ptr::null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    };
    if result == OK { Ok(()) } else { Err(result) }
}

/// Outside wasm there is no host: no clock.
#[cfg(not(target_arch = "wasm32"))]
pub fn now_nanos() -> Option<u64> {
    None
}

/// Outside wasm there is no host: no map (status `NotFound`).
#[cfg(not(target_arch = "wasm32"))]
pub fn header_map(_map: Map) -> Result<Vec<u8>, u32> {
    Err(1)
}

/// Outside wasm there is no host: refused (status `NotFound`).
#[cfg(not(target_arch = "wasm32"))]
pub fn send_local_response(_status: u16, _headers: &[u8], _body: &[u8]) -> Result<(), u32> {
    Err(1)
}
