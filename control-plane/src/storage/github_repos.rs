//! The repository registry: numeric id, organization, repository, the App that serves it and
//! the installation id last seen, on SQLite and PostgreSQL.

use serde::Serialize;
use sqlx::Row;

use super::{Db, on_db};

/// Longest organization or repository name GitHub allows (100), with room to spare.
pub const MAX_NAME_LEN: usize = 100;

/// One registered repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Repository {
    /// Numeric id (the seed's `repositoryId`).
    pub id: i64,
    /// Organization or user.
    pub organization: String,
    /// Repository name.
    pub repository: String,
    /// The configured GitHub App that serves it.
    pub app: String,
    /// Installation id last seen at GitHub.
    pub installation_id: Option<i64>,
    /// Registration time, unix seconds.
    pub created_at: i64,
}

impl Repository {
    /// `organization/repository`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.organization, self.repository)
    }
}

/// Whether `s` is a plausible GitHub organization or repository name.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Builds a [`Repository`] from a row of either engine.
macro_rules! repo_from_row {
    ($r:expr) => {{
        let r = $r;
        Ok::<_, sqlx::Error>(Repository {
            id: r.try_get("id")?,
            organization: r.try_get("organization")?,
            repository: r.try_get("repository")?,
            app: r.try_get("app")?,
            installation_id: r.try_get("installation_id")?,
            created_at: r.try_get("created_at")?,
        })
    }};
}

const COLUMNS: &str = "id, organization, repository, app, installation_id, created_at";

/// Inserts a repository; `Ok(None)` when one with the same name exists.
///
/// # Errors
/// Database failures.
pub async fn insert(
    db: &Db,
    organization: &str,
    repository: &str,
    app: &str,
    now: i64,
) -> Result<Option<Repository>, sqlx::Error> {
    let lc = format!("{organization}/{repository}").to_ascii_lowercase();
    let sql = format!(
        "INSERT INTO github_repositories (organization, repository, full_name_lc, app, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (full_name_lc) DO NOTHING RETURNING {COLUMNS}"
    );
    on_db!(db, p => {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(organization).bind(repository).bind(&lc).bind(app).bind(now).fetch_optional(p).await?;
        row.map(|r| repo_from_row!(r)).transpose()
    })
}

/// Lists repositories with ids above `after`, in id order.
///
/// # Errors
/// Database failures.
pub async fn list(db: &Db, after: i64, limit: i64) -> Result<Vec<Repository>, sqlx::Error> {
    let sql =
        format!("SELECT {COLUMNS} FROM github_repositories WHERE id > $1 ORDER BY id LIMIT $2");
    on_db!(db, p => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(after).bind(limit).fetch_all(p).await?;
        rows.into_iter().map(|r| repo_from_row!(r)).collect()
    })
}

/// One repository by id.
///
/// # Errors
/// Database failures.
pub async fn get(db: &Db, id: i64) -> Result<Option<Repository>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM github_repositories WHERE id = $1");
    on_db!(db, p => {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(id).fetch_optional(p).await?;
        row.map(|r| repo_from_row!(r)).transpose()
    })
}

/// One repository by organization and name (case-insensitive).
///
/// # Errors
/// Database failures.
pub async fn find(
    db: &Db,
    organization: &str,
    repository: &str,
) -> Result<Option<Repository>, sqlx::Error> {
    let lc = format!("{organization}/{repository}").to_ascii_lowercase();
    let sql = format!("SELECT {COLUMNS} FROM github_repositories WHERE full_name_lc = $1");
    on_db!(db, p => {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(&lc).fetch_optional(p).await?;
        row.map(|r| repo_from_row!(r)).transpose()
    })
}

/// Deletes a repository; whether it existed.
///
/// # Errors
/// Database failures.
pub async fn delete(db: &Db, id: i64) -> Result<bool, sqlx::Error> {
    on_db!(db, p => {
        let r = sqlx::query("DELETE FROM github_repositories WHERE id = $1").bind(id).execute(p).await?;
        Ok(r.rows_affected() > 0)
    })
}

/// Remembers the installation id GitHub reported.
///
/// # Errors
/// Database failures.
pub async fn set_installation(db: &Db, id: i64, installation_id: i64) -> Result<(), sqlx::Error> {
    on_db!(db, p => {
        sqlx::query("UPDATE github_repositories SET installation_id = $1 WHERE id = $2")
            .bind(installation_id)
            .bind(id)
            .execute(p)
            .await
            .map(|_| ())
    })
}
