//! `keyset_apply`: sequences of snapshots, deltas, bulk deltas and corrupted or raw messages
//! (built with `arbitrary`) applied to a `KeySet`: it never panics, a failed apply changes
//! nothing, and after every step the set agrees with a `BTreeMap` model.

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use keygate_protocol::keyset::{ApplyError, KeySet};
use keygate_protocol::wire::{self, Delta, KeyEntry, Message, Snapshot};
use keygate_protocol::{Digest, KeyId};
use sha2::Digest as _;

/// A whole fuzz case: steps applied in order to one set.
#[derive(Debug, Arbitrary)]
pub struct Program {
    /// The steps.
    pub steps: Vec<Step>,
}

/// A revision relative to the model's current one.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Rev {
    /// The current revision (0 before the first snapshot).
    Current,
    /// Current plus 1 + n.
    After(u8),
    /// Current minus n (saturating).
    Before(u8),
    /// Any value.
    Exact(u64),
}

/// One key, its fields drawn from small pools so that keys collide, repeat and get replaced.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbEntry {
    digest: u16,
    key_id: u8,
    owner: u8,
    expiry: Option<u32>,
    scopes: Vec<u8>,
    resources: Vec<u8>,
}

/// One step.
#[derive(Debug, Arbitrary)]
pub enum Step {
    /// A snapshot through `apply` (encoded bytes) or `apply_message`.
    Snapshot {
        /// Its revision.
        revision: Rev,
        /// Its keys.
        entries: Vec<ArbEntry>,
        /// Use `apply_message` instead of `apply`.
        as_message: bool,
    },
    /// A delta.
    Delta {
        /// Its base revision.
        base: Rev,
        /// Its revision, after the base by 1 + n.
        step: u8,
        /// Upserts.
        upserts: Vec<ArbEntry>,
        /// Removals (digest pool indices).
        removals: Vec<u16>,
        /// Use `apply_message` instead of `apply`.
        as_message: bool,
    },
    /// A delta from the current revision with many distinct new keys (up to 6,000, enough to
    /// force the overlay merge), optionally removing every n-th existing key.
    Bulk {
        /// Key count (mod 6,000).
        count: u16,
        /// Seed of the digests.
        seed: u32,
        /// Remove every n-th key of the model (0 = none).
        remove_every: u8,
    },
    /// An encoded snapshot or delta with one byte changed (and maybe its CRC fixed).
    Corrupt {
        /// The message before corruption: a delta from the current revision when true.
        delta: bool,
        /// Keys of the message.
        entries: Vec<ArbEntry>,
        /// Byte index (mod length).
        at: u16,
        /// XOR mask (0 is treated as 1).
        xor: u8,
        /// Rewrite the CRC trailer after the change.
        fix_crc: bool,
    },
    /// Raw bytes.
    Raw(Vec<u8>),
}

const OWNERS: [&str; 5] = ["org_a", "org_b", "svc:ci", "user@example.com", ""];
const SCOPES: [&str; 6] = [
    "keys:read",
    "keys:write",
    "github:tokens",
    "graphs:execute",
    "repo:read",
    "Bad Scope",
];
const RESOURCES: [&str; 5] = ["acme/widgets", "acme/*", "other/repo", "*", ""];
/// Size of the digest pool used by arbitrary entries and removals.
const POOL: u16 = 512;

/// Digest number `i` of the pool: 16 different 4-byte prefixes, so many keys share one.
fn pool_digest(i: u16) -> Digest {
    let i = i % POOL;
    let mut d = [0u8; 32];
    d[0] = (i & 0x0f) as u8 * 17;
    d[4..6].copy_from_slice(&i.to_be_bytes());
    d[31] = 0xa5;
    Digest::from_bytes(d)
}

fn entry(a: &ArbEntry) -> KeyEntry {
    KeyEntry {
        policy: Default::default(),
        digest: pool_digest(a.digest),
        key_id: KeyId::from_bytes([a.key_id; 16]),
        owner: OWNERS[usize::from(a.owner) % OWNERS.len()].to_owned(),
        expires_at: a.expiry.map(u64::from),
        scopes: a
            .scopes
            .iter()
            .map(|&s| SCOPES[usize::from(s) % SCOPES.len()].to_owned())
            .collect(),
        resources: a
            .resources
            .iter()
            .map(|&r| RESOURCES[usize::from(r) % RESOURCES.len()].to_owned())
            .collect(),
    }
}

