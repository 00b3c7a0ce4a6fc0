//! Rate limits and credits on keys (issue 27): the API's and the CLI's input parsed once
//! (`burst=100/10s`, windows `10s`/`1m`/`1h`/`1d`, refills `daily`/`monthly`/seconds), the
//! stored form, a child's bound by its parent, and each key's [`Policy`] as the key set carries
//! it: its own limits or its workspace's defaults, merged with its parent's, and its state from
//! its (and its parent's) credit balance.

use keygate_protocol::policy::{self, KeyState, LimitPool, Policy, PolicyError, RateLimit};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The largest credit balance or refill amount.
pub const MAX_CREDITS: i64 = 1_000_000_000_000;

/// Why limits or credits were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// A limit, or the list, breaks the contract's rules (name, rate, window, count).
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// A window that is not seconds or `<n>s|m|h|d`.
    #[error(
        "invalid window `{0}`: seconds, or a number followed by s, m, h or d (10s, 1m, 1h, 1d)"
    )]
    BadWindowSyntax(String),
    /// A limit written for the CLI that is not `name=limit/window[@owner]`.
    #[error(
        "invalid limit `{0}`: expected name=limit/window, e.g. burst=100/10s or day=5000/1d@owner"
    )]
    BadLimitSyntax(String),
    /// A pool other than `key` or `owner`.
    #[error("invalid pool `{0}`: `key` or `owner`")]
    BadPool(String),
    /// A credit balance or refill amount out of range.
    #[error("invalid credits: {0}")]
    BadCredits(String),
    /// A refill interval that is not `daily`, `monthly` or a number of seconds.
    #[error("invalid refill interval `{0}`: daily, monthly or a number of seconds")]
    BadInterval(String),
    /// A child's limit is missing, or looser than its parent's.
    #[error("a child key's limits never exceed its parent's: {0}")]
    ExceedsParent(String),
}

impl LimitsError {
    /// The API's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ExceedsParent(_) => "LIMITS_EXCEED_PARENT",
            Self::BadCredits(_) | Self::BadInterval(_) => "INVALID_CREDITS",
            _ => "INVALID_LIMITS",
        }
    }
}

/// One rate limit as the API takes it: `{"name":"burst","limit":100,"window":"10s"}`, with
/// `"pool":"owner"` for a limit shared by every key of the owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// 1 to 32 characters of `[a-z0-9][a-z0-9_.-]*`.
    pub name: String,
    /// Requests per window (at least 1).
    pub limit: u64,
    /// Seconds (`10`) or `10s`, `1m`, `1h`, `1d`; 1 s to 31 days.
    #[schema(value_type = String, example = "10s")]
    pub window: Window,
    /// `key` (default: the key's own requests) or `owner` (one pool for all the owner's keys).
    #[serde(default)]
    pub pool: Option<String>,
}

/// A window as written: seconds or text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Window {
    /// Seconds.
    Seconds(u64),
    /// `10s`, `1m`, `1h`, `1d` or digits.
    Text(String),
}

/// A rate limit as the API shows it and the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LimitView {
    /// Name.
    pub name: String,
    /// Requests per window.
    pub limit: u32,
    /// Window in seconds.
    pub window_s: u32,
    /// `key` or `owner`.
    pub pool: String,
}

/// Parses a window: seconds, or digits followed by `s`, `m`, `h` or `d`.
///
/// # Errors
/// [`LimitsError::BadWindowSyntax`], or the contract's range (1 s to 31 days).
pub fn parse_window(w: &Window) -> Result<u32, LimitsError> {
    let secs = match w {
        Window::Seconds(s) => *s,
        Window::Text(t) => {
            let bad = || LimitsError::BadWindowSyntax(t.chars().take(40).collect());
            let (digits, unit) = match t.char_indices().last() {
                Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c),
                _ => (t.as_str(), 's'),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let n: u64 = digits.parse().map_err(|_| bad())?;
            let mult = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => return Err(bad()),
            };
            n.saturating_mul(mult)
        }
    };
    match u32::try_from(secs) {
        Ok(s) if (1..=policy::MAX_WINDOW_S).contains(&s) => Ok(s),
        _ => Err(PolicyError::BadWindow.into()),
    }
}

fn parse_pool(p: Option<&str>) -> Result<LimitPool, LimitsError> {
    match p {
        None | Some("key") => Ok(LimitPool::Key),
        Some("owner") => Ok(LimitPool::Owner),
        Some(other) => Err(LimitsError::BadPool(other.chars().take(40).collect())),
    }
}

fn pool_name(p: &LimitPool) -> &'static str {
    match p {
        LimitPool::Key => "key",
        // Stored and shown unscoped: the scope is the key's workspace, put in by
        // `resolve_policy`.
        LimitPool::Owner | LimitPool::OwnerIn(_) => "owner",
    }
}

