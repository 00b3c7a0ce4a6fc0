//! Canary hits seen by this process: the hits the control plane sees itself (a canary presented
//! to verify, to forward-auth or as a caller's credential) written in the background, so the
//! caller's answer, the unknown key's, takes no longer than a lookup; and the counters of every
//! hit, `/metrics`' `keygate_canary_hits_total`.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use uuid::Uuid;

use crate::domain::KeyKind;
use crate::domain::canary::{Hit, HitSource};
use crate::domain::key::Actor;
use crate::runtime::clock::unix_now;
use crate::storage::Db;
use crate::storage::canary::Witness;

/// Where the control plane saw a canary: the request's path (without query), the client's
/// address and user agent, already cut to the hit report's bounds.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Path without query string.
    pub path: String,
    /// Client address.
    pub client: String,
    /// `User-Agent`.
    pub user_agent: String,
}

impl Seen {
    /// From a request's parts as the control plane received them.
    pub fn new(path: &str, client: &str, user_agent: Option<&str>) -> Self {
        use keygate_protocol::canary::{
            MAX_CLIENT_BYTES, MAX_USER_AGENT_BYTES, reported_path, truncate,
        };
        Self {
            path: reported_path(path).to_owned(),
            client: truncate(client, MAX_CLIENT_BYTES).to_owned(),
            user_agent: truncate(user_agent.unwrap_or(""), MAX_USER_AGENT_BYTES).to_owned(),
        }
    }
}

/// The hits' counters, and the control plane's own hits' writer.
#[derive(Debug, Default)]
pub struct Canaries {
    edge: AtomicU64,
    control_plane: AtomicU64,
    duplicate: AtomicU64,
    ignored: AtomicU64,
    failed: AtomicU64,
}

/// How a reported hit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Written (audit row and event).
    Written(HitSource),
    /// Its id was recorded before: nothing written.
    Duplicate,
    /// Its key is not a canary (or no longer exists): nothing written.
    Ignored,
    /// The write failed.
    Failed,
}

fn control_plane_actor() -> Actor {
    Actor {
        id: "control-plane".into(),
        name: "control plane".into(),
        display_prefix: String::new(),
    }
}

impl Canaries {
    /// Counts a hit's outcome.
    pub fn count(&self, r: Recorded) {
        match r {
            Recorded::Written(HitSource::Edge) => &self.edge,
            Recorded::Written(HitSource::ControlPlane) => &self.control_plane,
            Recorded::Duplicate => &self.duplicate,
            Recorded::Ignored => &self.ignored,
            Recorded::Failed => &self.failed,
        }
        .fetch_add(1, Relaxed);
    }

    /// Raises a hit the control plane saw itself on the canary `key`: read and written by a
    /// background task, so that the caller's answer does not wait on the database.
    pub fn raise(self: &Arc<Self>, db: &Db, key: Uuid, seen: Seen) {
        let (this, db) = (Arc::clone(self), db.clone());
        tokio::spawn(async move {
            let now = unix_now();
            let key = match db.get_key(key).await {
                Ok(Some(k)) if k.kind == KeyKind::Canary => k,
                Ok(_) => return this.count(Recorded::Ignored),
                Err(e) => {
                    tracing::error!(error = %e, "a canary hit's key could not be read");
                    return this.count(Recorded::Failed);
                }
            };
            let hit = Hit {
                id: None,
                key_id: key.id,
                at: now,
                path: seen.path,
                client: seen.client,
                user_agent: seen.user_agent,
            };
            let witness = Witness {
                source: HitSource::ControlPlane,
                edge_id: None,
                actor: &control_plane_actor(),
            };
            let r = match db.record_canary_hit(&hit, &key, &witness, now).await {
                Ok(_) => Recorded::Written(HitSource::ControlPlane),
                Err(e) => {
                    tracing::error!(error = %e, "a canary hit could not be written");
                    Recorded::Failed
                }
            };
            tracing::warn!(key = %crate::domain::key::format_key_id(key.id), path = %hit.path, client = %hit.client, "canary key presented to the control plane");
            this.count(r);
        });
    }

    /// Appends the counters in Prometheus text.
    pub fn render(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "# HELP keygate_canary_hits_total Canary key hits by outcome: written (by who saw it), duplicate (hit id seen before), ignored (not a canary), failed."
        );
        let _ = writeln!(o, "# TYPE keygate_canary_hits_total counter");
        for (label, c) in [
            ("edge", &self.edge),
            ("control_plane", &self.control_plane),
            ("duplicate", &self.duplicate),
            ("ignored", &self.ignored),
            ("failed", &self.failed),
        ] {
            let _ = writeln!(
                o,
                "keygate_canary_hits_total{{outcome=\"{label}\"}} {}",
                c.load(Relaxed)
            );
        }
    }
}
