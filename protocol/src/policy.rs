//! What a key is besides its grant: its state (active, canary, out of credits) and its rate limits.
//!
//! A [`Policy`] travels with each key in the key set (interned with the key's grant, so the keys
//! that share a policy share one copy). The filter enforces it; the control plane decides it:
//! workspace defaults, an owner's shared limits and credit balances are resolved there into
//! each key's policy, so the filter needs nothing but the key set to decide.

/// The most rate limits one key may carry.
pub const MAX_LIMITS_PER_KEY: usize = 8;
/// The longest rate limit name, in bytes.
pub const MAX_LIMIT_NAME_LEN: usize = 32;
/// The longest rate limit window, in seconds (31 days).
pub const MAX_WINDOW_S: u32 = 31 * 24 * 3600;

/// What a key in the set is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyState {
    /// A key that may pass (subject to its grant and limits).
    #[default]
    Active,
    /// A canary: never valid. The filter denies it exactly as an unknown key and reports the
    /// hit at once.
    Canary,
    /// A key whose credits are used up: denied with `429 credits_exhausted` until a refill.
    CreditsExhausted,
}

impl KeyState {
    /// The state's wire byte.
    #[must_use]
    pub const fn to_byte(self) -> u8 {
        match self {
            Self::Active => 0,
            Self::Canary => 1,
            Self::CreditsExhausted => 2,
        }
    }

    /// The state of a wire byte, `None` for an unknown one.
    #[must_use]
    pub const fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Active),
            1 => Some(Self::Canary),
            2 => Some(Self::CreditsExhausted),
            _ => None,
        }
    }
}

/// Whose requests a rate limit counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum LimitPool {
    /// The key's own requests.
    #[default]
    Key,
    /// The requests of every key in the set with the key's owner string, whoever issued it
    /// (format version 2; a control plane of this build writes [`LimitPool::OwnerIn`] instead,
    /// since two workspaces may each have an owner of the same name).
    Owner,
    /// The requests of every key with the key's owner string *and this scope* (the control
    /// plane: the key's workspace id): one pool per (scope, owner), so two tenants' owners of
    /// the same name never share one (format version 3; see [`validate_pool_scope`]).
    OwnerIn(String),
}

impl LimitPool {
    /// The pool's wire value (`2` for [`LimitPool::OwnerIn`], whose scope travels apart).
    #[must_use]
    pub const fn to_wire(&self) -> u32 {
        match self {
            Self::Key => 0,
            Self::Owner => 1,
            Self::OwnerIn(_) => 2,
        }
    }

    /// The pool of a wire value without a scope (0, 1), `None` for any other (a scoped pool is
    /// read with its scope: [`LimitPool::OwnerIn`]).
    #[must_use]
    pub const fn from_wire(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Key),
            1 => Some(Self::Owner),
            _ => None,
        }
    }

    /// The scope of a [`LimitPool::OwnerIn`] pool.
    #[must_use]
    pub fn scope(&self) -> Option<&str> {
        match self {
            Self::OwnerIn(scope) => Some(scope),
            Self::Key | Self::Owner => None,
        }
    }

    /// Whether the pool is shared by an owner's keys (scoped or not).
    #[must_use]
    pub const fn is_owner(&self) -> bool {
        matches!(self, Self::Owner | Self::OwnerIn(_))
    }
}

/// The wire value of [`LimitPool::OwnerIn`].
pub const POOL_OWNER_IN: u32 = 2;

/// The longest pool scope, in bytes (the longest owner id).
pub const MAX_POOL_SCOPE_LEN: usize = crate::scope::MAX_OWNER_LEN;

/// Checks a pool scope: 1 to [`MAX_POOL_SCOPE_LEN`] bytes.
///
/// # Errors
/// [`PolicyError::BadPoolScope`] otherwise.
pub const fn validate_pool_scope(scope: &str) -> Result<(), PolicyError> {
    if scope.is_empty() || scope.len() > MAX_POOL_SCOPE_LEN {
        return Err(PolicyError::BadPoolScope);
    }
    Ok(())
}

/// A named rate limit: at most `limit` requests per `window_s` seconds, counted over `pool`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// The limit's name (see [`validate_limit_name`]), as sent in `RateLimit-Policy`.
    pub name: String,
    /// Requests allowed per window (at least 1).
    pub limit: u32,
    /// The window, in seconds (1 to [`MAX_WINDOW_S`]).
    pub window_s: u32,
    /// Whose requests count.
    pub pool: LimitPool,
}

/// A key's state and rate limits. The default (active, no limits) is what every key had before
/// policies existed, and a set where every key has it encodes as format version 1.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Policy {
    /// What the key is.
    pub state: KeyState,
    /// Its rate limits, in order (at most [`MAX_LIMITS_PER_KEY`], distinct names).
    pub limits: Vec<RateLimit>,
}

impl Policy {
    /// Whether this is the default policy (active, no limits).
    #[must_use]
    pub fn is_default(&self) -> bool {
        self.state == KeyState::Active && self.limits.is_empty()
    }

    /// Checks every limit and that there are at most [`MAX_LIMITS_PER_KEY`] with distinct names.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), PolicyError> {
        validate_limits(
            self.limits
                .iter()
                .map(|l| (l.name.as_str(), l.limit, l.window_s)),
        )?;
        self.limits
            .iter()
            .filter_map(|l| l.pool.scope())
            .try_for_each(validate_pool_scope)
    }

    /// Whether a limit counts in a scoped owner pool (the message needs format version 3).
    #[must_use]
    pub fn has_scoped_pool(&self) -> bool {
        self.limits.iter().any(|l| l.pool.scope().is_some())
    }
}