/// A checked list of rate limits (at most 8, distinct valid names, each 1 request or more per
/// 1 s to 31 days): what a key or a workspace's defaults hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits(Vec<RateLimit>);

impl Limits {
    /// Parses the API's input.
    ///
    /// # Errors
    /// The first problem found.
    pub fn parse(specs: &[LimitSpec]) -> Result<Self, LimitsError> {
        let mut out = Vec::with_capacity(specs.len());
        for s in specs {
            policy::validate_limit_name(&s.name)?;
            let limit = u32::try_from(s.limit).map_err(|_| PolicyError::BadLimit)?;
            out.push(RateLimit {
                name: s.name.clone(),
                limit,
                window_s: parse_window(&s.window)?,
                pool: parse_pool(s.pool.as_deref())?,
            });
        }
        let p = Policy {
            state: KeyState::Active,
            limits: out,
        };
        p.validate()?;
        Ok(Self(p.limits))
    }

    /// The limits.
    pub fn as_slice(&self) -> &[RateLimit] {
        &self.0
    }

    /// The limits as the API shows them.
    pub fn views(&self) -> Vec<LimitView> {
        self.0
            .iter()
            .map(|l| LimitView {
                name: l.name.clone(),
                limit: l.limit,
                window_s: l.window_s,
                pool: pool_name(&l.pool).to_owned(),
            })
            .collect()
    }

    /// The stored JSON text.
    pub fn to_stored(&self) -> String {
        serde_json::to_string(&self.views()).unwrap_or_else(|_| "[]".into())
    }

    /// Reads the stored JSON text; `None` for text this code did not write.
    pub fn from_stored(text: &str) -> Option<Self> {
        let views: Vec<LimitView> = serde_json::from_str(text).ok()?;
        let specs: Vec<LimitSpec> = views
            .into_iter()
            .map(|v| LimitSpec {
                name: v.name,
                limit: u64::from(v.limit),
                window: Window::Seconds(u64::from(v.window_s)),
                pool: Some(v.pool),
            })
            .collect();
        Self::parse(&specs).ok()
    }

