//! Usage over time: `GET /v1/keys/{id}/usage?from=&to=&bucket=hour|day`, a key's request
//! counts per hour or per UTC day from the hourly counts the store keeps (fed by the edges'
//! usage reports and by verification and forward-auth), zero-filled; and the same series
//! summed over every key a caller may read, for the console's overview. The retention is
//! `--usage-retention-days`: older hours read as zero.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::parse_id;
use super::read::find_key;
use crate::http::auth::{Caller, SCOPE_KEYS_READ, SCOPE_KEYS_WRITE};
use crate::http::error::{ApiError, ApiQuery};
use crate::runtime::clock::unix_now;
use crate::runtime::state::AppState;
use crate::storage::usage::HOUR;
use crate::storage::usage_history::KeyTotal;

/// The most buckets one answer holds (an hourly series of about 83 days).
pub const MAX_POINTS: i64 = 2000;

/// Seconds in a day bucket.
pub const DAY: i64 = 24 * HOUR;

/// A bucket's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    /// One hour.
    #[default]
    Hour,
    /// One UTC day.
    Day,
}

impl Bucket {
    /// Seconds in one bucket.
    pub fn seconds(self) -> i64 {
        match self {
            Self::Hour => HOUR,
            Self::Day => DAY,
        }
    }
}

/// `GET /v1/keys/{id}/usage` query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Start, unix seconds (rounded down to its bucket). Default: 24 buckets before `to` for
    /// `hour`, 30 for `day`.
    pub from: Option<i64>,
    /// End, unix seconds, exclusive (rounded up to its bucket). Default: now.
    pub to: Option<i64>,
    /// `hour` (default) or `day`.
    #[param(inline)]
    pub bucket: Option<Bucket>,
}

/// One bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsagePoint {
    /// The bucket's start, unix seconds.
    pub at: i64,
    /// Requests counted in it.
    pub count: i64,
    /// Requests refused in it by a rate limit (`429 rate_limited`): the edges', verify's and
    /// forward-auth's.
    #[serde(default)]
    pub limited: i64,
    /// Requests refused in it because the key's credits were used up (`credits_exhausted`);
    /// never counted in `limited`.
    #[serde(default)]
    pub credits_exhausted: i64,
}

/// A usage series.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageSeries {
    /// The key (absent for a sum over keys).
    pub key_id: Option<String>,
    /// The buckets' width.
    pub bucket: Bucket,
    /// The first bucket's start.
    pub from: i64,
    /// The end of the last bucket (exclusive).
    pub to: i64,
    /// Sum of the points.
    pub total: i64,
    /// Every bucket from `from` to `to`, oldest first, zeros included.
    pub points: Vec<UsagePoint>,
}

/// The period a query names, aligned to its buckets: `(from, to, bucket)`.
pub fn period(q: &UsageQuery, now: i64) -> Result<(i64, i64, Bucket), ApiError> {
    let bucket = q.bucket.unwrap_or_default();
    let step = bucket.seconds();
    let to = q.to.unwrap_or(now);
    if to <= 0 || to > now + 366 * DAY {
        return Err(ApiError::invalid(
            "`to` must be unix seconds, at most a year ahead",
        ));
    }
    let to = to.div_euclid(step) * step + if to % step == 0 { 0 } else { step };
    let default_buckets = if bucket == Bucket::Hour { 24 } else { 30 };
    let from = q.from.unwrap_or(to - default_buckets * step);
    if from < 0 {
        return Err(ApiError::invalid("`from` must be unix seconds"));
    }
    if q.to.is_some_and(|t| from >= t) {
        return Err(ApiError::invalid("`from` must be before `to`"));
    }
    let from = from.div_euclid(step) * step;
    if from >= to {
        return Err(ApiError::invalid("`from` must be before `to`"));
    }
    if (to - from) / step > MAX_POINTS {
        return Err(ApiError::invalid(format!(
            "at most {MAX_POINTS} buckets per answer: narrow `from`..`to` or use `bucket=day`"
        )));
    }
    Ok((from, to, bucket))
}

/// Folds hourly rows into zero-filled buckets of `bucket` from `from` to `to`.
pub fn fill(hours: &[(i64, i64, i64, i64)], from: i64, to: i64, bucket: Bucket) -> Vec<UsagePoint> {
    let step = bucket.seconds();
    let mut points: Vec<UsagePoint> = (0..(to - from) / step)
        .map(|i| UsagePoint {
            at: from + i * step,
            count: 0,
            limited: 0,
            credits_exhausted: 0,
        })
        .collect();
    for &(hour, count, limited, credits_exhausted) in hours {
        if hour >= from
            && hour < to
            && let Some(p) = points.get_mut(((hour - from) / step) as usize)
        {
            p.count += count;
            p.limited += limited;
            p.credits_exhausted += credits_exhausted;
        }
    }
    points
}

