//! Metrics: define, increment, record, get (shared by name across workers, Envoy's rules).

use wasmtime::Caller;

use super::HostLinker;
use crate::abi::{MetricType, Status};
use crate::memory::{Guest, finish};
use crate::state::HostState;

pub(super) fn add(linker: &mut HostLinker<'_>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut caller: Caller<'_, HostState>,
         kind: i32,
         name_ptr: i32,
         name_size: i32,
         ret_id: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let kind = MetricType::from_abi(kind as u32).ok_or(Status::BadArgument)?;
                let name = guest.read_string(name_ptr, name_size)?;
                let id = guest.state().env.metrics.define(kind, &name);
                guest.write_u32(ret_id, id)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |caller: Caller<'_, HostState>, id: i32, offset: i64| {
            finish(
                caller
                    .data()
                    .env
                    .metrics
                    .increment(id as u32, offset)
                    .map_err(Into::into),
            )
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |caller: Caller<'_, HostState>, id: i32, value: i64| {
            finish(
                caller
                    .data()
                    .env
                    .metrics
                    .record(id as u32, value as u64)
                    .map_err(Into::into),
            )
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut caller: Caller<'_, HostState>, id: i32, ret: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let value = guest.state().env.metrics.get(id as u32)?;
                guest.write_u64(ret, value)
            })())
        },
    )?;
    Ok(())
}
