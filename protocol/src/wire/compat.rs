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
//! A reader of version 2 gets whatever the set needs: a set with a scoped owner pool is version
//! 3, which a reader built before scoped pools refuses whole (`unsupported_version`). Version 2
//! cannot say whose owner pool is whose, and dropping those limits or reading them unscoped
//! would miscount without a word, so there is no version-2 form of such a set.

use super::{Delta, KeyEntry, Snapshot};
use crate::policy::{KeyState, Policy};

/// The `Accept` header of a reader of format version 2.
pub const ACCEPT_V2: &str = "application/vnd.keygate.keyset; version=2";

/// Whether an `Accept` header value names the key-set media type with `version=2` or later
/// among its media ranges (parameters in any order, any case, optional spaces and quotes).
#[must_use]
pub fn accepts_v2(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim();
        media.eq_ignore_ascii_case(super::CONTENT_TYPE)
            && parts.any(|p| {
                let Some((name, value)) = p.split_once('=') else {
                    return false;
                };
                name.trim().eq_ignore_ascii_case("version")
                    && value
                        .trim()
                        .trim_matches('"')
                        .parse::<u16>()
                        .is_ok_and(|v| v >= 2)
            })
    })
}

/// Whether a version-1 reader may hold the key at all: an active key (its limits dropped).
fn v1_holds(e: &KeyEntry) -> bool {
    e.policy.state == KeyState::Active
}

fn without_policy(mut e: KeyEntry) -> KeyEntry {
    e.policy = Policy::default();
    e
}

impl Snapshot {
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
