-- Edge registry (storage/edges.rs): the proxies that sync the key set, as their key-set calls
-- report them (keygate_protocol::edge headers). Written at most once per edge per heartbeat
-- unless what it reports changes (runtime/edges.rs), so a busy fleet is not a write per poll.
-- Times are unix seconds.
CREATE TABLE edges (
    edge_id TEXT PRIMARY KEY NOT NULL,
    node_id TEXT,
    node_cluster TEXT,
    address TEXT,
    edge_key_id BLOB,
    applied_revision BIGINT,
    key_count BIGINT,
    staleness_ms BIGINT,
    workers BIGINT,
    version TEXT,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);
CREATE INDEX edges_last_seen ON edges(last_seen);

-- When each change was committed, for an edge's lag in seconds (the age of the oldest change
-- it has not applied). Rows logged before this migration have none.
ALTER TABLE keyset_changes ADD COLUMN changed_at BIGINT;
