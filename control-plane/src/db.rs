//! Storage: one enum with a variant per engine. Each engine has its own migrations; the
//! queries are runtime `sqlx::query` calls with binds (no compile-time checked macros, so CI
//! needs no database at build time). Where the two dialects agree the SQL text is shared and
//! the [`on_db!`] macro compiles the same body once per engine; where they differ (`GREATEST`
//! vs `max`, `FOR UPDATE`, `pg_notify`) each engine has its own statement.
//!
//! Every write is one transaction that also writes its audit row and, when the key set
//! changes, bumps the single revision counter row and logs the touched digests.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use uuid::Uuid;

use crate::domain::{KeyKind, KeyStatus};

/// The database: SQLite (embedded default) or PostgreSQL (several replicas on one database).
#[derive(Debug, Clone)]
pub enum Db {
    /// SQLite in WAL mode.
    Sqlite(sqlx::SqlitePool),
    /// PostgreSQL.
    Postgres(sqlx::PgPool),
}

/// Expands `$body` once per engine with `$pool` bound to the engine's pool.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_db;

/// Errors from opening or migrating the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is neither `sqlite:` nor `postgres://`.
    #[error("unsupported database url (use sqlite:<path> or postgres://…)")]
    UnsupportedUrl,
    /// sqlx failed.
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    /// A migration failed.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The GitHub broker configuration is invalid (a bad key file or URL).
    #[error("GitHub configuration: {0}")]
    Github(#[from] crate::github::ConfigError),
    /// The forward-auth configuration is invalid, or its first key set did not load.
    #[error(transparent)]
    ForwardAuth(#[from] crate::forward_auth::ForwardAuthError),
}

impl Db {
    /// Opens the database at `url` and runs the embedded migrations. SQLite files are created
    /// when missing and use WAL mode.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?;
            // While the database is unreachable every acquire waits this long before the
            // request fails with 503 `DATABASE_UNAVAILABLE`; keep it short so callers get an
            // answer rather than a hang. Idle connections are checked before use, so a
            // restarted database is picked up by itself.
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(3))
                .connect_with(opts)
                .await?;
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
            Ok(Self::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(opts)
                .await?;
            sqlx::migrate!("migrations/sqlite").run(&pool).await?;
            Ok(Self::Sqlite(pool))
        } else {
            Err(DbError::UnsupportedUrl)
        }
    }

    /// Whether this is the PostgreSQL engine.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_db!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))
    }

    /// Closes the pool.
    pub async fn close(&self) {
        on_db!(self, p => p.close().await)
    }
}

/// Who made a change: recorded on keys (`created_by`) and in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Actor {
    /// `admin` or a key id.
    pub id: String,
    /// The admin or the key's name.
    pub name: String,
    /// The display prefix of the credential used.
    pub display_prefix: String,
}

/// A stored key (never the secret).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    /// UUIDv7.
    pub id: Uuid,
    /// Owning workspace.
    pub workspace_id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Kind.
    pub kind: KeyKind,
    /// Display prefix (prefix plus 8 body characters).
    pub display_prefix: String,
    /// SHA-256 digest of the current secret.
    pub digest: [u8; 32],
    /// Version of the hash algorithm (1 = SHA-256 of the whole key).
    pub hash_version: i64,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Resource allow-list (empty = any).
    pub resources: Vec<String>,
    /// Status.
    pub status: KeyStatus,
    /// Suspended because its parent was (reactivated with it).
    pub suspended_by_parent: bool,
    /// Expiry, unix seconds.
    pub expires_at: Option<i64>,
    /// Creation time.
    pub created_at: i64,
    /// Last change time.
    pub updated_at: i64,
    /// Last use reported by verification or the edge.
    pub last_used_at: Option<i64>,
    /// Uses reported.
    pub usage_count: i64,
    /// Revocation time.
    pub revoked_at: Option<i64>,
    /// Creator.
    pub created_by: Actor,
    /// The caller's user or service id.
    pub owner_id: String,
    /// Small JSON object.
    pub metadata: serde_json::Value,
    /// Parent key (exchanged children).
    pub parent_id: Option<Uuid>,
    /// Subject recorded at exchange.
    pub subject: Option<String>,
}

