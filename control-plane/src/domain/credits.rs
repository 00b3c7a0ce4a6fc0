//! Credits on a key (issue 27): a fleet-wide balance the control plane keeps, spent by usage
//! reports and verifications, with an optional refill (`daily` at 00:00 UTC, `monthly` on the
//! 1st at 00:00 UTC, or every N seconds) that sets the balance back to its amount; when the
//! next refill is due, computed from the stored time alone (restart-safe), and a child's
//! credits bounded by its parent's.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::limits::{LimitsError, MAX_CREDITS};

/// The audit action of a change of a key's limits or credits (API, CLI, console).
pub const LIMITS_ACTION: &str = "key.limits";
/// The audit action recorded when usage takes a key's balance to 0.
pub const EXHAUSTED_ACTION: &str = "key.credits_exhausted";
/// The audit action of a refill.
pub const REFILL_ACTION: &str = "key.credits_refill";
/// The audit action of a change of a workspace's default limits.
pub const WORKSPACE_LIMITS_ACTION: &str = "workspace.limits";

/// How often a balance is refilled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefillInterval {
    /// Every day at 00:00 UTC.
    Daily,
    /// On the 1st of every month at 00:00 UTC.
    Monthly,
    /// Every N seconds from the previous refill.
    Seconds(u32),
}

/// An interval as written: `daily`, `monthly`, or seconds (a number or digits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntervalInput {
    /// Seconds.
    Seconds(u64),
    /// `daily`, `monthly` or digits.
    Text(String),
}

impl RefillInterval {
    /// Parses `daily`, `monthly` or a number of seconds (1 s to 366 days).
    ///
    /// # Errors
    /// [`LimitsError::BadInterval`].
    pub fn parse(input: &IntervalInput) -> Result<Self, LimitsError> {
        let text = match input {
            IntervalInput::Seconds(s) => s.to_string(),
            IntervalInput::Text(t) => t.clone(),
        };
        match text.as_str() {
            "daily" => Ok(Self::Daily),
            "monthly" => Ok(Self::Monthly),
            t => match t.parse::<u32>() {
                Ok(s) if (1..=366 * 86_400).contains(&s) => Ok(Self::Seconds(s)),
                _ => Err(LimitsError::BadInterval(t.chars().take(40).collect())),
            },
        }
    }

    /// The stored (and shown) text.
    pub fn as_text(self) -> String {
        match self {
            Self::Daily => "daily".into(),
            Self::Monthly => "monthly".into(),
            Self::Seconds(s) => s.to_string(),
        }
    }

    /// The first refill time after `t`.
    pub fn next_after(self, t: i64) -> i64 {
        match self {
            Self::Seconds(s) => t + i64::from(s),
            Self::Daily => (t.div_euclid(86_400) + 1) * 86_400,
            Self::Monthly => {
                let d = time::OffsetDateTime::from_unix_timestamp(t)
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
                let (y, m) = match d.month() {
                    time::Month::December => (d.year() + 1, time::Month::January),
                    m => (d.year(), m.next()),
                };
                time::Date::from_calendar_date(y, m, 1)
                    .map(|d| d.midnight().assume_utc().unix_timestamp())
                    .unwrap_or(t + 31 * 86_400)
            }
        }
    }

    /// The refill after one that was due at `due`, seen at `now` (`due <= now`): the first
    /// time after `now` on the interval's schedule, so refills missed while no replica ran are
    /// not made up one by one.
    pub fn following(self, due: i64, now: i64) -> i64 {
        match self {
            Self::Seconds(s) => {
                let s = i64::from(s);
                due + s * ((now - due).max(0) / s + 1)
            }
            _ => self.next_after(now.max(due)),
        }
    }
}

/// `credits` in the API's input: `{"remaining":500,"refill":{"amount":500,"interval":"daily"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditsSpec {
    /// The balance (0 to 10¹²); each request the edges or verify count takes one.
    pub remaining: i64,
    /// An optional refill.
    #[serde(default)]
    pub refill: Option<RefillSpec>,
}

/// A refill in the API's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefillSpec {
    /// The balance after a refill (1 to 10¹²).
    pub amount: i64,
    /// `daily`, `monthly` or a number of seconds.
    #[schema(value_type = String, example = "daily")]
    pub interval: IntervalInput,
}

