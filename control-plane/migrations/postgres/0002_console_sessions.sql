-- Operator console sessions (http/console/session.rs). Only a hash of the session token is
-- stored; the credential is the digest the signed-in key or admin token already has in this
-- database, re-checked on every request. `flash` holds the secret of a key just created, sealed
-- with a keystream only the session token (the browser's cookie) can rebuild; it is read once.
CREATE TABLE console_sessions (
    token_hash BYTEA PRIMARY KEY NOT NULL,
    credential_digest BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    flash_key_id BYTEA,
    flash BYTEA
);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);