/// The columns of `keys`, in the order [`key_from_row!`] reads them by name.
macro_rules! key_cols {
    () => {
        "id, workspace_id, name, description, kind, display_prefix, digest, hash_version, scopes, \
         resources, status, suspended_by_parent, expires_at, created_at, updated_at, last_used_at, \
         usage_count, revoked_at, created_by_id, created_by_name, created_by_prefix, owner_id, \
         metadata, parent_id, subject"
    };
}
pub(crate) use key_cols;

/// What differs between the engines, implemented on each pool type so that an [`on_db!`]
/// body can ask its pool.
pub(crate) trait Engine {
    /// Begins a write transaction: `BEGIN IMMEDIATE` on SQLite (take the write lock up front,
    /// so a read-then-write transaction never fails to upgrade), plain `BEGIN` on PostgreSQL.
    fn begin_write(
        &self,
    ) -> impl std::future::Future<
        Output = Result<sqlx::Transaction<'static, Self::Database>, sqlx::Error>,
    > + Send;
    /// The database type.
    type Database: sqlx::Database;
    /// Picks the statement for this engine.
    fn pick(&self, sqlite: &'static str, postgres: &'static str) -> &'static str;
}

impl Engine for sqlx::SqlitePool {
    type Database = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
    fn pick(&self, sqlite: &'static str, _postgres: &'static str) -> &'static str {
        sqlite
    }
}

impl Engine for sqlx::PgPool {
    type Database = sqlx::Postgres;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
    fn pick(&self, _sqlite: &'static str, postgres: &'static str) -> &'static str {
        postgres
    }
}

/// Decodes a `KEY_COLS` row of either engine.
macro_rules! key_from_row {
    ($row:expr) => {{
        let row = $row;
        (|| -> Result<$crate::db::KeyRecord, sqlx::Error> {
            let bad = |what: &str| sqlx::Error::Decode(format!("bad stored {what}").into());
            let id: Vec<u8> = row.try_get("id")?;
            let digest: Vec<u8> = row.try_get("digest")?;
            let parent: Option<Vec<u8>> = row.try_get("parent_id")?;
            let kind: String = row.try_get("kind")?;
            let status: String = row.try_get("status")?;
            let scopes: String = row.try_get("scopes")?;
            let resources: String = row.try_get("resources")?;
            let metadata: String = row.try_get("metadata")?;
            Ok($crate::db::KeyRecord {
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
                created_by: $crate::db::Actor {
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
            })
        })()
    }};
}
pub(crate) use key_from_row;

/// Filters and cursor for listing keys.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    /// Only this workspace (none = all, for the admin).
    pub workspace_id: Option<String>,
    /// Only this status.
    pub status: Option<KeyStatus>,
    /// Only this kind.
    pub kind: Option<KeyKind>,
    /// Only this owner.
    pub owner_id: Option<String>,
    /// Keys created after this id (cursor).
    pub after: Option<Uuid>,
    /// Page size.
    pub limit: i64,
}

/// An audit-log row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Monotonic id (cursor).
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Workspace concerned.
    pub workspace_id: Option<String>,
    /// Who.
    pub actor: Actor,
    /// What, e.g. `key.create`.
    pub action: String,
    /// Key concerned (`key_…`).
    pub key_id: Option<String>,
    /// State before (no secret).
    #[schema(value_type = Object)]
    pub before: Option<serde_json::Value>,
    /// State after (no secret).
    #[schema(value_type = Object)]
    pub after: Option<serde_json::Value>,
    /// Reason given (revocation) or exchange subject.
    pub reason: Option<String>,
}

/// An audit row to append inside a write transaction.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    /// Time.
    pub at: i64,
    /// Workspace.
    pub workspace_id: Option<&'a str>,
    /// Who.
    pub actor: &'a Actor,
    /// What.
    pub action: &'a str,
    /// Key concerned.
    pub key_id: Option<Uuid>,
    /// Before.
    pub before: Option<serde_json::Value>,
    /// After.
    pub after: Option<serde_json::Value>,
    /// Reason or subject.
    pub reason: Option<&'a str>,
}

/// Formats a key id as `key_<32 lowercase hex>`.
pub fn format_key_id(id: Uuid) -> String {
    keygate_protocol::KeyId::from_bytes(*id.as_bytes()).to_string()
}

/// Parses `key_<32 lowercase hex>`.
pub fn parse_key_id(s: &str) -> Option<Uuid> {
    let hex = s.strip_prefix("key_")?;
    if hex.len() != 32
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    Uuid::try_parse(hex).ok()
}
