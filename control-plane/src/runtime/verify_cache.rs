//! The verification cache: keys by digest, each entry tagged with the key-set revision it was
//! read at. Any write anywhere bumps the revision (the store's revision watch sees local writes
//! at once and other replicas' through NOTIFY or its poll), so a stale entry is never served.
//!
//! An entry holds what verify needs besides the key: its policy resolved as the key set
//! carries it (own limits or the workspace's defaults, bounded by the parent's; exhausted when
//! its or its parent's balance is 0). Every change to any of these (a parent revoked or its
//! limits changed, a workspace's defaults, an exhaustion, a refill) is a change-log row and so
//! a new revision: the next verify reads them again.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use keygate_protocol::policy::Policy;

use crate::domain::key::KeyRecord;
use crate::storage::Db;

/// Most cached digests before the cache is emptied.
const MAX_CACHED: usize = 200_000;

/// A key found by digest, as verify and caller authentication need it.
#[derive(Debug, Clone)]
pub struct VerifyRecord {
    /// The key.
    pub key: KeyRecord,
    /// The end of the grace period when the digest is a rotated-out secret's.
    pub grace_until: Option<i64>,
    /// Its policy as the key set carries it (`Db::key_policy`).
    pub policy: Policy,
}

/// A cached record.
pub type Found = Arc<VerifyRecord>;

#[derive(Debug, Clone)]
struct Cached {
    revision: i64,
    found: Option<Found>,
}

/// Digest → key, valid for the revision it was read at.
#[derive(Debug, Default)]
pub struct VerifyCache {
    cache: RwLock<HashMap<[u8; 32], Cached>>,
}

impl VerifyCache {
    /// Finds the key holding `digest` (current or rotated-out secret, with the grace end),
    /// from the cache when it was filled at the store's current revision, else from the
    /// database.
    pub async fn lookup(&self, db: &Db, digest: &[u8; 32]) -> Result<Option<Found>, sqlx::Error> {
        let revision = db.known_revision();
        if let Ok(cache) = self.cache.read()
            && let Some(c) = cache.get(digest)
            && c.revision == revision
        {
            return Ok(c.found.clone());
        }
        let found = match db.find_by_digest(digest).await? {
            None => None,
            Some((key, grace_until)) => {
                let policy = db.key_policy(key.id).await?.unwrap_or_default();
                Some(Arc::new(VerifyRecord {
                    key,
                    grace_until,
                    policy,
                }))
            }
        };
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(
                *digest,
                Cached {
                    revision,
                    found: found.clone(),
                },
            );
        }
        Ok(found)
    }
}
