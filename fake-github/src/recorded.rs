//! What the fake received, for tests to assert on: calls per operation, the access-token
//! request bodies, and the tokens it minted.

use crate::{FakeGithub, Operation, RecordedTokenRequest, TokenRecord};

impl FakeGithub {
    /// Calls received for an operation (every request, answered with success or not).
    pub fn calls(&self, op: Operation) -> u64 {
        self.shared.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// Calls received across all operations.
    pub fn total_calls(&self) -> u64 {
        self.shared.lock().calls.values().sum()
    }

    /// The access-token request bodies received so far.
    pub fn token_requests(&self) -> Vec<RecordedTokenRequest> {
        self.shared.lock().token_requests.clone()
    }

    /// What the fake knows of a token it minted.
    pub fn token(&self, token: &str) -> Option<TokenRecord> {
        self.shared.lock().tokens.get(token).cloned()
    }

    /// Tokens minted so far.
    pub fn tokens_minted(&self) -> usize {
        self.shared.lock().tokens.len()
    }
}
