//! Applying a message: `KeySet::apply` and its errors, snapshot loads, owner and grant interning.

use std::sync::Arc;

use super::record::{Grant, Meta, Record};
use super::{Index, KeySet};
use crate::wire::{DecodeError, EncodeError, Message, MessageKind, RawEntry, Validated};

/// Why a message could not be applied. The set is unchanged after any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The bytes are not a valid message.
    #[error("cannot decode the key-set message: {0}")]
    Decode(#[from] DecodeError),
    /// A delta whose base revision is not the set's current revision: fetch a snapshot.
    #[error("delta base revision {base} does not match the current revision {current:?}")]
    BaseMismatch {
        /// The set's revision (`None` before the first snapshot).
        current: Option<u64>,
        /// The delta's base revision.
        base: u64,
    },
    /// A snapshot older than the current revision, or a delta already applied.
    #[error("the message is not newer than the current revision")]
    NotNewer,
    /// A [`Message`] given to [`KeySet::apply_message`] that cannot be encoded.
    #[error("invalid message: {0}")]
    Encode(#[from] EncodeError),
}

impl ApplyError {
    /// A short, stable, machine-readable code.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Decode(e) => e.code(),
            Self::BaseMismatch { .. } => "base_mismatch",
            Self::NotNewer => "not_newer",
            Self::Encode(e) => e.code(),
        }
    }
}

/// What an apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Snapshot or delta.
    pub kind: MessageKind,
    /// The set's revision now.
    pub revision: u64,
    /// Entries in the message (snapshot keys or delta upserts).
    pub upserts: usize,
    /// Removals in the message.
    pub removals: usize,
}

impl KeySet {
    /// Applies an encoded snapshot or delta, decoding straight into the compact form.
    ///
    /// A snapshot replaces the set unless its revision is lower than the current one; a delta
    /// applies only when its base revision equals the current revision. The whole message is
    /// checked before anything changes, so on any error the set is unchanged.
    ///
    /// # Errors
    /// [`ApplyError::Decode`] for invalid bytes, [`ApplyError::NotNewer`] for a snapshot older
    /// than the current revision or a delta that ends at or before it,
    /// [`ApplyError::BaseMismatch`] for a delta from another revision.
    pub fn apply(&mut self, bytes: &[u8]) -> Result<Applied, ApplyError> {
        let v = Validated::new(bytes)?;
        let h = v.header;
        match h.base_revision {
            None => {
                if self.revision.is_some_and(|cur| h.revision < cur) {
                    return Err(ApplyError::NotNewer);
                }
                self.load_snapshot(&v);
            }
            Some(base) => {
                if self.revision.is_some_and(|cur| h.revision <= cur) {
                    return Err(ApplyError::NotNewer);
                }
                if self.revision != Some(base) {
                    return Err(ApplyError::BaseMismatch {
                        current: self.revision,
                        base,
                    });
                }
                self.apply_delta(&v);
            }
        }
        self.revision = Some(h.revision);
        Ok(Applied {
            kind: h.kind,
            revision: h.revision,
            upserts: h.entry_count as usize,
            removals: h.removal_count as usize,
        })
    }

    /// Applies a decoded message (by encoding it and applying the bytes).
    ///
    /// # Errors
    /// As [`apply`](Self::apply), plus [`ApplyError::Encode`] for a message that cannot be encoded.
    pub fn apply_message(&mut self, message: Message) -> Result<Applied, ApplyError> {
        let bytes = message.encode()?;
        self.apply(&bytes)
    }

    fn intern_owner(&mut self, owner: &str) -> u32 {
        if let Some(&id) = self.owner_ids.get(owner) {
            return id;
        }
        let id = u32::try_from(self.owners.len()).expect("fewer than 2^32 owners");
        let owner: Arc<str> = Arc::from(owner);
        Arc::make_mut(&mut self.owners).push(Arc::clone(&owner));
        Arc::make_mut(&mut self.owner_ids).insert(owner, id);
        id
    }

    fn intern_grant(&mut self, v: &Validated<'_>, g: usize) -> u32 {
        let scopes: Box<[Box<str>]> = v.grant_scopes(g).map(Box::from).collect();
        let grant = Grant {
            scope_list: scopes.join(" ").into(),
            scopes,
            resources: v.grant_resources(g).map(Box::from).collect(),
            policy: v.grant_policy(g),
        };
        if let Some(&id) = self.grant_ids.get(&grant) {
            return id;
        }
        let id = u32::try_from(self.grants.len()).expect("fewer than 2^32 grants");
        let grant = Arc::new(grant);
        Arc::make_mut(&mut self.grants).push(Arc::clone(&grant));
        Arc::make_mut(&mut self.grant_ids).insert(grant, id);
        id
    }

    /// Maps the message's owner strings and grants to this set's tables, interning new ones.
    pub(super) fn translate(&mut self, v: &Validated<'_>) -> (Vec<u32>, Vec<u32>) {
        let mut owner_map = vec![u32::MAX; v.strings.len()];
        let grant_map: Vec<u32> = (0..v.grant_count())
            .map(|g| self.intern_grant(v, g))
            .collect();
        for i in 0..v.entry_count() {
            let o = v.entry(i).owner as usize;
            if owner_map[o] == u32::MAX {
                owner_map[o] = self.intern_owner(v.strings[o]);
            }
        }
        (owner_map, grant_map)
    }

    pub(super) fn record(e: &RawEntry, owner_map: &[u32], grant_map: &[u32]) -> Record {
        Record {
            digest: e.digest,
            meta: Meta {
                key_id: e.key_id,
                expiry: e.expiry,
                owner: owner_map[e.owner as usize],
                grant: grant_map[e.grant as usize],
            },
        }
    }

    fn load_snapshot(&mut self, v: &Validated<'_>) {
        // Everything was checked: drop the old contents first so the peak is one set, not two.
        *self = Self {
            revision: self.revision,
            ..Self::default()
        };
        let (owner_map, grant_map) = self.translate(v);
        let n = v.entry_count();
        let mut main = Vec::with_capacity(n);
        for i in 0..n {
            main.push(Self::record(&v.entry(i), &owner_map, &grant_map));
        }
        self.main_index = Arc::new(Index::build(&main));
        self.main = Arc::new(main);
        self.len = n;
    }
}
