//! The webhook outbox: an event written with the audit row of the change that raises it, in
//! that change's transaction (so no event is lost or invented across a crash or a database
//! outage), fanned out to a message per subscribed endpoint; the delivery task's leases on due
//! messages, and each attempt's log row with the message's next state.

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Row, Transaction, Type};
use uuid::Uuid;

use super::{AuditEntry, Db, Engine, on_db};
use crate::domain::webhooks::{EventFacts, event_for_action, event_payload};

/// Writes `e`'s event, if its action raises one and an endpoint subscribes to it, inside the
/// caller's transaction: one message per subscribed endpoint (the admin's, and the key's
/// workspace's), due at once, and the event row they share.
pub(crate) async fn enqueue<DB>(
    tx: &mut Transaction<'_, DB>,
    e: &AuditEntry<'_>,
) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
{
    let Some(event_type) = event_for_action(e.action) else {
        return Ok(());
    };
    let id = format!("msg_{}", Uuid::now_v7().simple());
    let subscribers: i64 = sqlx::query_scalar::<DB, i64>(
        "SELECT COUNT(*) FROM webhook_subscriptions s JOIN webhook_endpoints p ON p.id = s.endpoint_id \
         WHERE s.event_type = $1 AND (p.workspace_id IS NULL OR p.workspace_id = $2)",
    )
    .bind(event_type.to_owned())
    .bind(e.workspace_id.map(str::to_owned))
    .fetch_one(&mut **tx)
    .await?;
    if subscribers == 0 {
        return Ok(());
    }
    sqlx::query::<DB>(
        "INSERT INTO webhook_messages (event_id, endpoint_id, state, attempts, next_attempt_at) \
         SELECT $1, s.endpoint_id, 'pending', 0, $2 FROM webhook_subscriptions s \
         JOIN webhook_endpoints p ON p.id = s.endpoint_id \
         WHERE s.event_type = $3 AND (p.workspace_id IS NULL OR p.workspace_id = $4)",
    )
    .bind(id.clone())
    .bind(e.at.saturating_mul(1000))
    .bind(event_type.to_owned())
    .bind(e.workspace_id.map(str::to_owned))
    .execute(&mut **tx)
    .await?;
    let timestamp = time::OffsetDateTime::from_unix_timestamp(e.at)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let payload = event_payload(&EventFacts {
        id: &id,
        event_type,
        timestamp: &timestamp,
        action: e.action,
        actor: e.actor,
        workspace_id: e.workspace_id,
        key: e.after.as_ref().or(e.before.as_ref()),
        reason: e.reason,
    });
    sqlx::query::<DB>(
        "INSERT INTO webhook_events (id, event_type, workspace_id, payload, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(event_type.to_owned())
    .bind(e.workspace_id.map(str::to_owned))
    .bind(payload.to_string())
    .bind(e.at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A message leased for delivery. Holds the endpoint's signing secret: no `Debug`.
pub struct Due {
    /// The event id (`webhook-id`).
    pub event_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// The event's JSON body.
    pub payload: String,
    /// Where to send it.
    pub url: String,
    /// The endpoint's `whsec_…` secret.
    pub secret: String,
}

/// How an attempt ended, for the log and the message's next state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    /// The receiver's status, when it answered.
    pub status_code: Option<i64>,
    /// Why it failed (connection, timeout, a non-2xx status), none when delivered.
    pub error: Option<String>,
    /// How long it took, milliseconds.
    pub duration_ms: i64,
}

/// What to do with a message after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextState {
    /// Delivered: done.
    Delivered,
    /// Try again at this unix millisecond.
    RetryAt(i64),
    /// Out of attempts.
    Failed,
}

impl Db {
    /// Leases up to `limit` messages due at `now_ms` until `lease_until_ms`: a message another
    /// sender (a replica) leased first is skipped. A sender that dies leaves its messages to be
    /// leased again when the lease runs out (at-least-once).
    pub async fn lease_due_messages(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<Due>, sqlx::Error> {
        on_db!(self, p => {
            let rows = sqlx::query(
                "SELECT m.event_id, m.endpoint_id, m.attempts, m.next_attempt_at, ev.payload, ep.url, ep.secret \
                 FROM webhook_messages m JOIN webhook_events ev ON ev.id = m.event_id \
                 JOIN webhook_endpoints ep ON ep.id = m.endpoint_id \
                 WHERE m.state = 'pending' AND m.next_attempt_at <= $1 \
                 ORDER BY m.next_attempt_at LIMIT $2",
            )
            .bind(now_ms).bind(limit).fetch_all(p).await?;
            let mut due = Vec::with_capacity(rows.len());
            for r in rows {
                let event_id: String = r.try_get("event_id")?;
                let endpoint_id: String = r.try_get("endpoint_id")?;
                let was: i64 = r.try_get("next_attempt_at")?;
                let leased = sqlx::query(
                    "UPDATE webhook_messages SET next_attempt_at = $1 WHERE event_id = $2 \
                     AND endpoint_id = $3 AND state = 'pending' AND next_attempt_at = $4",
                )
                .bind(lease_until_ms).bind(event_id.clone()).bind(endpoint_id.clone()).bind(was)
                .execute(p).await?.rows_affected();
                if leased == 1 {
                    due.push(Due {
                        event_id,
                        endpoint_id,
                        attempts: r.try_get("attempts")?,
                        payload: r.try_get("payload")?,
                        url: r.try_get("url")?,
                        secret: r.try_get("secret")?,
                    });
                }
            }
            Ok(due)
        })
    }

    /// Logs attempt `due.attempts + 1` made at `at_ms` and moves its message to `next`, in one
    /// transaction.
    pub async fn record_attempt(
        &self,
        due: &Due,
        at_ms: i64,
        outcome: &AttemptOutcome,
        next: NextState,
    ) -> Result<(), sqlx::Error> {
        let attempt = due.attempts + 1;
        let (state, next_at) = match next {
            NextState::Delivered => ("delivered", at_ms),
            NextState::RetryAt(t) => ("pending", t),
            NextState::Failed => ("failed", at_ms),
        };
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "INSERT INTO webhook_attempts (event_id, endpoint_id, attempt, at, status_code, error, duration_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(due.event_id.clone()).bind(due.endpoint_id.clone()).bind(attempt).bind(at_ms)
            .bind(outcome.status_code).bind(outcome.error.clone()).bind(outcome.duration_ms)
            .execute(&mut *tx).await?;
            sqlx::query(
                "UPDATE webhook_messages SET state = $1, attempts = $2, next_attempt_at = $3 \
                 WHERE event_id = $4 AND endpoint_id = $5 AND state = 'pending'",
            )
            .bind(state).bind(attempt).bind(next_at)
            .bind(due.event_id.clone()).bind(due.endpoint_id.clone())
            .execute(&mut *tx).await?;
            tx.commit().await
        })
    }
}
