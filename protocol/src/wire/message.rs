//! The values a message carries: `KeyEntry`, `Snapshot`, `Delta`, `Message` and `MessageKind`.

use super::EncodeError;
use crate::policy::Policy;
use crate::{Digest, KeyId};

/// One key in a snapshot or delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// SHA-256 of the whole key string.
    pub digest: Digest,
    /// The key's id.
    pub key_id: KeyId,
    /// The owner id (1 to 128 bytes).
    pub owner: String,
    /// When the key stops working, in Unix seconds (1 to `u32::MAX`); `None` for never.
    pub expires_at: Option<u64>,
    /// Scope names, in order (at most 64).
    pub scopes: Vec<String>,
    /// Resource allow-list, in order (at most 256; empty allows every resource).
    pub resources: Vec<String>,
    /// State and rate limits ([`Policy::default`] for an active key without limits).
    pub policy: Policy,
}

/// The whole key set at `revision`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The revision this snapshot brings a reader to.
    pub revision: u64,
    /// Every key in the set (any order; the encoding is sorted by digest).
    pub entries: Vec<KeyEntry>,
}

/// The changes from `base_revision` to `revision`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delta {
    /// The revision a reader must be at to apply this delta.
    pub base_revision: u64,
    /// The revision this delta brings a reader to (greater than `base_revision`).
    pub revision: u64,
    /// Keys added or replaced.
    pub upserts: Vec<KeyEntry>,
    /// Digests removed (removing a digest that is not in the set is not an error).
    pub removals: Vec<Digest>,
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A full snapshot.
    Snapshot(Snapshot),
    /// A delta.
    Delta(Delta),
}

impl Message {
    /// The revision the message brings a reader to.
    #[must_use]
    pub const fn revision(&self) -> u64 {
        match self {
            Self::Snapshot(s) => s.revision,
            Self::Delta(d) => d.revision,
        }
    }

    /// Encodes the message.
    ///
    /// # Errors
    /// See [`Snapshot::encode`] and [`Delta::encode`].
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        match self {
            Self::Snapshot(s) => s.encode(),
            Self::Delta(d) => d.encode(),
        }
    }
}

/// Which kind of message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A full snapshot (kind byte 1).
    Snapshot,
    /// A delta (kind byte 2).
    Delta,
}

impl MessageKind {
    pub(super) const fn to_byte(self) -> u8 {
        match self {
            Self::Snapshot => 1,
            Self::Delta => 2,
        }
    }
}
