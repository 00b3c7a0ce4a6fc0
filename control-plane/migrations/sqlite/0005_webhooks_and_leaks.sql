-- Migration 0005: signed webhooks (endpoints, outbox, delivery log) and GitHub secret scanning alerts.
-- Signed webhooks (storage/webhooks.rs, runtime/webhooks.rs). An endpoint's signing secret is
-- stored as it is (`whsec_<base64>`): HMAC signing needs the secret itself, so it cannot be
-- hashed like a key; it is shown once at creation and never read back by the API.
-- `workspace_id` NULL: the admin's endpoint, every workspace's events.
CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY NOT NULL,
    workspace_id TEXT,
    url TEXT NOT NULL,
    event_types TEXT NOT NULL,
    description TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
-- One row per (endpoint, event type): what an event fans out to, in its own transaction.
CREATE TABLE webhook_subscriptions (
    endpoint_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    PRIMARY KEY (event_type, endpoint_id)
);
-- The outbox: one row per event, written in the transaction of the change that causes it.
CREATE TABLE webhook_events (
    id TEXT PRIMARY KEY NOT NULL,
    event_type TEXT NOT NULL,
    workspace_id TEXT,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
-- One message per (event, subscribed endpoint): `pending` until delivered (`delivered`) or out
-- of attempts (`failed`). A sender leases a message by moving `next_attempt_at` past its
-- timeout; a sender killed mid-delivery leaves it to be retried when the lease runs out.
CREATE TABLE webhook_messages (
    event_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    PRIMARY KEY (event_id, endpoint_id)
);
CREATE INDEX webhook_messages_due ON webhook_messages (state, next_attempt_at);
-- The delivery log: one row per attempt (`at`, unix milliseconds).
CREATE TABLE webhook_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at INTEGER NOT NULL,
    status_code INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL
);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, id);

-- GitHub secret scanning alerts already acted on (http/secret_scanning.rs), by the SHA-256 of
-- the signed body: a replayed alert (the same signed body again) changes nothing.
CREATE TABLE secret_scanning_alerts (
    body_digest BLOB PRIMARY KEY NOT NULL,
    received_at INTEGER NOT NULL
);
