//! The edge registry at run time: what each edge's key-set call reports is written to the
//! database only when `domain::edges::must_write` says so (this process remembers what it last
//! wrote per edge), the fleet is read back with each edge's lag and state, and a key write can
//! wait until every edge that is not `gone` has applied its revision.
//!
//! **Write bound.** Per replica and edge: one write per heartbeat (default 15 s) while it polls,
//! plus one per revision it applies (an edge polls at most 10 times a second, so under churn at
//! most 10 a second, and one per change otherwise). A fleet of 1,000 long-polling edges at rest
//! costs about 1,000 / 15 ≈ 67 writes a second per replica, whatever the poll rate.
//!
//! **Waiting** is event-driven: every registry write (here, or on another replica through
//! PostgreSQL `NOTIFY keygate_edges`) wakes the waiters, who re-read the registry; a slow
//! re-read ([`WAIT_RECHECK`]) covers a lost notification.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::edges::{self, EdgeRules, EdgeState, Lag};
use crate::domain::key::format_key_id;
use crate::storage::Db;
use crate::storage::edges::{EdgeReport, EdgeRow};

/// How often a waiter re-reads the registry without a wake-up.
pub const WAIT_RECHECK: Duration = Duration::from_millis(250);

/// An edge as answers show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EdgeView {
    /// The edge's id (one per proxy process).
    pub edge_id: String,
    /// Envoy's `node.id`.
    pub node_id: Option<String>,
    /// Envoy's `node.cluster`.
    pub node_cluster: Option<String>,
    /// The peer address of its last written call.
    pub address: Option<String>,
    /// The edge key it uses (`key_…`).
    pub edge_key_id: Option<String>,
    /// The revision it holds.
    pub applied_revision: Option<i64>,
    /// Revisions it is behind the current one.
    pub lag_revisions: i64,
    /// Age of the oldest change it has not applied, seconds.
    pub lag_seconds: i64,
    /// `live`, `lagging` or `gone`.
    pub state: EdgeState,
    /// Keys in its set.
    pub key_count: Option<i64>,
    /// Milliseconds since its set's last successful sync, as it last reported.
    pub staleness_ms: Option<i64>,
    /// Workers in its process.
    pub workers: Option<i64>,
    /// The filter's version.
    pub version: Option<String>,
    /// First report, unix seconds.
    pub first_seen: i64,
    /// Last written report, unix seconds.
    pub last_seen: i64,
}

/// The fleet at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Fleet {
    /// The current key-set revision.
    pub revision: i64,
    /// Every edge in the registry.
    pub items: Vec<EdgeView>,
}

/// Whether one edge has applied a revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EdgePropagation {
    /// The edge.
    pub edge_id: String,
    /// Envoy's `node.id`.
    pub node_id: Option<String>,
    /// Its state.
    pub state: EdgeState,
    /// The revision it holds.
    pub applied_revision: Option<i64>,
    /// `applied` or `behind`.
    pub status: String,
}

/// Which edges (every one not `gone`) have applied a revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Propagation {
    /// The revision waited for.
    pub revision: i64,
    /// Whether every edge not `gone` has applied it.
    pub complete: bool,
    /// How long the answer waited, milliseconds.
    pub waited_ms: u64,
    /// Each edge not `gone`.
    pub edges: Vec<EdgePropagation>,
}

#[derive(Debug)]
struct Written {
    report: EdgeReport,
    at: i64,
}

/// The registry's writer and reader.
#[derive(Debug)]
pub struct Edges {
    rules: EdgeRules,
    written: Mutex<HashMap<String, Written>>,
}

/// Whether two reports differ in anything but the time (staleness grows on every call).
fn changed(a: &EdgeReport, b: &EdgeReport) -> bool {
    let strip = |r: &EdgeReport| EdgeReport {
        staleness_ms: None,
        ..r.clone()
    };
    strip(a) != strip(b)
}

impl Edges {
    /// A registry with these rules.
    pub fn new(rules: EdgeRules) -> Self {
        Self {
            rules,
            written: Mutex::new(HashMap::new()),
        }
    }

