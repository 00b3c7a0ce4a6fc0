-- Events raised by the control plane itself (issue 28.4): a record per notice already raised,
-- so that a restart or a second replica never raises one twice. The insert of the record and
-- the audit row (with its webhook event) share one transaction.

-- `key.expiring`: one per key and expiry (a changed expiry can be noticed again).
CREATE TABLE key_expiry_notices (
    key_id BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    noticed_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, expires_at)
);

-- `edge.gone`: one per edge and silence (keyed by the last report before it, so an edge that
-- comes back and falls silent again is noticed again).
CREATE TABLE edge_gone_notices (
    edge_id TEXT NOT NULL,
    last_seen INTEGER NOT NULL,
    noticed_at INTEGER NOT NULL,
    PRIMARY KEY (edge_id, last_seen)
);

-- `key.rate_limited`: each key's last notice, so that refusals raise at most one per key per
-- period (`--rate-limited-event-every-s`).
CREATE TABLE rate_limited_notices (
    key_id BLOB PRIMARY KEY NOT NULL,
    noticed_at INTEGER NOT NULL
);
