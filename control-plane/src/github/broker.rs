//! The broker: resolves a repository's installation (cached), mints a scoped-down token (cached,
//! single flight), revokes tokens, and signs App JWTs.

use std::sync::Arc;
use std::time::Duration;

use super::cache::{CachedToken, InstallationCache, REUSE_MARGIN_SECS, TokenCache, TokenKey};
use super::client::{GithubClient, InstallationToken, RevokeOutcome};
use super::config::{ConfigError, GithubConfig};
use super::jwt::{AppJwt, unix_now};
use super::metrics::GithubMetrics;
use super::{GithubError, Permissions, Secret};

/// How long a found installation id is cached.
pub const INSTALLED_TTL: Duration = Duration::from_secs(3600);

/// One configured App, ready to sign.
#[derive(Debug)]
pub struct GithubApp {
    /// Configured name.
    pub name: String,
    /// API base URL, no trailing slash.
    pub api_url: String,
    /// JWT signer (newest key).
    pub jwt: AppJwt,
    /// Forced token form, if any.
    pub stateless_tokens: Option<bool>,
}

/// A token request.
#[derive(Debug, Clone, Copy)]
pub struct TokenRequest<'a> {
    /// The App's name; `None` for the default (first) App.
    pub app: Option<&'a str>,
    /// Organization or user.
    pub owner: &'a str,
    /// Repository name.
    pub repo: &'a str,
    /// Permissions to ask for.
    pub permissions: &'a Permissions,
    /// An installation id remembered elsewhere (the registry), tried before a lookup.
    pub installation_hint: Option<u64>,
}

/// A brokered token.
#[derive(Debug, Clone)]
pub struct Brokered {
    /// The token with its expiry and granted permissions.
    pub token: Arc<InstallationToken>,
    /// The installation that minted it.
    pub installation_id: u64,
    /// Whether it came from the cache.
    pub cache_hit: bool,
    /// The App's name.
    pub app: String,
}

/// The token broker.
#[derive(Debug)]
pub struct Broker {
    apps: Vec<Arc<GithubApp>>,
    client: GithubClient,
    tokens: TokenCache,
    installations: InstallationCache,
    metrics: Arc<GithubMetrics>,
    config: GithubConfig,
}

impl Broker {
    /// A broker for the configured Apps (possibly none: then every request is
    /// [`GithubError::NotConfigured`]).
    ///
    /// # Errors
    /// If the HTTP client cannot be built.
    pub fn new(config: GithubConfig) -> Result<Self, ConfigError> {
        let metrics = Arc::new(GithubMetrics::default());
        let client = GithubClient::new(config.timeout, metrics.clone())
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        let apps = config
            .apps
            .iter()
            .filter_map(|a| {
                let key = a.keys.last()?.clone();
                Some(Arc::new(GithubApp {
                    name: a.name.clone(),
                    api_url: a.api_url.clone(),
                    jwt: AppJwt::new(a.name.clone(), a.issuer(), key),
                    stateless_tokens: a.stateless_tokens,
                }))
            })
            .collect();
        Ok(Self {
            apps,
            client,
            tokens: TokenCache::default(),
            installations: InstallationCache::new(INSTALLED_TTL, config.not_installed_ttl),
            metrics,
            config,
        })
    }

    /// The configuration (policy, internal key).
    pub fn config(&self) -> &GithubConfig {
        &self.config
    }

    /// The broker's metrics.
    pub fn metrics(&self) -> &GithubMetrics {
        &self.metrics
    }

    /// Names of the configured Apps, the default first.
    pub fn app_names(&self) -> Vec<String> {
        self.apps.iter().map(|a| a.name.clone()).collect()
    }

    /// The named App, or the default one.
    ///
    /// # Errors
    /// [`GithubError::UnknownApp`] or [`GithubError::NotConfigured`].
    pub fn app(&self, name: Option<&str>) -> Result<&Arc<GithubApp>, GithubError> {
        match name {
            Some(n) => self
                .apps
                .iter()
                .find(|a| a.name == n)
                .ok_or_else(|| GithubError::UnknownApp(n.to_owned())),
            None => self.apps.first().ok_or(GithubError::NotConfigured),
        }
    }

