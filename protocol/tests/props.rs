//! Property tests: the decoder and `KeySet::apply` never panic, encode→decode is the identity,
//! mutated encodings are rejected or decode, generated keys parse, and a KeySet follows a model.

mod common;

use std::collections::BTreeMap;

use keygate_protocol::keyset::KeySet;
use keygate_protocol::wire::{Delta, KeyEntry, Message, Snapshot, decode};
use keygate_protocol::{Digest, KeyId, key};
use proptest::prelude::*;

fn arb_scope() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("keys:read".to_owned()),
        Just("github:tokens".to_owned()),
        "[a-z][a-z0-9_.-]{0,6}(:[a-z][a-z0-9]{0,5}){0,2}",
    ]
}

fn arb_resource() -> impl Strategy<Value = String> {
    prop_oneof![Just("acme/*".to_owned()), "[!-+\\--~]{1,12}"]
}

fn arb_entry() -> impl Strategy<Value = KeyEntry> {
    (
        any::<[u8; 32]>(),
        any::<[u8; 16]>(),
        prop_oneof!["org_[0-9]", "\\PC{1,20}"],
        prop_oneof![Just(None), (1..=u64::from(u32::MAX)).prop_map(Some)],
        prop::collection::vec(arb_scope(), 0..4),
        prop::collection::vec(arb_resource(), 0..4),
    )
        .prop_map(|(d, id, owner, expires_at, scopes, resources)| KeyEntry {
            policy: Default::default(),
            digest: Digest::from_bytes(d),
            key_id: KeyId::from_bytes(id),
            owner,
            expires_at,
            scopes,
            resources,
        })
}

fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    (any::<u64>(), prop::collection::vec(arb_entry(), 0..40)).prop_map(|(revision, mut entries)| {
        entries.sort_by_key(|e| e.digest);
        entries.dedup_by_key(|e| e.digest);
        Snapshot { revision, entries }
    })
}