/// The model: what the set must hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Model {
    revision: Option<u64>,
    keys: BTreeMap<Digest, KeyEntry>,
}

impl Model {
    fn resolve(&self, r: Rev) -> u64 {
        let cur = self.revision.unwrap_or(0);
        match r {
            Rev::Current => cur,
            Rev::After(n) => cur.saturating_add(1 + u64::from(n)),
            Rev::Before(n) => cur.saturating_sub(u64::from(n)),
            Rev::Exact(x) => x,
        }
    }

    /// What applying a valid message must do.
    fn apply(&mut self, msg: &Message) -> Result<u64, ApplyError> {
        match msg {
            Message::Snapshot(s) => {
                if self.revision.is_some_and(|cur| s.revision < cur) {
                    return Err(ApplyError::NotNewer);
                }
                self.keys = s.entries.iter().map(|e| (e.digest, e.clone())).collect();
                self.revision = Some(s.revision);
                Ok(s.revision)
            }
            Message::Delta(d) => {
                if self.revision.is_some_and(|cur| d.revision <= cur) {
                    return Err(ApplyError::NotNewer);
                }
                if self.revision != Some(d.base_revision) {
                    return Err(ApplyError::BaseMismatch {
                        current: self.revision,
                        base: d.base_revision,
                    });
                }
                for u in &d.upserts {
                    self.keys.insert(u.digest, u.clone());
                }
                for r in &d.removals {
                    self.keys.remove(r);
                }
                self.revision = Some(d.revision);
                Ok(d.revision)
            }
        }
    }
}

/// Whether the set holds exactly the model. `probes` are digests to look up besides the
/// model's own (those not in the model must be absent).
fn assert_agrees(set: &KeySet, model: &Model, probes: &[Digest]) {
    assert_eq!(
        set.revision(),
        model.revision,
        "revision differs from the model"
    );
    assert_eq!(set.len(), model.keys.len(), "length differs from the model");
    assert_eq!(set.is_empty(), model.keys.is_empty());
    for (d, e) in &model.keys {
        let k = set
            .lookup(d)
            .unwrap_or_else(|| panic!("model key {d} missing from the set"));
        assert_eq!(k.digest(), *d);
        assert_eq!(k.key_id(), e.key_id);
        assert_eq!(k.owner(), e.owner);
        assert_eq!(k.expires_at(), e.expires_at);
        assert!(
            k.scopes().eq(e.scopes.iter().map(String::as_str)),
            "scopes differ"
        );
        assert!(
            k.resources().eq(e.resources.iter().map(String::as_str)),
            "resources differ"
        );
    }
    for p in probes {
        if !model.keys.contains_key(p) {
            assert!(
                set.lookup(p).is_none(),
                "removed or never-added key {p} found"
            );
        }
    }
    let snapshot = wire::decode(&set.encode_snapshot()).expect("encode_snapshot decodes");
    let expected = Message::Snapshot(Snapshot {
        revision: model.revision.unwrap_or(0),
        entries: model.keys.values().cloned().collect(),
    });
    assert_eq!(snapshot, expected, "encode_snapshot differs from the model");
}

/// Applies bytes and checks the outcome against the model.
fn step_bytes(set: &mut KeySet, model: &mut Model, bytes: &[u8]) {
    let before = model.clone();
    let got = set.apply(bytes);
    match wire::decode(bytes) {
        Err(e) => {
            assert_eq!(got, Err(ApplyError::Decode(e)));
        }
        Ok(msg) => {
            let want = model.apply(&msg);
            match (&got, &want) {
                (Ok(a), Ok(rev)) => assert_eq!(a.revision, *rev),
                (Err(g), Err(w)) => assert_eq!(g, w),
                _ => panic!("apply gave {got:?}, the model {want:?}"),
            }
        }
    }
    if got.is_err() {
        assert_eq!(*model, before, "model changed on error");
    }
}

fn step_message(set: &mut KeySet, model: &mut Model, msg: Message, as_message: bool) {
    match msg.encode() {
        Err(e) => {
            let got = set.apply_message(msg);
            assert_eq!(
                got,
                Err(ApplyError::Encode(e)),
                "an unencodable message was applied"
            );
        }
        Ok(_) if as_message => {
            let mut m = model.clone();
            let want = m.apply(&msg);
            let got = set.apply_message(msg);
            match (&got, &want) {
                (Ok(a), Ok(rev)) => assert_eq!(a.revision, *rev),
                (Err(g), Err(w)) => assert_eq!(g, w),
                _ => panic!("apply_message gave {got:?}, the model {want:?}"),
            }
            *model = m;
        }
        Ok(bytes) => step_bytes(set, model, &bytes),
    }
}