fn series(
    key_id: Option<String>,
    hours: &[(i64, i64, i64, i64)],
    (from, to, bucket): (i64, i64, Bucket),
) -> UsageSeries {
    let points = fill(hours, from, to, bucket);
    UsageSeries {
        key_id,
        bucket,
        from,
        to,
        total: points.iter().map(|p| p.count).sum(),
        points,
    }
}

#[utoipa::path(get, path = "/v1/keys/{id}/usage", tag = "keys", params(("id" = String, Path), UsageQuery),
    responses((status = 200, body = UsageSeries), (status = 400, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody)), security(("bearer" = [])))]
/// A key's requests per hour or per day (edges' reports, verification, forward-auth).
pub async fn key_usage(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Json<UsageSeries>, ApiError> {
    key_usage_series(&state, &caller, &id, &q).await.map(Json)
}

/// A key's usage series (the rules of `GET /v1/keys/{id}/usage`, shared with the console's
/// key page): the key must be one `caller` may read.
pub async fn key_usage_series(
    state: &AppState,
    caller: &Caller,
    id: &str,
    q: &UsageQuery,
) -> Result<UsageSeries, ApiError> {
    let p = period(q, unix_now())?;
    let key = find_key(state, caller, id).await?;
    let hours = state.db.usage_hours(parse_id(&key.id)?, p.0, p.1).await?;
    Ok(series(Some(key.id), &hours, p))
}

/// The usage of every key `caller` may read, summed per bucket (the console's overview).
pub async fn total_usage_series(
    state: &AppState,
    caller: &Caller,
    q: &UsageQuery,
) -> Result<UsageSeries, ApiError> {
    caller
        .require_scope(SCOPE_KEYS_READ)
        .or_else(|_| caller.require_scope(SCOPE_KEYS_WRITE))?;
    let p = period(q, unix_now())?;
    let hours = state
        .db
        .usage_hours_total(caller.workspace_filter(), p.0, p.1)
        .await?;
    Ok(series(None, &hours, p))
}

/// The `limit` keys `caller` may read with the most requests in the period `q` names, most
/// used first (the console's overview).
pub async fn top_keys(
    state: &AppState,
    caller: &Caller,
    q: &UsageQuery,
    limit: i64,
) -> Result<Vec<KeyTotal>, ApiError> {
    caller
        .require_scope(SCOPE_KEYS_READ)
        .or_else(|_| caller.require_scope(SCOPE_KEYS_WRITE))?;
    let (from, to, _) = period(q, unix_now())?;
    Ok(state
        .db
        .top_keys(caller.workspace_filter(), from, to, limit)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(from: Option<i64>, to: Option<i64>, bucket: Option<Bucket>) -> UsageQuery {
        UsageQuery { from, to, bucket }
    }

    #[test]
    fn periods_align_to_buckets_and_refuse_bad_ranges() {
        let now = 100 * DAY + 5 * HOUR + 7;
        assert_eq!(
            period(&q(None, None, None), now).unwrap(),
            (100 * DAY - 18 * HOUR, 100 * DAY + 6 * HOUR, Bucket::Hour)
        );
        assert_eq!(
            period(&q(None, None, Some(Bucket::Day)), now).unwrap(),
            (71 * DAY, 101 * DAY, Bucket::Day)
        );
        assert_eq!(
            period(&q(Some(HOUR + 1), Some(3 * HOUR), None), now).unwrap(),
            (HOUR, 3 * HOUR, Bucket::Hour)
        );
        for bad in [
            q(Some(5 * HOUR), Some(5 * HOUR), None),
            q(Some(6 * HOUR), Some(5 * HOUR), None),
            q(Some(-1), None, None),
            q(None, Some(0), None),
            q(None, Some(now + 400 * DAY), None),
            q(Some(0), Some(now), None),
        ] {
            assert!(period(&bad, now).is_err(), "{bad:?}");
        }
        assert!(period(&q(Some(0), Some(now), Some(Bucket::Day)), now).is_ok());
    }

    #[test]
    fn fill_sums_hours_into_zero_filled_buckets() {
        let hours = [
            (0, 2, 1, 0),
            (HOUR, 3, 0, 5),
            (DAY + HOUR, 4, 2, 1),
            (3 * DAY, 9, 0, 0),
        ];
        let by_hour = fill(&hours, 0, 3 * HOUR, Bucket::Hour);
        assert_eq!(
            by_hour.iter().map(|p| p.count).collect::<Vec<_>>(),
            [2, 3, 0]
        );
        let by_day = fill(&hours, 0, 2 * DAY, Bucket::Day);
        assert_eq!(
            by_day,
            [
                UsagePoint {
                    at: 0,
                    count: 5,
                    limited: 1,
                    credits_exhausted: 5
                },
                UsagePoint {
                    at: DAY,
                    count: 4,
                    limited: 2,
                    credits_exhausted: 1
                }
            ]
        );
    }
}
