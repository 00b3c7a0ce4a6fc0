-- Rate limits counted by `POST /v1/keys/verify` (issue 27): one row per bucket and fixed window,
-- shared by every replica on the database, so verify passes exactly the limit per window
-- however many replicas answer (storage/rate_windows.rs). A bucket is the filter's: a key's own
-- counter (`pool` 'key', `pool_id` the key id text) or an owner's pool (`pool` 'owner',
-- `pool_id` the owner id), per limit name and window length. Rows whose window has ended are
-- pruned by a background task (`window_end`).
CREATE TABLE rate_limit_windows (
    pool TEXT NOT NULL,
    pool_id TEXT NOT NULL,
    name TEXT NOT NULL,
    window_s INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    window_end INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (pool, pool_id, name, window_s, window_start)
);
CREATE INDEX rate_limit_windows_end ON rate_limit_windows (window_end);

-- Refusals by reason: `limited` keeps its meaning (refused by a rate limit, 429 rate_limited);
-- `credits_exhausted` counts requests refused because the key's credits were used up.
ALTER TABLE usage_hourly ADD COLUMN credits_exhausted INTEGER NOT NULL DEFAULT 0;
