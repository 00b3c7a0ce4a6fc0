//! Policies on the wire and in the set: version 2 round trips, version 1 kept for default
//! policies, every policy decode error, and what a found key tells of its state and limits.
//! (Scoped owner pools, version 3: `scoped_pools.rs`.)

mod common;

use common::{digest, entry, fix_crc, small_snapshot};
use keygate_protocol::keyset::{ApplyError, KeySet};
use keygate_protocol::policy::{KeyState, LimitPool, Policy, PolicyError, RateLimit};
use keygate_protocol::wire::{
    DecodeError, Delta, EncodeError, HEADER_LEN, Message, Snapshot, VERSION_1, VERSION_2, decode,
    peek_header,
};

fn limit(name: &str, limit: u32, window_s: u32, pool: LimitPool) -> RateLimit {
    RateLimit {
        name: name.into(),
        limit,
        window_s,
        pool,
    }
}

fn burst() -> Policy {
    Policy {
        state: KeyState::Active,
        limits: vec![
            limit("burst", 100, 10, LimitPool::Key),
            limit("day", 5_000, 86_400, LimitPool::Owner),
        ],
    }
}

/// A snapshot of four keys: an active key with two limits, a canary, an exhausted key, and a
/// key with the default policy that shares the first one's scopes.
fn policy_snapshot() -> Snapshot {
    let mut limited = entry(digest(1, 1), "org_a", &["keys:read"], &[]);
    limited.policy = burst();
    let mut canary = entry(digest(2, 2), "org_a", &["keys:read"], &[]);
    canary.policy.state = KeyState::Canary;
    let mut exhausted = entry(digest(3, 3), "org_b", &[], &["acme/*"]);
    exhausted.policy = Policy {
        state: KeyState::CreditsExhausted,
        limits: vec![limit("burst", 100, 10, LimitPool::Key)],
    };
    let plain = entry(digest(4, 4), "org_a", &["keys:read"], &[]);
    Snapshot {
        revision: 3,
        entries: vec![limited, canary, exhausted, plain],
    }
}

/// Where the grant table and its items start in an encoded message.
fn grant_offsets(bytes: &[u8]) -> (usize, usize) {
    let h = peek_header(bytes).unwrap();
    let grants = HEADER_LEN + 4 * h.string_count as usize + h.string_bytes as usize;
    (grants, grants + h.grant_len() * h.grant_count as usize)
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
fn a_message_whose_policies_are_all_default_is_still_written_as_version_1() {
    let bytes = small_snapshot().encode().unwrap();
    let h = peek_header(&bytes).unwrap();
    assert_eq!(h.version, VERSION_1);
    assert_eq!(h.grant_len(), 4);
    assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), 1);
}

#[test]
fn policies_round_trip_in_version_2_and_keys_sharing_one_share_a_grant() {
    let s = policy_snapshot();
    let bytes = s.encode().unwrap();
    let h = peek_header(&bytes).unwrap();
    assert_eq!(h.version, VERSION_2);
    assert_eq!(h.grant_len(), 8);
    // Four keys, four distinct (scopes, resources, policy): the plain key's grant differs from
    // the limited key's only by its policy.
    assert_eq!(h.grant_count, 4);
    let Ok(Message::Snapshot(back)) = decode(&bytes) else {
        panic!("not a snapshot")
    };
    let mut want = s.entries.clone();
    want.sort_by_key(|e| e.digest);
    assert_eq!(back.entries, want);
    // The same content in another order gives the same bytes.
    let mut reversed = s;
    reversed.entries.reverse();
    assert_eq!(reversed.encode().unwrap(), bytes);
}

#[test]
fn a_found_key_tells_its_state_and_limits() {
    let mut set = KeySet::new();
    set.apply(&policy_snapshot().encode().unwrap()).unwrap();
    let limited = set.lookup(&digest(1, 1)).unwrap();
    assert_eq!(limited.state(), KeyState::Active);
    assert_eq!(limited.rate_limits(), burst().limits.as_slice());
    assert_eq!(limited.policy(), &burst());
    assert_eq!(set.lookup(&digest(2, 2)).unwrap().state(), KeyState::Canary);
    let exhausted = set.lookup(&digest(3, 3)).unwrap();
    assert_eq!(exhausted.state(), KeyState::CreditsExhausted);
    assert_eq!(exhausted.rate_limits().len(), 1);
    let plain = set.lookup(&digest(4, 4)).unwrap();
    assert!(plain.policy().is_default());
    assert_eq!(plain.scope_list(), "keys:read");
}

