//! `wire_decode`: `wire::decode` never panics; a decoded message re-encodes, and
//! decode → encode → decode is the identity; `peek_header` and `KeySet::apply` agree with it.

use keygate_protocol::keyset::{ApplyError, KeySet};
use keygate_protocol::wire::{self, Message, MessageKind};

/// The fuzz target: the input as it is, then with its CRC trailer rewritten (so mutations reach
/// the checks behind the checksum).
pub fn check(data: &[u8]) {
    check_bytes(data);
    if let Some(fixed) = crate::with_fixed_crc(data) {
        check_bytes(&fixed);
    }
}

fn check_bytes(bytes: &[u8]) {
    let decoded = wire::decode(bytes);
    let mut set = KeySet::new();
    let applied = set.apply(bytes);
    match decoded {
        Err(e) => {
            assert!(!e.code().is_empty());
            assert_eq!(
                applied,
                Err(ApplyError::Decode(e)),
                "apply and decode disagree"
            );
            assert_eq!(set.revision(), None, "a failed apply changed the set");
            assert!(set.is_empty());
        }
        Ok(msg) => check_decoded(bytes, &msg, applied, &set),
    }
}

fn check_decoded(
    bytes: &[u8],
    msg: &Message,
    applied: Result<keygate_protocol::keyset::Applied, ApplyError>,
    set: &KeySet,
) {
    let h = wire::peek_header(bytes).expect("peek_header accepts what decode accepts");
    assert_eq!(h.revision, msg.revision());
    assert_eq!(h.message_len(), bytes.len() as u64);
    let entries = match msg {
        Message::Snapshot(s) => {
            assert_eq!(h.kind, MessageKind::Snapshot);
            assert_eq!(h.base_revision, None);
            &s.entries
        }
        Message::Delta(d) => {
            assert_eq!(h.kind, MessageKind::Delta);
            assert_eq!(h.base_revision, Some(d.base_revision));
            assert!(
                d.revision > d.base_revision,
                "delta revision not after its base"
            );
            assert!(
                d.removals.windows(2).all(|w| w[0] < w[1]),
                "removals not sorted"
            );
            assert!(
                d.removals
                    .iter()
                    .all(|r| !d.upserts.iter().any(|u| u.digest == *r)),
                "a digest both upserted and removed"
            );
            &d.upserts
        }
    };
    assert!(
        entries.windows(2).all(|w| w[0].digest < w[1].digest),
        "entries not strictly sorted by digest"
    );
    for e in entries {
        assert!(
            e.expires_at
                .is_none_or(|x| x >= 1 && x <= u64::from(u32::MAX))
        );
        assert!(e.scopes.len() <= keygate_protocol::scope::MAX_SCOPES_PER_KEY);
        assert!(e.resources.len() <= keygate_protocol::scope::MAX_RESOURCES_PER_KEY);
    }

    let encoded = msg.encode().expect("a decoded message re-encodes");
    let again = wire::decode(&encoded).expect("a re-encoded message decodes");
    assert_eq!(&again, msg, "decode → encode → decode is not the identity");
    assert_eq!(
        again.encode().as_ref(),
        Ok(&encoded),
        "encoding is not canonical"
    );

    match msg {
        Message::Snapshot(s) => {
            let a = applied.expect("an empty set takes any valid snapshot");
            assert_eq!(a.revision, s.revision);
            assert_eq!(set.revision(), Some(s.revision));
            assert_eq!(set.len(), s.entries.len());
            for e in &s.entries {
                let k = set.lookup(&e.digest).expect("every snapshot key is found");
                assert_eq!(k.key_id(), e.key_id);
                assert_eq!(k.owner(), e.owner);
                assert_eq!(k.expires_at(), e.expires_at);
                assert!(k.scopes().eq(e.scopes.iter().map(String::as_str)));
                assert!(k.resources().eq(e.resources.iter().map(String::as_str)));
            }
            assert_eq!(
                set.encode_snapshot(),
                encoded,
                "KeySet::encode_snapshot differs from Snapshot::encode for equal contents"
            );
        }
        Message::Delta(d) => {
            assert_eq!(
                applied,
                Err(ApplyError::BaseMismatch {
                    current: None,
                    base: d.base_revision
                })
            );
            assert_eq!(set.revision(), None);
        }
    }
}
