//! HTTP and gRPC: `proxy_http_call`, `proxy_send_local_response`, `proxy_get_status`, and the
//! gRPC calls (not routed by this host: Envoy's statuses for an unusable service).

use std::time::Duration;

use wasmtime::Caller;

use super::HostLinker;
use crate::abi::{HeaderMap, Status, deserialize_map};
use crate::cluster::CalloutRequest;
use crate::memory::{Guest, finish};
use crate::state::{HostState, LocalResponse};

pub(super) fn add(linker: &mut HostLinker<'_>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut caller: Caller<'_, HostState>,
         up_ptr: i32,
         up_size: i32,
         headers_ptr: i32,
         headers_size: i32,
         body_ptr: i32,
         body_size: i32,
         trailers_ptr: i32,
         trailers_size: i32,
         timeout_ms: i32,
         ret_token: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let cluster = guest.read_string(up_ptr, up_size)?;
                let headers =
                    deserialize_map(&guest.read(headers_ptr, headers_size)?).unwrap_or_default();
                let body = guest.read(body_ptr, body_size)?;
                let trailers =
                    deserialize_map(&guest.read(trailers_ptr, trailers_size)?).unwrap_or_default();
                let headers: HeaderMap = headers
                    .into_iter()
                    .map(|(mut k, v)| {
                        k.make_ascii_lowercase();
                        (k, v)
                    })
                    .collect();
                let state = guest.state();
                if !state.env.clusters.contains_key(&cluster) {
                    return Err(Status::BadArgument.into());
                }
                for required in [":method", ":path", ":authority"] {
                    if !headers.iter().any(|(k, v)| k == required && !v.is_empty()) {
                        return Err(Status::BadArgument.into());
                    }
                }
                let token = state.next_call_token.wrapping_add(1).max(1);
                guest.write_u32(ret_token, token)?;
                let state = guest.state();
                state.next_call_token = token;
                let timeout = match timeout_ms as u32 {
                    0 => None,
                    ms => Some(Duration::from_millis(u64::from(ms))),
                };
                let context = state.effective_context;
                state.new_calls.push((
                    token,
                    context,
                    CalloutRequest {
                        cluster,
                        headers,
                        body,
                        trailers,
                        timeout,
                    },
                ));
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut caller: Caller<'_, HostState>,
         status: i32,
         details_ptr: i32,
         details_size: i32,
         body_ptr: i32,
         body_size: i32,
         headers_ptr: i32,
         headers_size: i32,
         grpc_status: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let details = guest.read_string(details_ptr, details_size)?;
                let body = guest.read(body_ptr, body_size)?;
                let headers =
                    deserialize_map(&guest.read(headers_ptr, headers_size)?).unwrap_or_default();
                if let Some(stream) = guest.state().stream_mut()
                    && !stream.local_sent
                {
                    stream.local_sent = true;
                    stream.local_response = Some(LocalResponse {
                        status: status as u32 as u16,
                        details,
                        body,
                        headers: headers
                            .into_iter()
                            .map(|(mut k, v)| {
                                k.make_ascii_lowercase();
                                (k, v)
                            })
                            .collect(),
                        grpc_status,
                    });
                }
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut caller: Caller<'_, HostState>, ret_code: i32, ret_ptr: i32, ret_size: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let (code, message) = guest.state().status.clone();
                guest.write_u32(ret_code, code)?;
                guest.copy_out(message.as_bytes(), ret_ptr, ret_size)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut caller: Caller<'_, HostState>,
         service_ptr: i32,
         service_size: i32,
         _name_ptr: i32,
         _name_size: i32,
         _method_ptr: i32,
         _method_size: i32,
         _md_ptr: i32,
         _md_size: i32,
         _msg_ptr: i32,
         _msg_size: i32,
         _timeout: i32,
         _ret_token: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let service = guest.read_string(service_ptr, service_size)?;
                grpc_unavailable(guest.state(), &service)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |mut caller: Caller<'_, HostState>,
         service_ptr: i32,
         service_size: i32,
         _name_ptr: i32,
         _name_size: i32,
         _method_ptr: i32,
         _method_size: i32,
         _md_ptr: i32,
         _md_size: i32,
         _ret_token: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let service = guest.read_string(service_ptr, service_size)?;
                grpc_unavailable(guest.state(), &service)
            })())
        },
    )?;
    // No gRPC call can exist, so every token is unknown.
    linker.func_wrap(
        "env",
        "proxy_grpc_send",
        |_: Caller<'_, HostState>, _token: i32, _ptr: i32, _size: i32, _end: i32| {
            Ok(Status::NotFound as i32)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_cancel",
        |_: Caller<'_, HostState>, _token: i32| Ok(Status::NotFound as i32),
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_close",
        |_: Caller<'_, HostState>, _token: i32| Ok(Status::NotFound as i32),
    )?;
    Ok(())
}

/// Envoy answers `ParseFailure` when the service is neither a `GrpcService` nor a known
/// cluster; this host does not route gRPC, so a known cluster gets `InternalFailure` (the
/// status Envoy gives when it cannot create the client). Both are statuses the Rust SDK handles.
fn grpc_unavailable(state: &HostState, service: &str) -> crate::memory::HostResult<()> {
    if state.env.clusters.contains_key(service) {
        Err(Status::InternalFailure.into())
    } else {
        Err(Status::ParseFailure.into())
    }
}
