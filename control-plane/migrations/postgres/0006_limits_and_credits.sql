-- Limits and credits on keys (issue 27, domain/limits.rs, docs/credits.md).
-- `limits`: the key's own rate limits as JSON ([{"name","limit","window_s","pool"}]); NULL
-- means it inherits its workspace's defaults (`workspaces.default_limits`).
-- `credits_remaining`: the fleet-wide credit balance (NULL: no credits, unlimited); at 0 the
-- key is `credits_exhausted` in the key set. `refill_amount`/`refill_interval` ('daily',
-- 'monthly' or a number of seconds) and `next_refill_at` drive the refill task, which refills
-- with a conditional update on `next_refill_at` (never twice across replicas).
ALTER TABLE keys ADD COLUMN limits TEXT;
ALTER TABLE keys ADD COLUMN credits_remaining BIGINT;
ALTER TABLE keys ADD COLUMN refill_amount BIGINT;
ALTER TABLE keys ADD COLUMN refill_interval TEXT;
ALTER TABLE keys ADD COLUMN next_refill_at BIGINT;
CREATE INDEX keys_next_refill ON keys(next_refill_at) WHERE next_refill_at IS NOT NULL;
ALTER TABLE workspaces ADD COLUMN default_limits TEXT;
-- Requests the edges refused by a rate limit (429 rate_limited), per key and hour.
ALTER TABLE usage_hourly ADD COLUMN limited BIGINT NOT NULL DEFAULT 0;
