//! The one bounds-checked door to guest memory: every read or write of a guest pointer goes here.

use std::ops::Range;

use wasmtime::{Caller, Extern, Memory, TypedFunc};

use crate::abi::Status;
use crate::counts::call_export;
use crate::state::HostState;

/// Largest single buffer the host reads from or hands to the guest (64 MiB). Anything larger is
/// refused with `InvalidMemoryAccess` instead of being allocated.
pub const MAX_GUEST_BUFFER: usize = 64 << 20;

/// The exports a host asks for guest memory, in order of preference.
pub(crate) const ALLOCATORS: [&str; 2] = ["proxy_on_memory_allocate", "malloc"];

/// A pointer or size outside the guest's memory (or a buffer over [`MAX_GUEST_BUFFER`]).
const OUT_OF_BOUNDS: HostCallError = HostCallError::Status(Status::InvalidMemoryAccess);

/// The byte range of `len` bytes at guest pointer `ptr`, if `len` is within
/// [`MAX_GUEST_BUFFER`] (not yet checked against the memory's size).
fn span(ptr: i32, len: usize) -> Option<Range<usize>> {
    let start = ptr as u32 as usize;
    (len <= MAX_GUEST_BUFFER).then_some(start..start.checked_add(len)?)
}

/// A host call either ends with a status for the guest or traps the guest.
pub(crate) enum HostCallError {
    Status(Status),
    Trap(wasmtime::Error),
}

impl From<Status> for HostCallError {
    fn from(status: Status) -> Self {
        Self::Status(status)
    }
}

impl From<wasmtime::Error> for HostCallError {
    fn from(error: wasmtime::Error) -> Self {
        Self::Trap(error)
    }
}

pub(crate) type HostResult<T> = Result<T, HostCallError>;

/// Turns a host-call result into the i32 status the guest sees (or a trap).
pub(crate) fn finish(result: HostResult<()>) -> wasmtime::Result<i32> {
    match result {
        Ok(()) => Ok(Status::Ok as i32),
        Err(HostCallError::Status(status)) => Ok(status as i32),
        Err(HostCallError::Trap(error)) => Err(error),
    }
}

/// Guest memory access for one host call.
pub(crate) struct Guest<'a, 'b> {
    caller: &'a mut Caller<'b, HostState>,
    memory: Memory,
}

impl<'a, 'b> Guest<'a, 'b> {
    /// Binds to the guest's exported `memory`.
    pub(crate) fn new(caller: &'a mut Caller<'b, HostState>) -> HostResult<Self> {
        let memory = match caller.data().memory {
            Some(memory) => memory,
            None => match caller.get_export("memory") {
                Some(Extern::Memory(memory)) => memory,
                _ => return Err(Status::InvalidMemoryAccess.into()),
            },
        };
        Ok(Self { caller, memory })
    }

    /// The host state.
    pub(crate) fn state(&mut self) -> &mut HostState {
        self.caller.data_mut()
    }

    /// The range of `len` bytes at `ptr`, checked against the memory's current size.
    fn range(&self, ptr: i32, len: usize) -> HostResult<Range<usize>> {
        span(ptr, len)
            .filter(|r| r.end <= self.memory.data_size(&*self.caller))
            .ok_or(OUT_OF_BOUNDS)
    }

    /// The `len` bytes at `ptr`, borrowed (one look at the memory, bounds-checked).
    pub(crate) fn bytes(&self, ptr: i32, len: i32) -> HostResult<&[u8]> {
        span(ptr, len as u32 as usize)
            .and_then(|r| self.memory.data(&*self.caller).get(r))
            .ok_or(OUT_OF_BOUNDS)
    }

    /// Copies `len` bytes at `ptr` out of the guest.
    pub(crate) fn read(&self, ptr: i32, len: i32) -> HostResult<Vec<u8>> {
        Ok(self.bytes(ptr, len)?.to_vec())
    }

