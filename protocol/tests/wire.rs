//! Wire format: round trips, layout, and every decode and encode error.

mod common;

use common::{digest, entry, fix_crc, small_delta, small_snapshot};
use keygate_protocol::scope::ScopeError;
use keygate_protocol::wire::{
    self, DecodeError, Delta, EncodeError, HEADER_LEN, Message, MessageKind, Snapshot, decode,
    peek_header,
};

fn sorted(mut s: Snapshot) -> Snapshot {
    s.entries.sort_by_key(|e| e.digest);
    s
}

#[test]
fn snapshot_round_trip_sorts_entries() {
    let s = small_snapshot();
    let bytes = s.encode().unwrap();
    assert_eq!(decode(&bytes), Ok(Message::Snapshot(sorted(s.clone()))));
    // Order of the input does not change the bytes.
    let mut reversed = s;
    reversed.entries.reverse();
    assert_eq!(reversed.encode().unwrap(), bytes);
}

#[test]
fn delta_round_trip() {
    let d = small_delta();
    let bytes = d.encode().unwrap();
    let Message::Delta(back) = decode(&bytes).unwrap() else {
        panic!("not a delta")
    };
    assert_eq!(back.base_revision, 7);
    assert_eq!(back.revision, 9);
    assert_eq!(back.removals, d.removals);
    let mut want = d.upserts.clone();
    want.sort_by_key(|e| e.digest);
    assert_eq!(back.upserts, want);
}

#[test]
fn empty_messages() {
    let s = Snapshot {
        revision: 0,
        entries: vec![],
    };
    let bytes = s.encode().unwrap();
    assert_eq!(bytes.len(), HEADER_LEN + 4);
    assert_eq!(decode(&bytes), Ok(Message::Snapshot(s)));
    let d = Delta {
        base_revision: 1,
        revision: 2,
        ..Delta::default()
    };
    assert_eq!(decode(&d.encode().unwrap()), Ok(Message::Delta(d)));
}

#[test]
fn header_and_layout() {
    let bytes = small_snapshot().encode().unwrap();
    assert_eq!(&bytes[..4], b"KGKS");
    let h = peek_header(&bytes).unwrap();
    assert_eq!(h.kind, MessageKind::Snapshot);
    assert_eq!(h.version, 1);
    assert_eq!(h.revision, 7);
    assert_eq!(h.base_revision, None);
    // Strings interned once: org_a, keys:read, org_b, github:tokens, acme/*, other/repo.
    assert_eq!(h.string_count, 6);
    assert_eq!(h.grant_count, 2);
    assert_eq!(h.grant_item_count, 4);
    assert_eq!(h.entry_count, 3);
    assert_eq!(h.removal_count, 0);
    assert_eq!(h.message_len(), bytes.len() as u64);
    let dh = peek_header(&small_delta().encode().unwrap()).unwrap();
    assert_eq!(dh.kind, MessageKind::Delta);
    assert_eq!(dh.base_revision, Some(7));
    assert_eq!(dh.removal_count, 1);
}

#[test]
fn size_per_key_is_about_60_bytes() {
    let entries: Vec<_> = (0..1000u32)
        .map(|i| {
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&i.to_be_bytes());
            entry(
                keygate_protocol::Digest::from_bytes(d),
                &format!("org_{}", i % 10),
                &["keys:read"],
                &[],
            )
        })
        .collect();
    let bytes = Snapshot {
        revision: 1,
        entries,
    }
    .encode()
    .unwrap();
    assert!(bytes.len() < 1000 * 61, "{}", bytes.len());
}

fn expect(bytes: &[u8], err: DecodeError) {
    assert_eq!(decode(bytes), Err(err), "decode");
    let mut set = keygate_protocol::keyset::KeySet::new();
    assert_eq!(
        set.apply(bytes),
        Err(keygate_protocol::keyset::ApplyError::Decode(err)),
        "apply"
    );
}

/// Byte offsets of the small snapshot's parts.
struct Layout {
    strings_ends: usize,
    string_data: usize,
    grants: usize,
    items: usize,
    entries: usize,
}

