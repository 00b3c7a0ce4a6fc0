//! Rate limits: a key's named limits counted in fixed windows aligned to the Unix epoch, the
//! `429 rate_limited` answer and the IETF `RateLimit` / `RateLimit-Policy` fields
//! (draft-ietf-httpapi-ratelimit-headers-11; `docs/rate-limits.md`).
//!
//! The decision allows first ([`crate::decision::decide`], pure); the shell then calls
//! [`check`] with the key's limits and its [`Counters`]: `lease` for the proxy-wasm filter
//! (workers lease chunks of a window's quota from one counter in the host's shared data),
//! `atomic` for one process (the dynamic module, forward-auth: exact).

mod atomic;
mod lease;

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};

use keygate_protocol::KeyId;
use keygate_protocol::policy::{LimitPool, RateLimit};
use rustc_hash::FxHasher;
use smallvec::SmallVec;

pub use atomic::AtomicCounters;
pub use lease::{Leased, Leases, MAX_CHUNK, chunk};

use crate::decision::{Deny, Reason};

/// The counter one limit of one key counts in: the key's own, or its owner's pool (within the
/// pool's scope, the key's workspace, for [`LimitPool::OwnerIn`]).
#[derive(Debug, Clone, Copy)]
pub struct Bucket<'a> {
    /// The key that made the request.
    pub key_id: KeyId,
    /// Its owner (with the limit's scope, the pool of owner-pooled limits).
    pub owner: &'a str,
    /// The limit.
    pub limit: &'a RateLimit,
}

impl Bucket<'_> {
    /// A 64-bit name of the counter (pool, key or scope and owner, limit name, window): what
    /// the in-process maps are keyed by. (`str`'s hash ends each string with a `0xff`, which
    /// no UTF-8 byte is, so a scope and an owner never run into each other.)
    pub fn id(&self) -> u64 {
        let mut h = FxHasher::default();
        match &self.limit.pool {
            LimitPool::Key => {
                0u8.hash(&mut h);
                self.key_id.as_bytes().hash(&mut h);
            }
            LimitPool::Owner => {
                1u8.hash(&mut h);
                self.owner.hash(&mut h);
            }
            LimitPool::OwnerIn(scope) => {
                2u8.hash(&mut h);
                scope.hash(&mut h);
                self.owner.hash(&mut h);
            }
        }
        self.limit.name.hash(&mut h);
        self.limit.window_s.hash(&mut h);
        h.finish()
    }

    /// The counter's name in the host's shared data (the lease's; built only when leasing):
    /// `keygate.rl.` then `k.<key id>`, `o.<owner>` or `s.<scope length>.<scope><owner>` (the
    /// length keeps a scope and an owner apart whatever bytes they hold), then
    /// `/<limit name>/<window>`.
    pub fn shared_key(&self) -> String {
        let mut k = String::with_capacity(64);
        k.push_str("keygate.rl.");
        match &self.limit.pool {
            LimitPool::Key => {
                k.push_str("k.");
                k.push_str(self.key_id.text().as_str());
            }
            LimitPool::Owner => {
                k.push_str("o.");
                k.push_str(self.owner);
            }
            LimitPool::OwnerIn(scope) => {
                let _ = write!(k, "s.{}.{scope}", scope.len());
                k.push_str(self.owner);
            }
        }
        let _ = write!(k, "/{}/{}", self.limit.name, self.limit.window_s);
        k
    }
}

/// The quota this proxy enforces for a limit of `limit` per window when `fleet` proxies share
/// it: `ceil(limit / fleet)` (the limit itself for one proxy).
pub fn quota(limit: u32, fleet: u32) -> u32 {
    limit.div_ceil(fleet.max(1)).max(1)
}

/// The fixed window of `window_s` seconds that holds `now_ms`: its index since the epoch and
/// the whole seconds left until it ends (1 to `window_s`).
pub fn window(now_ms: u64, window_s: u32) -> (u64, u32) {
    let w = u64::from(window_s.max(1));
    let now_s = now_ms / 1000;
    let index = now_s / w;
    let reset = (index + 1) * w - now_s;
    (index, u32::try_from(reset).unwrap_or(u32::MAX))
}

/// One counter's answer to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Take {
    /// Whether the request fits in the window's quota (and was counted).
    pub allowed: bool,
    /// Requests left in the window after this one (an estimate from above with leases).
    pub remaining: u32,
}

/// Where a shell counts: one request from `bucket` against `quota` in window `window`.
pub trait Counters {
    /// Counts the request if it fits.
    fn take(&mut self, bucket: &Bucket<'_>, quota: u32, window: u64) -> Take;
}

/// One limit's state after a request: what `RateLimit` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState<'a> {
    /// The limit's name.
    pub name: &'a str,
    /// Requests left in this window.
    pub remaining: u32,
    /// Seconds until the window ends.
    pub reset_s: u32,
}

