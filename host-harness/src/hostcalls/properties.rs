//! Properties: `proxy_get_property`, `proxy_set_property`.

use wasmtime::Caller;

use super::HostLinker;
use crate::abi::Status;
use crate::memory::{Guest, finish};
use crate::state::{HostState, PropertyKey};

/// Normalizes an ABI property path (NUL-separated segments, optional trailing NUL).
pub(crate) fn key_from_path(path: &[u8]) -> PropertyKey {
    let path = path.strip_suffix(&[0]).unwrap_or(path);
    String::from_utf8_lossy(path).into_owned()
}

fn lookup(state: &HostState, key: &str) -> Option<Vec<u8>> {
    if let Some(stream) = state.stream()
        && let Some(value) = stream.properties.get(key)
    {
        return Some(value.clone());
    }
    state
        .root_properties
        .get(key)
        .or_else(|| state.env.properties.get(key))
        .cloned()
}

pub(super) fn add(linker: &mut HostLinker<'_>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut caller: Caller<'_, HostState>,
         path_ptr: i32,
         path_size: i32,
         ret_ptr: i32,
         ret_size: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let key = key_from_path(&guest.read(path_ptr, path_size)?);
                let value = lookup(guest.state(), &key).ok_or(Status::NotFound)?;
                guest.copy_out(&value, ret_ptr, ret_size)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut caller: Caller<'_, HostState>,
         path_ptr: i32,
         path_size: i32,
         value_ptr: i32,
         value_size: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let key = key_from_path(&guest.read(path_ptr, path_size)?);
                let value = guest.read(value_ptr, value_size)?;
                let state = guest.state();
                match state.stream_mut() {
                    Some(stream) => {
                        match stream.filter_state.iter_mut().find(|(k, _)| *k == key) {
                            Some((_, kept)) => kept.clone_from(&value),
                            None => stream.filter_state.push((key.clone(), value.clone())),
                        }
                        stream.properties.insert(key, value);
                    }
                    None => {
                        state.root_properties.insert(key, value);
                    }
                }
                Ok(())
            })())
        },
    )?;
    Ok(())
}
