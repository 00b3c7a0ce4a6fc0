-- Keygate control plane schema (PostgreSQL). Times are unix seconds; ids and digests are raw bytes.
CREATE TABLE workspaces (
    id TEXT PRIMARY KEY NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE keys (
    id BYTEA PRIMARY KEY NOT NULL,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL CHECK (kind IN ('workspace', 'repo', 'edge')),
    display_prefix TEXT NOT NULL,
    digest BYTEA NOT NULL UNIQUE,
    hash_version BIGINT NOT NULL,
    scopes TEXT NOT NULL,
    resources TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'revoked')),
    suspended_by_parent BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_used_at BIGINT,
    usage_count BIGINT NOT NULL DEFAULT 0,
    revoked_at BIGINT,
    created_by_id TEXT NOT NULL,
    created_by_name TEXT NOT NULL,
    created_by_prefix TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    metadata TEXT NOT NULL,
    parent_id BYTEA REFERENCES keys(id),
    subject TEXT
);
CREATE INDEX keys_workspace_id ON keys(workspace_id, id);
CREATE INDEX keys_parent ON keys(parent_id);

-- Rotated-out secrets that keep working until their grace period ends.
CREATE TABLE retired_secrets (
    digest BYTEA PRIMARY KEY NOT NULL,
    key_id BYTEA NOT NULL REFERENCES keys(id),
    grace_until BIGINT NOT NULL
);
CREATE INDEX retired_secrets_key ON retired_secrets(key_id);

CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    workspace_id TEXT,
    actor_id TEXT NOT NULL,
    actor_name TEXT NOT NULL,
    actor_prefix TEXT NOT NULL,
    action TEXT NOT NULL,
    key_id BYTEA,
    before TEXT,
    after TEXT,
    reason TEXT
);
CREATE INDEX audit_log_key ON audit_log(key_id, id);

-- Bootstrap admin credentials generated on first start (digest only).
CREATE TABLE admin_credentials (
    digest BYTEA PRIMARY KEY NOT NULL,
    display_prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Key-set change log: one counter row; every change to the set bumps it in the writing
-- transaction and logs the digests it touched.
CREATE TABLE keyset_revision (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL,
    floor BIGINT NOT NULL
);
INSERT INTO keyset_revision (id, revision, floor) VALUES (1, 0, 0);

CREATE TABLE keyset_changes (
    revision BIGINT NOT NULL,
    digest BYTEA NOT NULL
);
CREATE INDEX keyset_changes_revision ON keyset_changes(revision);

CREATE TABLE usage_batches (
    batch_id TEXT PRIMARY KEY NOT NULL,
    received_at BIGINT NOT NULL
);
