//! Readers of version 1: how a filter says it reads policies (`Accept`), and what a control
//! plane sends one that does not say so (`for_v1_reader`).
//!
//! A filter built before policies existed decodes only version 1, and a message with any
//! policy in it is version 2: one limited key would make the whole set unreadable for every
//! old edge, which then fails closed once its set is stale. So a reader that reads version 2
//! says so in its `Accept` header ([`ACCEPT_V2`]), and a reader that does not gets the set as
//! version 1 can hold it: canaries and keys out of credits are left out (the old filter answers
//! them as unknown keys, 401, and reports no canary hit), and rate limits are dropped (not
//! enforced there). Upgrading the filters restores all three.
//!
//! Readers of version 2 (filters built before scoped owner pools) are served the same way: a
//! reader of version 3 says so ([`ACCEPT_V3`]), and one that names only version 2 gets every
//! scoped owner pool as the unscoped pool it has always counted (`for_v2_reader`: one pool per
//! owner string, as before the upgrade), so the set stays readable and nothing fails closed
//! while the fleet is upgraded. Upgrading the filters scopes their pools to the workspace.

use super::{Delta, KeyEntry, Snapshot};
use crate::policy::{KeyState, LimitPool, Policy};

/// The `Accept` header of a reader of format version 2.
pub const ACCEPT_V2: &str = "application/vnd.keygate.keyset; version=2";

/// The `Accept` header of a reader of format version 3 (scoped owner pools). A control plane
/// built before version 3 reads it as naming version 2 or later, and sends version 2.
pub const ACCEPT_V3: &str = "application/vnd.keygate.keyset; version=3";

/// The highest format version an `Accept` header value names for the key-set media type
/// among its media ranges (parameters in any order, any case, optional spaces and quotes);
/// `None` when it names none (a reader of version 1).
#[must_use]
pub fn accepted_version(accept: &str) -> Option<u16> {
    accept
        .split(',')
        .filter_map(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            if !media.eq_ignore_ascii_case(super::CONTENT_TYPE) {
                return None;
            }
            parts
                .filter_map(|p| {
                    let (name, value) = p.split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("version")
                        .then(|| value.trim().trim_matches('"').parse::<u16>().ok())?
                })
                .max()
        })
        .max()
}

/// Whether an `Accept` header value names the key-set media type with `version=2` or later.
#[must_use]
pub fn accepts_v2(accept: &str) -> bool {
    accepted_version(accept).is_some_and(|v| v >= 2)
}

/// Whether an `Accept` header value names the key-set media type with `version=3` or later.
#[must_use]
pub fn accepts_v3(accept: &str) -> bool {
    accepted_version(accept).is_some_and(|v| v >= 3)
}

/// Whether a version-1 reader may hold the key at all: an active key (its limits dropped).
fn v1_holds(e: &KeyEntry) -> bool {
    e.policy.state == KeyState::Active
}

fn without_policy(mut e: KeyEntry) -> KeyEntry {
    e.policy = Policy::default();
    e
}

/// The key as a version-2 reader counts it: each scoped owner pool as the unscoped pool of the
/// owner string (what such a reader counted before the upgrade).
fn unscoped(mut e: KeyEntry) -> KeyEntry {
    for limit in &mut e.policy.limits {
        if matches!(limit.pool, LimitPool::OwnerIn(_)) {
            limit.pool = LimitPool::Owner;
        }
    }
    e
}

impl Snapshot {
    /// The snapshot as a version-2 reader can hold it: scoped owner pools unscoped. It then
    /// encodes as version 2 (or 1).
    #[must_use]
    pub fn for_v2_reader(self) -> Self {
        Self {
            revision: self.revision,
            entries: self.entries.into_iter().map(unscoped).collect(),
        }
    }

    /// The snapshot as a version-1 reader can hold it: canaries and exhausted keys left out,
    /// every other key without its limits. It then encodes as version 1.
    #[must_use]
    pub fn for_v1_reader(self) -> Self {
        Self {
            revision: self.revision,
            entries: self
                .entries
                .into_iter()
                .filter(v1_holds)
                .map(without_policy)
                .collect(),
        }
    }
}

impl Delta {
    /// The delta as a version-2 reader can apply it: scoped owner pools unscoped. It then
    /// encodes as version 2 (or 1).
    #[must_use]
    pub fn for_v2_reader(self) -> Self {
        Self {
            upserts: self.upserts.into_iter().map(unscoped).collect(),
            ..self
        }
    }

    /// The delta as a version-1 reader can apply it: an upsert of a canary or an exhausted key
    /// becomes a removal (a key that runs out of credits leaves such a reader's set, and comes
    /// back with its refill), every other upsert loses its limits. It then encodes as version 1.
    #[must_use]
    pub fn for_v1_reader(self) -> Self {
        let mut removals = self.removals;
        let mut upserts = Vec::with_capacity(self.upserts.len());
        for e in self.upserts {
            if v1_holds(&e) {
                upserts.push(without_policy(e));
            } else {
                removals.push(e.digest);
            }
        }
        Self {
            base_revision: self.base_revision,
            revision: self.revision,
            upserts,
            removals,
        }
    }
}