    /// The rules.
    pub fn rules(&self) -> &EdgeRules {
        &self.rules
    }

    /// Records `report` at `now`: written when `must_write` says so. Returns whether it was.
    pub async fn observe(
        &self,
        db: &Db,
        report: EdgeReport,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let write = {
            let map = self.written.lock().unwrap_or_else(|e| e.into_inner());
            let prev = map.get(&report.edge_id);
            edges::must_write(
                prev.map(|w| w.at),
                prev.is_some_and(|w| changed(&w.report, &report)),
                now,
                self.rules.heartbeat_s,
            )
        };
        if !write {
            return Ok(false);
        }
        db.upsert_edge(&report, now).await?;
        let mut map = self.written.lock().unwrap_or_else(|e| e.into_inner());
        // Forget edges silent past twice the gone time: the map holds the live fleet only.
        if map.len() >= 1024 && map.len().is_power_of_two() {
            let horizon = now - 2 * self.rules.gone_after_s;
            map.retain(|_, w| w.at >= horizon);
        }
        map.insert(report.edge_id.clone(), Written { report, at: now });
        Ok(true)
    }

    /// The fleet as the database has it at `now`.
    pub async fn fleet(&self, db: &Db, now: i64) -> Result<Fleet, sqlx::Error> {
        let revision = db.revision().await?;
        let rows = db.list_edges().await?;
        let oldest = rows
            .iter()
            .map(|r| r.report.applied_revision.unwrap_or(0))
            .min()
            .unwrap_or(revision);
        let times = if oldest < revision {
            db.revision_times_after(oldest).await?
        } else {
            Default::default()
        };
        let items = rows
            .into_iter()
            .map(|row| {
                let applied = row.report.applied_revision;
                let first_unapplied = times
                    .range(applied.unwrap_or(0) + 1..)
                    .next()
                    .map(|(_, at)| *at);
                let lag = edges::lag(revision, applied, first_unapplied, row.first_seen, now);
                let state = edges::state(&self.rules, row.last_seen, lag, now);
                view(row, lag, state)
            })
            .collect();
        Ok(Fleet { revision, items })
    }

    /// Which edges not `gone` have applied `revision`, now.
    pub async fn propagation(
        &self,
        db: &Db,
        revision: i64,
        now: i64,
    ) -> Result<Propagation, sqlx::Error> {
        Ok(propagation_of(&self.fleet(db, now).await?, revision))
    }

