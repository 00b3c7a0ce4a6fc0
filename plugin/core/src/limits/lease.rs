//! Counting across the proxy-wasm filter's workers (one VM each): one counter per bucket in the
//! host's shared data, `(window, taken)`, from which each worker leases a chunk of the window's
//! quota with compare-and-swap and spends it locally, without a host call.
//!
//! The bound, for a quota `L` per window, `N` workers and chunk `C = chunk(L)`: the shared
//! counter never grants more than `L`, so at most `L` requests pass in a window; a worker
//! refuses only once the counter has granted all `L`, when every other worker holds at most `C`
//! unspent, so a window that refused anything passed at least `L - (N-1)·C`. Once, in the first
//! window a bucket is ever used in the process, two workers that both find no counter may both
//! create it (the host's compare-and-swap cannot create only if absent): that window may pass
//! up to `(N-1)·C` more.

use rustc_hash::FxHashMap;

use super::{Bucket, Counters, Take};
use crate::host::{Host, SharedDataError};

/// The largest chunk a worker leases at once.
pub const MAX_CHUNK: u32 = 64;

/// Compare-and-swap attempts before a request is refused (another worker kept winning).
const CAS_TRIES: usize = 8;

/// The chunk a worker leases of a quota `quota`: `quota / 32`, at least 1, at most
/// [`MAX_CHUNK`], so the bound's error is at most `(N-1)/32` of the quota.
pub fn chunk(quota: u32) -> u32 {
    (quota / 32).clamp(1, MAX_CHUNK)
}

/// One worker's lease of one bucket.
#[derive(Debug, Clone, Copy, Default)]
struct Lease {
    window: u64,
    /// When `window` ends, Unix seconds.
    ends_s: u64,
    /// Requests this worker may still pass in `window` without asking.
    left: u32,
    /// The shared counter's `taken` after this worker's last lease.
    taken_seen: u32,
    /// The shared counter had nothing left in `window`.
    exhausted: bool,
}

/// A worker's leases, by bucket.
#[derive(Debug, Default)]
pub struct Leases {
    map: FxHashMap<u64, Lease>,
}

impl Leases {
    /// Forgets the leases of windows that ended by `now_ms` (a lease of a past window is never
    /// spent again): called on the timer, it bounds the map by the buckets used in the
    /// current windows.
    pub fn prune(&mut self, now_ms: u64) {
        let now_s = now_ms / 1000;
        self.map.retain(|_, l| l.ends_s > now_s);
    }

    /// How many buckets this worker holds a lease of.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// [`Counters`] over a worker's [`Leases`] and its host's shared data.
pub struct Leased<'a, H: Host> {
    /// This worker's leases.
    pub leases: &'a mut Leases,
    /// The host (shared data).
    pub host: &'a mut H,
}

fn decode(value: Option<&[u8]>, window: u64) -> u32 {
    match value {
        Some(v) if v.len() == 12 => {
            let mut w = [0u8; 8];
            let mut t = [0u8; 4];
            w.copy_from_slice(&v[..8]);
            t.copy_from_slice(&v[8..]);
            if u64::from_le_bytes(w) == window {
                u32::from_le_bytes(t)
            } else {
                0
            }
        }
        _ => 0,
    }
}

fn encode(window: u64, taken: u32) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..8].copy_from_slice(&window.to_le_bytes());
    v[8..].copy_from_slice(&taken.to_le_bytes());
    v
}

impl<H: Host> Counters for Leased<'_, H> {
    fn take(&mut self, bucket: &Bucket<'_>, quota: u32, window: u64) -> Take {
        let lease = self.leases.map.entry(bucket.id()).or_default();
        if lease.window != window {
            *lease = Lease {
                window,
                ends_s: (window + 1) * u64::from(bucket.limit.window_s),
                ..Lease::default()
            };
        }
        if lease.left > 0 {
            lease.left -= 1;
            return Take {
                allowed: true,
                remaining: quota.saturating_sub(lease.taken_seen) + lease.left,
            };
        }
        let refused = Take {
            allowed: false,
            remaining: 0,
        };
        if lease.exhausted {
            return refused;
        }
        let key = bucket.shared_key();
        for _ in 0..CAS_TRIES {
            let (value, cas) = self.host.shared_get(&key);
            let taken = decode(value.as_deref(), window);
            let grant = chunk(quota).min(quota.saturating_sub(taken));
            if grant == 0 {
                lease.exhausted = true;
                return refused;
            }
            match self
                .host
                .shared_set(&key, &encode(window, taken + grant), cas)
            {
                Ok(()) => {
                    lease.left = grant - 1;
                    lease.taken_seen = taken + grant;
                    return Take {
                        allowed: true,
                        remaining: quota - lease.taken_seen + lease.left,
                    };
                }
                Err(SharedDataError::CasMismatch) => {}
                // The host refuses shared data: fail closed, as the filter does without a set.
                Err(SharedDataError::Refused) => return refused,
            }
        }
        refused
    }
}
