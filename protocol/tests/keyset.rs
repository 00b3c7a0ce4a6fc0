//! KeySet: snapshots and deltas with revisions, lookups, atomicity, compaction and re-encoding.

mod common;

use std::collections::BTreeMap;

use common::{digest, entry, small_delta, small_snapshot};
use keygate_protocol::keyset::{ApplyError, KeySet};
use keygate_protocol::wire::{DecodeError, Delta, KeyEntry, Message, MessageKind, Snapshot};
use keygate_protocol::{Digest, key};

fn loaded() -> KeySet {
    let mut set = KeySet::new();
    set.apply(&small_snapshot().encode().unwrap()).unwrap();
    set
}

#[test]
fn snapshot_then_lookup() {
    let set = loaded();
    assert_eq!(set.revision(), Some(7));
    assert_eq!(set.len(), 3);
    let k = set.lookup(&digest(1, 1)).unwrap();
    assert_eq!(k.owner(), "org_a");
    assert_eq!(k.expires_at(), Some(1_900_000_000));
    assert!(!k.is_expired(1_899_999_999));
    assert!(k.is_expired(1_900_000_000));
    assert!(k.has_scope("keys:read"));
    assert!(!k.has_scope("keys"));
    assert!(k.allows_resource("anything"), "empty allow-list");
    assert_eq!(k.key_id(), small_snapshot().entries[1].key_id);
    let k3 = set.lookup(&digest(3, 3)).unwrap();
    assert_eq!(k3.scopes().collect::<Vec<_>>(), ["github:tokens"]);
    assert_eq!(k3.scope_list(), "github:tokens");
    assert_eq!(k.scope_list(), k.scopes().collect::<Vec<_>>().join(" "));
    assert_eq!(k3.resources().collect::<Vec<_>>(), ["acme/*", "other/repo"]);
    assert!(k3.allows_resource("acme/x"));
    assert!(k3.allows_resource("other/repo"));
    assert!(!k3.allows_resource("other/repo2"));
    assert_eq!(k3.expires_at(), None);
    assert!(!k3.is_expired(u64::MAX));
    assert!(set.lookup(&digest(1, 2)).is_none());
    assert!(set.lookup(&digest(9, 9)).is_none());
    assert!(KeySet::new().lookup(&digest(1, 1)).is_none());
}

#[test]
fn real_keys_are_found_by_their_digest() {
    let keys: Vec<_> = (0..50).map(|_| key::generate("kg_live").unwrap()).collect();
    let s = Snapshot {
        revision: 1,
        entries: keys
            .iter()
            .map(|k| entry(k.digest(), "o", &["keys:read"], &[]))
            .collect(),
    };
    let mut set = KeySet::new();
    set.apply(&s.encode().unwrap()).unwrap();
    for k in &keys {
        let parsed = key::parse(k.expose_secret()).unwrap();
        assert!(set.lookup(&parsed.digest()).is_some());
    }
    let other = key::generate("kg_live").unwrap();
    assert!(set.lookup(&other.digest()).is_none());
}

#[test]
fn delta_upserts_replaces_and_removes() {
    let mut set = loaded();
    let applied = set.apply(&small_delta().encode().unwrap()).unwrap();
    assert_eq!(applied.kind, MessageKind::Delta);
    assert_eq!(applied.revision, 9);
    assert_eq!((applied.upserts, applied.removals), (2, 1));
    assert_eq!(set.revision(), Some(9));
    assert_eq!(set.len(), 3); // 3 + 1 new - 1 removed (the replaced one stays)
    assert!(set.lookup(&digest(1, 1)).is_none(), "removed");
    let replaced = set.lookup(&digest(2, 2)).unwrap();
    assert_eq!(replaced.owner(), "org_b");
    assert!(!replaced.allows_resource("acme/gadgets"));
    let new = set.lookup(&digest(4, 4)).unwrap();
    assert!(new.has_scope("graphs:execute"));
    assert!(set.lookup(&digest(3, 3)).is_some(), "untouched");
}

