//! The App JWT: RS256, `iat` 60 s in the past, `exp` 9 minutes ahead, `iss` the client id or
//! app id, signed with the App's newest key. A JWT is reused until a minute before it expires.
//! When GitHub rejects one for its `iat`/`exp`, [`AppJwt::correct_clock`] adopts GitHub's clock
//! (from its `Date` header) for later JWTs, as octokit does.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::{GithubError, Secret};

/// Seconds `iat` is set in the past.
pub const IAT_BACKDATE_SECS: i64 = 60;
/// Seconds `exp` is set ahead (GitHub's limit is 600).
pub const LIFETIME_SECS: i64 = 9 * 60;
/// A cached JWT is replaced when it has less than this many seconds left.
pub const REFRESH_MARGIN_SECS: i64 = 60;

/// The host's clock, in unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Signs and caches one App's JWTs.
pub struct AppJwt {
    app: String,
    issuer: serde_json::Value,
    key: EncodingKey,
    /// GitHub's clock minus the host's, in seconds.
    skew: AtomicI64,
    cached: Mutex<Option<(Secret, i64)>>,
}

impl std::fmt::Debug for AppJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppJwt")
            .field("app", &self.app)
            .field("skew", &self.skew)
            .finish_non_exhaustive()
    }
}

impl AppJwt {
    /// A signer for `app` with `iss` = `issuer`, signing with `key` (the App's newest).
    pub fn new(app: impl Into<String>, issuer: serde_json::Value, key: EncodingKey) -> Self {
        Self {
            app: app.into(),
            issuer,
            key,
            skew: AtomicI64::new(0),
            cached: Mutex::new(None),
        }
    }

    /// Now on GitHub's clock as far as we know it.
    pub fn now(&self) -> i64 {
        unix_now() + self.skew.load(Ordering::Relaxed)
    }

    /// The current skew estimate (GitHub's clock minus the host's), in seconds.
    pub fn skew(&self) -> i64 {
        self.skew.load(Ordering::Relaxed)
    }

    /// A valid JWT, reused while it has more than a minute left.
    ///
    /// # Errors
    /// [`GithubError::Signing`] if signing fails.
    pub fn token(&self) -> Result<Secret, GithubError> {
        let now = self.now();
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((jwt, exp)) = cached.as_ref()
            && exp - now > REFRESH_MARGIN_SECS
        {
            return Ok(jwt.clone());
        }
        let exp = now + LIFETIME_SECS;
        let claims = json!({ "iat": now - IAT_BACKDATE_SECS, "exp": exp, "iss": self.issuer });
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(|e| GithubError::Signing {
                app: self.app.clone(),
                message: e.to_string(),
            })?;
        let jwt = Secret::new(jwt);
        *cached = Some((jwt.clone(), exp));
        Ok(jwt)
    }

    /// Adopts GitHub's clock: `server_now` is the time in its `Date` header. Drops the cached
    /// JWT so the next one is signed with corrected times.
    pub fn correct_clock(&self, server_now: i64) {
        let skew = server_now - unix_now();
        self.skew.store(skew, Ordering::Relaxed);
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
        tracing::warn!(app = %self.app, skew_secs = skew, "GitHub's clock differs from ours; correcting App JWT times");
    }
}

/// Whether a GitHub 401 message is one of its JWT `iat`/`exp` complaints (clock skew).
pub fn is_clock_skew_message(message: &str) -> bool {
    message.contains(
        "'Expiration time' claim ('exp') must be a numeric value representing the future time",
    ) || message.contains("'Issued at' claim ('iat') must be an Integer representing the time")
        || message.contains("'Expiration time' claim ('exp') is too far in the future")
}
