//! The failures and conditions a test can make the fake simulate: a skewed clock, slow
//! answers, rate limits, stateless tokens by default, and the tokens' lifetime.

use std::time::Duration;

use crate::{FakeGithub, RateLimit};

impl FakeGithub {
    /// Sets how far the fake's clock is ahead of the host's (negative: behind), in seconds.
    pub fn set_clock_offset(&self, secs: i64) {
        self.shared.lock().clock_offset = secs;
    }

    /// Delays every answer by this long.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// Answers every App-authenticated request with this rate limit (or stops, with `None`).
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.shared.lock().rate_limit = limit;
    }

    /// Whether tokens are stateless (long, with dots) when the client does not ask.
    pub fn set_stateless_default(&self, on: bool) {
        self.shared.lock().stateless_default = on;
    }

    /// Lifetime of minted tokens, in seconds (GitHub: 3600).
    pub fn set_token_ttl(&self, secs: i64) {
        self.shared.lock().token_ttl = secs;
    }
}