    /// A current App JWT.
    ///
    /// # Errors
    /// As [`Broker::app`], or a signing failure.
    pub fn app_jwt(&self, name: Option<&str>) -> Result<Secret, GithubError> {
        self.app(name)?.jwt.token()
    }

    /// An installation token for one repository with `permissions`, from the cache when one
    /// has more than 5 minutes left, else from GitHub (one call for concurrent equal requests).
    ///
    /// # Errors
    /// [`GithubError::NotInstalled`] and GitHub's other failures.
    pub async fn token(&self, req: TokenRequest<'_>) -> Result<Brokered, GithubError> {
        let app = self.app(req.app)?.clone();
        let full_name = format!("{}/{}", req.owner, req.repo);
        let key = TokenKey {
            app: app.name.clone(),
            base_url: app.api_url.clone(),
            repositories: vec![full_name.to_ascii_lowercase()],
            permissions: req.permissions.clone(),
        };
        let result = self
            .tokens
            .get_or_mint(key, unix_now, || self.mint(&app, &req, &full_name))
            .await;
        let (cached, hit) = result?;
        if hit {
            self.metrics.hit();
        } else {
            self.metrics.miss();
        }
        Ok(Brokered {
            token: cached.token,
            installation_id: cached.installation_id,
            cache_hit: hit,
            app: app.name.clone(),
        })
    }

    async fn mint(
        &self,
        app: &GithubApp,
        req: &TokenRequest<'_>,
        full_name: &str,
    ) -> Result<CachedToken, GithubError> {
        let not_installed = || GithubError::NotInstalled {
            app: app.name.clone(),
            owner: req.owner.to_owned(),
            repo: req.repo.to_owned(),
        };
        let base = app.api_url.as_str();
        let mut remembered = match self.installations.get(&app.name, base, full_name) {
            Some(None) => return Err(not_installed()),
            Some(Some(id)) => Some(id),
            None => req.installation_hint,
        };
        loop {
            let installation_id = match remembered {
                Some(id) => id,
                None => {
                    let found = self
                        .client
                        .repo_installation(&app.name, &app.jwt, base, req.owner, req.repo)
                        .await?;
                    self.installations.put(&app.name, base, full_name, found);
                    found.ok_or_else(not_installed)?
                }
            };
            let repos = [req.repo.to_owned()];
            let minted = self
                .client
                .create_token(
                    &app.name,
                    &app.jwt,
                    base,
                    installation_id,
                    &repos,
                    req.permissions,
                    app.stateless_tokens,
                )
                .await?;
            match minted {
                Some(token) => {
                    self.installations
                        .put(&app.name, base, full_name, Some(installation_id));
                    self.metrics.minted();
                    let reuse_until = token.expires_at - app.jwt.skew() - REUSE_MARGIN_SECS;
                    return Ok(CachedToken {
                        token: Arc::new(token),
                        installation_id,
                        reuse_until,
                    });
                }
                // The remembered installation is gone: look it up once more.
                None if remembered.is_some() => {
                    self.installations.forget(&app.name, base, full_name);
                    remembered = None;
                }
                None => {
                    self.installations.put(&app.name, base, full_name, None);
                    return Err(not_installed());
                }
            }
        }
    }

    /// Revokes a token at GitHub (`DELETE /installation/token`) and drops it from the cache.
    ///
    /// # Errors
    /// GitHub's failures other than "already invalid".
    pub async fn revoke(
        &self,
        app: Option<&str>,
        token: &Secret,
    ) -> Result<RevokeOutcome, GithubError> {
        let app = self.app(app)?;
        self.tokens.forget(token.expose());
        self.client.revoke(&app.api_url, token).await
    }

    /// Forgets every cached token.
    pub fn clear_token_cache(&self) {
        self.tokens.clear();
    }
}
