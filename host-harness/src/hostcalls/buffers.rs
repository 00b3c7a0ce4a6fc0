//! Buffers: `proxy_get_buffer_bytes`, `proxy_set_buffer_bytes`, `proxy_get_buffer_status`.

use wasmtime::Caller;

use super::HostLinker;
use crate::abi::{BufferType, Status};
use crate::memory::{Guest, finish};
use crate::state::HostState;

/// The bytes of a buffer visible now, or `NotFound` (Envoy's `getBuffer` returning null).
fn buffer(state: &HostState, kind: BufferType) -> Result<Vec<u8>, Status> {
    let found = match kind {
        BufferType::RequestBody => state.stream().and_then(|s| s.request_body.clone()),
        BufferType::ResponseBody => state.stream().and_then(|s| s.response_body.clone()),
        BufferType::CallResponseBody => state.call_delivery.as_ref().map(|d| d.body.clone()),
        BufferType::VmConfiguration => Some(state.env.vm_configuration.clone()),
        BufferType::PluginConfiguration if state.in_configure => {
            Some(state.env.plugin_configuration.clone())
        }
        _ => None,
    };
    found.ok_or(Status::NotFound)
}

/// Envoy's body `copyFrom`: start 0 drains `length` bytes and prepends; start at or past the
/// end appends; anything else is `BadArgument`.
pub(crate) fn splice(
    body: &mut Vec<u8>,
    start: usize,
    length: usize,
    data: &[u8],
) -> Result<(), Status> {
    if start == 0 {
        let drained = length.min(body.len());
        body.splice(0..drained, data.iter().copied());
        Ok(())
    } else if start >= body.len() {
        body.extend_from_slice(data);
        Ok(())
    } else {
        Err(Status::BadArgument)
    }
}

pub(super) fn add(linker: &mut HostLinker<'_>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut caller: Caller<'_, HostState>,
         kind: i32,
         start: i32,
         max: i32,
         ret_ptr: i32,
         ret_size: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let kind = BufferType::from_abi(kind as u32).ok_or(Status::BadArgument)?;
                let bytes = buffer(guest.state(), kind)?;
                let start = start as u32 as usize;
                let max = max as u32 as usize;
                if start.checked_add(max).is_none() {
                    return Err(Status::BadArgument.into());
                }
                let end = (start + max).min(bytes.len());
                if end > start {
                    guest.copy_out(&bytes[start..end], ret_ptr, ret_size)?;
                }
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut caller: Caller<'_, HostState>,
         kind: i32,
         start: i32,
         size: i32,
         ptr: i32,
         len: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let kind = BufferType::from_abi(kind as u32).ok_or(Status::BadArgument)?;
                let data = guest.read(ptr, len)?;
                let state = guest.state();
                let body = match kind {
                    BufferType::RequestBody => {
                        state.stream_mut().and_then(|s| s.request_body.as_mut())
                    }
                    BufferType::ResponseBody => {
                        state.stream_mut().and_then(|s| s.response_body.as_mut())
                    }
                    BufferType::CallResponseBody => {
                        state.call_delivery.as_mut().map(|d| &mut d.body)
                    }
                    _ => None,
                }
                .ok_or(Status::NotFound)?;
                splice(body, start as u32 as usize, size as u32 as usize, &data)?;
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut caller: Caller<'_, HostState>, kind: i32, len_ptr: i32, flags_ptr: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let kind = BufferType::from_abi(kind as u32).ok_or(Status::BadArgument)?;
                let bytes = buffer(guest.state(), kind)?;
                guest.write_u32(len_ptr, bytes.len() as u32)?;
                guest.write_u32(flags_ptr, 0)
            })())
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_follows_envoy_rules() {
        let mut body = b"hello".to_vec();
        splice(&mut body, 0, 0, b">").unwrap();
        assert_eq!(body, b">hello");
        splice(&mut body, 0, 6, b"bye").unwrap();
        assert_eq!(body, b"bye");
        splice(&mut body, 3, 0, b"!").unwrap();
        assert_eq!(body, b"bye!");
        assert_eq!(splice(&mut body, 1, 1, b"x"), Err(Status::BadArgument));
    }
}
