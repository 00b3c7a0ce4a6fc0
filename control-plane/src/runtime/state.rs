//! The shared application state: one `AppState`, cheap to clone, everything behind `Arc`.

use std::sync::Arc;
use std::time::Duration;

use keygate_protocol::{Digest, key};
use tokio::task::JoinHandle;

use super::clock::unix_now;
use super::config::Config;
use super::drain::Drain;
use super::edges::Edges;
use super::limiter::AuthLimiter;
use super::metrics::Metrics;
use super::usage::UsageBuffer;
use super::verify_cache::VerifyCache;
use crate::forward_auth::{ForwardAuth, ForwardAuthError, Settings};
use crate::storage::{Db, DbError};

/// Prefix of generated bootstrap admin keys.
pub const ADMIN_KEY_PREFIX: &str = "kg_admin";

/// State shared by every request handler and background task.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub(crate) db: Db,
    /// The configuration read at start-up.
    pub(crate) config: Arc<Config>,
    /// Verified keys by digest, valid for the revision they were read at.
    pub(crate) verify_cache: Arc<VerifyCache>,
    /// Turns true when the server starts shutting down.
    pub(crate) drain: Arc<Drain>,
    /// Usage counted by verification, flushed in batches.
    pub(crate) usage: Arc<UsageBuffer>,
    /// Digest of `KEYGATE_ADMIN_TOKEN`, if set.
    pub(crate) admin_token: Option<Digest>,
    /// Failed-authentication rate limiter.
    pub(crate) limiter: Arc<AuthLimiter>,
    /// Counters for `/metrics`.
    pub(crate) metrics: Arc<Metrics>,
    /// The GitHub App token broker.
    pub(crate) github: Arc<crate::github::Broker>,
    /// The forward-auth endpoint, when configured.
    pub(crate) forward_auth: Option<Arc<ForwardAuth>>,
    /// `POST /v1/keys/revoke-by-possession` requests per client address.
    pub(crate) possession_limiter: Arc<AuthLimiter>,
    /// GitHub's secret scanning keys, cached.
    pub(crate) alerts: Arc<super::secret_scanning::AlertVerifier>,
    /// The edge registry's writer and reader.
    pub(crate) edges: Arc<Edges>,
    /// Canary hits: counters, and the writer of the hits this process sees itself.
    pub(crate) canaries: Arc<super::canary::Canaries>,
}

/// A bootstrap admin key generated on first start; its secret must be shown exactly once.
#[derive(Debug)]
pub struct GeneratedAdmin(pub key::SecretKey);

