//! Storage: one enum with a variant per engine. Each engine has its own migrations; the
//! queries are runtime `sqlx::query` calls with binds (no compile-time checked macros, so CI
//! needs no database at build time). Where the two dialects agree the SQL text is shared and
//! the [`on_db!`] macro compiles the same body once per engine; where they differ (`GREATEST`
//! vs `max`, `FOR UPDATE`, `pg_notify`) each engine has its own statement.
//!
//! Every write is one transaction that also writes its audit row and, when the key set
//! changes, bumps the single revision counter row and logs the touched digests; after the
//! commit the same write advances the store's revision watch ([`Db::subscribe_revisions`]),
//! which wakes long-polls and retires cached verifications. Errors are the store's own
//! ([`StoreError`]); the HTTP layer maps them to answers.

pub mod canary;
mod conditions;
pub mod console_sessions;
pub mod credits;
pub mod edge_gone;
pub mod edges;
pub mod error;
pub mod expiry;
pub mod github_repos;
mod key_writes;
pub mod keys;
pub mod keyset;
mod notice;
mod rate_limited;
pub mod rate_windows;
mod rows;
pub mod secret_scanning;
pub mod usage;
pub mod usage_history;
pub mod webhook_outbox;
pub mod webhook_retention;
pub mod webhooks;
mod write;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::sync::Arc;

use tokio::sync::watch;
use uuid::Uuid;

pub use error::StoreError;

use crate::domain::key::Actor;

/// The database, SQLite (embedded default) or PostgreSQL (several replicas on one database),
/// with the revision watch its writes advance. Cheap to clone: clones share the pool and the
/// watch.
#[derive(Debug, Clone)]
pub struct Db {
    pub(crate) pool: Pool,
    revision: Arc<watch::Sender<i64>>,
    /// Bumped by every edge-registry write, this process's or (PostgreSQL `NOTIFY`) another
    /// replica's: what propagation waits wake up on.
    edge_reports: Arc<watch::Sender<u64>>,
    /// Bumped when this process writes an event outside a key write (a canary hit, an audit row
    /// of its own): what wakes the webhook sender besides the revision watch and its poll.
    outbox: Arc<watch::Sender<u64>>,
}

/// One pool per engine.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    /// SQLite in WAL mode.
    Sqlite(sqlx::SqlitePool),
    /// PostgreSQL.
    Postgres(sqlx::PgPool),
}

/// Expands `$body` once per engine with `$pool` bound to the engine's pool.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match &$db.pool {
            $crate::storage::Pool::Sqlite($pool) => $body,
            $crate::storage::Pool::Postgres($pool) => $body,
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
            Self::opened(Pool::Postgres(pool)).await
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
            Self::opened(Pool::Sqlite(pool)).await
        } else {
            Err(DbError::UnsupportedUrl)
        }
    }

    async fn opened(pool: Pool) -> Result<Self, DbError> {
        let mut db = Self {
            pool,
            revision: Arc::new(watch::Sender::new(0)),
            edge_reports: Arc::new(watch::Sender::new(0)),
            outbox: Arc::new(watch::Sender::new(0)),
        };
        let revision = db.revision().await?;
        db.revision = Arc::new(watch::Sender::new(revision));
        Ok(db)
    }

    /// Whether this is the PostgreSQL engine.
    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// The PostgreSQL pool, for `LISTEN` (none on SQLite).
    pub fn postgres_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.pool {
            Pool::Postgres(p) => Some(p),
            Pool::Sqlite(_) => None,
        }
    }

    /// The newest key-set revision this process knows of (its own writes, and other
    /// replicas' once observed).
    pub fn known_revision(&self) -> i64 {
        *self.revision.borrow()
    }

    /// Records that the key set reached `revision`: called by every write after its commit,
    /// and by whatever learns of other replicas' writes (NOTIFY, a poll, a read). Wakes the
    /// subscribers when it moves forward.
    pub fn observe_revision(&self, revision: i64) {
        self.revision.send_if_modified(|r| {
            if revision > *r {
                *r = revision;
                true
            } else {
                false
            }
        });
    }

    /// A receiver that sees the known revision move forward.
    pub fn subscribe_revisions(&self) -> watch::Receiver<i64> {
        self.revision.subscribe()
    }

    /// Records that the edge registry changed (a write here, or another replica's NOTIFY).
    pub fn observe_edge_report(&self) {
        self.edge_reports.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver woken by [`Db::outbox_written`] (the webhook sender's).
    pub fn subscribe_outbox(&self) -> watch::Receiver<u64> {
        self.outbox.subscribe()
    }

    /// Wakes the webhook sender: an event was committed outside a key write.
    pub fn outbox_written(&self) {
        self.outbox.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every edge-registry change [`Db::observe_edge_report`] records.
    pub fn subscribe_edge_reports(&self) -> watch::Receiver<u64> {
        self.edge_reports.subscribe()
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

/// The columns of `keys`, as [`rows::key_from_row`] reads them by name.
macro_rules! key_cols {
    () => {
        "id, workspace_id, name, description, kind, display_prefix, digest, hash_version, scopes, \
         resources, status, suspended_by_parent, expires_at, created_at, updated_at, last_used_at, \
         usage_count, revoked_at, created_by_id, created_by_name, created_by_prefix, owner_id, \
         metadata, parent_id, subject, limits, credits_remaining, refill_amount, refill_interval, \
         next_refill_at"
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

/// Filters and cursor for listing keys.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    /// Only this workspace (none = all, for the admin).
    pub workspace_id: Option<String>,
    /// Only this status.
    pub status: Option<crate::domain::KeyStatus>,
    /// Only this kind.
    pub kind: Option<crate::domain::KeyKind>,
    /// Only this owner.
    pub owner_id: Option<String>,
    /// Only names containing this (case-insensitive for ASCII).
    pub name_contains: Option<String>,
    /// Only keys holding this scope.
    pub scope: Option<String>,
    /// Only active keys expiring in `(from, to]` (unix seconds).
    pub expiring: Option<(i64, i64)>,
    /// Only keys never used.
    pub never_used: bool,
    /// Only children of this key (exchanged `repo` keys).
    pub parent: Option<Uuid>,
    /// Keys created after this id (cursor).
    pub after: Option<Uuid>,
    /// Page size.
    pub limit: i64,
}

/// Filters, order and cursor for reading the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter<'a> {
    /// Only this workspace (none = all, for the admin).
    pub workspace: Option<&'a str>,
    /// Only rows about this key.
    pub key: Option<Uuid>,
    /// Only rows by this actor id (`admin`, `key_…`).
    pub actor: Option<&'a str>,
    /// Only this action (`key.create`, …).
    pub action: Option<&'a str>,
    /// Only rows at or after this time (unix seconds).
    pub from: Option<i64>,
    /// Only rows before this time (unix seconds).
    pub to: Option<i64>,
    /// Newest first (rows before the cursor) instead of oldest first (rows after it).
    pub newest_first: bool,
    /// The last row id of the previous page.
    pub cursor: Option<i64>,
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
    /// That key's name now (its current name, not the one it had then).
    pub key_name: Option<String>,
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
