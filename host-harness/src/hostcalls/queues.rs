//! Shared queues: register, resolve, enqueue (notifies the owner's root context with
//! `proxy_on_queue_ready` after the current callback), dequeue.

use wasmtime::Caller;

use super::HostLinker;
use crate::memory::{Guest, finish};
use crate::shared::QueueOwner;
use crate::state::HostState;

pub(super) fn add(linker: &mut HostLinker<'_>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut caller: Caller<'_, HostState>, name_ptr: i32, name_size: i32, ret_token: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let name = guest.read_string(name_ptr, name_size)?;
                let state = guest.state();
                let owner = QueueOwner {
                    worker: state.worker,
                    root_context_id: state.root_context_id,
                };
                let env = state.env.clone();
                let token = env.queues.register(&env.vm_id, &name, owner);
                guest.write_u32(ret_token, token)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut caller: Caller<'_, HostState>,
         vm_ptr: i32,
         vm_size: i32,
         name_ptr: i32,
         name_size: i32,
         ret_token: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let vm_id = guest.read_string(vm_ptr, vm_size)?;
                let name = guest.read_string(name_ptr, name_size)?;
                let env = guest.state().env.clone();
                let vm_id = if vm_id.is_empty() {
                    env.vm_id.clone()
                } else {
                    vm_id
                };
                let token = env.queues.resolve(&vm_id, &name)?;
                guest.write_u32(ret_token, token)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut caller: Caller<'_, HostState>, token: i32, ptr: i32, size: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let value = guest.read(ptr, size)?;
                let env = guest.state().env.clone();
                let owner = env.queues.enqueue(token as u32, value)?;
                env.queue_ready
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((owner, token as u32));
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut caller: Caller<'_, HostState>, token: i32, ret_ptr: i32, ret_size: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let env = guest.state().env.clone();
                let value = env.queues.dequeue(token as u32)?;
                guest.copy_out(&value, ret_ptr, ret_size)
            })())
        },
    )?;
    Ok(())
}