#[test]
fn revisions() {
    let mut empty = KeySet::new();
    let d = small_delta().encode().unwrap();
    assert_eq!(
        empty.apply(&d),
        Err(ApplyError::BaseMismatch {
            current: None,
            base: 7
        })
    );
    let mut set = loaded();
    let mut other_base = small_delta();
    other_base.base_revision = 8;
    other_base.revision = 10;
    assert_eq!(
        set.apply(&other_base.encode().unwrap()),
        Err(ApplyError::BaseMismatch {
            current: Some(7),
            base: 8
        })
    );
    set.apply(&d).unwrap();
    // The same delta again: already applied.
    assert_eq!(set.apply(&d), Err(ApplyError::NotNewer));
    // An older snapshot.
    assert_eq!(
        set.apply(&small_snapshot().encode().unwrap()),
        Err(ApplyError::NotNewer)
    );
    assert_eq!(set.revision(), Some(9));
    // A snapshot at the same revision is accepted (a re-sync), and replaces everything.
    let s = Snapshot {
        revision: 9,
        entries: vec![entry(digest(5, 5), "o", &[], &[])],
    };
    let applied = set.apply(&s.encode().unwrap()).unwrap();
    assert_eq!(applied.kind, MessageKind::Snapshot);
    assert_eq!(set.len(), 1);
    assert!(set.lookup(&digest(4, 4)).is_none());
    assert!(set.lookup(&digest(5, 5)).is_some());
    assert_eq!(ApplyError::NotNewer.code(), "not_newer");
    assert_eq!(
        ApplyError::BaseMismatch {
            current: None,
            base: 1
        }
        .code(),
        "base_mismatch"
    );
}

#[test]
fn failed_apply_changes_nothing() {
    let mut set = loaded();
    let before = set.encode_snapshot();
    let mut bad = small_delta().encode().unwrap();
    let n = bad.len();
    bad[n - 10] ^= 1;
    assert_eq!(
        set.apply(&bad),
        Err(ApplyError::Decode(DecodeError::BadChecksum))
    );
    let mut stale = small_delta();
    stale.base_revision = 3;
    stale.revision = 4;
    assert!(set.apply(&stale.encode().unwrap()).is_err());
    assert!(set.apply(&[1, 2, 3]).is_err());
    assert_eq!(set.encode_snapshot(), before);
    assert_eq!(set.revision(), Some(7));
    assert_eq!(set.len(), 3);
}

#[test]
fn apply_message_and_encode_snapshot() {
    let mut set = KeySet::new();
    set.apply_message(Message::Snapshot(small_snapshot()))
        .unwrap();
    set.apply_message(Message::Delta(small_delta())).unwrap();
    // The set re-encodes to exactly what the equivalent Snapshot encodes to.
    let mut entries: Vec<KeyEntry> = small_snapshot()
        .entries
        .into_iter()
        .filter(|e| e.digest != digest(1, 1) && e.digest != digest(2, 2))
        .collect();
    entries.extend(small_delta().upserts);
    let want = Snapshot {
        revision: 9,
        entries,
    };
    assert_eq!(set.encode_snapshot(), want.encode().unwrap());
    // And another set loaded from those bytes is equal.
    let mut copy = KeySet::new();
    copy.apply(&set.encode_snapshot()).unwrap();
    assert_eq!(copy.len(), set.len());
    assert_eq!(copy.encode_snapshot(), set.encode_snapshot());
    // An invalid message is refused.
    let mut bad = small_snapshot();
    bad.entries[0].owner.clear();
    assert!(matches!(
        set.apply_message(Message::Snapshot(bad)),
        Err(ApplyError::Encode(_))
    ));
}

fn d(i: u32) -> Digest {
    // Spread over the index's buckets and beyond one bucket.
    Digest::of(&format!("key-{i}"))
}