/// The rate-limit verdict on a request the decision allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// The key has no rate limits: nothing counted, no field to send.
    Unlimited,
    /// Within every limit (`closest`: the one with the fewest requests left).
    Within(Status<'a>),
    /// Over `closest`: answer `429 rate_limited`.
    Limited(Status<'a>),
}

/// The limits of a key and the one closest to exhaustion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status<'a> {
    limits: &'a [RateLimit],
    fleet: u32,
    /// The limit closest to exhaustion (the one refused, for a 429).
    pub closest: LimitState<'a>,
    /// Each limit counted, in the key's order: every one when within (inline up to two).
    each: SmallVec<[LimitState<'a>; 2]>,
}

/// The response fields of an allowed request of a limited key, when `rate_limit_headers` asks
/// for them ([`Status::allowed_fields`]): `RateLimit-Policy`, then `RateLimit`.
pub type AllowedFields = [(&'static str, String); 2];

impl Status<'_> {
    /// `RateLimit-Policy`: every limit of the key as `"name";q=<quota>;w=<window>`.
    pub fn policy_field(&self) -> String {
        let mut v = String::with_capacity(24 * self.limits.len());
        for (i, l) in self.limits.iter().enumerate() {
            if i > 0 {
                v.push_str(", ");
            }
            let _ = write!(
                v,
                "\"{}\";q={};w={}",
                l.name,
                quota(l.limit, self.fleet),
                l.window_s
            );
        }
        v
    }

    /// `RateLimit`: the closest limit as `"name";r=<remaining>;t=<seconds to reset>`.
    pub fn limit_field(&self) -> String {
        format!(
            "\"{}\";r={};t={}",
            self.closest.name, self.closest.remaining, self.closest.reset_s
        )
    }

    /// The response fields: `RateLimit-Policy` and `RateLimit`.
    pub fn fields(&self) -> [(&'static str, String); 2] {
        [
            ("ratelimit-policy", self.policy_field()),
            ("ratelimit", self.limit_field()),
        ]
    }

    /// The fields of an allowed request: `RateLimit-Policy` as in [`Status::fields`], and
    /// `RateLimit` with one item per limit of the key, in its order, each
    /// `"name";r=<remaining after this request>;t=<seconds to its window's reset>`.
    pub fn allowed_fields(&self) -> AllowedFields {
        let mut items = String::with_capacity(24 * self.each.len());
        for (i, s) in self.each.iter().enumerate() {
            if i > 0 {
                items.push_str(", ");
            }
            let _ = write!(items, "\"{}\";r={};t={}", s.name, s.remaining, s.reset_s);
        }
        [
            ("ratelimit-policy", self.policy_field()),
            ("ratelimit", items),
        ]
    }

    /// The fields of a 429: `Retry-After` (the refused window's end), then [`Status::fields`].
    pub fn limited_fields(&self) -> [(&'static str, String); 3] {
        let [p, r] = self.fields();
        [("retry-after", self.closest.reset_s.to_string()), p, r]
    }
}

/// The deny of a request over a limit (its fields: [`Status::limited_fields`]).
pub fn deny() -> Deny {
    Deny::new(
        Reason::RateLimited,
        "the API key is over its rate limit; see Retry-After and RateLimit",
    )
}

/// Counts a request of `key_id` (owned by `owner`) against each of `limits` in order, at
/// `now_ms`, with `fleet` proxies sharing each limit. The first limit that refuses stops the
/// count (the limits before it have counted the request).
pub fn check<'a>(
    limits: &'a [RateLimit],
    key_id: KeyId,
    owner: &'a str,
    now_ms: u64,
    fleet: u32,
    counters: &mut impl Counters,
) -> Outcome<'a> {
    let mut closest: Option<LimitState<'a>> = None;
    let mut each = SmallVec::new();
    for limit in limits {
        let bucket = Bucket {
            key_id,
            owner,
            limit,
        };
        let (index, reset_s) = window(now_ms, limit.window_s);
        let take = counters.take(&bucket, quota(limit.limit, fleet), index);
        let state = LimitState {
            name: &limit.name,
            remaining: take.remaining,
            reset_s,
        };
        if !take.allowed {
            return Outcome::Limited(Status {
                limits,
                fleet,
                closest: LimitState {
                    remaining: 0,
                    ..state
                },
                each,
            });
        }
        each.push(state);
        if closest.is_none_or(|c| state.remaining < c.remaining) {
            closest = Some(state);
        }
    }
    match closest {
        None => Outcome::Unlimited,
        Some(closest) => Outcome::Within(Status {
            limits,
            fleet,
            closest,
            each,
        }),
    }
}

#[cfg(test)]
mod tests;
