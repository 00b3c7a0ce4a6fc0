//! The fake's shared state behind its lock: registered Apps and their keys, installations,
//! minted tokens, call counts, the simulated faults, and the fake's clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::DecodingKey;

use crate::limits::RateLimit;
use crate::routes::Operation;
use crate::tokens::{RecordedTokenRequest, TokenRecord};

/// A registered GitHub App.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) id: u64,
    pub(crate) client_id: String,
    pub(crate) slug: String,
    /// Its public keys: a JWT signed by any of them authenticates.
    pub(crate) keys: Vec<DecodingKey>,
}

/// An App's installation on an account.
#[derive(Debug, Clone)]
pub(crate) struct Installation {
    pub(crate) id: u64,
    pub(crate) app_id: u64,
    pub(crate) account: String,
    pub(crate) account_id: u64,
    pub(crate) account_type: String,
    /// Repository names and ids.
    pub(crate) repos: BTreeMap<String, u64>,
    pub(crate) permissions: BTreeMap<String, String>,
    pub(crate) suspended: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub(crate) apps: HashMap<u64, App>,
    pub(crate) installations: BTreeMap<u64, Installation>,
    pub(crate) tokens: HashMap<String, TokenRecord>,
    pub(crate) calls: HashMap<Operation, u64>,
    pub(crate) clock_offset: i64,
    pub(crate) delay: Duration,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) stateless_default: bool,
    pub(crate) token_ttl: i64,
    pub(crate) token_requests: Vec<RecordedTokenRequest>,
    pub(crate) next_id: u64,
    /// The secret scanning keys published (fixture names), and the current one.
    pub(crate) alert_keys: Vec<&'static str>,
    pub(crate) alert_key_current: &'static str,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) inner: Mutex<Inner>,
    /// `http://127.0.0.1:PORT` plus the path prefix.
    pub(crate) api_base: String,
    pub(crate) web_base: String,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The host's clock in unix seconds (callers add `Inner::clock_offset` for the fake's).
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