#[test]
fn a_delta_changes_a_keys_policy_and_the_set_re_encodes_it() {
    let mut set = KeySet::new();
    set.apply(&small_snapshot().encode().unwrap()).unwrap();
    assert!(set.lookup(&digest(2, 2)).unwrap().policy().is_default());
    let mut exhausted = entry(digest(2, 2), "org_a", &["keys:read"], &[]);
    exhausted.policy.state = KeyState::CreditsExhausted;
    let delta = Delta {
        base_revision: 7,
        revision: 8,
        upserts: vec![exhausted.clone()],
        removals: vec![],
    };
    set.apply(&delta.encode().unwrap()).unwrap();
    assert_eq!(
        set.lookup(&digest(2, 2)).unwrap().state(),
        KeyState::CreditsExhausted
    );
    // The refill: the same key back to the default policy.
    let refilled = Delta {
        base_revision: 8,
        revision: 9,
        upserts: vec![entry(digest(2, 2), "org_a", &["keys:read"], &[])],
        removals: vec![],
    };
    set.apply(&refilled.encode().unwrap()).unwrap();
    assert_eq!(set.lookup(&digest(2, 2)).unwrap().state(), KeyState::Active);
    // Re-encoding the set gives what encoding its contents gives.
    let Ok(Message::Snapshot(now)) = decode(&set.encode_snapshot()) else {
        panic!("not a snapshot")
    };
    assert_eq!(now.encode().unwrap(), set.encode_snapshot());
    let with_policy = {
        let mut s = set.clone();
        let d = Delta {
            base_revision: 9,
            revision: 10,
            upserts: vec![exhausted],
            removals: vec![],
        };
        s.apply(&d.encode().unwrap()).unwrap();
        s.encode_snapshot()
    };
    assert_eq!(peek_header(&with_policy).unwrap().version, VERSION_2);
    assert_eq!(
        peek_header(&set.encode_snapshot()).unwrap().version,
        VERSION_1
    );
}

#[test]
fn an_invalid_policy_does_not_encode() {
    let mut e = entry(digest(1, 1), "org_a", &[], &[]);
    e.policy.limits = vec![limit("Burst", 1, 1, LimitPool::Key)];
    let s = Snapshot {
        revision: 1,
        entries: vec![e.clone()],
    };
    assert_eq!(
        s.encode(),
        Err(EncodeError::InvalidPolicy(PolicyError::BadLimitName))
    );
    assert_eq!(
        EncodeError::InvalidPolicy(PolicyError::BadLimitName).code(),
        "bad_limit_name"
    );
    e.policy.limits = vec![limit("a", 1, 0, LimitPool::Key)];
    let s = Snapshot {
        revision: 1,
        entries: vec![e],
    };
    assert_eq!(
        s.encode(),
        Err(EncodeError::InvalidPolicy(PolicyError::BadWindow))
    );
}

