//! Timers and time: `proxy_set_tick_period_milliseconds`, `proxy_get_current_time_nanoseconds`.

use wasmtime::Caller;

use super::HostLinker;
use crate::memory::{Guest, finish};
use crate::state::HostState;

pub(super) fn add(linker: &mut HostLinker<'_>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut caller: Caller<'_, HostState>, period: i32| {
            caller.data_mut().tick_period_ms = Some(period as u32);
            Ok(0i32)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Caller<'_, HostState>, ret: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let now = guest.state().env.clock.now_nanos();
                guest.write_u64(ret, now)
            })())
        },
    )?;
    Ok(())
}
