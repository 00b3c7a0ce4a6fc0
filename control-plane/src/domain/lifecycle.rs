//! Lifecycle changes as data: what a change does to a key ([`Plan`]) and what a parent's change
//! does to its exchanged children ([`Cascade`]). Decided here; the store only applies them.

use super::key::KeyRecord;
use super::{Action, KeyStatus, RuleError, transition};

/// What a lifecycle change does, decided by the caller's pure closure from the current record.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The record after the change.
    pub new: KeyRecord,
    /// A rotated-out digest and the end of its grace period.
    pub retire: Option<([u8; 32], i64)>,
    /// What happens to the key's exchanged children.
    pub cascade: Option<Cascade>,
}

/// The plan of a status change (suspend, reactivate, revoke) of `old` at `now`: the transition
/// rule, and the cascade to its exchanged children.
///
/// # Errors
/// The transition is not allowed from the key's status.
pub fn status_plan(old: &KeyRecord, action: Action, now: i64) -> Result<Plan, RuleError> {
    let mut new = old.clone();
    new.status = transition(old.status, action)?;
    new.updated_at = now;
    new.suspended_by_parent = false;
    let cascade = match action {
        Action::Suspend => Some(Cascade::Suspend),
        Action::Reactivate => Some(Cascade::Reactivate),
        Action::Revoke => {
            new.revoked_at = Some(now);
            Some(Cascade::Revoke)
        }
        _ => None,
    };
    Ok(Plan {
        new,
        retire: None,
        cascade,
    })
}

/// The effect of a parent's change on its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cascade {
    /// Suspend active children (marked as suspended by their parent).
    Suspend,
    /// Reactivate children that the parent's suspension suspended.
    Reactivate,
    /// Revoke every child not yet revoked.
    Revoke,
}

impl Cascade {
    /// Whether the cascade changes `child` (a key whose parent had the change).
    pub fn applies_to(self, child: &KeyRecord) -> bool {
        match self {
            Self::Suspend => child.status == KeyStatus::Active,
            Self::Reactivate => child.status == KeyStatus::Suspended && child.suspended_by_parent,
            Self::Revoke => child.status != KeyStatus::Revoked,
        }
    }

    /// `child` after the cascade at `now`.
    pub fn apply(self, child: &KeyRecord, now: i64) -> KeyRecord {
        let mut after = child.clone();
        after.updated_at = now;
        match self {
            Self::Suspend => {
                after.status = KeyStatus::Suspended;
                after.suspended_by_parent = true;
            }
            Self::Reactivate => {
                after.status = KeyStatus::Active;
                after.suspended_by_parent = false;
            }
            Self::Revoke => {
                after.status = KeyStatus::Revoked;
                after.revoked_at = Some(now);
            }
        }
        after
    }

    /// The audit action recorded on each changed child.
    pub fn child_action(self) -> &'static str {
        match self {
            Self::Suspend => "key.suspend",
            Self::Reactivate => "key.reactivate",
            Self::Revoke => "key.revoke",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::KeyKind;
    use crate::domain::key::Actor;

    fn child(status: KeyStatus, suspended_by_parent: bool) -> KeyRecord {
        KeyRecord {
            id: uuid::Uuid::nil(),
            workspace_id: "default".into(),
            name: "child".into(),
            description: String::new(),
            kind: KeyKind::Repo,
            display_prefix: "kg_abcdefgh".into(),
            digest: [0; 32],
            hash_version: 1,
            scopes: vec![],
            resources: vec![],
            status,
            suspended_by_parent,
            expires_at: None,
            created_at: 1,
            updated_at: 1,
            last_used_at: None,
            usage_count: 0,
            revoked_at: None,
            created_by: Actor {
                id: "admin".into(),
                name: "admin".into(),
                display_prefix: "kg_admin".into(),
            },
            owner_id: "o".into(),
            metadata: serde_json::json!({}),
            parent_id: Some(uuid::Uuid::nil()),
            subject: None,
            limits: None,
            credits: None,
        }
    }

    #[test]
    fn a_parents_suspension_reaches_only_active_children_and_marks_them() {
        let c = Cascade::Suspend;
        assert!(c.applies_to(&child(KeyStatus::Active, false)));
        assert!(!c.applies_to(&child(KeyStatus::Suspended, false)));
        assert!(!c.applies_to(&child(KeyStatus::Revoked, false)));
        let after = c.apply(&child(KeyStatus::Active, false), 9);
        assert_eq!(
            (after.status, after.suspended_by_parent, after.updated_at),
            (KeyStatus::Suspended, true, 9)
        );
    }

    #[test]
    fn reactivation_brings_back_only_children_the_parent_suspended() {
        let c = Cascade::Reactivate;
        assert!(c.applies_to(&child(KeyStatus::Suspended, true)));
        assert!(!c.applies_to(&child(KeyStatus::Suspended, false)));
        assert!(!c.applies_to(&child(KeyStatus::Active, false)));
        let after = c.apply(&child(KeyStatus::Suspended, true), 9);
        assert_eq!(
            (after.status, after.suspended_by_parent),
            (KeyStatus::Active, false)
        );
    }

    #[test]
    fn revocation_reaches_every_child_not_yet_revoked() {
        let c = Cascade::Revoke;
        assert!(c.applies_to(&child(KeyStatus::Active, false)));
        assert!(c.applies_to(&child(KeyStatus::Suspended, false)));
        assert!(!c.applies_to(&child(KeyStatus::Revoked, false)));
        let after = c.apply(&child(KeyStatus::Active, false), 9);
        assert_eq!(
            (after.status, after.revoked_at),
            (KeyStatus::Revoked, Some(9))
        );
        assert_eq!(c.child_action(), "key.revoke");
    }
}
