//! Scoped owner pools on the wire (format version 3): a pool per (scope, owner) round trips and
//! reaches the set, keys of two scopes never share a grant, a set without scoped pools is still
//! version 2 byte for byte as the previous build wrote it, a reader of version 2 refuses version 3
//! whole and is sent its owner pools unscoped instead (`for_v2_reader`, what the control plane
//! gives a filter that does not name version 3), and every broken scope item is refused.

mod common;

use common::{digest, entry, fix_crc};
use keygate_protocol::keyset::{ApplyError, KeySet};
use keygate_protocol::policy::{KeyState, LimitPool, Policy, PolicyError, RateLimit};
use keygate_protocol::wire::{
    DecodeError, EncodeError, HEADER_LEN, KeyEntry, Message, NO_SCOPE, Snapshot, VERSION,
    VERSION_1, VERSION_2, decode, peek_header,
};
use keygate_protocol::{Digest, KeyId};

fn limit(name: &str, limit: u32, window_s: u32, pool: LimitPool) -> RateLimit {
    RateLimit {
        name: name.into(),
        limit,
        window_s,
        pool,
    }
}

fn in_scope(scope: &str) -> Policy {
    Policy {
        state: KeyState::Active,
        limits: vec![
            limit("burst", 100, 10, LimitPool::Key),
            limit("team", 500, 60, LimitPool::OwnerIn(scope.into())),
        ],
    }
}

/// `acme` in workspace ws-a (two keys) and `acme` in ws-b (one key), same scopes.
fn two_workspaces() -> Snapshot {
    let mut entries = Vec::new();
    for (b, scope) in [(1, "ws-a"), (2, "ws-a"), (3, "ws-b")] {
        let mut e = entry(digest(b, b), "acme", &["keys:read"], &[]);
        e.policy = in_scope(scope);
        entries.push(e);
    }
    Snapshot {
        revision: 4,
        entries,
    }
}

fn expect(bytes: &[u8], err: DecodeError) {
    assert_eq!(decode(bytes), Err(err), "decode");
    assert_eq!(
        KeySet::new().apply(bytes),
        Err(ApplyError::Decode(err)),
        "apply"
    );
}

#[test]
fn a_scoped_pool_round_trips_in_version_3_and_reaches_the_set() {
    let s = two_workspaces();
    let bytes = s.encode().unwrap();
    let h = peek_header(&bytes).unwrap();
    assert_eq!(h.version, VERSION);
    assert_eq!(h.limit_items(), 5);
    // One grant per workspace: the same scopes and limits, another pool.
    assert_eq!(h.grant_count, 2);
    // Per grant: one scope, then 5 items for each of its 2 limits.
    assert_eq!(h.grant_item_count, 2 * (1 + 2 * 5));
    let Ok(Message::Snapshot(back)) = decode(&bytes) else {
        panic!("not a snapshot")
    };
    assert_eq!(back.entries, s.entries);
    let mut set = KeySet::new();
    set.apply(&bytes).unwrap();
    for (b, scope) in [(1, "ws-a"), (2, "ws-a"), (3, "ws-b")] {
        let k = set.lookup(&digest(b, b)).unwrap();
        assert_eq!(k.owner(), "acme");
        assert_eq!(k.rate_limits()[1].pool.scope(), Some(scope));
    }
    // The set re-encodes to the same bytes.
    assert_eq!(set.encode_snapshot(), bytes);
}

/// What the previous build (before scoped pools, `main` at d8d5398) wrote for this snapshot:
/// the hex printed by its `Snapshot::encode`.
const PREVIOUS_BUILD_V2: &str = "4b474b5302000100050000000000000000000000000000000400000016000000020000000a0000000200000000000000040000000d000000120000001600000061636d656b6579733a7265616462757273747465616d010000000002000001000000010000000100000002000000640000000a0000000000000003000000f40100003c0000000100000001000000010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101000000000000000000000000020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202000000000000000001000000966fba91";

#[test]
fn a_set_without_scoped_pools_is_version_2_byte_for_byte_as_before() {
    let mk = |b: u8, policy: Policy| KeyEntry {
        digest: Digest::from_bytes([b; 32]),
        key_id: KeyId::from_bytes([b; 16]),
        owner: "acme".into(),
        expires_at: None,
        scopes: vec!["keys:read".into()],
        resources: vec![],
        policy,
    };
    let s = Snapshot {
        revision: 5,
        entries: vec![
            mk(
                1,
                Policy {
                    state: KeyState::Active,
                    limits: vec![
                        limit("burst", 100, 10, LimitPool::Key),
                        limit("team", 500, 60, LimitPool::Owner),
                    ],
                },
            ),
            mk(
                2,
                Policy {
                    state: KeyState::Canary,
                    limits: vec![],
                },
            ),
        ],
    };
    let bytes = s.encode().unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, PREVIOUS_BUILD_V2);
    assert_eq!(peek_header(&bytes).unwrap().version, VERSION_2);
    let Ok(Message::Snapshot(back)) = decode(&bytes) else {
        panic!("not a snapshot")
    };
    assert_eq!(back.entries[0].policy.limits[1].pool, LimitPool::Owner);
}

