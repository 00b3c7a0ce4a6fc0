//! The proxy-wasm callbacks the filter implements: the exports its built module keeps (a
//! file of its own, so that `keygate-plugin-artifacts`'s build script can include it).

/// The `proxy_on_*` callbacks this filter implements, which its module exports; it exports no
/// other. The SDK exports every callback of the ABI, and `keygate-plugin-artifacts` drops the
/// rest from the built module: a host skips a callback that a module does not export (Envoy's
/// proxy-wasm-cpp-host continues, or counts `proxy_on_done` as done), so a request enters the
/// VM three times (context create, request headers, delete) instead of seven (also response
/// headers and body, done, log), each entry a host-to-wasm call and an SDK dispatch.
pub const CALLBACKS: &[&str] = &[
    // the host hands buffers (header maps, bodies, configuration) over through it
    "proxy_on_memory_allocate",
    // the root context
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_tick",
    "proxy_on_http_call_response",
    "proxy_on_queue_ready",
    // a request
    "proxy_on_context_create",
    "proxy_on_request_headers",
    // frees the SDK's context of the stream
    "proxy_on_delete",
];