fn layout(bytes: &[u8]) -> Layout {
    let h = peek_header(bytes).unwrap();
    let strings_ends = HEADER_LEN;
    let string_data = strings_ends + 4 * h.string_count as usize;
    let grants = string_data + h.string_bytes as usize;
    let items = grants + 4 * h.grant_count as usize;
    let entries = items + 4 * h.grant_item_count as usize;
    Layout {
        strings_ends,
        string_data,
        grants,
        items,
        entries,
    }
}

#[test]
fn header_errors() {
    let good = small_snapshot().encode().unwrap();
    expect(&[], DecodeError::Truncated);
    expect(b"KGK", DecodeError::Truncated);
    expect(&good[..HEADER_LEN - 1], DecodeError::Truncated);
    expect(&good[..good.len() - 1], DecodeError::Truncated);
    let mut long = good.clone();
    long.push(0);
    expect(&long, DecodeError::TrailingBytes);

    let mut b = good.clone();
    b[0] = b'X';
    expect(&b, DecodeError::BadMagic);
    let mut b = good.clone();
    b[4] = 4;
    expect(&b, DecodeError::UnsupportedVersion(4));
    let mut b = good.clone();
    b[6] = 3;
    expect(&b, DecodeError::BadKind(3));
    let mut b = good.clone();
    b[7] = 1;
    expect(&b, DecodeError::BadFlags);
    // A snapshot with a base revision.
    let mut b = good.clone();
    b[16] = 1;
    expect(&b, DecodeError::BadRevision);
    // A delta whose revision is not after its base.
    let mut d = small_delta().encode().unwrap();
    d[8..16].copy_from_slice(&7u64.to_le_bytes());
    expect(&d, DecodeError::BadRevision);
    // A snapshot that claims a removal (and has its 32 bytes).
    let mut b = good.clone();
    b[44] = 1;
    let end = b.len() - 4;
    b.splice(end..end, [0u8; 32]);
    fix_crc(&mut b);
    expect(&b, DecodeError::RemovalsInSnapshot);
    // Garbled body.
    let mut b = good.clone();
    b[HEADER_LEN + 5] ^= 0x40;
    expect(&b, DecodeError::BadChecksum);
    let mut b = good;
    let n = b.len();
    b[n - 1] ^= 1;
    expect(&b, DecodeError::BadChecksum);
}

