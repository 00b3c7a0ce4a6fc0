//! Service configuration, read once at start-up from flags and environment variables.

use std::net::SocketAddr;

use crate::domain::edges::EdgeRules;

/// Everything `keygate serve` needs.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Database URL: `sqlite:<file>` (created when missing, WAL mode) or `postgres://…`.
    #[arg(
        long,
        env = "KEYGATE_DATABASE_URL",
        default_value = "sqlite:keygate.db"
    )]
    pub database_url: String,
    /// Address to listen on.
    #[arg(long, env = "KEYGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Bootstrap admin credential. When absent and the database has no admin credential, one
    /// is generated and printed once.
    #[arg(long, env = "KEYGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Prefix of issued keys.
    #[arg(long, env = "KEYGATE_KEY_PREFIX", default_value = "kg_live")]
    pub key_prefix: String,
    /// Failed authentications allowed per client address per minute before 429.
    #[arg(long, env = "KEYGATE_AUTH_FAILURES_PER_MINUTE", default_value_t = 30)]
    pub auth_failures_per_minute: u32,
    /// `POST /v1/keys/revoke-by-possession` requests allowed per client address per minute.
    #[arg(
        long,
        env = "KEYGATE_POSSESSION_REVOCATIONS_PER_MINUTE",
        default_value_t = 10
    )]
    pub possession_revocations_per_minute: u32,
    /// Largest accepted request body, bytes.
    #[arg(long, env = "KEYGATE_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,
    /// How often verification usage is written to the database, milliseconds.
    #[arg(long, env = "KEYGATE_USAGE_FLUSH_MS", default_value_t = 1000)]
    pub usage_flush_ms: u64,
    /// Key-set change-log revisions kept for deltas; older readers get a snapshot.
    #[arg(long, env = "KEYGATE_CHANGES_RETAINED", default_value_t = 100_000)]
    pub changes_retained: i64,
    /// Edge registry: each edge's row is rewritten at least this often (seconds) while it
    /// polls, and no more often when nothing but the time changed.
    #[arg(long, env = "KEYGATE_EDGE_HEARTBEAT_S", default_value_t = 15)]
    pub edge_heartbeat_s: i64,
    /// An edge behind the current revision for longer than this (seconds) is `lagging`.
    #[arg(long, env = "KEYGATE_EDGE_LAGGING_AFTER_S", default_value_t = 5)]
    pub edge_lagging_after_s: i64,
    /// An edge silent for longer than this (seconds) is `gone`; keep it above the filter's
    /// long-poll wait plus the heartbeat.
    #[arg(long, env = "KEYGATE_EDGE_GONE_AFTER_S", default_value_t = 90)]
    pub edge_gone_after_s: i64,
    /// How often edges gone silent are looked for to raise `edge.gone`, milliseconds.
    #[arg(long, env = "KEYGATE_EDGE_GONE_CHECK_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub edge_gone_check_ms: u64,
    /// Days of hourly usage counts kept (`GET /v1/keys/{id}/usage`, the console's charts);
    /// older hours are pruned by a background task.
    #[arg(long, env = "KEYGATE_USAGE_RETENTION_DAYS", default_value_t = 90, value_parser = clap::value_parser!(i64).range(1..=3660))]
    pub usage_retention_days: i64,
    /// How often due credit refills are looked for and made, milliseconds (a refill lands at
    /// most this late).
    #[arg(long, env = "KEYGATE_REFILL_CHECK_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub refill_check_ms: u64,
    /// A live key that expires within this many days raises `key.expiring` (once per key and
    /// expiry).
    #[arg(long, env = "KEYGATE_EXPIRING_WITHIN_DAYS", default_value_t = 7, value_parser = clap::value_parser!(i64).range(1..=3650))]
    pub expiring_within_days: i64,
    /// How often keys coming within `--expiring-within-days` of their expiry are looked for,
    /// milliseconds (a notice is raised at most this late).
    #[arg(long, env = "KEYGATE_EXPIRING_CHECK_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(10..=86_400_000))]
    pub expiring_check_ms: u64,
    /// An edge's usage report counting refusals (`429 rate_limited`) for a key raises
    /// `key.rate_limited` at most once per key per this many seconds.
    #[arg(long, env = "KEYGATE_RATE_LIMITED_EVENT_EVERY_S", default_value_t = 3600, value_parser = clap::value_parser!(i64).range(1..=86_400))]
    pub rate_limited_event_every_s: i64,
    /// GitHub App token broker settings.
    #[command(flatten)]
    pub github: crate::github::GithubArgs,
    /// Forward-auth endpoint settings (`/v1/forward-auth`).
    #[command(flatten)]
    pub forward_auth: crate::forward_auth::ForwardAuthArgs,
    /// Webhook delivery settings.
    #[command(flatten)]
    pub webhooks: super::webhooks::WebhookArgs,
    /// GitHub secret scanning alert settings.
    #[command(flatten)]
    pub secret_scanning: super::secret_scanning::SecretScanningArgs,
}

impl Config {
    /// The edge registry's timing rules.
    pub fn edge_rules(&self) -> EdgeRules {
        EdgeRules {
            heartbeat_s: self.edge_heartbeat_s.max(1),
            lagging_after_s: self.edge_lagging_after_s.max(0),
            gone_after_s: self.edge_gone_after_s.max(1),
        }
    }

    /// A configuration for tests and embedding: defaults with the given database and admin token.
    pub fn new(database_url: impl Into<String>, admin_token: Option<String>) -> Self {
        Self {
            database_url: database_url.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_token,
            key_prefix: "kg_live".into(),
            auth_failures_per_minute: 30,
            possession_revocations_per_minute: 10,
            body_limit: 64 * 1024,
            usage_flush_ms: 1000,
            changes_retained: 100_000,
            edge_heartbeat_s: 15,
            edge_lagging_after_s: 5,
            edge_gone_after_s: 90,
            edge_gone_check_ms: 5000,
            usage_retention_days: 90,
            refill_check_ms: 1000,
            expiring_within_days: 7,
            expiring_check_ms: 60_000,
            rate_limited_event_every_s: 3600,
            github: crate::github::GithubArgs::default(),
            forward_auth: crate::forward_auth::ForwardAuthArgs::default(),
            webhooks: super::webhooks::WebhookArgs::default(),
            secret_scanning: super::secret_scanning::SecretScanningArgs::default(),
        }
    }
}