    /// Checks a child's limits against its parent's: each of the parent's limits is present
    /// in the child (same name and pool) at a rate no higher (`limit / window`).
    ///
    /// # Errors
    /// [`LimitsError::ExceedsParent`] naming the first limit missing or looser.
    pub fn check_within(&self, parent: &Limits) -> Result<(), LimitsError> {
        for p in &parent.0 {
            match self.0.iter().find(|c| c.name == p.name) {
                None => {
                    return Err(LimitsError::ExceedsParent(format!(
                        "the parent's limit `{}` is missing",
                        p.name
                    )));
                }
                Some(c) if c.pool != p.pool || !at_most(c, p) => {
                    return Err(LimitsError::ExceedsParent(format!(
                        "`{}` is {}/{}s ({}), the parent's is {}/{}s ({})",
                        c.name,
                        c.limit,
                        c.window_s,
                        pool_name(&c.pool),
                        p.limit,
                        p.window_s,
                        pool_name(&p.pool)
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// Whether `a`'s rate (`limit / window`) is at most `b`'s.
fn at_most(a: &RateLimit, b: &RateLimit) -> bool {
    u64::from(a.limit) * u64::from(b.window_s) <= u64::from(b.limit) * u64::from(a.window_s)
}

/// A key's own limits if it has them, else its workspace's defaults.
pub fn own_or_default<'a>(
    own: Option<&'a Limits>,
    workspace: Option<&'a Limits>,
) -> &'a [RateLimit] {
    own.or(workspace).map(Limits::as_slice).unwrap_or(&[])
}

/// A key's own limits if it has them, else its workspace's defaults, as a list of its own.
pub fn effective_limits(own: Option<&Limits>, workspace: Option<&Limits>) -> Limits {
    own.or(workspace).cloned().unwrap_or_default()
}

/// What a key's parent contributes to its policy.
#[derive(Debug, Clone, Copy)]
pub struct ParentPolicy<'a> {
    /// The parent's limits (its own or the workspace's defaults).
    pub limits: &'a [RateLimit],
    /// The parent's credit balance.
    pub credits_remaining: Option<i64>,
}

/// A key's policy in the key set: its limits (own or the workspace's), with each of its
/// parent's limits that it lacks or holds looser put in at the parent's value (so a child never
/// exceeds its parent whatever changed since it was issued); `credits_exhausted` when its
/// balance, or its parent's, is 0. Its owner pools are scoped to its `workspace`
/// ([`LimitPool::OwnerIn`]): two workspaces' owners of one name never share a pool, at the
/// edge, in forward-auth or in verify.
pub fn resolve_policy(
    workspace: &str,
    limits: &[RateLimit],
    credits_remaining: Option<i64>,
    parent: Option<ParentPolicy<'_>>,
) -> Policy {
    let mut out: Vec<RateLimit> = Vec::with_capacity(limits.len());
    if let Some(p) = parent {
        for pl in p.limits {
            match limits.iter().find(|c| c.name == pl.name) {
                Some(c) if c.pool == pl.pool && at_most(c, pl) => out.push(c.clone()),
                _ => out.push(pl.clone()),
            }
        }
    }
    for l in limits {
        if out.len() < policy::MAX_LIMITS_PER_KEY && !out.iter().any(|o| o.name == l.name) {
            out.push(l.clone());
        }
    }
    for l in &mut out {
        if l.pool.is_owner() {
            l.pool = LimitPool::OwnerIn(workspace.to_owned());
        }
    }
    let exhausted =
        credits_remaining == Some(0) || parent.is_some_and(|p| p.credits_remaining == Some(0));
    Policy {
        state: if exhausted {
            KeyState::CreditsExhausted
        } else {
            KeyState::Active
        },
        limits: out,
    }
}

/// Parses the CLI's `name=limit/window`, with `@owner` (or `@key`) for the pool:
/// `burst=100/10s`, `day=5000/1d@owner`.
///
/// # Errors
/// [`LimitsError::BadLimitSyntax`] when it is not that shape.
pub fn parse_limit_arg(arg: &str) -> Result<LimitSpec, LimitsError> {
    let bad = || LimitsError::BadLimitSyntax(arg.chars().take(60).collect());
    let (name, rest) = arg.split_once('=').ok_or_else(bad)?;
    let (rest, pool) = match rest.split_once('@') {
        Some((r, p)) => (r, Some(p.to_owned())),
        None => (rest, None),
    };
    let (limit, window) = rest.split_once('/').ok_or_else(bad)?;
    Ok(LimitSpec {
        name: name.to_owned(),
        limit: limit.parse().map_err(|_| bad())?,
        window: Window::Text(window.to_owned()),
        pool,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, limit: u64, window: &str, pool: Option<&str>) -> LimitSpec {
        LimitSpec {
            name: name.into(),
            limit,
            window: Window::Text(window.into()),
            pool: pool.map(str::to_owned),
        }
    }

    fn limits(specs: &[(&str, u64, &str)]) -> Limits {
        Limits::parse(
            &specs
                .iter()
                .map(|(n, l, w)| spec(n, *l, w, None))
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }

    #[test]
    fn windows_are_seconds_or_a_number_with_a_unit() {
        for (w, s) in [
            ("10s", 10),
            ("1m", 60),
            ("1h", 3600),
            ("1d", 86_400),
            ("7", 7),
        ] {
            assert_eq!(parse_window(&Window::Text(w.into())), Ok(s), "{w}");
        }
        assert_eq!(parse_window(&Window::Seconds(30)), Ok(30));
        for bad in ["", "s", "1w", "-1s", "1.5m", "10 s", "m1"] {
            assert!(
                matches!(
                    parse_window(&Window::Text(bad.into())),
                    Err(LimitsError::BadWindowSyntax(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            parse_window(&Window::Text("0s".into())),
            Err(LimitsError::Policy(PolicyError::BadWindow))
        );
        assert_eq!(
            parse_window(&Window::Text("32d".into())),
            Err(LimitsError::Policy(PolicyError::BadWindow))
        );
    }

    #[test]
    fn a_list_is_checked_by_the_contracts_rules() {
        assert!(Limits::parse(&[spec("burst", 100, "10s", Some("owner"))]).is_ok());
        assert_eq!(
            Limits::parse(&[spec("Burst", 1, "1s", None)]),
            Err(LimitsError::Policy(PolicyError::BadLimitName))
        );
        assert_eq!(
            Limits::parse(&[spec("a", 0, "1s", None)]),
            Err(LimitsError::Policy(PolicyError::BadLimit))
        );
        assert_eq!(
            Limits::parse(&[spec("a", 1 << 33, "1s", None)]),
            Err(LimitsError::Policy(PolicyError::BadLimit))
        );
        assert_eq!(
            Limits::parse(&[spec("a", 1, "1s", None), spec("a", 2, "1s", None)]),
            Err(LimitsError::Policy(PolicyError::DuplicateLimitName))
        );
        assert!(matches!(
            Limits::parse(&[spec("a", 1, "1s", Some("team"))]),
            Err(LimitsError::BadPool(_))
        ));
    }

    #[test]
    fn the_stored_form_round_trips() {
        let l = Limits::parse(&[
            spec("burst", 100, "10s", None),
            spec("day", 5000, "1d", Some("owner")),
        ])
        .unwrap();
        assert_eq!(Limits::from_stored(&l.to_stored()), Some(l));
        assert_eq!(Limits::from_stored("nonsense"), None);
    }

    #[test]
    fn the_cli_form_is_name_equals_limit_slash_window_at_pool() {
        assert_eq!(
            parse_limit_arg("burst=100/10s").unwrap(),
            spec("burst", 100, "10s", None)
        );
        assert_eq!(
            parse_limit_arg("day=5000/1d@owner").unwrap(),
            spec("day", 5000, "1d", Some("owner"))
        );
        for bad in ["burst", "burst=100", "burst=x/10s", "=/"] {
            assert!(parse_limit_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_child_holds_each_of_its_parents_limits_at_no_higher_rate() {
        let parent = limits(&[("burst", 100, "10s"), ("day", 1000, "1d")]);
        assert_eq!(
            limits(&[("burst", 50, "10s"), ("day", 1000, "1d"), ("x", 1, "1s")])
                .check_within(&parent),
            Ok(())
        );
        // 600 per minute is the same rate as 100 per 10 s.
        assert_eq!(
            limits(&[("burst", 600, "1m"), ("day", 10, "1h")]).check_within(&parent),
            Ok(())
        );
        assert!(matches!(
            limits(&[("burst", 101, "10s"), ("day", 1000, "1d")]).check_within(&parent),
            Err(LimitsError::ExceedsParent(m)) if m.contains("burst")
        ));
        assert!(matches!(
            limits(&[("burst", 100, "10s")]).check_within(&parent),
            Err(LimitsError::ExceedsParent(m)) if m.contains("`day` is missing")
        ));
        let mut owner = limits(&[("burst", 1, "10s"), ("day", 1, "1d")]);
        owner.0[0].pool = LimitPool::Owner;
        assert!(owner.check_within(&parent).is_err(), "another pool");
        assert_eq!(limits(&[]).check_within(&Limits::default()), Ok(()));
    }

    #[test]
    fn a_policy_is_own_or_default_limits_bounded_by_the_parent_and_credit_state() {
        let own = limits(&[("burst", 10, "1s")]);
        let ws = limits(&[("day", 100, "1d")]);
        assert_eq!(own_or_default(Some(&own), Some(&ws)), own.as_slice());
        assert_eq!(own_or_default(None, Some(&ws)), ws.as_slice());
        assert!(own_or_default(None, None).is_empty());

        let p = resolve_policy("ws", own.as_slice(), Some(5), None);
        assert_eq!((p.state, p.limits.len()), (KeyState::Active, 1));
        assert_eq!(
            resolve_policy("ws", &[], Some(0), None).state,
            KeyState::CreditsExhausted
        );
        assert!(resolve_policy("ws", &[], None, None).is_default());

        // The parent tightened since: its limits win where the child's are looser or missing.
        let parent = limits(&[("burst", 5, "1s"), ("day", 100, "1d")]);
        let p = resolve_policy(
            "ws",
            own.as_slice(),
            None,
            Some(ParentPolicy {
                limits: parent.as_slice(),
                credits_remaining: Some(0),
            }),
        );
        assert_eq!(p.limits, parent.as_slice());
        assert_eq!(p.state, KeyState::CreditsExhausted, "the parent is out");
        let tight = limits(&[("burst", 1, "1s"), ("extra", 3, "1m")]);
        let p = resolve_policy(
            "ws",
            tight.as_slice(),
            Some(1),
            Some(ParentPolicy {
                limits: parent.as_slice(),
                credits_remaining: None,
            }),
        );
        let names: Vec<(&str, u32)> = p
            .limits
            .iter()
            .map(|l| (l.name.as_str(), l.limit))
            .collect();
        assert_eq!(names, [("burst", 1), ("day", 100), ("extra", 3)]);
        assert_eq!(p.state, KeyState::Active);
    }

    #[test]
    fn owner_pools_are_scoped_to_the_keys_workspace_and_key_pools_are_not() {
        let mut own = limits(&[("burst", 10, "1s"), ("team", 100, "1m")]);
        own.0[1].pool = LimitPool::Owner;
        let mut parent = limits(&[("day", 1000, "1d")]);
        parent.0[0].pool = LimitPool::Owner;
        let parent = Some(ParentPolicy {
            limits: parent.as_slice(),
            credits_remaining: None,
        });
        for ws in ["ws-a", "ws-b"] {
            let p = resolve_policy(ws, own.as_slice(), None, parent);
            let pools: Vec<(&str, &LimitPool)> = p
                .limits
                .iter()
                .map(|l| (l.name.as_str(), &l.pool))
                .collect();
            let scoped = LimitPool::OwnerIn(ws.into());
            assert_eq!(
                pools,
                [
                    ("day", &scoped),
                    ("burst", &LimitPool::Key),
                    ("team", &scoped)
                ]
            );
        }
        // The stored form and the API's view stay unscoped.
        assert_eq!(own.views()[1].pool, "owner");
    }
}
