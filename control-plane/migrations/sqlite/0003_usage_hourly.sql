-- Per-key request counts by hour (storage/usage_history.rs): fed by the edges' usage reports
-- and by this process's verification/forward-auth counts, in the same transaction as the key's
-- usage_count. `hour` is the unix time of the hour's start (a multiple of 3600). Rows older
-- than the retention (`--usage-retention-days`) are pruned by a background task.
CREATE TABLE usage_hourly (
    key_id BLOB NOT NULL,
    hour INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (key_id, hour)
);
CREATE INDEX usage_hourly_hour ON usage_hourly (hour);
