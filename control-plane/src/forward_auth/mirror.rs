//! The key set in memory, as a filter holds it: a [`keygate_protocol::keyset::KeySet`] applied
//! from this process's own sync feed (the change log read by [`Db::read_set`]: a snapshot at
//! start, then deltas), so that forward-auth decides each request without a database query.
//!
//! It follows the store's revision watch ([`Db::subscribe_revisions`]), which every write on this replica advances at
//! commit and, on PostgreSQL, every other replica's write through `LISTEN keygate_keyset` (with a
//! 1 s poll of the counter behind it): a revocation reaches the mirror as fast as it reaches a
//! filter that long-polls. Besides, every [`CONFIRM_INTERVAL`] it asks the database for the
//! revision; each successful answer (or applied change) marks the mirror *confirmed*. A mirror
//! that has not been confirmed for the filter's `max_staleness_s` is stale, and the filter's
//! `failure_mode` applies, exactly as in the filter when the control plane is unreachable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keygate_protocol::Digest;
use keygate_protocol::keyset::{ApplyError, KeySet};
use keygate_protocol::wire::{Delta, EncodeError, Message, Snapshot};
use tokio::sync::watch;

use crate::runtime::clock::unix_now;
use crate::storage::Db;
use crate::storage::keyset::{SetEntry, SetRead};

/// How often the mirror asks the database for the revision when nothing wakes it.
pub const CONFIRM_INTERVAL: Duration = Duration::from_secs(1);

