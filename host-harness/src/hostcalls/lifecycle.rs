//! Streams and contexts: `proxy_set_effective_context`, `proxy_continue_stream`,
//! `proxy_close_stream`, `proxy_done`, `proxy_call_foreign_function`, and the ABI 0.2.0
//! names `proxy_continue_request`/`proxy_continue_response`/`proxy_clear_route_cache`.

use wasmtime::Caller;

use super::HostLinker;
use crate::abi::{Status, StreamType};
use crate::state::HostState;

fn continue_stream(state: &mut HostState, kind: Option<StreamType>) -> i32 {
    let Some(kind) = kind else {
        return Status::BadArgument as i32;
    };
    if let Some(stream) = state.stream_mut() {
        match kind {
            StreamType::Request => stream.resume_request = true,
            StreamType::Response => stream.resume_response = true,
            // Network-filter streams do not exist for an HTTP context.
            StreamType::Downstream | StreamType::Upstream => return Status::BadArgument as i32,
        }
    }
    Status::Ok as i32
}

pub(super) fn add(linker: &mut HostLinker<'_>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut caller: Caller<'_, HostState>, context: i32| {
            let state = caller.data_mut();
            if !state.context_exists(context as u32) {
                return Ok(Status::BadArgument as i32);
            }
            state.effective_context = context as u32;
            Ok(Status::Ok as i32)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut caller: Caller<'_, HostState>, kind: i32| {
            Ok(continue_stream(
                caller.data_mut(),
                StreamType::from_abi(kind as u32),
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_request",
        |mut caller: Caller<'_, HostState>| {
            Ok(continue_stream(
                caller.data_mut(),
                Some(StreamType::Request),
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_response",
        |mut caller: Caller<'_, HostState>| {
            Ok(continue_stream(
                caller.data_mut(),
                Some(StreamType::Response),
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_close_stream",
        |mut caller: Caller<'_, HostState>, kind: i32| {
            let state = caller.data_mut();
            match StreamType::from_abi(kind as u32) {
                Some(StreamType::Request | StreamType::Response) => {
                    if let Some(stream) = state.stream_mut() {
                        stream.closed = true;
                    }
                    Ok(Status::Ok as i32)
                }
                _ => Ok(Status::BadArgument as i32),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_clear_route_cache",
        |_: Caller<'_, HostState>| Ok(Status::Ok as i32),
    )?;
    linker.func_wrap("env", "proxy_done", |_: Caller<'_, HostState>| {
        // Only meaningful after proxy_on_done returned false; this host never defers deletion.
        Ok(Status::Ok as i32)
    })?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |_: Caller<'_, HostState>,
         _name_ptr: i32,
         _name_size: i32,
         _args_ptr: i32,
         _args_size: i32,
         _ret_ptr: i32,
         _ret_size: i32| {
            // No foreign functions are registered: Envoy answers NotFound for unknown names.
            Ok(Status::NotFound as i32)
        },
    )?;
    Ok(())
}
