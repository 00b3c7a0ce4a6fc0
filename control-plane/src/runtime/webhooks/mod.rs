//! Webhook delivery: the background task that leases due messages from the outbox
//! ([`crate::storage::webhook_outbox`]), sends each as a signed POST ([`sign`], Standard
//! Webhooks headers), logs the attempt and schedules a retry with exponential backoff until the
//! receiver answers 2xx or the attempts run out. At-least-once: a process killed mid-delivery
//! leaves the message leased, and whichever process runs next sends it again when the lease
//! (twice the request timeout) runs out.

pub mod sign;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::domain::webhooks::retry_delay_ms;
use crate::storage::Db;
use crate::storage::webhook_outbox::{AttemptOutcome, Due, NextState};

/// Messages leased per round.
const BATCH: i64 = 32;

/// `keygate serve`'s webhook settings.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// How long a delivery may take before it counts as failed, milliseconds.
    #[arg(long, env = "KEYGATE_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub webhook_timeout_ms: u64,
    /// The first retry's delay, milliseconds; each further retry doubles it (at most an hour).
    #[arg(long, env = "KEYGATE_WEBHOOK_RETRY_BASE_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub webhook_retry_base_ms: u64,
    /// Attempts per message before it is marked failed.
    #[arg(long, env = "KEYGATE_WEBHOOK_MAX_ATTEMPTS", default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub webhook_max_attempts: u32,
    /// How often the outbox is checked besides after this process's own key writes,
    /// milliseconds (other replicas' events, retries coming due).
    #[arg(long, env = "KEYGATE_WEBHOOK_POLL_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub webhook_poll_ms: u64,
    /// Days finished deliveries are kept (events, messages delivered or failed, the delivery
    /// log, canary hit ids); older ones are pruned hourly. Pending messages are never pruned.
    #[arg(long, env = "KEYGATE_WEBHOOK_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(i64).range(1..=3660))]
    pub webhook_retention_days: i64,
}

impl Default for WebhookArgs {
    fn default() -> Self {
        Self {
            webhook_timeout_ms: 10_000,
            webhook_retry_base_ms: 5_000,
            webhook_max_attempts: 15,
            webhook_poll_ms: 500,
            webhook_retention_days: 30,
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The delivery task: runs until aborted. Wakes on this process's key writes (the revision
/// watch), its other events (a canary hit: [`Db::outbox_written`]) and every `webhook_poll_ms`.
pub async fn deliver_forever(db: Db, args: WebhookArgs) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_millis(args.webhook_timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook delivery disabled: no HTTP client");
            return;
        }
    };
    let args = Arc::new(args);
    let mut writes = db.subscribe_revisions();
    let mut events = db.subscribe_outbox();
    let poll = Duration::from_millis(args.webhook_poll_ms);
    loop {
        let now = now_ms();
        let lease = now.saturating_add(i64::try_from(args.webhook_timeout_ms * 2).unwrap_or(0));
        match db.lease_due_messages(now, lease, BATCH).await {
            Ok(due) if !due.is_empty() => {
                let full = i64::try_from(due.len()).unwrap_or(0) == BATCH;
                let sends = due.into_iter().map(|d| deliver_one(&db, &http, &args, d));
                futures_util::future::join_all(sends).await;
                if full {
                    continue;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "webhook outbox unreadable; retrying"),
        }
        tokio::select! {
            _ = writes.changed() => {}
            _ = events.changed() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// Prunes finished deliveries older than `--webhook-retention-days`, hourly; runs until aborted.
pub async fn prune_forever(db: Db, retention_days: i64) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let before = now_ms() / 1000 - retention_days.saturating_mul(24 * 3600);
        match db.prune_webhooks(before).await {
            Ok(p) => tracing::debug!(?p, "webhook rows pruned"),
            Err(e) => tracing::warn!(error = %e, "webhook pruning failed"),
        }
    }
}

/// Sends one message, logs the attempt and moves the message on.
async fn deliver_one(db: &Db, http: &reqwest::Client, args: &WebhookArgs, due: Due) {
    let started = Instant::now();
    let at = now_ms();
    let timestamp = at / 1000;
    let outcome = match sign::signature(
        &due.secret,
        &due.event_id,
        timestamp,
        due.payload.as_bytes(),
    ) {
        None => AttemptOutcome {
            status_code: None,
            error: Some("the endpoint's secret is not a whsec_ secret".into()),
            duration_ms: 0,
        },
        Some(signature) => {
            let sent = http
                .post(&due.url)
                .header("content-type", "application/json")
                .header("user-agent", "keygate-webhooks")
                .header("webhook-id", &due.event_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(due.payload.clone())
                .send()
                .await;
            let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
            match sent {
                Ok(r) if r.status().is_success() => AttemptOutcome {
                    status_code: Some(i64::from(r.status().as_u16())),
                    error: None,
                    duration_ms,
                },
                Ok(r) => AttemptOutcome {
                    status_code: Some(i64::from(r.status().as_u16())),
                    error: Some(format!("the receiver answered {}", r.status().as_u16())),
                    duration_ms,
                },
                // Without the URL: it may carry the receiver's own credential.
                Err(e) => AttemptOutcome {
                    status_code: None,
                    error: Some(describe(&e)),
                    duration_ms,
                },
            }
        }
    };
    let attempt = u32::try_from(due.attempts + 1).unwrap_or(u32::MAX);
    let next = if outcome.error.is_none() {
        NextState::Delivered
    } else if attempt >= args.webhook_max_attempts {
        NextState::Failed
    } else {
        let delay = retry_delay_ms(args.webhook_retry_base_ms, attempt);
        NextState::RetryAt(now_ms().saturating_add(i64::try_from(delay).unwrap_or(i64::MAX)))
    };
    if let Err(e) = db.record_attempt(&due, at, &outcome, next).await {
        // The lease runs out and the message is sent again: at-least-once.
        tracing::warn!(error = %e, event = %due.event_id, "webhook attempt not recorded");
    }
}

/// A delivery failure's kind, without the URL.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        "request failed".into()
    }
}