/// Parses the CLI's and the console's `AMOUNT/INTERVAL` (`500/daily`, `100/3600`).
///
/// # Errors
/// [`LimitsError::BadCredits`] when it is not that shape.
pub fn parse_refill_arg(arg: &str) -> Result<RefillSpec, LimitsError> {
    let bad = || {
        LimitsError::BadCredits(format!(
            "refill `{}`: expected AMOUNT/INTERVAL, e.g. 500/daily",
            arg.chars().take(40).collect::<String>()
        ))
    };
    let (amount, interval) = arg.split_once('/').ok_or_else(bad)?;
    Ok(RefillSpec {
        amount: amount.trim().parse().map_err(|_| bad())?,
        interval: IntervalInput::Text(interval.trim().to_owned()),
    })
}

/// A refill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refill {
    /// The balance after a refill.
    pub amount: i64,
    /// How often.
    pub interval: RefillInterval,
}

/// A key's credits: its balance, and its refill with the time the next one is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credits {
    /// The balance; at 0 the key is `credits_exhausted`.
    pub remaining: i64,
    /// The refill.
    pub refill: Option<Refill>,
    /// When the next refill is due (set when there is a refill).
    pub next_refill_at: Option<i64>,
}

/// Credits as the API shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreditsView {
    /// The balance.
    pub remaining: i64,
    /// The balance after a refill.
    pub refill_amount: Option<i64>,
    /// `daily`, `monthly` or seconds.
    pub refill_interval: Option<String>,
    /// When the next refill is due, unix seconds.
    pub next_refill_at: Option<i64>,
}

impl Credits {
    /// Parses the API's input at `now` (the first refill is the interval's first after now).
    ///
    /// # Errors
    /// [`LimitsError::BadCredits`] or [`LimitsError::BadInterval`].
    pub fn parse(spec: &CreditsSpec, now: i64) -> Result<Self, LimitsError> {
        if !(0..=MAX_CREDITS).contains(&spec.remaining) {
            return Err(LimitsError::BadCredits(format!(
                "remaining must be 0 to {MAX_CREDITS}"
            )));
        }
        let refill = match &spec.refill {
            None => None,
            Some(r) => {
                if !(1..=MAX_CREDITS).contains(&r.amount) {
                    return Err(LimitsError::BadCredits(format!(
                        "refill amount must be 1 to {MAX_CREDITS}"
                    )));
                }
                Some(Refill {
                    amount: r.amount,
                    interval: RefillInterval::parse(&r.interval)?,
                })
            }
        };
        Ok(Self {
            remaining: spec.remaining,
            refill,
            next_refill_at: refill.map(|r| r.interval.next_after(now)),
        })
    }

    /// From the stored columns; `None` without a balance.
    pub fn from_columns(
        remaining: Option<i64>,
        amount: Option<i64>,
        interval: Option<&str>,
        next_refill_at: Option<i64>,
    ) -> Option<Self> {
        let remaining = remaining?;
        let refill = match (amount, interval) {
            (Some(amount), Some(i)) => RefillInterval::parse(&IntervalInput::Text(i.to_owned()))
                .ok()
                .map(|interval| Refill { amount, interval }),
            _ => None,
        };
        Some(Self {
            remaining,
            refill,
            next_refill_at: refill.and(next_refill_at),
        })
    }

    /// As the API shows them.
    pub fn view(&self) -> CreditsView {
        CreditsView {
            remaining: self.remaining,
            refill_amount: self.refill.map(|r| r.amount),
            refill_interval: self.refill.map(|r| r.interval.as_text()),
            next_refill_at: self.next_refill_at,
        }
    }

    /// Whether the balance is used up.
    pub fn exhausted(&self) -> bool {
        self.remaining == 0
    }
}

