//! Decoding stored rows into domain records, generic over the engine.

use sqlx::{ColumnIndex, Database, Decode, Row, Type};
use uuid::Uuid;

use crate::domain::credits::Credits;
use crate::domain::key::{Actor, KeyRecord};
use crate::domain::limits::Limits;
use crate::domain::{KeyKind, KeyStatus};

/// A `keys` row (the columns of `key_cols!`) as a [`KeyRecord`].
pub(crate) fn key_from_row<R>(row: &R) -> Result<KeyRecord, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    R::Database: Database,
{
    let bad = |what: &str| sqlx::Error::Decode(format!("bad stored {what}").into());
    let id: Vec<u8> = row.try_get("id")?;
    let digest: Vec<u8> = row.try_get("digest")?;
    let parent: Option<Vec<u8>> = row.try_get("parent_id")?;
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    let scopes: String = row.try_get("scopes")?;
    let resources: String = row.try_get("resources")?;
    let metadata: String = row.try_get("metadata")?;
    let limits: Option<String> = row.try_get("limits")?;
    let limits = match limits {
        Some(t) => Some(Limits::from_stored(&t).ok_or_else(|| bad("limits"))?),
        None => None,
    };
    let interval: Option<String> = row.try_get("refill_interval")?;
    let credits = Credits::from_columns(
        row.try_get("credits_remaining")?,
        row.try_get("refill_amount")?,
        interval.as_deref(),
        row.try_get("next_refill_at")?,
    );
    Ok(KeyRecord {
        id: Uuid::from_slice(&id).map_err(|_| bad("id"))?,
        workspace_id: row.try_get("workspace_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        kind: KeyKind::parse(&kind).ok_or_else(|| bad("kind"))?,
        display_prefix: row.try_get("display_prefix")?,
        digest: digest.try_into().map_err(|_| bad("digest"))?,
        hash_version: row.try_get("hash_version")?,
        scopes: serde_json::from_str(&scopes).map_err(|_| bad("scopes"))?,
        resources: serde_json::from_str(&resources).map_err(|_| bad("resources"))?,
        status: KeyStatus::parse(&status).ok_or_else(|| bad("status"))?,
        suspended_by_parent: row.try_get::<i64, _>("suspended_by_parent")? != 0,
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        last_used_at: row.try_get("last_used_at")?,
        usage_count: row.try_get("usage_count")?,
        revoked_at: row.try_get("revoked_at")?,
        created_by: Actor {
            id: row.try_get("created_by_id")?,
            name: row.try_get("created_by_name")?,
            display_prefix: row.try_get("created_by_prefix")?,
        },
        owner_id: row.try_get("owner_id")?,
        metadata: serde_json::from_str(&metadata).map_err(|_| bad("metadata"))?,
        parent_id: match parent {
            Some(p) => Some(Uuid::from_slice(&p).map_err(|_| bad("parent_id"))?),
            None => None,
        },
        subject: row.try_get("subject")?,
        limits,
        credits,
    })
}
