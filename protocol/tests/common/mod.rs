//! Helpers shared by the protocol crate's integration tests.
#![allow(dead_code)]

use keygate_protocol::wire::{Delta, KeyEntry, Snapshot};
use keygate_protocol::{Digest, KeyId};

/// A digest whose bytes are all `b`, except the last one which is `tail`.
pub fn digest(b: u8, tail: u8) -> Digest {
    let mut d = [b; 32];
    d[31] = tail;
    Digest::from_bytes(d)
}

pub fn entry(d: Digest, owner: &str, scopes: &[&str], resources: &[&str]) -> KeyEntry {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&d.as_bytes()[..8]);
    KeyEntry {
        policy: Default::default(),
        digest: d,
        key_id: KeyId::from_bytes(id),
        owner: owner.to_owned(),
        expires_at: None,
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        resources: resources.iter().map(|s| (*s).to_owned()).collect(),
    }
}

pub fn small_snapshot() -> Snapshot {
    let mut a = entry(digest(1, 1), "org_a", &["keys:read"], &[]);
    a.expires_at = Some(1_900_000_000);
    Snapshot {
        revision: 7,
        entries: vec![
            entry(
                digest(3, 3),
                "org_b",
                &["github:tokens"],
                &["acme/*", "other/repo"],
            ),
            a,
            entry(digest(2, 2), "org_a", &["keys:read"], &[]),
        ],
    }
}

pub fn small_delta() -> Delta {
    Delta {
        base_revision: 7,
        revision: 9,
        upserts: vec![
            entry(digest(4, 4), "org_c", &["graphs:execute", "keys:read"], &[]),
            entry(digest(2, 2), "org_b", &["keys:read"], &["acme/widgets"]),
        ],
        removals: vec![digest(1, 1)],
    }
}

/// Rewrites the CRC32 trailer so that a deliberately broken body reaches the deeper checks.
pub fn fix_crc(bytes: &mut [u8]) {
    let end = bytes.len() - 4;
    let crc = crc32fast_hash(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
}

/// CRC32 (IEEE), bitwise, so the tests do not share the implementation under test.
pub fn crc32fast_hash(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
