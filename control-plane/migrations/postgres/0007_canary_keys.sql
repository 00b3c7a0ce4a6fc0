-- Canary keys (issue 28.3): the key kind 'canary', and the hits already raised, by hit id.
ALTER TABLE keys DROP CONSTRAINT keys_kind_check;
ALTER TABLE keys ADD CONSTRAINT keys_kind_check CHECK (kind IN ('workspace', 'repo', 'edge', 'canary'));

-- A hit reported with an id raises its event once, however often the report is retried.
CREATE TABLE canary_hits (
    id TEXT PRIMARY KEY NOT NULL,
    key_id BYTEA NOT NULL,
    at BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX canary_hits_received ON canary_hits(received_at);