/// A child's credits, bounded by its parent's: with a parent that has a balance, a child
/// holds at most the parent's remaining balance (by default exactly that, without refill), and
/// a refill only on the parent's interval at no more than the parent's amount. (And in the key
/// set a child is `credits_exhausted` whenever its parent is: `limits::resolve_policy`.)
///
/// # Errors
/// [`LimitsError::ExceedsParent`].
pub fn child_credits(
    requested: Option<Credits>,
    parent: Option<&Credits>,
) -> Result<Option<Credits>, LimitsError> {
    let Some(p) = parent else {
        return Ok(requested);
    };
    let Some(c) = requested else {
        return Ok(Some(Credits {
            remaining: p.remaining,
            refill: None,
            next_refill_at: None,
        }));
    };
    if c.remaining > p.remaining {
        return Err(LimitsError::ExceedsParent(format!(
            "credits {} exceed the parent's remaining {}",
            c.remaining, p.remaining
        )));
    }
    if let Some(r) = c.refill {
        let ok = p
            .refill
            .is_some_and(|pr| pr.interval == r.interval && r.amount <= pr.amount);
        if !ok {
            return Err(LimitsError::ExceedsParent(
                "a child's refill must be on its parent's interval at no more than its amount"
                    .into(),
            ));
        }
    }
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(remaining: i64, refill: Option<(i64, &str)>) -> CreditsSpec {
        CreditsSpec {
            remaining,
            refill: refill.map(|(amount, i)| RefillSpec {
                amount,
                interval: IntervalInput::Text(i.into()),
            }),
        }
    }

    #[test]
    fn intervals_are_daily_monthly_or_seconds() {
        let p = |s: &str| RefillInterval::parse(&IntervalInput::Text(s.into()));
        assert_eq!(p("daily"), Ok(RefillInterval::Daily));
        assert_eq!(p("monthly"), Ok(RefillInterval::Monthly));
        assert_eq!(p("60"), Ok(RefillInterval::Seconds(60)));
        assert_eq!(
            RefillInterval::parse(&IntervalInput::Seconds(5)),
            Ok(RefillInterval::Seconds(5))
        );
        for bad in ["weekly", "0", "-5", "1d", ""] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refills_fall_on_midnight_the_first_of_the_month_or_every_n_seconds() {
        // 2026-12-07 19:55:44 UTC
        let t = 1_796_673_344;
        assert_eq!(RefillInterval::Daily.next_after(t), 1_796_688_000); // 12-08 00:00
        assert_eq!(RefillInterval::Monthly.next_after(t), 1_798_761_600); // 2027-01-01
        assert_eq!(RefillInterval::Seconds(30).next_after(t), t + 30);
        // A refill seen late is followed by the next one after now, not by catch-ups.
        assert_eq!(RefillInterval::Seconds(10).following(100, 135), 140);
        assert_eq!(RefillInterval::Seconds(10).following(100, 100), 110);
        assert_eq!(
            RefillInterval::Daily.following(1_796_688_000, 1_796_688_000 + 5 * 86_400 + 7),
            1_796_688_000 + 6 * 86_400
        );
    }

    #[test]
    fn credits_parse_with_their_first_refill_and_reject_bad_amounts() {
        let c = Credits::parse(&spec(500, Some((500, "daily"))), 10).unwrap();
        assert_eq!(c.next_refill_at, Some(86_400));
        assert_eq!(c.view().refill_interval.as_deref(), Some("daily"));
        assert!(Credits::parse(&spec(-1, None), 0).is_err());
        assert!(Credits::parse(&spec(MAX_CREDITS + 1, None), 0).is_err());
        assert!(Credits::parse(&spec(1, Some((0, "daily"))), 0).is_err());
        assert!(matches!(
            Credits::parse(&spec(1, Some((1, "weekly"))), 0),
            Err(LimitsError::BadInterval(_))
        ));
        let stored = Credits::from_columns(Some(3), Some(500), Some("60"), Some(70)).unwrap();
        assert_eq!(
            stored,
            Credits::parse(&spec(3, Some((500, "60"))), 10).unwrap()
        );
        assert_eq!(Credits::from_columns(None, None, None, None), None);
    }

    #[test]
    fn the_refill_argument_is_amount_slash_interval() {
        assert_eq!(
            parse_refill_arg("500/daily"),
            Ok(RefillSpec {
                amount: 500,
                interval: IntervalInput::Text("daily".into())
            })
        );
        for bad in ["500", "x/daily", "/daily"] {
            assert!(parse_refill_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_childs_credits_never_exceed_its_parents() {
        let parent = Credits::parse(&spec(100, Some((100, "daily"))), 0).unwrap();
        let c = |r, refill| Some(Credits::parse(&spec(r, refill), 0).unwrap());
        assert_eq!(child_credits(None, None), Ok(None));
        assert_eq!(child_credits(c(5, None), None), Ok(c(5, None)));
        assert_eq!(
            child_credits(None, Some(&parent))
                .unwrap()
                .unwrap()
                .remaining,
            100,
            "by default the parent's remaining balance"
        );
        assert_eq!(
            child_credits(c(50, Some((10, "daily"))), Some(&parent)),
            Ok(c(50, Some((10, "daily"))))
        );
        assert!(child_credits(c(101, None), Some(&parent)).is_err());
        assert!(child_credits(c(1, Some((101, "daily"))), Some(&parent)).is_err());
        assert!(child_credits(c(1, Some((1, "60"))), Some(&parent)).is_err());
    }
}
