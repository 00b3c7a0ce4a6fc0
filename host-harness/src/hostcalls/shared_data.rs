//! Shared data: `proxy_get_shared_data`, `proxy_set_shared_data` (one store per `vm_id`,
//! shared by all workers, Envoy's compare-and-swap rules).

use wasmtime::Caller;

use super::HostLinker;
use crate::memory::{Guest, finish};
use crate::state::HostState;

pub(super) fn add(linker: &mut HostLinker<'_>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut caller: Caller<'_, HostState>,
         key_ptr: i32,
         key_size: i32,
         ret_ptr: i32,
         ret_size: i32,
         ret_cas: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let key = guest.read_string(key_ptr, key_size)?;
                let env = guest.state().env.clone();
                let (value, cas) = env.shared_data.get(&env.vm_id, &key)?;
                guest.write_u32(ret_cas, cas)?;
                guest.copy_out(&value, ret_ptr, ret_size)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut caller: Caller<'_, HostState>,
         key_ptr: i32,
         key_size: i32,
         value_ptr: i32,
         value_size: i32,
         cas: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let key = guest.read_string(key_ptr, key_size)?;
                let value = guest.read(value_ptr, value_size)?;
                let env = guest.state().env.clone();
                env.shared_data.set(&env.vm_id, &key, value, cas as u32)?;
                Ok(())
            })())
        },
    )?;
    Ok(())
}