#[test]
fn a_reader_of_version_2_refuses_version_3_whole_and_a_reader_of_version_1_never_sees_it() {
    let bytes = two_workspaces().encode().unwrap();
    // The previous build's `peek_header` accepts versions 1 and 2 only, before reading
    // anything else: version 3 is `unsupported_version` there, the whole message refused.
    assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), 3);
    let mut as_v4 = bytes.clone();
    as_v4[4..6].copy_from_slice(&4u16.to_le_bytes());
    fix_crc(&mut as_v4);
    expect(&as_v4, DecodeError::UnsupportedVersion(4));
    // Read as version 2, the scope items do not add up: never a scoped pool read unscoped.
    let mut as_v2 = bytes;
    as_v2[4..6].copy_from_slice(&VERSION_2.to_le_bytes());
    fix_crc(&mut as_v2);
    assert!(decode(&as_v2).is_err());
    // A reader that does not name version 2 gets the keys without limits, as version 1.
    let old = two_workspaces().for_v1_reader().encode().unwrap();
    assert_eq!(peek_header(&old).unwrap().version, VERSION_1);
}

#[test]
fn every_broken_scope_item_is_refused() {
    // One key, one scoped limit: items are the scope string, then name, limit, window, pool,
    // scope.
    let mut e = entry(digest(1, 1), "org_a", &["keys:read"], &[]);
    e.policy = Policy {
        state: KeyState::Active,
        limits: vec![limit("team", 10, 60, LimitPool::OwnerIn("ws".into()))],
    };
    let good = Snapshot {
        revision: 1,
        entries: vec![e.clone()],
    }
    .encode()
    .unwrap();
    let h = peek_header(&good).unwrap();
    let items = HEADER_LEN
        + 4 * h.string_count as usize
        + h.string_bytes as usize
        + h.grant_len() * h.grant_count as usize;
    let item = |k: usize| items + 4 * k;
    let broken = |at: usize, value: u32| {
        let mut b = good.clone();
        b[at..at + 4].copy_from_slice(&value.to_le_bytes());
        fix_crc(&mut b);
        b
    };
    expect(&broken(item(5), 99), DecodeError::IndexOutOfRange); // scope index
    expect(&broken(item(5), NO_SCOPE), DecodeError::IndexOutOfRange); // scoped, no scope
    expect(&broken(item(4), 1), DecodeError::BadPolicy); // unscoped pool with a scope
    expect(&broken(item(4), 3), DecodeError::BadPolicy); // unknown pool
    // A scope of 0 bytes or over 128 does not encode.
    for bad in [String::new(), "w".repeat(129)] {
        e.policy.limits[0].pool = LimitPool::OwnerIn(bad);
        let s = Snapshot {
            revision: 1,
            entries: vec![e.clone()],
        };
        assert_eq!(
            s.encode(),
            Err(EncodeError::InvalidPolicy(PolicyError::BadPoolScope))
        );
    }
    // A key pool in a version-3 message carries `NO_SCOPE`.
    let mut plain = entry(digest(9, 9), "org_a", &[], &[]);
    plain.policy.limits = vec![limit("burst", 1, 1, LimitPool::Key)];
    let mut both = two_workspaces();
    both.entries.push(plain);
    let Ok(Message::Snapshot(back)) = decode(&both.encode().unwrap()) else {
        panic!("not a snapshot")
    };
    let back_plain = back.entries.iter().find(|e| e.digest == digest(9, 9));
    assert_eq!(back_plain.unwrap().policy.limits[0].pool, LimitPool::Key);
}

#[test]
fn a_reader_of_version_2_is_sent_its_owner_pools_unscoped_as_version_2() {
    use keygate_protocol::wire::{ACCEPT_V2, ACCEPT_V3, Delta, accepted_version, accepts_v3};
    // Who reads what: this build's filters name version 3; the build before names version 2.
    assert_eq!(accepted_version(ACCEPT_V3), Some(3));
    assert_eq!(accepted_version(ACCEPT_V2), Some(2));
    assert_eq!(
        accepted_version("text/plain, application/vnd.keygate.keyset; version=3; q=1"),
        Some(3)
    );
    assert_eq!(accepted_version("application/vnd.keygate.keyset"), None);
    assert!(accepts_v3(ACCEPT_V3) && !accepts_v3(ACCEPT_V2));

    let snap = two_workspaces().for_v2_reader();
    for e in &snap.entries {
        assert_eq!(e.policy.limits[0].pool, LimitPool::Key);
        assert_eq!(e.policy.limits[1].pool, LimitPool::Owner);
    }
    let bytes = snap.encode().unwrap();
    assert_eq!(peek_header(&bytes).unwrap().version, VERSION_2);
    // Nothing else changes: the same keys, limits and revision as the version-3 set.
    let Ok(Message::Snapshot(read)) = decode(&bytes) else {
        panic!("a version-2 snapshot decodes");
    };
    assert_eq!(read.revision, 4);
    assert_eq!(read.entries.len(), 3);
    let mut set = KeySet::new();
    set.apply(&bytes).unwrap();
    assert_eq!(set.len(), 3);

    let full = two_workspaces();
    let delta = Delta {
        base_revision: 4,
        revision: 5,
        upserts: full.entries[..1].to_vec(),
        removals: vec![full.entries[2].digest],
    }
    .for_v2_reader();
    assert_eq!(delta.upserts[0].policy.limits[1].pool, LimitPool::Owner);
    assert_eq!(delta.removals, vec![full.entries[2].digest]);
    let bytes = delta.encode().unwrap();
    assert_eq!(peek_header(&bytes).unwrap().version, VERSION_2);
}
