//! Publication: the leader writes what it applied to shared data (snapshot, deltas, and last the
//! [`Head`] record naming them).

use serde::{Deserialize, Serialize};

use super::Syncer;
use crate::host::{Host, LogLevel};

/// Longest delta chain kept in shared data before the leader publishes a fresh snapshot.
pub const MAX_CHAIN: usize = 32;

/// The head record in shared data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Head {
    /// Latest published revision.
    pub rev: u64,
    /// When the leader last heard successfully from the control plane (ms).
    pub ok_ms: u64,
    /// Revision of the published snapshot.
    pub snap_rev: u64,
    /// Published deltas ending at `rev`, `(base, target)`, in order: those after the snapshot,
    /// and after a compaction also the one delta that led to it.
    pub chain: Vec<(u64, u64)>,
}

/// What a response did to the set: a snapshot (`base: None`) or a delta from `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    /// `Some(base)` for a delta, `None` for a snapshot.
    pub(super) base: Option<u64>,
    /// The revision it brought the set to.
    pub(super) target: u64,
}

impl Syncer {
    pub(super) fn read_head(&self, host: &impl Host) -> (Option<Head>, Option<u32>) {
        let (v, cas) = host.shared_get(&self.key("head"));
        let head = v.and_then(|b| serde_json::from_slice::<Head>(&b).ok());
        (head, cas)
    }

    /// Publishes what was applied (or just the fresh `ok_ms`) for the other workers.
    pub(super) fn publish(
        &mut self,
        host: &mut impl Host,
        now: u64,
        applied: Option<(Shape, &[u8])>,
    ) {
        let Some(rev) = self.revision() else { return };
        let (head, cas) = self.read_head(host);
        let head_was_absent = head.is_none();
        let old = head.clone().unwrap_or_default();
        let new_head = match applied {
            None => {
                if head.is_none() || old.rev != rev {
                    // Nothing published matches us: publish our set as a snapshot.
                    match self.publish_snapshot(host, &old, None) {
                        Some(h) => h,
                        None => return,
                    }
                } else {
                    Head { ok_ms: now, ..old }
                }
            }
            Some((shape, bytes)) => match shape.base {
                Some(base) if head.is_some() && old.rev == base && old.chain.len() < MAX_CHAIN => {
                    if host
                        .shared_set(&format!("{}/delta/{}", self.ns, shape.target), bytes, None)
                        .is_err()
                    {
                        return;
                    }
                    let mut chain = old.chain.clone();
                    chain.push((base, shape.target));
                    Head {
                        rev: shape.target,
                        ok_ms: now,
                        snap_rev: old.snap_rev,
                        chain,
                    }
                }
                Some(base) if head.is_some() && old.rev == base => {
                    // The chain is full: compact it into a fresh snapshot, but keep this last
                    // delta, so that the followers one revision behind (all of them, woken on
                    // every change) catch up by it and never read the snapshot: reading it
                    // would build a second set beside theirs and grow their wasm memory for good.
                    let Some(mut h) = self.publish_snapshot(host, &old, None) else {
                        return;
                    };
                    if host
                        .shared_set(&format!("{}/delta/{}", self.ns, shape.target), bytes, None)
                        .is_ok()
                    {
                        h.chain = vec![(base, shape.target)];
                    }
                    h
                }
                Some(_) => match self.publish_snapshot(host, &old, None) {
                    Some(h) => h,
                    None => return,
                },
                None => match self.publish_snapshot(host, &old, Some(bytes)) {
                    Some(h) => h,
                    None => return,
                },
            },
        };
        let head = Head {
            ok_ms: now,
            ..new_head
        };
        let Ok(json) = serde_json::to_vec(&head) else {
            return;
        };
        if let Err(e) = host.shared_set(&self.key("head"), &json, cas) {
            host.log(
                LogLevel::Warn,
                &format!("could not publish revision {rev}: {e}"),
            );
        } else if old.rev != rev || head_was_absent {
            // The followers need the new revision now; a fresher `ok_ms` can wait for a tick.
            self.wake_followers(host, rev);
        }
    }

    fn publish_snapshot(
        &mut self,
        host: &mut impl Host,
        old: &Head,
        received: Option<&[u8]>,
    ) -> Option<Head> {
        let set = self.set.as_ref()?;
        let rev = set.revision()?;
        let encoded;
        let bytes = match received {
            Some(b) => b,
            None => {
                encoded = set.encode_snapshot();
                &encoded
            }
        };
        if let Err(e) = host.shared_set(&self.key("snap"), bytes, None) {
            host.log(
                LogLevel::Warn,
                &format!("could not publish the snapshot: {e}"),
            );
            return None;
        }
        // Free the superseded deltas.
        for &(_, t) in &old.chain {
            let _ = host.shared_set(&format!("{}/delta/{t}", self.ns), &[], None);
        }
        Some(Head {
            rev,
            ok_ms: 0,
            snap_rev: rev,
            chain: Vec::new(),
        })
    }
}