/// Many deltas on a larger set, against a BTreeMap model: exercises the overlay, tombstones,
/// and several in-place compactions.
#[test]
fn long_delta_sequence_matches_a_model() {
    let mut model: BTreeMap<[u8; 32], String> = BTreeMap::new();
    let entries: Vec<KeyEntry> = (0..5000)
        .map(|i| entry(d(i), &format!("owner{}", i % 37), &["keys:read"], &[]))
        .collect();
    for e in &entries {
        model.insert(*e.digest.as_bytes(), e.owner.clone());
    }
    let mut set = KeySet::new();
    set.apply(
        &Snapshot {
            revision: 1,
            entries,
        }
        .encode()
        .unwrap(),
    )
    .unwrap();
    let mut revision = 1;
    let mut next_new = 5000;
    for round in 0..120u32 {
        let mut upserts = Vec::new();
        let mut removals = Vec::new();
        for j in 0..120u32 {
            let x = round * 1000 + j;
            match j % 4 {
                // New keys.
                0 | 1 => {
                    let e = entry(d(next_new), &format!("new{}", x % 11), &["a"], &["r/*"]);
                    next_new += 1;
                    upserts.push(e);
                }
                // Replace an existing key (possibly one already replaced or removed).
                2 => {
                    let e = entry(d(x % next_new), &format!("repl{round}"), &["b"], &[]);
                    upserts.push(e);
                }
                // Remove a key (possibly absent).
                _ => removals.push(d((x * 7) % next_new)),
            }
        }
        // No digest both upserted and removed, and no duplicates.
        let up: std::collections::HashSet<_> = upserts.iter().map(|e| e.digest).collect();
        removals.retain(|r| !up.contains(r));
        removals.sort();
        removals.dedup();
        let mut seen = std::collections::HashSet::new();
        upserts.retain(|e| seen.insert(e.digest));
        for e in &upserts {
            model.insert(*e.digest.as_bytes(), e.owner.clone());
        }
        for r in &removals {
            model.remove(r.as_bytes());
        }
        let delta = Delta {
            base_revision: revision,
            revision: revision + 1,
            upserts,
            removals,
        };
        revision += 1;
        set.apply(&delta.encode().unwrap()).unwrap();
        assert_eq!(set.len(), model.len(), "round {round}");
    }
    for (digest, owner) in &model {
        let k = set
            .lookup(&Digest::from_bytes(*digest))
            .expect("in the model");
        assert_eq!(k.owner(), owner);
    }
    for i in 0..next_new {
        assert_eq!(
            set.lookup(&d(i)).is_some(),
            model.contains_key(d(i).as_bytes())
        );
    }
    // The re-encoded set decodes to exactly the model.
    let Message::Snapshot(s) = keygate_protocol::wire::decode(&set.encode_snapshot()).unwrap()
    else {
        panic!("not a snapshot")
    };
    assert_eq!(s.revision, revision);
    let got: BTreeMap<[u8; 32], String> = s
        .entries
        .into_iter()
        .map(|e| (*e.digest.as_bytes(), e.owner))
        .collect();
    assert_eq!(got, model);
}

#[test]
fn heap_bytes_grow_with_the_set() {
    let mut set = KeySet::new();
    let empty = set.heap_bytes();
    let entries: Vec<KeyEntry> = (0..10_000)
        .map(|i| entry(d(i), "o", &["keys:read"], &[]))
        .collect();
    set.apply(
        &Snapshot {
            revision: 1,
            entries,
        }
        .encode()
        .unwrap(),
    )
    .unwrap();
    let full = set.heap_bytes();
    // 60 bytes per record plus an index of one 64-byte bucket per 32 keys and a last one, plus
    // small tables.
    let floor = 10_000 * 60 + (10_000usize.div_ceil(32) + 1) * 64;
    assert!(full >= empty + floor, "{full}");
    assert!(full < floor + 2048, "{full}");
}

/// Deltas that grow a tiny set far past the overlay threshold, then remove every key.
#[test]
fn grow_from_tiny_then_remove_everything() {
    let mut set = KeySet::new();
    let first: Vec<KeyEntry> = (0..10).map(|i| entry(d(i), "o", &[], &[])).collect();
    set.apply(
        &Snapshot {
            revision: 1,
            entries: first,
        }
        .encode()
        .unwrap(),
    )
    .unwrap();
    let mut revision = 1;
    let mut apply = |set: &mut KeySet, upserts: Vec<KeyEntry>, removals: Vec<Digest>| {
        let delta = Delta {
            base_revision: revision,
            revision: revision + 1,
            upserts,
            removals,
        };
        revision += 1;
        set.apply(&delta.encode().unwrap()).unwrap();
    };
    for chunk in 0..6u32 {
        let upserts = (10 + chunk * 2000..10 + (chunk + 1) * 2000)
            .map(|i| entry(d(i), &format!("o{chunk}"), &["a"], &[]))
            .collect();
        apply(&mut set, upserts, Vec::new());
    }
    let total = 10 + 6 * 2000;
    assert_eq!(set.len(), total as usize);
    for i in 0..total {
        assert!(set.lookup(&d(i)).is_some(), "{i}");
    }
    for chunk in 0..(total / 1000 + 1) {
        let removals = (chunk * 1000..((chunk + 1) * 1000).min(total))
            .map(d)
            .collect();
        apply(&mut set, Vec::new(), removals);
    }
    assert_eq!(set.len(), 0);
    assert!(set.is_empty());
    for i in 0..total {
        assert!(set.lookup(&d(i)).is_none(), "{i}");
    }
    let Message::Snapshot(s) = keygate_protocol::wire::decode(&set.encode_snapshot()).unwrap()
    else {
        panic!("not a snapshot")
    };
    assert!(s.entries.is_empty());
    // And it can grow again.
    apply(&mut set, vec![entry(d(1), "back", &[], &[])], Vec::new());
    assert_eq!(set.lookup(&d(1)).unwrap().owner(), "back");
    assert_eq!(set.len(), 1);
}

