//! The store's errors: what a query or a write transaction can fail with, in the store's own
//! terms. The HTTP layer maps them to answers (`http::error`).

use crate::domain::RuleError;

/// A failed read or write.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The key does not exist (or is outside the caller's workspace).
    #[error("no such key")]
    KeyNotFound,
    /// The parent of a child being issued is no longer active.
    #[error("the parent key is not active")]
    ParentNotActive,
    /// A lifecycle rule refused the change, decided inside the transaction.
    #[error(transparent)]
    Rule(#[from] RuleError),
}