    /// Reads a string (invalid UTF-8 is replaced, never rejected). Valid UTF-8, the usual case,
    /// is taken over without a second copy.
    pub(crate) fn read_string(&self, ptr: i32, len: i32) -> HostResult<String> {
        Ok(String::from_utf8(self.read(ptr, len)?)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// Reads a header name, lower-cased as Envoy's header maps keep names.
    pub(crate) fn read_name(&self, ptr: i32, len: i32) -> HostResult<String> {
        let mut name = self.read_string(ptr, len)?;
        name.make_ascii_lowercase();
        Ok(name)
    }

    /// Writes bytes at `ptr`.
    pub(crate) fn write(&mut self, ptr: i32, bytes: &[u8]) -> HostResult<()> {
        let target = span(ptr, bytes.len())
            .and_then(|r| self.memory.data_mut(&mut *self.caller).get_mut(r))
            .ok_or(OUT_OF_BOUNDS)?;
        target.copy_from_slice(bytes);
        Ok(())
    }

    /// Writes a little-endian u32 (a wasm32 pointer or size).
    pub(crate) fn write_u32(&mut self, ptr: i32, value: u32) -> HostResult<()> {
        self.write(ptr, &value.to_le_bytes())
    }

    /// Writes a little-endian u64.
    pub(crate) fn write_u64(&mut self, ptr: i32, value: u64) -> HostResult<()> {
        self.write(ptr, &value.to_le_bytes())
    }

    /// Hands `data` to the guest: memory from `proxy_on_memory_allocate` (or `malloc`) with the
    /// exact size, then its pointer and size written at `ptr_ptr` and `size_ptr`. Empty data is
    /// handed over as pointer 0, size 0 (as Envoy does).
    pub(crate) fn copy_out(&mut self, data: &[u8], ptr_ptr: i32, size_ptr: i32) -> HostResult<()> {
        self.copy_out_with(data.len(), ptr_ptr, size_ptr, |target, _| {
            target.copy_from_slice(data);
            true
        })
    }

    /// As [`Guest::copy_out`] for `len` bytes that `fill` writes straight into the guest's
    /// memory (from the host state, say a header map), without a copy on the host first. `fill`
    /// returns `false` when it cannot fill exactly `len` bytes (the state changed while the
    /// guest allocated): that is `InvalidMemoryAccess`.
    pub(crate) fn copy_out_with(
        &mut self,
        len: usize,
        ptr_ptr: i32,
        size_ptr: i32,
        fill: impl FnOnce(&mut [u8], &HostState) -> bool,
    ) -> HostResult<()> {
        if len > MAX_GUEST_BUFFER {
            return Err(Status::InvalidMemoryAccess.into());
        }
        // Check the out-pointers before allocating so a bad pointer leaks nothing.
        self.range(ptr_ptr, 4)?;
        self.range(size_ptr, 4)?;
        let mut pointer = 0u32;
        if len > 0 {
            // The cached allocator is moved out for the call and put back (a clone of a
            // `TypedFunc` registers its type again, which showed in profiles of every copy).
            let cached = self.caller.data_mut().allocator.take();
            let alloc = match cached {
                Some(alloc) => alloc,
                None => self.allocator()?,
            };
            let name = self.caller.data().allocator_name;
            let called = call_export(&mut *self.caller, name, &alloc, len as i32);
            self.caller.data_mut().allocator.get_or_insert(alloc);
            let raw = called?;
            if raw == 0 {
                return Err(Status::InvalidMemoryAccess.into());
            }
            let (memory, state) = self.memory.data_and_store_mut(&mut *self.caller);
            let target = span(raw, len)
                .and_then(|r| memory.get_mut(r))
                .ok_or(OUT_OF_BOUNDS)?;
            if !fill(target, state) {
                return Err(Status::InvalidMemoryAccess.into());
            }
            pointer = raw as u32;
        }
        self.write_u32(ptr_ptr, pointer)?;
        self.write_u32(size_ptr, len as u32)
    }

    /// The guest's allocator looked up by export name (when none is cached).
    fn allocator(&mut self) -> HostResult<TypedFunc<i32, i32>> {
        for name in ALLOCATORS {
            if let Some(Extern::Func(f)) = self.caller.get_export(name)
                && let Ok(typed) = f.typed::<i32, i32>(&*self.caller)
            {
                self.caller.data_mut().allocator_name = name;
                return Ok(typed);
            }
        }
        Err(Status::InvalidMemoryAccess.into())
    }
}
