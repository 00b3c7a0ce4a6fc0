//! GitHub App token broker: the control plane holds the Apps' private keys and hands internal
//! services short-lived installation tokens scoped down to one repository and the permissions
//! they may have.
//!
//! - [`config`]: the Apps (app id or client id, PKCS#1/PKCS#8 private keys, API base URL) and
//!   the permission policy, as a clap [`GithubArgs`] the `serve` command flattens.
//! - [`jwt`]: the App JWT (RS256 on `aws_lc_rs`), reused until shortly before it expires, with
//!   clock-skew correction from GitHub's `Date` header.
//! - [`client`]: the REST calls, with GitHub's required headers and its failures mapped to
//!   [`GithubError`].
//! - [`cache`]: the token cache with single flight, and the installation cache.
//! - [`broker`]: the whole flow ([`Broker::token`], [`Broker::revoke`]).
//! - [`metrics`]: Prometheus counters.
//!
//! The repository registry's storage is `storage::github_repos`, its HTTP endpoints
//! `http::github`, and `keygate repos` is `cli::github`.
//!
//! Tokens and JWTs are held in [`Secret`], whose `Debug` and `Display` never show the value,
//! and are never logged.

pub mod broker;
pub mod cache;
pub mod client;
pub mod config;
pub mod jwt;
pub mod metrics;

use std::collections::BTreeMap;
use std::fmt;

pub use broker::{Broker, Brokered, TokenRequest};
pub use config::{ConfigError, GithubArgs, GithubConfig};

/// A secret string (installation token or App JWT): its `Debug` and `Display` are redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for sending it where it belongs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// GitHub permissions: name → `read` | `write` | `admin`, sorted by name.
pub type Permissions = BTreeMap<String, String>;

/// Parses `contents=read,issues=write` into [`Permissions`], validating names and levels.
///
/// # Errors
/// A message naming the bad entry.
pub fn parse_permissions(s: &str) -> Result<Permissions, String> {
    let mut out = Permissions::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, level)) = part.split_once('=') else {
            return Err(format!("permission `{part}` must be NAME=LEVEL"));
        };
        validate_permission(name.trim(), level.trim())?;
        out.insert(name.trim().to_owned(), level.trim().to_owned());
    }
    Ok(out)
}

/// Checks a permission name (`[a-z_]{1,64}`) and level (`read`, `write` or `admin`).
///
/// # Errors
/// A message naming the bad part.
pub fn validate_permission(name: &str, level: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        return Err(format!("bad GitHub permission name `{name}`"));
    }
    if !matches!(level, "read" | "write" | "admin") {
        return Err(format!(
            "bad level `{level}` for GitHub permission `{name}` (read, write or admin)"
        ));
    }
    Ok(())
}

/// A GitHub failure, as the broker reports it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GithubError {
    /// The App is not installed on the repository (GitHub's 404).
    #[error("GitHub App `{app}` is not installed on {owner}/{repo}")]
    NotInstalled {
        /// The App's configured name.
        app: String,
        /// Organization or user.
        owner: String,
        /// Repository name.
        repo: String,
    },
    /// GitHub's 422: a permission or repository the installation cannot grant.
    #[error("GitHub refused the token request: {message}")]
    Unprocessable {
        /// GitHub's message.
        message: String,
    },
    /// GitHub's 403 that is not a rate limit (e.g. a suspended installation).
    #[error("GitHub refused the request: {message}")]
    Forbidden {
        /// GitHub's message.
        message: String,
    },
    /// GitHub's 401 for the App JWT, after the clock-skew retry.
    #[error(
        "GitHub rejected the credentials of GitHub App `{app}` ({message}): check its app id or client id and private key"
    )]
    AppAuth {
        /// The App's configured name.
        app: String,
        /// GitHub's message.
        message: String,
    },
    /// GitHub's primary or secondary rate limit (403 or 429).
    #[error("GitHub rate limit reached: {message}")]
    RateLimited {
        /// Seconds until a retry may succeed.
        retry_after: u64,
        /// GitHub's message.
        message: String,
    },
    /// A timeout or network failure talking to GitHub.
    #[error("GitHub could not be reached: {0}")]
    Network(String),
    /// Any other unexpected answer.
    #[error("GitHub answered {status} unexpectedly: {message}")]
    Upstream {
        /// HTTP status.
        status: u16,
        /// GitHub's message, or a description of the body.
        message: String,
    },
    /// No App of that name is configured.
    #[error("no GitHub App named `{0}` is configured")]
    UnknownApp(String),
    /// The broker is not configured (no App).
    #[error("no GitHub App is configured")]
    NotConfigured,
    /// Signing the App JWT failed.
    #[error("signing the JWT of GitHub App `{app}` failed: {message}")]
    Signing {
        /// The App's configured name.
        app: String,
        /// What failed.
        message: String,
    },
}