#[test]
fn huge_declared_counts_are_rejected_before_allocating() {
    let mut b = small_snapshot().encode().unwrap();
    b[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
    expect(&b, DecodeError::Truncated);
    let mut b = small_snapshot().encode().unwrap();
    for at in (24..48).step_by(4) {
        b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    }
    expect(&b, DecodeError::Truncated);
}

#[test]
fn string_table_errors() {
    let good = small_snapshot().encode().unwrap();
    let l = layout(&good);
    // First string ("org_a", 5 bytes) ends after the second one's end: offsets decrease.
    let mut b = good.clone();
    b[l.strings_ends..l.strings_ends + 4].copy_from_slice(&1000u32.to_le_bytes());
    fix_crc(&mut b);
    expect(&b, DecodeError::BadStringTable);
    // The last offset stops short of the string data's end.
    let h = peek_header(&good).unwrap();
    let last = l.strings_ends + 4 * (h.string_count as usize - 1);
    let mut b = good.clone();
    let end = u32::from_le_bytes(b[last..last + 4].try_into().unwrap());
    b[last..last + 4].copy_from_slice(&(end - 1).to_le_bytes());
    fix_crc(&mut b);
    expect(&b, DecodeError::BadStringTable);
    // Invalid UTF-8 inside "org_a".
    let mut b = good.clone();
    b[l.string_data] = 0xFF;
    fix_crc(&mut b);
    expect(&b, DecodeError::InvalidUtf8);
}

#[test]
fn over_long_string_is_rejected() {
    let long = "r".repeat(wire::MAX_STRING_LEN);
    let s = Snapshot {
        revision: 1,
        entries: vec![entry(digest(1, 1), "o", &[], &[&long])],
    };
    let good = s.encode().unwrap();
    assert!(decode(&good).is_ok());
    // Merge the resource and the owner "o" into one 257-byte string by moving the first end.
    let l = layout(&good);
    let mut b = good;
    b[l.strings_ends..l.strings_ends + 4].copy_from_slice(&257u32.to_le_bytes());
    fix_crc(&mut b);
    expect(&b, DecodeError::BadStringTable);
}

#[test]
fn grant_and_index_errors() {
    let good = small_snapshot().encode().unwrap();
    let l = layout(&good);
    // Grant 0 claims one scope more than the items hold.
    let mut b = good.clone();
    b[l.grants] += 1;
    fix_crc(&mut b);
    expect(&b, DecodeError::BadGrantTable);
    // Grant 0 claims one scope fewer: the items are not all used.
    let mut b = good.clone();
    b[l.grants] -= 1;
    fix_crc(&mut b);
    expect(&b, DecodeError::BadGrantTable);
    // More than 64 scopes.
    let mut b = good.clone();
    b[l.grants..l.grants + 2].copy_from_slice(&65u16.to_le_bytes());
    fix_crc(&mut b);
    expect(&b, DecodeError::BadGrantTable);
    // A grant item pointing past the string table.
    let mut b = good.clone();
    b[l.items..l.items + 4].copy_from_slice(&99u32.to_le_bytes());
    fix_crc(&mut b);
    expect(&b, DecodeError::IndexOutOfRange);
    // An entry's owner past the string table.
    let mut b = good.clone();
    b[l.entries + 52..l.entries + 56].copy_from_slice(&6u32.to_le_bytes());
    fix_crc(&mut b);
    expect(&b, DecodeError::IndexOutOfRange);
    // An entry's grant past the grant table.
    let mut b = good.clone();
    b[l.entries + 56..l.entries + 60].copy_from_slice(&2u32.to_le_bytes());
    fix_crc(&mut b);
    expect(&b, DecodeError::IndexOutOfRange);
    // A scope item that points at a string which is not a valid scope ("acme/*" is index 4).
    let mut b = good.clone();
    b[l.items..l.items + 4].copy_from_slice(&4u32.to_le_bytes());
    fix_crc(&mut b);
    expect(&b, DecodeError::InvalidValue(ScopeError::BadScope));
    // A resource string corrupted to hold a space.
    let mut b = good;
    let acme = b
        .windows(6)
        .position(|w| w == b"acme/*")
        .expect("acme/* is in the string data");
    b[acme + 4] = b' ';
    fix_crc(&mut b);
    expect(&b, DecodeError::InvalidValue(ScopeError::BadResource));
}

#[test]
fn invalid_owner_is_rejected() {
    // An owner of 129 bytes is a valid string (<= 256) but not a valid owner: build it by
    // encoding a 129-byte resource and pointing the owner index at it.
    let long = "x".repeat(129);
    let s = Snapshot {
        revision: 1,
        entries: vec![entry(digest(1, 1), "o", &[], &[&long])],
    };
    let good = s.encode().unwrap();
    let l = layout(&good);
    let mut b = good;
    b[l.entries + 52..l.entries + 56].copy_from_slice(&1u32.to_le_bytes());
    fix_crc(&mut b);
    expect(&b, DecodeError::InvalidValue(ScopeError::BadOwner));
}

#[test]
fn order_and_duplicate_errors() {
    let good = small_snapshot().encode().unwrap();
    let l = layout(&good);
    // Swap entries 0 and 1.
    let mut b = good.clone();
    let (e0, e1) = (l.entries, l.entries + 60);
    let first: Vec<u8> = b[e0..e1].to_vec();
    b.copy_within(e1..e1 + 60, e0);
    b[e1..e1 + 60].copy_from_slice(&first);
    fix_crc(&mut b);
    expect(&b, DecodeError::Unsorted);
    // Entry 1 gets entry 0's digest.
    let mut b = good;
    b.copy_within(e0..e0 + 32, e1);
    fix_crc(&mut b);
    expect(&b, DecodeError::DuplicateDigest);

    // Removals: duplicated, unsorted, and also upserted.
    let mut d = small_delta();
    d.removals = vec![digest(8, 8), digest(9, 9)];
    let good = d.encode().unwrap();
    let rem = good.len() - 4 - 64;
    let mut b = good.clone();
    b.copy_within(rem..rem + 32, rem + 32);
    fix_crc(&mut b);
    expect(&b, DecodeError::DuplicateDigest);
    let mut b = good.clone();
    let first: Vec<u8> = b[rem..rem + 32].to_vec();
    b.copy_within(rem + 32..rem + 64, rem);
    b[rem + 32..rem + 64].copy_from_slice(&first);
    fix_crc(&mut b);
    expect(&b, DecodeError::Unsorted);
    let mut b = good;
    b[rem..rem + 32].copy_from_slice(digest(2, 2).as_bytes());
    fix_crc(&mut b);
    expect(&b, DecodeError::DuplicateDigest);
}

#[test]
fn decode_error_codes_are_distinct() {
    let all = [
        DecodeError::Truncated,
        DecodeError::TrailingBytes,
        DecodeError::BadMagic,
        DecodeError::UnsupportedVersion(9),
        DecodeError::BadKind(9),
        DecodeError::BadFlags,
        DecodeError::BadChecksum,
        DecodeError::BadRevision,
        DecodeError::RemovalsInSnapshot,
        DecodeError::BadStringTable,
        DecodeError::InvalidUtf8,
        DecodeError::BadGrantTable,
        DecodeError::IndexOutOfRange,
        DecodeError::Unsorted,
        DecodeError::DuplicateDigest,
        DecodeError::InvalidValue(ScopeError::BadOwner),
        DecodeError::InvalidValue(ScopeError::BadScope),
        DecodeError::InvalidValue(ScopeError::BadResource),
    ];
    let codes: std::collections::HashSet<_> = all.iter().map(DecodeError::code).collect();
    assert_eq!(codes.len(), all.len());
}

#[test]
fn encode_errors() {
    let base = small_snapshot();
    let check = |f: &dyn Fn(&mut Snapshot), err: EncodeError| {
        let mut s = base.clone();
        f(&mut s);
        assert_eq!(s.encode(), Err(err));
    };
    check(
        &|s| s.entries.push(s.entries[0].clone()),
        EncodeError::DuplicateDigest,
    );
    check(
        &|s| s.entries[0].owner.clear(),
        EncodeError::InvalidValue(ScopeError::BadOwner),
    );
    check(
        &|s| s.entries[0].scopes.push("Bad Scope".into()),
        EncodeError::InvalidValue(ScopeError::BadScope),
    );
    check(
        &|s| s.entries[0].resources.push("a,b".into()),
        EncodeError::InvalidValue(ScopeError::BadResource),
    );
    check(
        &|s| s.entries[0].scopes = (0..65).map(|i| format!("s{i}")).collect(),
        EncodeError::TooManyScopes,
    );
    check(
        &|s| s.entries[0].resources = (0..257).map(|i| format!("r{i}")).collect(),
        EncodeError::TooManyResources,
    );
    check(
        &|s| s.entries[0].expires_at = Some(0),
        EncodeError::ExpiryOutOfRange,
    );
    check(
        &|s| s.entries[0].expires_at = Some(u64::from(u32::MAX) + 1),
        EncodeError::ExpiryOutOfRange,
    );
    let mut d = small_delta();
    d.revision = d.base_revision;
    assert_eq!(d.encode(), Err(EncodeError::BadRevision));
    let mut d = small_delta();
    d.removals.push(d.upserts[0].digest);
    assert_eq!(d.encode(), Err(EncodeError::DuplicateDigest));
    let mut d = small_delta();
    d.removals.push(d.removals[0]);
    assert_eq!(d.encode(), Err(EncodeError::DuplicateDigest));
    assert_eq!(EncodeError::TooManyScopes.code(), "too_many_scopes");
}

#[test]
fn grants_distinguish_scopes_from_resources() {
    // (["keys:read"], ["x"]) and (["keys:read", ...]) must not collapse into one grant.
    let s = Snapshot {
        revision: 1,
        entries: vec![
            entry(digest(1, 1), "o", &["a", "b"], &[]),
            entry(digest(2, 2), "o", &["a"], &["b"]),
        ],
    };
    assert_eq!(decode(&s.encode().unwrap()), Ok(Message::Snapshot(s)));
}

#[test]
fn content_type() {
    assert_eq!(wire::CONTENT_TYPE, "application/vnd.keygate.keyset");
}
