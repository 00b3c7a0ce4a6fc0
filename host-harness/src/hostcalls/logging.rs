//! Logging: `proxy_log`, `proxy_get_log_level`.

use wasmtime::Caller;

use super::HostLinker;
use crate::abi::{LogLevel, Status};
use crate::memory::{Guest, finish};
use crate::shared::LogEntry;
use crate::state::HostState;

/// Records a log line (if at or above the configured level) on behalf of the guest.
pub(crate) fn record(
    state: &mut HostState,
    level: LogLevel,
    source: &'static str,
    message: String,
) {
    if level >= LogLevel::Error {
        state.callback_errors.push(message.clone());
    }
    if level >= state.env.log_level {
        state.env.recorder.log(LogEntry {
            worker: state.worker,
            level,
            source,
            message,
        });
    }
}

pub(super) fn add(linker: &mut HostLinker<'_>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut caller: Caller<'_, HostState>, level: i32, ptr: i32, size: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let level = LogLevel::from_abi(level as u32).ok_or(Status::BadArgument)?;
                let message = guest.read_string(ptr, size)?;
                record(guest.state(), level, "proxy_log", message);
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut caller: Caller<'_, HostState>, ret: i32| {
            finish((|| {
                let mut guest = Guest::new(&mut caller)?;
                let level = guest.state().env.log_level as u32;
                guest.write_u32(ret, level)
            })())
        },
    )?;
    Ok(())
}
