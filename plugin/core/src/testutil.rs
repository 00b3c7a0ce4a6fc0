//! Test fixtures: keys, key sets and wire messages built with the protocol crate's encoders.

use keygate_protocol::KeyId;
use keygate_protocol::key;
use keygate_protocol::keyset::KeySet;
use keygate_protocol::wire::{Delta, KeyEntry, Snapshot};

/// A generated key and its entry.
#[derive(Debug, Clone)]
pub struct TestKey {
    /// The secret string.
    pub secret: String,
    /// Its id.
    pub id: KeyId,
    /// Its entry in the set.
    pub entry: KeyEntry,
}

/// A key with these attributes; `n` makes the id unique.
pub fn test_key(
    n: u8,
    owner: &str,
    scopes: &[&str],
    resources: &[&str],
    expires_at: Option<u64>,
) -> TestKey {
    let secret = key::generate("kg_live").unwrap();
    let id = KeyId::from_bytes([n; 16]);
    let entry = KeyEntry {
        policy: Default::default(),
        digest: secret.digest(),
        key_id: id,
        owner: owner.into(),
        expires_at,
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        resources: resources.iter().map(|s| (*s).to_owned()).collect(),
    };
    TestKey {
        secret: secret.expose_secret().to_owned(),
        id,
        entry,
    }
}

/// Snapshot bytes.
pub fn snapshot(revision: u64, keys: &[&TestKey]) -> Vec<u8> {
    let mut entries: Vec<KeyEntry> = keys.iter().map(|k| k.entry.clone()).collect();
    entries.sort_by(|a, b| a.digest.as_bytes().cmp(b.digest.as_bytes()));
    Snapshot { revision, entries }.encode().unwrap()
}

/// Delta bytes.
pub fn delta(base: u64, revision: u64, upserts: &[&TestKey], removals: &[&TestKey]) -> Vec<u8> {
    let mut upserts: Vec<KeyEntry> = upserts.iter().map(|k| k.entry.clone()).collect();
    upserts.sort_by(|a, b| a.digest.as_bytes().cmp(b.digest.as_bytes()));
    let mut removals: Vec<_> = removals.iter().map(|k| k.entry.digest).collect();
    removals.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Delta {
        base_revision: base,
        revision,
        upserts,
        removals,
    }
    .encode()
    .unwrap()
}

/// A request header list with pseudo-headers.
pub fn headers(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut h = vec![
        (":method".to_owned(), method.to_owned()),
        (":path".to_owned(), path.to_owned()),
        (":authority".to_owned(), "api.example".to_owned()),
    ];
    h.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    h
}

/// A key set with a reader, an admin and an expired key, at a fixed clock.
pub struct Fixture {
    /// The set (revision 7).
    pub set: KeySet,
    /// Unix seconds "now".
    pub now: u64,
    /// Owner alice, `repo:read`, resources `acme/*`.
    pub reader: TestKey,
    /// Owner root, every scope, no allow-list.
    pub admin: TestKey,
    /// Expired an hour ago.
    pub expired: TestKey,
    /// A well-formed key that is not in the set.
    pub unknown: String,
}

impl Fixture {
    /// Builds it.
    pub fn new() -> Self {
        let now = 1_763_900_000;
        let reader = test_key(1, "alice", &["repo:read"], &["acme"], Some(now + 3600));
        let admin = test_key(2, "root", &["admin", "repo:read", "repo:write"], &[], None);
        let expired = test_key(3, "bob", &["repo:read"], &[], Some(now - 3600));
        let mut set = KeySet::new();
        set.apply(&snapshot(7, &[&reader, &admin, &expired]))
            .unwrap();
        let unknown = key::generate("kg_live").unwrap().expose_secret().to_owned();
        Self {
            set,
            now,
            reader,
            admin,
            expired,
            unknown,
        }
    }
}
