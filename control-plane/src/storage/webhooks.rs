//! Webhook endpoints (their subscriptions, the signing secret that only the delivery task
//! reads back) and their delivery log, on SQLite and PostgreSQL.

use serde::Serialize;
use sqlx::Row;

use super::{Db, Engine, on_db};
use crate::domain::webhooks::EndpointSpec;

/// A registered endpoint as the API shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    /// `whep_<32 hex>`.
    pub id: String,
    /// Its workspace (`null`: the admin's, every workspace's events).
    pub workspace_id: Option<String>,
    /// Where events are sent.
    pub url: String,
    /// The event types it receives.
    pub event_types: Vec<String>,
    /// Free text.
    pub description: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// One delivery attempt, as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    /// Log row id (cursor; newest first).
    pub id: i64,
    /// The event (`webhook-id`).
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// 1 for the first attempt.
    pub attempt: i64,
    /// When, unix milliseconds.
    pub at_ms: i64,
    /// The receiver's status, when it answered.
    pub status_code: Option<i64>,
    /// Why it failed; none when delivered.
    pub error: Option<String>,
    /// How long it took, milliseconds.
    pub duration_ms: i64,
    /// Whether this attempt delivered the event (a 2xx answer).
    pub delivered: bool,
}

fn endpoint_from_row<R: Row>(r: &R) -> Result<Endpoint, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let types: String = r.try_get("event_types")?;
    Ok(Endpoint {
        id: r.try_get("id")?,
        workspace_id: r.try_get("workspace_id")?,
        url: r.try_get("url")?,
        event_types: serde_json::from_str(&types).unwrap_or_default(),
        description: r.try_get("description")?,
        created_at: r.try_get("created_at")?,
    })
}

impl Db {
    /// Registers an endpoint with its subscriptions, in one transaction.
    pub async fn insert_webhook_endpoint(
        &self,
        e: &Endpoint,
        spec: &EndpointSpec,
        secret: &str,
    ) -> Result<(), sqlx::Error> {
        let types = serde_json::Value::from(spec.event_types.clone()).to_string();
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "INSERT INTO webhook_endpoints (id, workspace_id, url, event_types, description, secret, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(e.id.clone()).bind(e.workspace_id.clone()).bind(spec.url.clone()).bind(types)
            .bind(spec.description.clone()).bind(secret.to_owned()).bind(e.created_at)
            .execute(&mut *tx).await?;
            for t in &spec.event_types {
                sqlx::query("INSERT INTO webhook_subscriptions (endpoint_id, event_type) VALUES ($1, $2)")
                    .bind(e.id.clone()).bind(t.clone()).execute(&mut *tx).await?;
            }
            tx.commit().await
        })
    }

    /// The endpoints `workspace` sees (`None`: all), oldest first.
    pub async fn webhook_endpoints(
        &self,
        workspace: Option<&str>,
    ) -> Result<Vec<Endpoint>, sqlx::Error> {
        on_db!(self, p => {
            let rows = sqlx::query(p.pick(
                "SELECT id, workspace_id, url, event_types, description, created_at FROM webhook_endpoints \
                 WHERE ($1 IS NULL OR workspace_id = $1) ORDER BY created_at, id",
                "SELECT id, workspace_id, url, event_types, description, created_at FROM webhook_endpoints \
                 WHERE ($1::text IS NULL OR workspace_id = $1) ORDER BY created_at, id",
            ))
            .bind(workspace.map(str::to_owned)).fetch_all(p).await?;
            rows.iter().map(endpoint_from_row).collect()
        })
    }

    /// One endpoint `workspace` sees (`None`: any).
    pub async fn webhook_endpoint(
        &self,
        id: &str,
        workspace: Option<&str>,
    ) -> Result<Option<Endpoint>, sqlx::Error> {
        Ok(self
            .webhook_endpoints(workspace)
            .await?
            .into_iter()
            .find(|e| e.id == id))
    }

    /// Deletes an endpoint `workspace` sees, with its subscriptions, undelivered messages and
    /// delivery log; false when there is none.
    pub async fn delete_webhook_endpoint(
        &self,
        id: &str,
        workspace: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let gone = sqlx::query(p.pick(
                "DELETE FROM webhook_endpoints WHERE id = $1 AND ($2 IS NULL OR workspace_id = $2)",
                "DELETE FROM webhook_endpoints WHERE id = $1 AND ($2::text IS NULL OR workspace_id = $2)",
            ))
            .bind(id.to_owned()).bind(workspace.map(str::to_owned))
            .execute(&mut *tx).await?.rows_affected();
            if gone == 0 {
                return Ok(false);
            }
            for table in [
                "DELETE FROM webhook_subscriptions WHERE endpoint_id = $1",
                "DELETE FROM webhook_messages WHERE endpoint_id = $1",
                "DELETE FROM webhook_attempts WHERE endpoint_id = $1",
            ] {
                sqlx::query(table).bind(id.to_owned()).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// An endpoint's delivery log, newest first, rows before `before` when given.
    pub async fn webhook_attempts(
        &self,
        endpoint: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Attempt>, sqlx::Error> {
        on_db!(self, p => {
            let rows = sqlx::query(
                "SELECT a.id, a.event_id, ev.event_type, a.attempt, a.at, a.status_code, a.error, a.duration_ms \
                 FROM webhook_attempts a JOIN webhook_events ev ON ev.id = a.event_id \
                 WHERE a.endpoint_id = $1 AND a.id < $2 ORDER BY a.id DESC LIMIT $3",
            )
            .bind(endpoint.to_owned()).bind(before.unwrap_or(i64::MAX)).bind(limit)
            .fetch_all(p).await?;
            rows.iter().map(|r| {
                let error: Option<String> = r.try_get("error")?;
                Ok(Attempt {
                    id: r.try_get("id")?,
                    event_id: r.try_get("event_id")?,
                    event_type: r.try_get("event_type")?,
                    attempt: r.try_get("attempt")?,
                    at_ms: r.try_get("at")?,
                    status_code: r.try_get("status_code")?,
                    delivered: error.is_none(),
                    error,
                    duration_ms: r.try_get("duration_ms")?,
                })
            }).collect()
        })
    }
}