    /// Waits up to `wait` until every edge not `gone` has applied `revision` (woken by every
    /// registry write); the answer at that moment or at the deadline.
    pub async fn wait_applied(
        &self,
        db: &Db,
        revision: i64,
        wait: Duration,
    ) -> Result<Propagation, sqlx::Error> {
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + wait;
        let mut reports = db.subscribe_edge_reports();
        loop {
            reports.borrow_and_update();
            let mut p = self
                .propagation(db, revision, super::clock::unix_now())
                .await?;
            let over = tokio::time::Instant::now() >= deadline;
            if p.complete || over {
                p.waited_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                return Ok(p);
            }
            tokio::select! {
                _ = reports.changed() => {}
                _ = tokio::time::sleep(WAIT_RECHECK) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

fn view(row: EdgeRow, lag: Lag, state: EdgeState) -> EdgeView {
    let r = row.report;
    EdgeView {
        edge_id: r.edge_id,
        node_id: r.node_id,
        node_cluster: r.node_cluster,
        address: r.address,
        edge_key_id: r.edge_key_id.map(format_key_id),
        applied_revision: r.applied_revision,
        lag_revisions: lag.revisions,
        lag_seconds: lag.seconds,
        state,
        key_count: r.key_count,
        staleness_ms: r.staleness_ms,
        workers: r.workers,
        version: r.version,
        first_seen: row.first_seen,
        last_seen: row.last_seen,
    }
}

/// Which edges of `fleet` not `gone` have applied `revision`.
pub fn propagation_of(fleet: &Fleet, revision: i64) -> Propagation {
    let edges: Vec<EdgePropagation> = fleet
        .items
        .iter()
        .filter(|e| e.state != EdgeState::Gone)
        .map(|e| EdgePropagation {
            edge_id: e.edge_id.clone(),
            node_id: e.node_id.clone(),
            state: e.state,
            applied_revision: e.applied_revision,
            status: if edges::has_applied(e.applied_revision, revision) {
                "applied"
            } else {
                "behind"
            }
            .to_owned(),
        })
        .collect();
    Propagation {
        revision,
        complete: edges.iter().all(|e| e.status == "applied"),
        waited_ms: 0,
        edges,
    }
}

/// Appends the fleet's gauges to a Prometheus text body: edges by state, and the worst lag
/// (in revisions and in seconds) of the edges not `gone`.
pub fn render_metrics(fleet: &Fleet, o: &mut String) {
    let _ = writeln!(o, "# HELP keygate_edges Edges in the registry by state.");
    let _ = writeln!(o, "# TYPE keygate_edges gauge");
    for s in EdgeState::ALL {
        let n = fleet.items.iter().filter(|e| e.state == s).count();
        let _ = writeln!(o, "keygate_edges{{state=\"{}\"}} {n}", s.as_str());
    }
    let present = || fleet.items.iter().filter(|e| e.state != EdgeState::Gone);
    let worst_rev = present().map(|e| e.lag_revisions).max().unwrap_or(0);
    let worst_s = present().map(|e| e.lag_seconds).max().unwrap_or(0);
    let _ = writeln!(
        o,
        "# HELP keygate_edges_max_lag_revisions Largest lag in revisions of an edge not gone."
    );
    let _ = writeln!(o, "# TYPE keygate_edges_max_lag_revisions gauge");
    let _ = writeln!(o, "keygate_edges_max_lag_revisions {worst_rev}");
    let _ = writeln!(
        o,
        "# HELP keygate_edges_max_lag_seconds Largest lag in seconds of an edge not gone."
    );
    let _ = writeln!(o, "# TYPE keygate_edges_max_lag_seconds gauge");
    let _ = writeln!(o, "keygate_edges_max_lag_seconds {worst_s}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, rev: i64, staleness: i64) -> EdgeReport {
        EdgeReport {
            edge_id: id.into(),
            node_id: Some("n".into()),
            node_cluster: None,
            address: Some("127.0.0.1".into()),
            edge_key_id: None,
            applied_revision: Some(rev),
            key_count: Some(1),
            staleness_ms: Some(staleness),
            workers: Some(2),
            version: None,
        }
    }

    #[test]
    fn staleness_alone_is_not_a_change() {
        assert!(!changed(&report("a", 1, 5), &report("a", 1, 900)));
        assert!(changed(&report("a", 1, 5), &report("a", 2, 5)));
    }

    fn edge(id: &str, applied: Option<i64>, state: EdgeState) -> EdgeView {
        EdgeView {
            edge_id: id.into(),
            node_id: None,
            node_cluster: None,
            address: None,
            edge_key_id: None,
            applied_revision: applied,
            lag_revisions: 0,
            lag_seconds: 0,
            state,
            key_count: None,
            staleness_ms: None,
            workers: None,
            version: None,
            first_seen: 0,
            last_seen: 0,
        }
    }

    #[test]
    fn propagation_counts_every_edge_not_gone() {
        let fleet = Fleet {
            revision: 9,
            items: vec![
                edge("a", Some(9), EdgeState::Live),
                edge("b", Some(8), EdgeState::Lagging),
                edge("c", Some(1), EdgeState::Gone),
            ],
        };
        let p = propagation_of(&fleet, 9);
        assert!(!p.complete);
        let names: Vec<_> = p
            .edges
            .iter()
            .map(|e| (e.edge_id.as_str(), e.status.as_str()))
            .collect();
        assert_eq!(names, [("a", "applied"), ("b", "behind")]);
        assert!(propagation_of(&fleet, 8).complete);
        let mut out = String::new();
        render_metrics(&fleet, &mut out);
        assert!(out.contains("keygate_edges{state=\"gone\"} 1"), "{out}");
        assert!(out.contains("keygate_edges{state=\"live\"} 1"), "{out}");
    }
}