/// Why the state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A query at start-up failed.
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
    /// The bootstrap admin key could not be generated.
    #[error("generating the bootstrap admin key: {0}")]
    AdminKey(keygate_protocol::key::KeyFormatError),
    /// The GitHub broker configuration is invalid (a bad key file or URL).
    #[error("GitHub configuration: {0}")]
    Github(#[from] crate::github::ConfigError),
    /// The forward-auth configuration is invalid, or its first key set did not load.
    #[error(transparent)]
    ForwardAuth(#[from] ForwardAuthError),
}

impl AppState {
    /// Opens the database (running migrations) and prepares the state. When no admin token is
    /// configured and the database has no admin credential yet, generates one and returns it
    /// so that the caller prints it once.
    pub async fn new(config: Config) -> Result<(Self, Option<GeneratedAdmin>), StartError> {
        let db = Db::connect(&config.database_url).await?;
        Self::with_db(config, db).await
    }

    /// Like [`AppState::new`] with an already opened database.
    pub async fn with_db(
        config: Config,
        db: Db,
    ) -> Result<(Self, Option<GeneratedAdmin>), StartError> {
        // A bad forward-auth configuration stops the start before an admin key is generated.
        let forward_auth = Settings::load(&config.forward_auth)
            .map_err(ForwardAuthError::from)?
            .map(ForwardAuth::new);
        let mut generated = None;
        if config.admin_token.is_none()
            && db.admin_count().await? == 0
            && db.count_keys().await? == 0
        {
            let secret = key::generate(ADMIN_KEY_PREFIX).map_err(StartError::AdminKey)?;
            // Another replica may have got there first: then it prints its key, not us.
            if db
                .insert_first_admin(
                    secret.digest().as_bytes(),
                    &secret.display_prefix(),
                    unix_now(),
                )
                .await?
            {
                generated = Some(GeneratedAdmin(secret));
            }
        }
        let github =
            crate::github::Broker::new(crate::github::GithubConfig::from_args(&config.github)?)?;
        if let Some(fa) = &forward_auth {
            // Loaded before the listener serves: forward-auth never answers from an empty set.
            fa.mirror
                .refresh(&db)
                .await
                .map_err(ForwardAuthError::from)?;
            let s = &fa.settings;
            tracing::info!(
                config = %s.path.display(),
                proxy_credential = if s.open { "none (--forward-auth-open)" } else { "edge key" },
                ignored = ?s.ignored,
                revision = ?fa.mirror.revision(),
                keys = fa.mirror.len(),
                "forward-auth enabled"
            );
        }
        let config_rules = config.edge_rules();
        let state = Self {
            admin_token: config.admin_token.as_deref().map(Digest::of),
            alerts: Arc::new(super::secret_scanning::AlertVerifier::new(
                &config.secret_scanning.secret_scanning_keys_url,
            )),
            limiter: Arc::new(AuthLimiter::new(config.auth_failures_per_minute)),
            possession_limiter: Arc::new(AuthLimiter::new(
                config.possession_revocations_per_minute,
            )),
            config: Arc::new(config),
            verify_cache: Arc::new(VerifyCache::default()),
            drain: Arc::new(Drain::default()),
            usage: Arc::new(UsageBuffer::default()),
            metrics: Arc::new(Metrics::default()),
            github: Arc::new(github),
            forward_auth: forward_auth.map(Arc::new),
            edges: Arc::new(Edges::new(config_rules)),
            canaries: Arc::default(),
            db,
        };
        Ok((state, generated))
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The GitHub App token broker.
    pub fn github(&self) -> &crate::github::Broker {
        &self.github
    }

    /// The forward-auth endpoint, when configured.
    pub fn forward_auth(&self) -> Option<&ForwardAuth> {
        self.forward_auth.as_deref()
    }

    /// Starts the background tasks: usage flushing, credit refills, expiry and edge-gone notices, change-log pruning, usage-history pruning
    /// (hours older than `usage_retention_days`), webhook delivery and its pruning, the forward-auth key
    /// set's follower (when configured), and on PostgreSQL the `LISTEN keygate_keyset` loop that
    /// learns of other replicas' writes.
    pub(crate) fn spawn_background(&self) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        let s = self.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_millis(s.config.usage_flush_ms.max(10)));
            loop {
                tick.tick().await;
                s.usage.flush(&s.db, &s.metrics).await;
            }
        }));
        let s = self.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                if let Err(e) = s.db.prune_changes(s.config.changes_retained).await {
                    tracing::warn!(error = %e, "change-log pruning failed");
                }
            }
        }));
        let s = self.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let before = unix_now() - s.config.usage_retention_days * 24 * 3600;
                if let Err(e) = s.db.prune_usage_hours(before).await {
                    tracing::warn!(error = %e, "usage-history pruning failed");
                }
                // Verify's rate-limit counters of windows that have ended.
                if let Err(e) = s.db.prune_rate_windows(unix_now()).await {
                    tracing::warn!(error = %e, "rate-limit window pruning failed");
                }
            }
        }));
        tasks.push(tokio::spawn(super::refill::refill_forever(
            self.db.clone(),
            Arc::clone(&self.metrics),
            Duration::from_millis(self.config.refill_check_ms),
        )));
        tasks.push(tokio::spawn(super::expiry::notify_expiring_forever(
            self.db.clone(),
            self.config.expiring_within_days,
            Duration::from_millis(self.config.expiring_check_ms),
        )));
        tasks.push(tokio::spawn(super::edge_gone::notify_gone_forever(
            self.db.clone(),
            self.config.edge_rules().gone_after_s,
            Duration::from_millis(self.config.edge_gone_check_ms),
        )));
        tasks.push(tokio::spawn(super::webhooks::deliver_forever(
            self.db.clone(),
            self.config.webhooks.clone(),
        )));
        tasks.push(tokio::spawn(super::webhooks::prune_forever(
            self.db.clone(),
            self.config.webhooks.webhook_retention_days,
        )));
        if let Some(fa) = &self.forward_auth {
            tasks.push(tokio::spawn(Arc::clone(&fa.mirror).follow(self.db.clone())));
        }
        if let Some(pool) = self.db.postgres_pool() {
            let pool = pool.clone();
            let db = self.db.clone();
            tasks.push(tokio::spawn(
                async move { listen_for_changes(pool, db).await },
            ));
        }
        tasks
    }
}

/// Follows other replicas' writes: `LISTEN keygate_keyset` (each write's transaction sends
/// its revision with `pg_notify`) and `keygate_edges` (each edge-registry write, which wakes
/// propagation waits), plus a slow poll of the counter row so that a notification
/// lost during a reconnect only delays, never loses, a wake-up.
async fn listen_for_changes(pool: sqlx::PgPool, db: Db) {
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener
            .listen_all(["keygate_keyset", "keygate_edges"])
            .await
        {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            tokio::select! {
                n = listener.recv() => match n {
                    Ok(n) if n.channel() == "keygate_edges" => db.observe_edge_report(),
                    Ok(n) => {
                        if let Ok(rev) = n.payload().parse::<i64>() {
                            db.observe_revision(rev);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection lost");
                        break;
                    }
                },
                _ = poll.tick() => {
                    if let Ok(rev) = db.revision().await {
                        db.observe_revision(rev);
                    }
                }
            }
        }
    }
}
