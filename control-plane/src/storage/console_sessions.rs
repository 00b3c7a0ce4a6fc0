//! Operator console sessions on `Db`: create, find (unexpired), end, prune, and the one-time
//! flash a session carries from a create form to the page that shows the new secret once.
//! The store keeps only what it is given: the session token's hash, the credential's digest and
//! an already sealed flash (sealing is the console's, `http/console/session.rs`).

use sqlx::Row;

use super::{Db, Engine, on_db};

/// A live session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// SHA-256 of the credential signed in with (an admin token or a key).
    pub credential_digest: [u8; 32],
    /// Unix seconds after which the session is over.
    pub expires_at: i64,
}

fn digest_of(v: Vec<u8>) -> Result<[u8; 32], sqlx::Error> {
    v.try_into()
        .map_err(|_| sqlx::Error::Decode("console session digest is not 32 bytes".into()))
}

impl Db {
    /// Stores a new session, and deletes every expired one on the way.
    pub async fn insert_console_session(
        &self,
        token_hash: &[u8; 32],
        credential_digest: &[u8; 32],
        now: i64,
        expires_at: i64,
    ) -> Result<(), sqlx::Error> {
        on_db!(self, p => {
            sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
                .bind(now).execute(p).await?;
            sqlx::query("INSERT INTO console_sessions (token_hash, credential_digest, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4)")
                .bind(token_hash.to_vec()).bind(credential_digest.to_vec()).bind(now).bind(expires_at)
                .execute(p).await.map(|_| ())
        })
    }

    /// The session with this token hash, if it exists and has not expired at `now`.
    pub async fn find_console_session(
        &self,
        token_hash: &[u8; 32],
        now: i64,
    ) -> Result<Option<ConsoleSession>, sqlx::Error> {
        on_db!(self, p => {
            let row = sqlx::query("SELECT credential_digest, expires_at FROM console_sessions \
                                   WHERE token_hash = $1 AND expires_at > $2")
                .bind(token_hash.to_vec()).bind(now).fetch_optional(p).await?;
            row.map(|r| Ok(ConsoleSession {
                credential_digest: digest_of(r.try_get("credential_digest")?)?,
                expires_at: r.try_get("expires_at")?,
            })).transpose()
        })
    }

    /// Ends a session (sign-out). Ending one that is gone is not an error.
    pub async fn delete_console_session(&self, token_hash: &[u8; 32]) -> Result<(), sqlx::Error> {
        on_db!(self, p => sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
            .bind(token_hash.to_vec()).execute(p).await.map(|_| ()))
    }

    /// Puts a sealed flash (for the key `key_id`) on a session, replacing any unread one.
    pub async fn set_console_flash(
        &self,
        token_hash: &[u8; 32],
        key_id: &[u8; 16],
        sealed: &[u8],
    ) -> Result<(), sqlx::Error> {
        on_db!(self, p => sqlx::query("UPDATE console_sessions SET flash_key_id = $2, flash = $3 WHERE token_hash = $1")
            .bind(token_hash.to_vec()).bind(key_id.to_vec()).bind(sealed.to_vec())
            .execute(p).await.map(|_| ()))
    }

    /// Takes the session's flash if it is for `key_id`: returns it and clears it in one
    /// transaction, so it is read at most once.
    pub async fn take_console_flash(
        &self,
        token_hash: &[u8; 32],
        key_id: &[u8; 16],
    ) -> Result<Option<Vec<u8>>, sqlx::Error> {
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let lock = p.pick(
                "SELECT flash FROM console_sessions WHERE token_hash = $1 AND flash_key_id = $2",
                "SELECT flash FROM console_sessions WHERE token_hash = $1 AND flash_key_id = $2 FOR UPDATE",
            );
            let flash: Option<Option<Vec<u8>>> = sqlx::query_scalar(lock)
                .bind(token_hash.to_vec()).bind(key_id.to_vec())
                .fetch_optional(&mut *tx).await?;
            let flash = flash.flatten();
            if flash.is_some() {
                sqlx::query("UPDATE console_sessions SET flash_key_id = NULL, flash = NULL WHERE token_hash = $1")
                    .bind(token_hash.to_vec()).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(flash)
        })
    }
}
