//! Header maps: get/set pairs, get/add/replace/remove one value, size. Names are lower-cased as
//! Envoy's header maps do; a map that does not exist in the current phase is `BadArgument`
//! (`NotFound` during `proxy_on_log`), as in Envoy.

use wasmtime::Caller;

use super::HostLinker;
use crate::abi::{
    HeaderMap, HeaderValue, MapType, Status, deserialize_map, serialize_map_into, serialized_len,
};
use crate::memory::{Guest, finish};
use crate::state::HostState;

fn missing(state: &HostState) -> Status {
    if state.in_log {
        Status::NotFound
    } else {
        Status::BadArgument
    }
}

fn map_ref(state: &HostState, map: MapType) -> Result<&HeaderMap, Status> {
    let found = match map {
        MapType::CallResponseHeaders => state.call_delivery.as_ref().map(|d| &d.headers),
        MapType::CallResponseTrailers => state.call_delivery.as_ref().map(|d| &d.trailers),
        _ => state.stream().and_then(|s| s.map(map)),
    };
    found.ok_or_else(|| missing(state))
}

fn map_mut(state: &mut HostState, map: MapType) -> Result<&mut HeaderMap, Status> {
    let status = missing(state);
    let found = match map {
        MapType::CallResponseHeaders => state.call_delivery.as_mut().map(|d| &mut d.headers),
        MapType::CallResponseTrailers => state.call_delivery.as_mut().map(|d| &mut d.trailers),
        _ => state.stream_mut().and_then(|s| s.map_mut(map)),
    };
    found.ok_or(status)
}

fn map_type(value: i32) -> Result<MapType, Status> {
    MapType::from_abi(value as u32).ok_or(Status::BadArgument)
}

/// Envoy's `setCopy`: the first entry takes the value, later duplicates go.
pub(crate) fn replace(map: &mut HeaderMap, key: &str, value: HeaderValue) {
    match map.iter().position(|(k, _)| k == key) {
        Some(first) => {
            map[first].1 = value;
            let mut index = 0;
            map.retain(|(k, _)| {
                index += 1;
                index - 1 == first || k != key
            });
        }
        None => map.push((key.to_owned(), value)),
    }
}

pub(super) fn add(linker: &mut HostLinker<'_>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut caller: Caller<'_, HostState>, map: i32, ret_ptr: i32, ret_size: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let map = map_type(map)?;
                // Serialized straight into the guest's buffer.
                let len = serialized_len(map_ref(guest.state(), map)?);
                guest.copy_out_with(len, ret_ptr, ret_size, |target, state| {
                    map_ref(state, map).is_ok_and(|m| serialize_map_into(m, target))
                })
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut caller: Caller<'_, HostState>, map: i32, ptr: i32, size: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let map = map_type(map)?;
                // Envoy reads a malformed serialization as an empty map.
                let pairs = deserialize_map(&guest.read(ptr, size)?).unwrap_or_default();
                let target = map_mut(guest.state(), map)?;
                *target = pairs
                    .into_iter()
                    .map(|(mut k, v)| {
                        k.make_ascii_lowercase();
                        (k, v)
                    })
                    .collect();
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut caller: Caller<'_, HostState>,
         map: i32,
         key_ptr: i32,
         key_size: i32,
         ret_ptr: i32,
         ret_size: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let map = map_type(map)?;
                let key = guest.read_name(key_ptr, key_size)?;
                let value = map_ref(guest.state(), map)?
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.clone())
                    .ok_or(Status::NotFound)?;
                guest.copy_out(value.as_bytes(), ret_ptr, ret_size)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut caller: Caller<'_, HostState>,
         map: i32,
         key_ptr: i32,
         key_size: i32,
         value_ptr: i32,
         value_size: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let map = map_type(map)?;
                let key = guest.read_name(key_ptr, key_size)?;
                // Copied straight from the guest (inline when short, as Envoy's `HeaderString`).
                let value = HeaderValue::from(guest.bytes(value_ptr, value_size)?);
                map_mut(guest.state(), map)?.push((key, value));
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut caller: Caller<'_, HostState>,
         map: i32,
         key_ptr: i32,
         key_size: i32,
         value_ptr: i32,
         value_size: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let map = map_type(map)?;
                let key = guest.read_name(key_ptr, key_size)?;
                // Copied straight from the guest (inline when short, as Envoy's `HeaderString`).
                let value = HeaderValue::from(guest.bytes(value_ptr, value_size)?);
                replace(map_mut(guest.state(), map)?, &key, value);
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut caller: Caller<'_, HostState>, map: i32, key_ptr: i32, key_size: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let map = map_type(map)?;
                let key = guest.read_name(key_ptr, key_size)?;
                map_mut(guest.state(), map)?.retain(|(k, _)| *k != key);
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut caller: Caller<'_, HostState>, map: i32, ret_size: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let map = map_type(map)?;
                let size = serialized_len(map_ref(guest.state(), map)?);
                guest.write_u32(ret_size, size as u32)
            })())
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::replace;
    use crate::abi::HeaderMap;

    #[test]
    fn replace_keeps_first_and_drops_duplicates() {
        let mut map: HeaderMap = vec![
            ("a".to_owned(), "1".into()),
            ("b".to_owned(), "2".into()),
            ("a".to_owned(), "3".into()),
        ];
        replace(&mut map, "a", "x".into());
        assert_eq!(
            map,
            vec![("a".to_owned(), "x".into()), ("b".to_owned(), "2".into())]
        );
        replace(&mut map, "c", "y".into());
        assert_eq!(map.last(), Some(&("c".to_owned(), "y".into())));
    }
}
