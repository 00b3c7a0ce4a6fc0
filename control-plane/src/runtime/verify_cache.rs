//! The verification cache: keys by digest, each entry tagged with the key-set revision it was
//! read at. Any write anywhere bumps the revision (the store's revision watch sees local writes
//! at once and other replicas' through NOTIFY or its poll), so a stale entry is never served.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::domain::key::KeyRecord;
use crate::storage::Db;

/// Most cached digests before the cache is emptied.
const MAX_CACHED: usize = 200_000;

/// A key found by digest, with the end of the grace period when the digest is a rotated-out
/// secret's.
pub type Found = Arc<(KeyRecord, Option<i64>)>;

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
        let found = db.find_by_digest(digest).await?.map(Arc::new);
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
