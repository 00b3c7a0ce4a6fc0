//! Writes `testdata/vectors.json`: keys, invalid keys, a snapshot, a delta and broken messages.
//!
//! Run with `cargo run -p keygate-protocol --example gen_vectors` (from the workspace root). The
//! output is deterministic (no randomness: key bodies come from a SHA-256 chain), and the test
//! `tests/vectors.rs` checks that the checked-in file is exactly what this program writes.

use keygate_protocol::key;
use keygate_protocol::wire::{Delta, KeyEntry, Snapshot};
use keygate_protocol::{Digest, KeyId};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// A deterministic base62 body of `len` characters, from SHA-256("keygate vector <seed> <n>").
fn body(seed: &str, len: usize) -> String {
    let mut out = String::new();
    let mut n = 0u32;
    while out.len() < len {
        let block = Sha256::digest(format!("keygate vector {seed} {n}").as_bytes());
        for b in block {
            if b < 248 && out.len() < len {
                out.push(char::from(key::BASE62_ALPHABET[usize::from(b % 62)]));
            }
        }
        n += 1;
    }
    out
}

fn make_key(prefix: &str, body_len: usize) -> String {
    let unsummed = format!("{prefix}_{}", body(prefix, body_len));
    let sum = key::checksum(unsummed.as_bytes());
    format!("{unsummed}{}", std::str::from_utf8(&sum).expect("base62"))
}

fn key_id(n: u8) -> KeyId {
    // UUIDv7-shaped: a fixed millisecond timestamp, version 7, variant 10.
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&[0x01, 0x9a, 0xb0, 0x00, 0x00, 0x00]);
    b[6] = 0x70;
    b[8] = 0x80;
    b[15] = n;
    KeyId::from_bytes(b)
}