/// Why a policy is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PolicyError {
    /// A name that is not 1 to 32 bytes of `[a-z0-9][a-z0-9_.-]*`.
    #[error("invalid rate limit name: 1 to 32 characters of `[a-z0-9][a-z0-9_.-]*`")]
    BadLimitName,
    /// A limit of 0 requests.
    #[error("a rate limit must allow at least 1 request")]
    BadLimit,
    /// A window of 0 seconds or longer than 31 days.
    #[error("a rate limit window must be 1 second to 31 days")]
    BadWindow,
    /// More than [`MAX_LIMITS_PER_KEY`] limits.
    #[error("a key has more than 8 rate limits")]
    TooManyLimits,
    /// Two limits with one name.
    #[error("two rate limits have the same name")]
    DuplicateLimitName,
    /// A pool scope that is empty or longer than 128 bytes.
    #[error("a rate limit pool's scope must be 1 to 128 bytes")]
    BadPoolScope,
}

impl PolicyError {
    /// A short, stable, machine-readable code.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::BadLimitName => "bad_limit_name",
            Self::BadLimit => "bad_limit",
            Self::BadWindow => "bad_window",
            Self::TooManyLimits => "too_many_limits",
            Self::DuplicateLimitName => "duplicate_limit_name",
            Self::BadPoolScope => "bad_pool_scope",
        }
    }
}

/// Checks a rate limit name such as `burst` or `per-day`: 1 to 32 bytes of
/// `[a-z0-9][a-z0-9_.-]*`, so it is a valid structured-field string as it is.
///
/// # Errors
/// [`PolicyError::BadLimitName`] otherwise.
pub fn validate_limit_name(name: &str) -> Result<(), PolicyError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_LIMIT_NAME_LEN
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(PolicyError::BadLimitName)
    }
}

/// Checks a list of `(name, limit, window_s)`: each valid, at most [`MAX_LIMITS_PER_KEY`], names
/// distinct.
///
/// # Errors
/// The first problem found.
pub fn validate_limits<'a>(
    limits: impl ExactSizeIterator<Item = (&'a str, u32, u32)>,
) -> Result<(), PolicyError> {
    if limits.len() > MAX_LIMITS_PER_KEY {
        return Err(PolicyError::TooManyLimits);
    }
    let mut names: [&str; MAX_LIMITS_PER_KEY] = [""; MAX_LIMITS_PER_KEY];
    for (i, (name, limit, window_s)) in limits.enumerate() {
        validate_limit_name(name)?;
        if limit == 0 {
            return Err(PolicyError::BadLimit);
        }
        if window_s == 0 || window_s > MAX_WINDOW_S {
            return Err(PolicyError::BadWindow);
        }
        if names[..i].contains(&name) {
            return Err(PolicyError::DuplicateLimitName);
        }
        names[i] = name;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(name: &str, limit: u32, window_s: u32) -> RateLimit {
        RateLimit {
            name: name.into(),
            limit,
            window_s,
            pool: LimitPool::Key,
        }
    }

    #[test]
    fn names_are_lowercase_tokens_of_at_most_32_bytes() {
        for good in ["burst", "per-day", "a", "0", "x.y_z", &"a".repeat(32)] {
            assert_eq!(validate_limit_name(good), Ok(()), "{good}");
        }
        for bad in ["", "Burst", "-x", "_x", "a b", "a\"b", "é", &"a".repeat(33)] {
            assert_eq!(
                validate_limit_name(bad),
                Err(PolicyError::BadLimitName),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_policy_is_checked_limit_by_limit_then_as_a_whole() {
        let mut p = Policy {
            state: KeyState::Active,
            limits: vec![limit("burst", 100, 10), limit("day", 10_000, 86_400)],
        };
        assert_eq!(p.validate(), Ok(()));
        p.limits[1].name = "burst".into();
        assert_eq!(p.validate(), Err(PolicyError::DuplicateLimitName));
        p.limits[1] = limit("day", 0, 10);
        assert_eq!(p.validate(), Err(PolicyError::BadLimit));
        p.limits[1] = limit("day", 1, 0);
        assert_eq!(p.validate(), Err(PolicyError::BadWindow));
        p.limits[1] = limit("day", 1, MAX_WINDOW_S + 1);
        assert_eq!(p.validate(), Err(PolicyError::BadWindow));
        p.limits = (0..9).map(|i| limit(&format!("l{i}"), 1, 1)).collect();
        assert_eq!(p.validate(), Err(PolicyError::TooManyLimits));
        p.limits = vec![limit("team", 1, 1)];
        for (scope, want) in [
            ("ws", Ok(())),
            ("", Err(PolicyError::BadPoolScope)),
            (&"w".repeat(129), Err(PolicyError::BadPoolScope)),
        ] {
            p.limits[0].pool = LimitPool::OwnerIn(scope.into());
            assert_eq!(p.validate(), want, "{scope:?}");
            assert!(p.has_scoped_pool());
        }
    }

    #[test]
    fn wire_values_round_trip_and_unknown_ones_are_refused() {
        for s in [
            KeyState::Active,
            KeyState::Canary,
            KeyState::CreditsExhausted,
        ] {
            assert_eq!(KeyState::from_byte(s.to_byte()), Some(s));
        }
        assert_eq!(KeyState::from_byte(3), None);
        for p in [LimitPool::Key, LimitPool::Owner] {
            assert_eq!(LimitPool::from_wire(p.to_wire()), Some(p));
        }
        assert_eq!(LimitPool::from_wire(2), None);
        let scoped = LimitPool::OwnerIn("ws-a".into());
        assert_eq!(
            (scoped.to_wire(), scoped.scope(), scoped.is_owner()),
            (POOL_OWNER_IN, Some("ws-a"), true)
        );
        assert!(Policy::default().is_default());
    }
}