/// Why one refresh failed; the mirror keeps what it had.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The database did not answer.
    #[error("reading the key set: {0}")]
    Db(#[from] sqlx::Error),
    /// What the database holds does not make a valid key-set message.
    #[error("encoding the key set: {0}")]
    Encode(#[from] EncodeError),
    /// The message did not apply (the next refresh reads a snapshot).
    #[error("applying the key set: {0}")]
    Apply(#[from] ApplyError),
}

/// The state of the mirror as a decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Never loaded.
    Unavailable,
    /// Confirmed within the staleness bound.
    Fresh,
    /// Not confirmed for longer than the staleness bound.
    Stale,
}

/// The in-memory key set and when the database last confirmed it.
#[derive(Debug, Default)]
pub struct KeyMirror {
    set: RwLock<KeySet>,
    /// Unix milliseconds of the last confirmation; 0 before the first.
    confirmed_ms: AtomicU64,
    /// The next refresh reads a snapshot (after a message that did not apply).
    resync: AtomicBool,
    /// The revision held, for those who wait for one (tests, metrics).
    revision: watch::Sender<Option<u64>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl KeyMirror {
    /// An empty mirror: [`Freshness::Unavailable`] until the first [`KeyMirror::refresh`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The revision held (`None` before the first load).
    pub fn revision(&self) -> Option<u64> {
        *self.revision.borrow()
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.set
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the mirror holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A receiver that sees the revision held change.
    pub fn subscribe(&self) -> watch::Receiver<Option<u64>> {
        self.revision.subscribe()
    }

    /// Waits until the mirror holds `revision` or later, at most `timeout`; whether it does.
    pub async fn caught_up(&self, revision: u64, timeout: Duration) -> bool {
        let mut rx = self.subscribe();
        let reached = rx.wait_for(|held| held.is_some_and(|h| h >= revision));
        matches!(tokio::time::timeout(timeout, reached).await, Ok(Ok(_)))
    }

    /// Milliseconds since the database last confirmed the mirror (`None` before the first load).
    pub fn age_ms(&self) -> Option<u64> {
        match self.confirmed_ms.load(Ordering::Acquire) {
            0 => None,
            at => Some(now_ms().saturating_sub(at)),
        }
    }

    /// Runs `f` on the set and its freshness against `max_staleness_s`, under the read lock
    /// (no await inside: `f` is the decision, a few microseconds).
    pub fn read<R>(&self, max_staleness_s: u64, f: impl FnOnce(&KeySet, Freshness) -> R) -> R {
        let freshness = match self.age_ms() {
            None => Freshness::Unavailable,
            Some(age) if age > max_staleness_s.saturating_mul(1000) => Freshness::Stale,
            Some(_) => Freshness::Fresh,
        };
        let set = self.set.read().unwrap_or_else(PoisonError::into_inner);
        f(&set, freshness)
    }

    /// Holds `set`, confirmed now (unit tests: a set with policies the store cannot write yet).
    #[cfg(test)]
    pub(crate) fn hold(&self, set: KeySet) {
        *self.set.write().unwrap_or_else(PoisonError::into_inner) = set;
        self.confirm();
    }

    fn confirm(&self) {
        self.confirmed_ms.store(now_ms().max(1), Ordering::Release);
    }

    /// One round: asks the database for the revision and, when it moved past the mirror's,
    /// reads the change (a delta from the mirror's revision, or a snapshot) and applies it. The
    /// database is read without the lock; a delta is applied under the write lock, a snapshot
    /// is built aside and swapped in. Returns the revision held afterwards.
    ///
    /// # Errors
    /// [`MirrorError`]; the mirror is unchanged and not confirmed.
    pub async fn refresh(&self, db: &Db) -> Result<Option<u64>, MirrorError> {
        let held = self.revision();
        let since = held.filter(|_| !self.resync.load(Ordering::Acquire));
        let current = db.revision().await?;
        if since.is_some() && since == u64::try_from(current).ok() {
            self.confirm();
            return Ok(held);
        }
        let read = db
            .read_set(since.and_then(|s| i64::try_from(s).ok()), unix_now())
            .await?;
        match read {
            SetRead::Snapshot { revision, entries } => {
                let message = Message::Snapshot(Snapshot {
                    revision: revision.max(0) as u64,
                    entries: entries.into_iter().map(SetEntry::into_wire).collect(),
                });
                let bytes = message.encode()?;
                let mut fresh = KeySet::new();
                fresh.apply(&bytes)?;
                *self.set.write().unwrap_or_else(PoisonError::into_inner) = fresh;
                self.resync.store(false, Ordering::Release);
            }
            SetRead::Delta { base, revision, .. } if base == revision => {}
            SetRead::Delta {
                base,
                revision,
                upserts,
                removals,
            } => {
                let message = Message::Delta(Delta {
                    base_revision: base.max(0) as u64,
                    revision: revision.max(0) as u64,
                    upserts: upserts.into_iter().map(SetEntry::into_wire).collect(),
                    removals: removals.into_iter().map(Digest::from_bytes).collect(),
                });
                let bytes = message.encode()?;
                let applied = self
                    .set
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .apply(&bytes);
                if let Err(e) = applied {
                    self.resync.store(true, Ordering::Release);
                    return Err(e.into());
                }
            }
        }
        let revision = self
            .set
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .revision();
        self.revision.send_if_modified(|r| {
            let moved = *r != revision;
            *r = revision;
            moved
        });
        self.confirm();
        Ok(revision)
    }

    /// Follows the key set for ever: a refresh whenever the store's known revision moves and every
    /// [`CONFIRM_INTERVAL`]. Failures are logged (once per run of failures) and retried.
    pub async fn follow(self: Arc<Self>, db: Db) {
        let mut changes = db.subscribe_revisions();
        let mut tick = tokio::time::interval(CONFIRM_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            match self.refresh(&db).await {
                Ok(_) if failing => {
                    tracing::info!("forward-auth key set: the database answers again");
                    failing = false;
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "forward-auth key set: refresh failed; retrying");
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        // The watch is gone (shutting down): only the timer is left.
                        tick.tick().await;
                    }
                }
                _ = tick.tick() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_mirror_never_loaded_is_unavailable_and_never_caught_up() {
        let m = KeyMirror::new();
        assert_eq!(
            m.read(300, |s, f| (s.len(), f)),
            (0, Freshness::Unavailable)
        );
        assert_eq!((m.revision(), m.age_ms()), (None, None));
        assert!(!m.caught_up(1, Duration::from_millis(10)).await);
    }

    #[tokio::test]
    async fn freshness_follows_the_last_confirmation() {
        let m = KeyMirror::new();
        m.confirm();
        assert_eq!(m.read(1, |_, f| f), Freshness::Fresh);
        m.confirmed_ms.store(now_ms() - 1500, Ordering::Release);
        assert_eq!(m.read(1, |_, f| f), Freshness::Stale);
        assert_eq!(m.read(2, |_, f| f), Freshness::Fresh);
    }
}