fn entry_json(e: &KeyEntry) -> Value {
    json!({
        "digest": e.digest.to_hex(),
        "key_id": e.key_id.to_string(),
        "owner": e.owner,
        "expires_at": e.expires_at,
        "scopes": e.scopes,
        "resources": e.resources,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every vector, as JSON.
pub fn vectors() -> Value {
    let keys: Vec<String> = vec![
        make_key("kg_live", key::GENERATED_BODY_LEN),
        make_key("kg_test", key::GENERATED_BODY_LEN),
        make_key("acme_test", key::GENERATED_BODY_LEN),
        make_key("a", key::MIN_BODY_LEN),
        make_key("abcdefghij0123456789", 40),
        make_key("kg_live_eu1", key::GENERATED_BODY_LEN),
    ];
    let key_json: Vec<Value> = keys
        .iter()
        .map(|k| {
            let p = key::parse(k).expect("vector keys are valid");
            json!({
                "key": k,
                "prefix": p.prefix(),
                "body": p.body(),
                "checksum": p.checksum(),
                "digest": p.digest().to_hex(),
                "display_prefix": p.display_prefix(),
            })
        })
        .collect();

    let good = &keys[0];
    let mut wrong_sum = good.clone().into_bytes();
    let last = wrong_sum.len() - 1;
    wrong_sum[last] = if wrong_sum[last] == b'0' { b'1' } else { b'0' };
    let wrong_sum = String::from_utf8(wrong_sum).expect("ascii");
    let mut typo = good.clone().into_bytes();
    typo[10] = if typo[10] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).expect("ascii");
    let invalid: Vec<(String, &str)> = vec![
        (String::new(), "empty"),
        ("a".repeat(key::MAX_KEY_LEN + 1), "too_long"),
        (format!("kg_live_{}", "A".repeat(250)), "too_long"),
        (body("nounderscore", 40), "bad_prefix"),
        (good.replacen("kg_live", "KG_live", 1), "bad_prefix"),
        (good.replacen("kg_live", "kg__live", 1), "bad_prefix"),
        (make_key("abcdefghij0123456789x", 32), "bad_prefix"),
        (
            format!("kg_live_{}-{}", &good[8..20], &good[21..]),
            "bad_charset",
        ),
        (format!("kg_live_{} ", &good[8..]), "bad_charset"),
        (make_key("kg_live", key::MIN_BODY_LEN - 1), "bad_length"),
        (wrong_sum, "bad_checksum"),
        (typo, "bad_checksum"),
    ];
    let invalid_json: Vec<Value> = invalid
        .iter()
        .map(|(input, code)| json!({ "input": input, "error": code }))
        .collect();

    let d = |i: usize| Digest::of(&keys[i]);
    let e = |i: usize, owner: &str, exp: Option<u64>, scopes: &[&str], res: &[&str]| KeyEntry {
        policy: Default::default(),
        digest: d(i),
        key_id: key_id(u8::try_from(i).expect("small")),
        owner: owner.to_owned(),
        expires_at: exp,
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        resources: res.iter().map(|s| (*s).to_owned()).collect(),
    };
    let snapshot = Snapshot {
        revision: 41,
        entries: vec![
            e(0, "org_acme", None, &["keys:read", "graphs:execute"], &[]),
            e(
                1,
                "org_acme",
                Some(1_893_456_000),
                &["keys:read", "graphs:execute"],
                &[],
            ),
            e(
                2,
                "svc_ci",
                None,
                &["github:tokens"],
                &["acme/*", "tools/build"],
            ),
            e(3, "org_other", Some(1_800_000_000), &[], &[]),
        ],
    };
    let mut sorted = snapshot.entries.clone();
    sorted.sort_by_key(|x| x.digest);
    let snapshot_bytes = snapshot.encode().expect("valid snapshot");
    let delta = Delta {
        base_revision: 41,
        revision: 44,
        upserts: vec![
            e(4, "org_new", None, &["keys:read"], &["acme/widgets"]),
            e(1, "org_acme", Some(1_900_000_000), &["keys:read"], &[]),
        ],
        removals: vec![d(3)],
    };
    let mut upserts = delta.upserts.clone();
    upserts.sort_by_key(|x| x.digest);
    let delta_bytes = delta.encode().expect("valid delta");

    let mut broken = Vec::new();
    broken.push((
        snapshot_bytes[..snapshot_bytes.len() - 1].to_vec(),
        "truncated",
    ));
    let mut b = snapshot_bytes.clone();
    b[0] = b'X';
    broken.push((b, "bad_magic"));
    let mut b = snapshot_bytes.clone();
    b[4] = 9; // no version this reader knows (1 to 3)
    broken.push((b, "unsupported_version"));
    let mut b = snapshot_bytes.clone();
    let n = b.len();
    b[n - 20] ^= 0x01;
    broken.push((b, "bad_checksum"));
    let broken_json: Vec<Value> = broken
        .iter()
        .map(|(bytes, code)| json!({ "bytes": hex(bytes), "error": code }))
        .collect();

    json!({
        "description": "Keygate key format and key-set wire format (version 1) test vectors. \
            Keys: <prefix>_<body><checksum>, checksum = 6 base62 digits (0-9A-Za-z) of CRC32/IEEE \
            over <prefix>_<body>, most significant first; digest = SHA-256 of the whole key. \
            Entries are listed in digest order, as encoded.",
        "keys": key_json,
        "invalid_keys": invalid_json,
        "snapshot": {
            "revision": snapshot.revision,
            "entries": sorted.iter().map(entry_json).collect::<Vec<_>>(),
            "bytes": hex(&snapshot_bytes),
        },
        "delta": {
            "base_revision": delta.base_revision,
            "revision": delta.revision,
            "upserts": upserts.iter().map(entry_json).collect::<Vec<_>>(),
            "removals": delta.removals.iter().map(Digest::to_hex).collect::<Vec<_>>(),
            "bytes": hex(&delta_bytes),
        },
        "invalid_messages": broken_json,
    })
}

/// The file's exact text.
pub fn vectors_text() -> String {
    let mut s = serde_json::to_string_pretty(&vectors()).expect("json");
    s.push('\n');
    s
}

fn main() -> std::io::Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/vectors.json");
    std::fs::write(&path, vectors_text())?;
    println!("wrote {}", path.display());
    Ok(())
}
