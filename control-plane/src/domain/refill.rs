//! A refill as a lifecycle change: who the control plane's own credit changes are recorded
//! as, and the plan of a refill (the balance back to its amount, the next due time), refused
//! unless the key still has that refill due, read under the row lock.

use super::credits::Credits;
use super::key::{Actor, KeyRecord};
use super::lifecycle::Plan;

/// Who the control plane's own credit changes (exhaustion, refill) are recorded as.
pub fn credits_actor() -> Actor {
    Actor {
        id: "keygate".into(),
        name: "credits".into(),
        display_prefix: "keygate".into(),
    }
}

/// Why a refill plan did not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefillSkip {
    /// Another replica (or an earlier run) already made this refill, or the key's refill
    /// changed since it was found due.
    #[error("refill no longer due")]
    NotDue,
}

/// The plan of the refill that was due at `due`, seen at `now`: the balance back to the
/// refill's amount and the next refill on the schedule. Refused unless the key still has that
/// refill due at `due` (read under the row lock: so two replicas never both refill).
///
/// # Errors
/// [`RefillSkip::NotDue`].
pub fn refill_plan(old: &KeyRecord, due: i64, now: i64) -> Result<Plan, RefillSkip> {
    let Some(c) = old.credits else {
        return Err(RefillSkip::NotDue);
    };
    let (Some(refill), Some(next)) = (c.refill, c.next_refill_at) else {
        return Err(RefillSkip::NotDue);
    };
    if next != due || due > now {
        return Err(RefillSkip::NotDue);
    }
    let mut new = old.clone();
    new.credits = Some(Credits {
        remaining: refill.amount,
        refill: Some(refill),
        next_refill_at: Some(refill.interval.following(due, now)),
    });
    new.updated_at = now;
    Ok(Plan {
        new,
        retire: None,
        cascade: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::credits::{CreditsSpec, IntervalInput, RefillSpec};

    fn key(credits: Option<Credits>) -> KeyRecord {
        KeyRecord {
            id: uuid::Uuid::nil(),
            workspace_id: "default".into(),
            name: "metered".into(),
            description: String::new(),
            kind: crate::domain::KeyKind::Workspace,
            display_prefix: "kg_abcdefgh".into(),
            digest: [0; 32],
            hash_version: 1,
            scopes: vec![],
            resources: vec![],
            status: crate::domain::KeyStatus::Active,
            suspended_by_parent: false,
            expires_at: None,
            created_at: 1,
            updated_at: 1,
            last_used_at: None,
            usage_count: 0,
            revoked_at: None,
            created_by: credits_actor(),
            owner_id: "o".into(),
            metadata: serde_json::json!({}),
            parent_id: None,
            subject: None,
            limits: None,
            credits,
        }
    }

    #[test]
    fn a_refill_applies_once_per_due_time() {
        let spec = CreditsSpec {
            remaining: 0,
            refill: Some(RefillSpec {
                amount: 50,
                interval: IntervalInput::Seconds(10),
            }),
        };
        let c = Credits::parse(&spec, 100).unwrap();
        assert_eq!(c.next_refill_at, Some(110));
        let k = key(Some(c));
        assert_eq!(
            refill_plan(&k, 110, 109).unwrap_err(),
            RefillSkip::NotDue,
            "not yet"
        );
        let plan = refill_plan(&k, 110, 125).unwrap();
        let after = plan.new.credits.unwrap();
        assert_eq!((after.remaining, after.next_refill_at), (50, Some(130)));
        // Seen again (another replica, same due time): refused.
        assert_eq!(
            refill_plan(&plan.new, 110, 125).unwrap_err(),
            RefillSkip::NotDue
        );
        assert_eq!(
            refill_plan(&key(None), 110, 125).unwrap_err(),
            RefillSkip::NotDue
        );
    }
}
