//! Rate-limited notices (issue 28.4): an edge's usage report that counts refusals for a key
//! (`429 rate_limited`) raises `key.rate_limited` at most once per key per period (an hour by
//! default), with the refusals of the report that raised it. Here: the action, who raises it,
//! and what the audit row's reason (and the event's `data.rate_limited`) says.

use serde_json::{Value, json};

use super::key::Actor;

/// The audit action (and webhook event type) of a rate-limited notice.
pub const RATE_LIMITED_ACTION: &str = "key.rate_limited";

/// The control plane's own actor for rate-limited notices.
pub fn limits_actor() -> Actor {
    Actor {
        id: "keygate".into(),
        name: "limits".into(),
        display_prefix: "keygate".into(),
    }
}

/// The audit row's reason (JSON text): the refusals the report counted, and the period.
pub fn reason(limited: i64, every_s: i64) -> String {
    json!({"limited": limited, "period_s": every_s}).to_string()
}

/// The facts of a `key.rate_limited` audit reason, for the event's `data.rate_limited`.
pub fn details(reason: Option<&str>) -> Option<Value> {
    serde_json::from_str::<Value>(reason?)
        .ok()
        .filter(Value::is_object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_round_trips() {
        let v = details(Some(&reason(7, 3600))).unwrap();
        assert_eq!(v["limited"], 7);
        assert_eq!(v["period_s"], 3600);
        assert!(details(None).is_none());
    }
}