fn bulk_digest(seed: u32, i: u32) -> Digest {
    let mut h = sha2::Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(i.to_le_bytes());
    Digest::from_bytes(h.finalize().into())
}

/// The fuzz target.
pub fn check(program: &Program) {
    let mut set = KeySet::new();
    let mut model = Model::default();
    let mut probes: Vec<Digest> = Vec::new();
    for step in program.steps.iter().take(64) {
        match step {
            Step::Snapshot {
                revision,
                entries,
                as_message,
            } => {
                let s = Snapshot {
                    revision: model.resolve(*revision),
                    entries: entries.iter().take(300).map(entry).collect(),
                };
                probes.extend(s.entries.iter().map(|e| e.digest));
                step_message(&mut set, &mut model, Message::Snapshot(s), *as_message);
            }
            Step::Delta {
                base,
                step,
                upserts,
                removals,
                as_message,
            } => {
                let base_revision = model.resolve(*base);
                let d = Delta {
                    base_revision,
                    revision: base_revision.saturating_add(1 + u64::from(*step)),
                    upserts: upserts.iter().take(300).map(entry).collect(),
                    removals: removals.iter().take(300).map(|&r| pool_digest(r)).collect(),
                };
                probes.extend(d.upserts.iter().map(|e| e.digest));
                probes.extend(d.removals.iter().copied());
                step_message(&mut set, &mut model, Message::Delta(d), *as_message);
            }
            Step::Bulk {
                count,
                seed,
                remove_every,
            } => {
                if model.keys.len() > 20_000 {
                    continue;
                }
                let cur = model.revision.unwrap_or(0);
                let upserts: Vec<KeyEntry> = (0..u32::from(*count % 6000))
                    .map(|i| KeyEntry {
                        policy: Default::default(),
                        digest: bulk_digest(*seed, i),
                        key_id: KeyId::from_bytes([(i % 251) as u8; 16]),
                        owner: OWNERS[(i % 4) as usize].to_owned(),
                        expires_at: (i % 3 == 0).then_some(1_900_000_000 + u64::from(i)),
                        scopes: vec![SCOPES[(i % 5) as usize].to_owned()],
                        resources: Vec::new(),
                    })
                    .collect();
                let removals: Vec<Digest> = if *remove_every == 0 {
                    Vec::new()
                } else {
                    model
                        .keys
                        .keys()
                        .step_by(usize::from(*remove_every))
                        .filter(|d| !upserts.iter().any(|u| u.digest == **d))
                        .copied()
                        .collect()
                };
                probes.extend(removals.iter().copied());
                probes.extend(upserts.iter().step_by(97).map(|e| e.digest));
                let d = Delta {
                    base_revision: cur,
                    revision: cur.saturating_add(1),
                    upserts,
                    removals,
                };
                step_message(&mut set, &mut model, Message::Delta(d), false);
            }
            Step::Corrupt {
                delta,
                entries,
                at,
                xor,
                fix_crc,
            } => {
                let cur = model.revision.unwrap_or(0);
                let entries: Vec<KeyEntry> = entries.iter().take(50).map(entry).collect();
                let msg = if *delta {
                    Message::Delta(Delta {
                        base_revision: cur,
                        revision: cur.saturating_add(1),
                        upserts: entries,
                        removals: Vec::new(),
                    })
                } else {
                    Message::Snapshot(Snapshot {
                        revision: cur.saturating_add(1),
                        entries,
                    })
                };
                let Ok(mut bytes) = msg.encode() else {
                    continue;
                };
                let i = usize::from(*at) % bytes.len();
                bytes[i] ^= if *xor == 0 { 1 } else { *xor };
                if *fix_crc && let Some(fixed) = crate::with_fixed_crc(&bytes) {
                    bytes = fixed;
                }
                step_bytes(&mut set, &mut model, &bytes);
            }
            Step::Raw(bytes) => step_bytes(&mut set, &mut model, bytes),
        }
        if probes.len() > 4096 {
            probes.drain(..2048);
        }
        assert_agrees(&set, &model, &probes);
    }
}