/// Keys whose digests share their first 4 bytes (and so a prefix and a bucket), through a
/// snapshot, deltas and a compaction.
#[test]
fn keys_sharing_a_digest_prefix() {
    let same = |i: u32| {
        let mut b = *Digest::of(&format!("tail-{i}")).as_bytes();
        b[..4].copy_from_slice(&[7, 7, 7, 7]);
        Digest::from_bytes(b)
    };
    let mut entries: Vec<KeyEntry> = (0..50)
        .map(|i| entry(same(i), &format!("s{i}"), &[], &[]))
        .collect();
    entries.extend((0..2000).map(|i| entry(d(i), "other", &[], &[])));
    let mut set = KeySet::new();
    set.apply(
        &Snapshot {
            revision: 1,
            entries,
        }
        .encode()
        .unwrap(),
    )
    .unwrap();
    for i in 0..50 {
        assert_eq!(set.lookup(&same(i)).unwrap().owner(), format!("s{i}"));
    }
    for i in 50..100 {
        assert!(set.lookup(&same(i)).is_none());
    }
    // Remove the even ones, add 50..100, and push past the overlay threshold to compact.
    let delta = Delta {
        base_revision: 1,
        revision: 2,
        upserts: (50..100)
            .map(|i| entry(same(i), &format!("s{i}"), &[], &[]))
            .chain((2000..7000).map(|i| entry(d(i), "more", &[], &[])))
            .collect(),
        removals: (0..50).step_by(2).map(same).collect(),
    };
    set.apply(&delta.encode().unwrap()).unwrap();
    for i in 0..100 {
        let found = set.lookup(&same(i)).map(|k| k.owner().to_owned());
        let want = (i >= 50 || i % 2 == 1).then(|| format!("s{i}"));
        assert_eq!(found, want, "{i}");
    }
    assert_eq!(set.len(), 100 - 25 + 7000);
}

/// Keys crafted to share a bucket and a fingerprint (digest bytes 0..5), beside spread ones: a
/// bucket past its fingerprints (60, 100 keys) and past its one-byte count (300) still finds
/// every key, and nothing else.
#[test]
fn keys_that_share_a_bucket_and_a_fingerprint_are_all_found() {
    let crafted = |i: u16, fp: u8| {
        let mut d = [0x99u8; 32];
        d[..4].copy_from_slice(&[0x42; 4]);
        d[4] = fp;
        d[5..7].copy_from_slice(&i.to_be_bytes());
        Digest::from_bytes(d)
    };
    for same in [60u16, 100, 300] {
        let mut entries: Vec<KeyEntry> = (0..same)
            .map(|i| entry(crafted(i, 0x17), "crowded", &["keys:read"], &[]))
            .chain((0..20).map(|i| entry(crafted(i, i as u8), "near", &[], &[])))
            .chain((0..1000).map(|i| entry(d(i), "spread", &[], &[])))
            .collect();
        entries.sort_by_key(|e| *e.digest.as_bytes());
        entries.dedup_by_key(|e| *e.digest.as_bytes());
        let mut set = KeySet::new();
        set.apply(
            &Snapshot {
                revision: 1,
                entries: entries.clone(),
            }
            .encode()
            .unwrap(),
        )
        .unwrap();
        assert_eq!(set.len(), entries.len());
        for e in &entries {
            let found = set.lookup(&e.digest).expect("every key is found");
            assert_eq!(found.key_id(), e.key_id);
            assert_eq!(found.owner(), e.owner);
        }
        for i in same..same + 10 {
            assert!(set.lookup(&crafted(i, 0x17)).is_none(), "{same}: {i}");
        }
        assert!(set.lookup(&crafted(0, 0x18 + 20)).is_none());
        assert!(set.lookup(&crafted(25, 3)).is_none());

        // A delta puts more of them in the overlay and hides one of the main array.
        let mut upserts: Vec<KeyEntry> = (same..same + 70)
            .map(|i| entry(crafted(i, 0x17), "delta", &[], &[]))
            .collect();
        upserts.sort_by_key(|e| *e.digest.as_bytes());
        set.apply(
            &Delta {
                base_revision: 1,
                revision: 2,
                upserts,
                removals: vec![crafted(0, 0x17)],
            }
            .encode()
            .unwrap(),
        )
        .unwrap();
        assert_eq!(set.len(), entries.len() + 70 - 1);
        assert!(set.lookup(&crafted(0, 0x17)).is_none());
        assert_eq!(set.lookup(&crafted(1, 0x17)).unwrap().owner(), "crowded");
        for i in same..same + 70 {
            assert_eq!(set.lookup(&crafted(i, 0x17)).unwrap().owner(), "delta");
        }
        assert!(set.lookup(&crafted(same + 70, 0x17)).is_none());
    }
}