#[test]
fn every_broken_policy_byte_is_refused() {
    // One key with one limit: grant 0 is at `grants`, its items are: the scope, the limit's
    // name, limit, window, pool.
    let mut e = entry(digest(1, 1), "org_a", &["keys:read"], &[]);
    e.policy = Policy {
        state: KeyState::Active,
        limits: vec![limit("burst", 100, 10, LimitPool::Key)],
    };
    let good = Snapshot {
        revision: 1,
        entries: vec![e],
    }
    .encode()
    .unwrap();
    let (grants, items) = grant_offsets(&good);
    assert_eq!(good[grants + 4..grants + 8], [0, 1, 0, 0]);
    let broken = |at: usize, value: &[u8]| {
        let mut b = good.clone();
        b[at..at + value.len()].copy_from_slice(value);
        fix_crc(&mut b);
        b
    };
    expect(&broken(grants + 4, &[3]), DecodeError::BadPolicy); // unknown state
    expect(&broken(grants + 5, &[9]), DecodeError::BadPolicy); // 9 limits
    expect(&broken(grants + 6, &[1]), DecodeError::BadPolicy); // reserved byte
    expect(&broken(grants + 5, &[2]), DecodeError::BadGrantTable); // items run out
    expect(&broken(grants + 5, &[0]), DecodeError::BadGrantTable); // items left over
    let item = |k: usize| items + 4 * k;
    expect(
        &broken(item(1), &99u32.to_le_bytes()),
        DecodeError::IndexOutOfRange,
    ); // name
    expect(
        &broken(item(1), &1u32.to_le_bytes()),
        DecodeError::BadPolicy,
    ); // "keys:read"
    expect(
        &broken(item(2), &0u32.to_le_bytes()),
        DecodeError::BadPolicy,
    ); // limit 0
    expect(
        &broken(item(3), &0u32.to_le_bytes()),
        DecodeError::BadPolicy,
    ); // window 0
    expect(
        &broken(item(4), &2u32.to_le_bytes()),
        DecodeError::BadPolicy,
    ); // pool
    assert_eq!(DecodeError::BadPolicy.code(), "bad_policy");
    // A version 1 message has 4-byte grants: the same bytes read as version 2 do not add up.
    let mut b = small_snapshot().encode().unwrap();
    b[4..6].copy_from_slice(&VERSION_2.to_le_bytes());
    fix_crc(&mut b);
    assert!(decode(&b).is_err());
    // And a version this reader does not know.
    expect(
        &broken(4, &4u16.to_le_bytes()),
        DecodeError::UnsupportedVersion(4),
    );
}

#[test]
fn a_reader_says_it_reads_version_2_in_its_accept_header() {
    use keygate_protocol::wire::{ACCEPT_V2, CONTENT_TYPE, accepts_v2};
    for yes in [
        ACCEPT_V2,
        "application/vnd.keygate.keyset;version=2",
        "Application/Vnd.Keygate.Keyset; VERSION=\"2\"",
        "text/plain, application/vnd.keygate.keyset; q=0.9; version=3",
    ] {
        assert!(accepts_v2(yes), "{yes}");
    }
    for no in [
        CONTENT_TYPE,
        "application/vnd.keygate.keyset; version=1",
        "application/vnd.keygate.keyset; version=two",
        "*/*",
        "application/json; version=2",
        "",
    ] {
        assert!(!accepts_v2(no), "{no}");
    }
}

#[test]
fn a_version_1_reader_gets_the_active_keys_without_limits_and_nothing_it_cannot_read() {
    let old = policy_snapshot().for_v1_reader();
    let bytes = old.encode().unwrap();
    assert_eq!(peek_header(&bytes).unwrap().version, VERSION_1);
    let mut digests: Vec<_> = old.entries.iter().map(|e| e.digest).collect();
    digests.sort();
    // The limited key (without its limits) and the plain one; not the canary, not the spent key.
    assert_eq!(digests, [digest(1, 1), digest(4, 4)]);
    assert!(old.entries.iter().all(|e| e.policy.is_default()));

    // A delta: the plain key runs out of credits and a new canary is planted; for a version-1
    // reader the first leaves its set and the second never enters it.
    let mut spent = entry(digest(4, 4), "org_a", &["keys:read"], &[]);
    spent.policy.state = KeyState::CreditsExhausted;
    let mut canary = entry(digest(5, 5), "org_a", &[], &[]);
    canary.policy.state = KeyState::Canary;
    let mut limited = entry(digest(6, 6), "org_b", &[], &[]);
    limited.policy = burst();
    let delta = Delta {
        base_revision: 3,
        revision: 4,
        upserts: vec![spent, canary, limited],
        removals: vec![digest(1, 1)],
    }
    .for_v1_reader();
    let mut set = KeySet::new();
    set.apply(&bytes).unwrap();
    let delta_bytes = delta.encode().unwrap();
    assert_eq!(peek_header(&delta_bytes).unwrap().version, VERSION_1);
    set.apply(&delta_bytes).unwrap();
    assert!(set.lookup(&digest(1, 1)).is_none(), "removed");
    assert!(set.lookup(&digest(4, 4)).is_none(), "out of credits: gone");
    assert!(set.lookup(&digest(5, 5)).is_none(), "a canary never enters");
    let l = set.lookup(&digest(6, 6)).unwrap();
    assert!(l.policy().is_default(), "limits dropped");
    assert_eq!(set.len(), 1);
}
