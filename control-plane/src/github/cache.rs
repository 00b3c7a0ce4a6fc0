//! The token cache with single flight, and the installation cache.
//!
//! A token is reused for the same App, API base URL, repository set and permissions (sorted)
//! until 5 minutes before it expires. The repository set lies inside one installation, so the
//! installation is part of the cached value (and of the key once resolved). Concurrent requests
//! for one key wait on a per-key lock while the first one asks GitHub: one call for all.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::InstallationToken;
use super::{GithubError, Permissions};

/// A cached token is not handed out when it has less than this many seconds left.
pub const REUSE_MARGIN_SECS: i64 = 300;

/// What identifies a reusable token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    /// The App's configured name.
    pub app: String,
    /// The App's API base URL.
    pub base_url: String,
    /// Repositories as `owner/name`, lower-cased, sorted.
    pub repositories: Vec<String>,
    /// Permissions, sorted by name (a `BTreeMap`).
    pub permissions: Permissions,
}

/// A cached token with the installation that minted it.
#[derive(Debug, Clone)]
pub struct CachedToken {
    /// The token.
    pub token: Arc<InstallationToken>,
    /// The installation it belongs to.
    pub installation_id: u64,
    /// Host-clock unix time after which it is not reused.
    pub reuse_until: i64,
}

#[derive(Debug, Default)]
struct Slot {
    flight: tokio::sync::Mutex<()>,
    value: Mutex<Option<CachedToken>>,
}

impl Slot {
    fn fresh(&self, now: i64) -> Option<CachedToken> {
        let v = self.value.lock().unwrap_or_else(|p| p.into_inner());
        v.as_ref().filter(|c| c.reuse_until > now).cloned()
    }
}

/// The token cache.
#[derive(Debug, Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<TokenKey, Arc<Slot>>>,
}

impl TokenCache {
    /// A cached token for `key` if fresh at `now` (host clock); otherwise runs `mint` — once
    /// for all concurrent callers of the same key — and caches its result. Returns the token
    /// and whether it came from the cache. Errors are not cached.
    ///
    /// # Errors
    /// Whatever `mint` returns.
    pub async fn get_or_mint<F, Fut>(
        &self,
        key: TokenKey,
        now: impl Fn() -> i64,
        mint: F,
    ) -> Result<(CachedToken, bool), GithubError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CachedToken, GithubError>>,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            if slots.len() > 10_000 {
                let t = now();
                slots.retain(|_, s| Arc::strong_count(s) > 1 || s.fresh(t).is_some());
            }
            slots.entry(key).or_default().clone()
        };
        if let Some(c) = slot.fresh(now()) {
            return Ok((c, true));
        }
        let _flight = slot.flight.lock().await;
        if let Some(c) = slot.fresh(now()) {
            return Ok((c, true));
        }
        let minted = mint().await?;
        *slot.value.lock().unwrap_or_else(|p| p.into_inner()) = Some(minted.clone());
        Ok((minted, false))
    }

    /// Forgets a token (after revocation), wherever it is cached.
    pub fn forget(&self, token: &str) {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for slot in slots.values() {
            let mut v = slot.value.lock().unwrap_or_else(|p| p.into_inner());
            if v.as_ref().is_some_and(|c| c.token.token.expose() == token) {
                *v = None;
            }
        }
    }

    /// Forgets every cached token (tests, key rotation).
    pub fn clear(&self) {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// (App, base URL, `owner/repo` lower-cased) → (installation or not installed, valid until).
type InstallationEntries = HashMap<(String, String, String), (Option<u64>, Instant)>;

/// Installation ids by (App, base URL, owner, repository), with "not installed" cached briefly.
#[derive(Debug)]
pub struct InstallationCache {
    entries: Mutex<InstallationEntries>,
    installed_ttl: Duration,
    not_installed_ttl: Duration,
}

impl InstallationCache {
    /// A cache keeping found installations for `installed_ttl` and "not installed" for
    /// `not_installed_ttl`.
    pub fn new(installed_ttl: Duration, not_installed_ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            installed_ttl,
            not_installed_ttl,
        }
    }

    fn key(app: &str, base: &str, repo: &str) -> (String, String, String) {
        (app.to_owned(), base.to_owned(), repo.to_ascii_lowercase())
    }

    /// `Some(answer)` if cached and fresh; `answer` is `None` for "not installed".
    pub fn get(&self, app: &str, base: &str, repo: &str) -> Option<Option<u64>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&Self::key(app, base, repo))
            .filter(|(_, until)| *until > Instant::now())
            .map(|(v, _)| *v)
    }

    /// Records GitHub's answer.
    pub fn put(&self, app: &str, base: &str, repo: &str, installation: Option<u64>) {
        let ttl = if installation.is_some() {
            self.installed_ttl
        } else {
            self.not_installed_ttl
        };
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() > 10_000 {
            let now = Instant::now();
            entries.retain(|_, (_, until)| *until > now);
        }
        entries.insert(
            Self::key(app, base, repo),
            (installation, Instant::now() + ttl),
        );
    }

    /// Drops an entry (the installation went away).
    pub fn forget(&self, app: &str, base: &str, repo: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&Self::key(app, base, repo));
    }
}
