//! Edge-gone notices (issue 28.4): an edge of the registry that falls silent for longer than
//! `gone_after` raises `edge.gone` once per silence (keyed by the edge and the last time it was
//! seen, so an edge that comes back and goes again raises it again). Here: the action, who
//! raises it, and what the audit row's reason (and the event's `data.edge`) says.

use serde_json::{Value, json};

use super::key::Actor;

/// The audit action (and webhook event type) of an edge gone.
pub const EDGE_GONE_ACTION: &str = "edge.gone";

/// The control plane's own actor for edge-gone notices.
pub fn edges_actor() -> Actor {
    Actor {
        id: "keygate".into(),
        name: "edges".into(),
        display_prefix: "keygate".into(),
    }
}

/// What a gone edge was, as the audit row's reason (JSON text).
pub fn reason(
    edge_id: &str,
    node_id: Option<&str>,
    last_seen: i64,
    applied_revision: Option<i64>,
) -> String {
    json!({
        "edge_id": edge_id,
        "node_id": node_id,
        "last_seen": last_seen,
        "applied_revision": applied_revision,
    })
    .to_string()
}

/// The facts of an `edge.gone` audit reason, for the event's `data.edge`.
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
        let r = reason("e1", Some("n1"), 10, None);
        let v = details(Some(&r)).unwrap();
        assert_eq!(v["edge_id"], "e1");
        assert_eq!(v["node_id"], "n1");
        assert_eq!(v["last_seen"], 10);
        assert!(v["applied_revision"].is_null());
        assert!(details(Some("nope")).is_none());
    }
}
