//! WASI preview1, hand-implemented as Envoy does: no filesystem, no arguments, configured
//! environment variables, stdout/stderr captured as logs (info / error), the host clock,
//! real randomness, and `proc_exit` as a trap. Registered as `wasi_snapshot_preview1` and
//! `wasi_unstable`.

use wasmtime::Caller;

use super::HostLinker;
use crate::abi::LogLevel;
use crate::memory::{Guest, HostCallError, HostResult, MAX_GUEST_BUFFER};
use crate::state::HostState;

const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;

/// WASI calls answer errnos; an out-of-range pointer is `EFAULT`, a trap stays a trap.
fn errno(result: HostResult<()>) -> wasmtime::Result<i32> {
    match result {
        Ok(()) => Ok(ESUCCESS),
        Err(HostCallError::Status(_)) => Ok(EFAULT),
        Err(HostCallError::Trap(e)) => Err(e),
    }
}

fn read_u32(guest: &Guest<'_, '_>, ptr: i32) -> HostResult<u32> {
    let b = guest.read(ptr, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn environ(state: &HostState) -> Vec<Vec<u8>> {
    state
        .env
        .environment
        .iter()
        .map(|(k, v)| format!("{k}={v}\0").into_bytes())
        .collect()
}

fn add_module(linker: &mut HostLinker<'_>, module: &str) -> wasmtime::Result<()> {
    linker.func_wrap(
        module,
        "args_sizes_get",
        |mut caller: Caller<'_, HostState>, argc: i32, size: i32| {
            errno((|| {
                let mut guest = Guest::new(&mut caller)?;
                guest.write_u32(argc, 0)?;
                guest.write_u32(size, 0)
            })())
        },
    )?;
    linker.func_wrap(
        module,
        "args_get",
        |_: Caller<'_, HostState>, _argv: i32, _buf: i32| Ok(ESUCCESS),
    )?;
    linker.func_wrap(
        module,
        "environ_sizes_get",
        |mut caller: Caller<'_, HostState>, count: i32, size: i32| {
            errno((|| {
                let mut guest = Guest::new(&mut caller)?;
                let vars = environ(guest.state());
                let total: usize = vars.iter().map(Vec::len).sum();
                guest.write_u32(count, vars.len() as u32)?;
                guest.write_u32(size, total as u32)
            })())
        },
    )?;
    linker.func_wrap(
        module,
        "environ_get",
        |mut caller: Caller<'_, HostState>, ptrs: i32, buf: i32| {
            errno((|| {
                let mut guest = Guest::new(&mut caller)?;
                let vars = environ(guest.state());
                let mut at = buf as u32;
                for (i, var) in vars.iter().enumerate() {
                    guest.write_u32(ptrs.wrapping_add((i * 4) as i32), at)?;
                    guest.write(at as i32, var)?;
                    at = at.wrapping_add(var.len() as u32);
                }
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        module,
        "clock_time_get",
        |mut caller: Caller<'_, HostState>, id: i32, _precision: i64, ret: i32| {
            if !(0..=3).contains(&id) {
                return Ok(EINVAL);
            }
            errno((|| {
                let mut guest = Guest::new(&mut caller)?;
                let now = guest.state().env.clock.now_nanos();
                guest.write_u64(ret, now)
            })())
        },
    )?;
    linker.func_wrap(
        module,
        "clock_res_get",
        |mut caller: Caller<'_, HostState>, id: i32, ret: i32| {
            if !(0..=3).contains(&id) {
                return Ok(EINVAL);
            }
            errno((|| Guest::new(&mut caller)?.write_u64(ret, 1))())
        },
    )?;
    linker.func_wrap(
        module,
        "random_get",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
            if len as u32 as usize > MAX_GUEST_BUFFER {
                return Ok(EINVAL);
            }
            errno((|| {
                let mut guest = Guest::new(&mut caller)?;
                let mut bytes = vec![0u8; len as u32 as usize];
                getrandom::fill(&mut bytes)
                    .map_err(|e| wasmtime::format_err!("random_get: {e}"))?;
                guest.write(ptr, &bytes)
            })())
        },
    )?;
    linker.func_wrap(
        module,
        "fd_write",
        |mut caller: Caller<'_, HostState>, fd: i32, iovs: i32, iovs_len: i32, written: i32| {
            let (level, source) = match fd {
                1 => (LogLevel::Info, "stdout"),
                2 => (LogLevel::Error, "stderr"),
                _ => return Ok(EBADF),
            };
            errno((|| {
                let mut guest = Guest::new(&mut caller)?;
                let mut data = Vec::new();
                for i in 0..(iovs_len as u32).min(1024) {
                    let at = iovs.wrapping_add((i * 8) as i32);
                    let ptr = read_u32(&guest, at)?;
                    let len = read_u32(&guest, at.wrapping_add(4))?;
                    data.extend(guest.read(ptr as i32, len as i32)?);
                    if data.len() > MAX_GUEST_BUFFER {
                        return Err(crate::abi::Status::InvalidMemoryAccess.into());
                    }
                }
                guest.write_u32(written, data.len() as u32)?;
                let text = String::from_utf8_lossy(&data);
                let text = text.strip_suffix('\n').unwrap_or(&text).to_owned();
                crate::hostcalls::logging::record(guest.state(), level, source, text);
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        module,
        "fd_read",
        |_: Caller<'_, HostState>, _fd: i32, _iovs: i32, _len: i32, _nread: i32| Ok(ENOSYS),
    )?;
    linker.func_wrap(
        module,
        "fd_seek",
        |_: Caller<'_, HostState>, _fd: i32, _offset: i64, _whence: i32, _ret: i32| Ok(ENOSYS),
    )?;
    linker.func_wrap(module, "fd_close", |_: Caller<'_, HostState>, _fd: i32| {
        Ok(ENOSYS)
    })?;
    linker.func_wrap(
        module,
        "fd_fdstat_get",
        |mut caller: Caller<'_, HostState>, fd: i32, ret: i32| {
            if !(0..=2).contains(&fd) {
                return Ok(EBADF);
            }
            errno((|| {
                let mut guest = Guest::new(&mut caller)?;
                // fdstat: filetype u8 (2 = character device), flags u16, rights base/inheriting u64.
                let mut stat = [0u8; 24];
                stat[0] = 2;
                stat[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
                guest.write(ret, &stat)
            })())
        },
    )?;
    linker.func_wrap(
        module,
        "fd_fdstat_set_flags",
        |_: Caller<'_, HostState>, _fd: i32, _flags: i32| Ok(ENOSYS),
    )?;
    linker.func_wrap(
        module,
        "fd_filestat_get",
        |_: Caller<'_, HostState>, _fd: i32, _ret: i32| Ok(ENOSYS),
    )?;
    linker.func_wrap(
        module,
        "fd_prestat_get",
        |_: Caller<'_, HostState>, _fd: i32, _ret: i32| Ok(EBADF),
    )?;
    linker.func_wrap(
        module,
        "fd_prestat_dir_name",
        |_: Caller<'_, HostState>, _fd: i32, _ptr: i32, _len: i32| Ok(ENOSYS),
    )?;
    linker.func_wrap(
        module,
        "fd_readdir",
        |_: Caller<'_, HostState>, _fd: i32, _buf: i32, _len: i32, _cookie: i64, _ret: i32| {
            Ok(ENOSYS)
        },
    )?;
    linker.func_wrap(
        module,
        "path_open",
        |_: Caller<'_, HostState>,
         _fd: i32,
         _dirflags: i32,
         _path: i32,
         _len: i32,
         _oflags: i32,
         _base: i64,
         _inheriting: i64,
         _fdflags: i32,
         _ret: i32| Ok(ENOSYS),
    )?;
    linker.func_wrap(
        module,
        "path_filestat_get",
        |_: Caller<'_, HostState>, _fd: i32, _flags: i32, _path: i32, _len: i32, _ret: i32| {
            Ok(ENOSYS)
        },
    )?;
    linker.func_wrap(
        module,
        "poll_oneoff",
        |_: Caller<'_, HostState>, _in: i32, _out: i32, _n: i32, _ret: i32| Ok(ENOSYS),
    )?;
    linker.func_wrap(module, "sched_yield", |_: Caller<'_, HostState>| {
        Ok(ESUCCESS)
    })?;
    linker.func_wrap(
        module,
        "proc_exit",
        |mut caller: Caller<'_, HostState>, code: i32| -> wasmtime::Result<()> {
            caller.data_mut().exit_code = Some(code);
            Err(wasmtime::format_err!("guest called proc_exit({code})"))
        },
    )?;
    Ok(())
}

pub(super) fn add(linker: &mut HostLinker<'_>) -> wasmtime::Result<()> {
    add_module(linker, "wasi_snapshot_preview1")?;
    add_module(linker, "wasi_unstable")
}