fn arb_delta() -> impl Strategy<Value = Delta> {
    (
        0..u64::MAX - 1,
        1..1000u64,
        prop::collection::vec(arb_entry(), 0..20),
        prop::collection::vec(any::<[u8; 32]>(), 0..20),
    )
        .prop_map(|(base, step, mut upserts, removals)| {
            upserts.sort_by_key(|e| e.digest);
            upserts.dedup_by_key(|e| e.digest);
            let mut removals: Vec<Digest> = removals
                .into_iter()
                .map(Digest::from_bytes)
                .filter(|r| upserts.binary_search_by_key(r, |e| e.digest).is_err())
                .collect();
            removals.sort();
            removals.dedup();
            Delta {
                base_revision: base,
                revision: base.saturating_add(step).max(base + 1),
                upserts,
                removals,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode(&bytes);
        let mut set = KeySet::new();
        let _ = set.apply(&bytes);
        prop_assert!(set.is_empty());
    }

    #[test]
    fn random_bodies_behind_a_valid_header_never_panic(
        counts in prop::collection::vec(0u32..6, 6),
        body in prop::collection::vec(any::<u8>(), 0..600),
        kind in 1u8..=2,
    ) {
        // A valid header and CRC, so that the deeper checks see random tables.
        let mut b = Vec::new();
        b.extend_from_slice(b"KGKS");
        b.extend_from_slice(&1u16.to_le_bytes());
        b.push(kind);
        b.push(0);
        b.extend_from_slice(&5u64.to_le_bytes());
        b.extend_from_slice(&u64::from(kind == 2).to_le_bytes());
        for c in &counts {
            b.extend_from_slice(&c.to_le_bytes());
        }
        b.extend_from_slice(&body);
        b.extend_from_slice(&[0; 4]);
        common::fix_crc(&mut b);
        let _ = decode(&b);
        let mut set = KeySet::new();
        let _ = set.apply(&b);
    }

    #[test]
    fn snapshot_encode_decode_is_identity(s in arb_snapshot()) {
        let bytes = s.encode().unwrap();
        prop_assert_eq!(decode(&bytes).unwrap(), Message::Snapshot(s.clone()));
        // Through a KeySet, the bytes come back identical.
        let mut set = KeySet::new();
        set.apply(&bytes).unwrap();
        prop_assert_eq!(set.len(), s.entries.len());
        prop_assert_eq!(set.encode_snapshot(), bytes);
        for e in &s.entries {
            let k = set.lookup(&e.digest).unwrap();
            prop_assert_eq!(k.owner(), e.owner.as_str());
            prop_assert_eq!(k.key_id(), e.key_id);
            prop_assert_eq!(k.expires_at(), e.expires_at);
            prop_assert!(k.scopes().eq(e.scopes.iter().map(String::as_str)));
            prop_assert_eq!(k.scope_list(), e.scopes.join(" "));
            prop_assert!(k.resources().eq(e.resources.iter().map(String::as_str)));
        }
    }

    #[test]
    fn delta_encode_decode_is_identity(d in arb_delta()) {
        let bytes = d.encode().unwrap();
        prop_assert_eq!(decode(&bytes).unwrap(), Message::Delta(d));
    }

    #[test]
    fn mutations_are_rejected_or_decode(
        s in arb_snapshot(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = s.encode().unwrap();
        for (at, v) in edits {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        let mut set = KeySet::new();
        match decode(&bytes) {
            Ok(m) => {
                // Whatever decodes also applies, and re-encodes to the same content.
                prop_assert!(set.apply(&bytes).is_ok());
                prop_assert_eq!(decode(&m.encode().unwrap()).unwrap(), m);
            }
            Err(e) => prop_assert_eq!(set.apply(&bytes).unwrap_err().code(), e.code()),
        }
    }

    #[test]
    fn generated_keys_always_parse(prefix in "[a-z][a-z0-9]{0,5}(_[a-z0-9]{1,4}){0,2}") {
        let k = key::generate(&prefix).unwrap();
        let p = key::parse(k.expose_secret()).unwrap();
        prop_assert_eq!(p.prefix(), prefix.as_str());
        prop_assert_eq!(p.body().len(), key::GENERATED_BODY_LEN);
        prop_assert_eq!(p.digest(), k.digest());
    }

    #[test]
    fn parse_never_panics(s in "\\PC{0,300}") {
        let _ = key::parse(&s);
    }

    #[test]
    fn a_single_typo_is_caught(i in any::<prop::sample::Index>(), c in "[0-9A-Za-z]") {
        let k = key::generate("kg_live").unwrap();
        let s = k.expose_secret();
        let at = "kg_live_".len() + i.index(s.len() - "kg_live_".len());
        let c = c.as_bytes()[0];
        prop_assume!(s.as_bytes()[at] != c);
        let mut typo = s.as_bytes().to_vec();
        typo[at] = c;
        let typo = String::from_utf8(typo).unwrap();
        prop_assert_eq!(key::parse(&typo).unwrap_err(), key::KeyFormatError::BadChecksum);
    }

    #[test]
    fn keyset_follows_a_model(
        s in arb_snapshot(),
        deltas in prop::collection::vec(arb_delta(), 1..6),
        reuse in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
    ) {
        let mut model: BTreeMap<Digest, KeyEntry> =
            s.entries.iter().map(|e| (e.digest, e.clone())).collect();
        let mut set = KeySet::new();
        set.apply(&s.encode().unwrap()).unwrap();
        let mut revision = s.revision;
        let known: Vec<Digest> = model.keys().copied().collect();
        for (n, mut d) in deltas.into_iter().enumerate() {
            prop_assume!(revision < u64::MAX - 10);
            d.base_revision = revision;
            d.revision = revision + 1;
            // Also remove and replace keys that exist.
            if !known.is_empty() {
                for (k, r) in reuse.iter().enumerate() {
                    let digest = known[r.index(known.len())];
                    if (k + n) % 2 == 0 {
                        if d.upserts.iter().all(|e| e.digest != digest) && !d.removals.contains(&digest) {
                            d.removals.push(digest);
                        }
                    } else if !d.removals.contains(&digest) && d.upserts.iter().all(|e| e.digest != digest) {
                        let mut e = model.get(&digest).cloned().unwrap_or_else(|| s.entries[0].clone());
                        e.digest = digest;
                        e.owner = format!("replaced{n}");
                        d.upserts.push(e);
                    }
                }
            }
            for e in &d.upserts {
                model.insert(e.digest, e.clone());
            }
            for r in &d.removals {
                model.remove(r);
            }
            set.apply(&d.encode().unwrap()).unwrap();
            revision += 1;
            prop_assert_eq!(set.len(), model.len());
        }
        let want = Snapshot { revision, entries: model.values().cloned().collect() };
        prop_assert_eq!(set.encode_snapshot(), want.encode().unwrap());
    }
}
