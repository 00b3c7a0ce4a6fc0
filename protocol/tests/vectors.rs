//! The checked-in test vectors (`testdata/vectors.json`): every key, error, and message byte.

mod common;

#[allow(dead_code)]
#[path = "../examples/gen_vectors.rs"]
mod gen_vectors;

use keygate_protocol::keyset::KeySet;
use keygate_protocol::wire::{self, Delta, KeyEntry, Message, Snapshot};
use keygate_protocol::{Digest, KeyId, key};
use serde_json::Value;

const FILE: &str = include_str!("../testdata/vectors.json");

fn vectors() -> Value {
    serde_json::from_str(FILE).expect("vectors.json is JSON")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

fn entry(v: &Value) -> KeyEntry {
    KeyEntry {
        policy: Default::default(),
        digest: Digest::from_hex(v["digest"].as_str().unwrap()).unwrap(),
        key_id: KeyId::parse(v["key_id"].as_str().unwrap()).unwrap(),
        owner: v["owner"].as_str().unwrap().to_owned(),
        expires_at: v["expires_at"].as_u64(),
        scopes: strings(&v["scopes"]),
        resources: strings(&v["resources"]),
    }
}

fn snapshot(v: &Value) -> Snapshot {
    Snapshot {
        revision: v["revision"].as_u64().unwrap(),
        entries: v["entries"].as_array().unwrap().iter().map(entry).collect(),
    }
}

fn delta(v: &Value) -> Delta {
    Delta {
        base_revision: v["base_revision"].as_u64().unwrap(),
        revision: v["revision"].as_u64().unwrap(),
        upserts: v["upserts"].as_array().unwrap().iter().map(entry).collect(),
        removals: v["removals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| Digest::from_hex(d.as_str().unwrap()).unwrap())
            .collect(),
    }
}

#[test]
fn the_file_is_what_the_generator_writes() {
    // Compared as JSON values, so that map key order (a serde_json feature) does not matter.
    assert_eq!(
        vectors(),
        gen_vectors::vectors(),
        "run `cargo run -p keygate-protocol --example gen_vectors`"
    );
}

#[test]
fn keys_parse_with_their_checksum_and_digest() {
    let v = vectors();
    let keys = v["keys"].as_array().unwrap();
    assert!(keys.len() >= 5);
    for k in keys {
        let text = k["key"].as_str().unwrap();
        let p = key::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(p.prefix(), k["prefix"]);
        assert_eq!(p.body(), k["body"]);
        assert_eq!(p.checksum(), k["checksum"]);
        assert_eq!(p.digest().to_hex(), k["digest"]);
        assert_eq!(p.display_prefix(), k["display_prefix"]);
        assert_eq!(format!("{}_{}{}", p.prefix(), p.body(), p.checksum()), text);
        // The checksum, recomputed independently: bitwise CRC32, then base62 digits.
        let mut n = common::crc32fast_hash(format!("{}_{}", p.prefix(), p.body()).as_bytes());
        let mut digits = Vec::new();
        for _ in 0..6 {
            digits.push(key::BASE62_ALPHABET[(n % 62) as usize]);
            n /= 62;
        }
        digits.reverse();
        assert_eq!(digits, p.checksum().as_bytes());
    }
}

#[test]
fn invalid_keys_fail_with_their_code() {
    let v = vectors();
    let cases = v["invalid_keys"].as_array().unwrap();
    let mut codes = std::collections::HashSet::new();
    for c in cases {
        let input = c["input"].as_str().unwrap();
        let err = key::parse(input).expect_err(input);
        assert_eq!(err.code(), c["error"], "{input:?}");
        codes.insert(err.code());
    }
    // Every error kind has a vector.
    assert_eq!(codes.len(), 6);
}

#[test]
fn snapshot_and_delta_bytes() {
    let v = vectors();
    let s = snapshot(&v["snapshot"]);
    let s_bytes = unhex(v["snapshot"]["bytes"].as_str().unwrap());
    assert_eq!(s.encode().unwrap(), s_bytes);
    assert_eq!(
        wire::decode(&s_bytes).unwrap(),
        Message::Snapshot(s.clone())
    );
    let d = delta(&v["delta"]);
    let d_bytes = unhex(v["delta"]["bytes"].as_str().unwrap());
    assert_eq!(d.encode().unwrap(), d_bytes);
    assert_eq!(wire::decode(&d_bytes).unwrap(), Message::Delta(d.clone()));

    // Applied in order, the set holds the snapshot's keys changed by the delta.
    let mut set = KeySet::new();
    set.apply(&s_bytes).unwrap();
    set.apply(&d_bytes).unwrap();
    assert_eq!(set.revision(), Some(d.revision));
    for k in v["keys"].as_array().unwrap() {
        let digest = Digest::from_hex(k["digest"].as_str().unwrap()).unwrap();
        let in_delta = d.upserts.iter().find(|e| e.digest == digest);
        let in_snapshot = s.entries.iter().find(|e| e.digest == digest);
        let removed = d.removals.contains(&digest);
        let want = in_delta.or(if removed { None } else { in_snapshot });
        match (set.lookup(&digest), want) {
            (None, None) => {}
            (Some(found), Some(e)) => {
                assert_eq!(found.owner(), e.owner);
                assert_eq!(found.expires_at(), e.expires_at);
                assert!(found.scopes().eq(e.scopes.iter().map(String::as_str)));
            }
            (found, want) => panic!("{digest}: found {found:?}, want {want:?}"),
        }
    }
}

#[test]
fn invalid_messages_fail_with_their_code() {
    let v = vectors();
    for c in v["invalid_messages"].as_array().unwrap() {
        let bytes = unhex(c["bytes"].as_str().unwrap());
        assert_eq!(wire::decode(&bytes).unwrap_err().code(), c["error"]);
    }
}
