//! Canary hits on the request path: a worker thread that denied a canary (as an unknown key)
//! leaves the hit here and wakes the sync thread, which hands it to the core's reporter
//! (`keygate_filter_core::canary`) and sends the report at once. At most [`MAX_WAITING`] hits
//! wait here; more are dropped and counted by the sync thread (`keygate.canary.hits_dropped`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use keygate_protocol::KeyId;
use keygate_protocol::canary::{MAX_CLIENT_BYTES, MAX_USER_AGENT_BYTES, reported_path, truncate};

/// Most hits waiting for the sync thread.
pub const MAX_WAITING: usize = keygate_filter_core::canary::MAX_QUEUED;

/// A hit as the request path saw it, already cut to the report's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The canary.
    pub key: KeyId,
    /// When, ms.
    pub now_ms: u64,
    /// Path without query.
    pub path: String,
    /// Envoy's `source.address`.
    pub client: String,
    /// User agent.
    pub user_agent: String,
}

/// Waiting hits and the sync thread's wake-up.
#[derive(Default)]
pub struct CanaryInbox {
    hits: Mutex<Vec<Pending>>,
    dropped: AtomicU64,
    wake: Mutex<Option<Box<dyn Fn() + Send>>>,
}

impl std::fmt::Debug for CanaryInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanaryInbox")
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl CanaryInbox {
    /// Sets how the sync thread is woken.
    pub fn set_wake(&self, wake: Box<dyn Fn() + Send>) {
        *self.wake.lock().unwrap_or_else(PoisonError::into_inner) = Some(wake);
    }

    /// Leaves a hit for the sync thread and wakes it (the request path).
    pub fn push(&self, key: KeyId, now_ms: u64, path: &str, client: &str, user_agent: &str) {
        {
            let mut hits = self.hits.lock().unwrap_or_else(PoisonError::into_inner);
            if hits.len() >= MAX_WAITING {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            hits.push(Pending {
                key,
                now_ms,
                path: reported_path(path).to_owned(),
                client: truncate(client, MAX_CLIENT_BYTES).to_owned(),
                user_agent: truncate(user_agent, MAX_USER_AGENT_BYTES).to_owned(),
            });
        }
        if let Some(wake) = &*self.wake.lock().unwrap_or_else(PoisonError::into_inner) {
            wake();
        }
    }

    /// Takes the waiting hits, and the count of those dropped since the last take.
    pub fn take(&self) -> (Vec<Pending>, u64) {
        let hits = std::mem::take(&mut *self.hits.lock().unwrap_or_else(PoisonError::into_inner));
        (hits, self.dropped.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn hits_wait_bounded_wake_the_sync_and_never_keep_the_query() {
        let inbox = CanaryInbox::default();
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        inbox.set_wake(Box::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
        }));
        let key = KeyId::from_bytes([3; 16]);
        for _ in 0..MAX_WAITING + 5 {
            inbox.push(key, 1_000, "/a?api_key=kg_live_x", "127.0.0.1:5", "curl");
        }
        assert_eq!(woken.load(Ordering::Relaxed), MAX_WAITING);
        let (hits, dropped) = inbox.take();
        assert_eq!(hits.len(), MAX_WAITING);
        assert_eq!(dropped, 5);
        assert_eq!(hits[0].path, "/a");
        assert_eq!(inbox.take(), (Vec::new(), 0));
    }
}
