//! Usage charts drawn on the server as inline SVG (no script): a bar per bucket with its time
//! and count in a `<title>` (the browser's tooltip, and what a screen reader reads), a dashed
//! grid line at the scale's top and middle, and a few time labels. Sized by its `viewBox`, so
//! it shrinks to a phone's width; colours come from the stylesheet (the CSP allows no inline
//! style).

use std::fmt::Write;

use crate::http::error::ApiError;
use crate::http::keys::usage::{Bucket, UsageQuery, UsageSeries};

/// The periods a chart offers: `24h` (hourly, the default), `7d` (hourly), `30d` (daily).
pub const RANGES: [(&str, &str); 3] = [("24h", "24 hours"), ("7d", "7 days"), ("30d", "30 days")];

/// The usage query of a `range` parameter (`""` is `24h`), ending now.
pub fn range_query(range: &str) -> Result<UsageQuery, ApiError> {
    let (buckets, bucket) = match range {
        "" | "24h" => (24, Bucket::Hour),
        "7d" => (7 * 24, Bucket::Hour),
        "30d" => (30, Bucket::Day),
        _ => return Err(ApiError::invalid("range: 24h, 7d or 30d")),
    };
    let now = crate::runtime::clock::unix_now();
    let step = bucket.seconds();
    let end = now - now.rem_euclid(step) + step;
    Ok(UsageQuery {
        from: Some(end - buckets * step),
        to: Some(now),
        bucket: Some(bucket),
    })
}

/// The range links above a chart: `(value, label, current)`.
pub fn range_links(current: &str) -> Vec<(&'static str, &'static str, bool)> {
    let current = if current.is_empty() { "24h" } else { current };
    RANGES.iter().map(|&(v, l)| (v, l, v == current)).collect()
}

const W: f64 = 720.0;
const H: f64 = 200.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 6.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 24.0;

/// Escapes text for an SVG/HTML text node or attribute.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The smallest 1, 2 or 5 times a power of ten that is at least `v` (at least 1).
pub fn nice_max(v: i64) -> i64 {
    let mut p = 1i64;
    loop {
        for m in [1, 2, 5] {
            if m * p >= v {
                return m * p;
            }
        }
        match p.checked_mul(10) {
            Some(n) => p = n,
            None => return v,
        }
    }
}

/// A bucket's start as its label: `15:00` for hours, `12-07` for days (UTC).
fn label(at: i64, bucket: Bucket) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(at) else {
        return at.to_string();
    };
    match bucket {
        Bucket::Hour => format!(
            "{:02}-{:02} {:02}:00",
            u8::from(t.month()),
            t.day(),
            t.hour()
        ),
        Bucket::Day => format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
    }
}

/// A count with thousands separated (`12,345`).
pub fn count(n: i64) -> String {
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// The series as an `<svg>` element; `id` names it and `title` is its accessible name.
pub fn bar_chart(id: &str, title: &str, s: &UsageSeries) -> String {
    let n = s.points.len().max(1);
    let peak = s
        .points
        .iter()
        .map(|p| p.count + p.limited + p.credits_exhausted)
        .max()
        .unwrap_or(0);
    let top = nice_max(peak);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let slot = plot_w / n as f64;
    let gap = if slot > 4.0 { slot * 0.18 } else { 0.0 };
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg class="chart" id="{}" viewBox="0 0 {W} {H}" role="img" aria-label="{}: {} requests in total" data-total="{}" xmlns="http://www.w3.org/2000/svg">"#,
        esc(id),
        esc(title),
        count(s.total),
        s.total
    );
    let _ = write!(o, "<title>{}</title>", esc(title));
    for (v, y) in [(top, TOP), (top / 2, TOP + plot_h / 2.0)] {
        let _ = write!(
            o,
            r#"<line class="grid" x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            count(v)
        );
    }
    let base = TOP + plot_h;
    let _ = write!(
        o,
        r#"<line class="axis" x1="{LEFT}" y1="{base:.1}" x2="{:.1}" y2="{base:.1}"/><text x="{:.1}" y="{:.1}" text-anchor="end">0</text>"#,
        W - RIGHT,
        LEFT - 6.0,
        base + 4.0
    );
    let scale = |v: i64| {
        if top > 0 {
            plot_h * v as f64 / top as f64
        } else {
            0.0
        }
    };
    for (i, p) in s.points.iter().enumerate() {
        let h = scale(p.count);
        let x = LEFT + i as f64 * slot + gap / 2.0;
        let width = (slot - gap).max(0.5);
        let _ = write!(
            o,
            r#"<rect class="bar" x="{x:.2}" y="{:.2}" width="{width:.2}" height="{h:.2}" data-at="{}" data-count="{}"><title>{} UTC: {} requests</title></rect>"#,
            base - h,
            p.at,
            p.count,
            esc(&label(p.at, s.bucket)),
            count(p.count)
        );
        if p.limited > 0 {
            // Requests the edges refused by a rate limit, stacked on the bar.
            let hl = scale(p.limited);
            let _ = write!(
                o,
                r#"<rect class="bar limited" x="{x:.2}" y="{:.2}" width="{width:.2}" height="{hl:.2}" data-at="{}" data-limited="{}"><title>{} UTC: {} limited (refused by a rate limit)</title></rect>"#,
                base - h - hl,
                p.at,
                p.limited,
                esc(&label(p.at, s.bucket)),
                count(p.limited)
            );
        }
        if p.credits_exhausted > 0 {
            // Requests refused because the key's credits were used up, stacked above those.
            let hl = scale(p.limited);
            let he = scale(p.credits_exhausted);
            let _ = write!(
                o,
                r#"<rect class="bar exhausted" x="{x:.2}" y="{:.2}" width="{width:.2}" height="{he:.2}" data-at="{}" data-credits-exhausted="{}"><title>{} UTC: {} refused (credits used up)</title></rect>"#,
                base - h - hl - he,
                p.at,
                p.credits_exhausted,
                esc(&label(p.at, s.bucket)),
                count(p.credits_exhausted)
            );
        }
    }
    let marks = [0, s.points.len() / 2, s.points.len().saturating_sub(1)];
    let mut last = None;
    for (j, &i) in marks.iter().enumerate() {
        let Some(p) = s.points.get(i) else { continue };
        if last == Some(i) {
            continue;
        }
        last = Some(i);
        let (x, anchor) = match j {
            0 => (LEFT, "start"),
            1 => (LEFT + (i as f64 + 0.5) * slot, "middle"),
            _ => (W - RIGHT, "end"),
        };
        let _ = write!(
            o,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
            H - 6.0,
            esc(&label(p.at, s.bucket))
        );
    }
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::keys::usage::UsagePoint;

    #[test]
    fn scales_and_counts() {
        assert_eq!(
            [0, 1, 3, 7, 10, 11, 460].map(nice_max),
            [1, 1, 5, 10, 10, 20, 500]
        );
        assert_eq!(count(0), "0");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(-1000), "-1,000");
    }

    #[test]
    fn draws_one_bar_per_bucket_with_its_count() {
        let s = UsageSeries {
            key_id: None,
            bucket: Bucket::Hour,
            from: 0,
            to: 3 * 3600,
            total: 7,
            points: vec![
                UsagePoint {
                    at: 0,
                    count: 2,
                    limited: 0,
                    credits_exhausted: 0,
                },
                UsagePoint {
                    at: 3600,
                    count: 0,
                    limited: 0,
                    credits_exhausted: 0,
                },
                UsagePoint {
                    at: 7200,
                    count: 5,
                    limited: 0,
                    credits_exhausted: 0,
                },
            ],
        };
        let svg = bar_chart("usage", "Requests <per hour>", &s);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 3);
        assert!(svg.contains(r#"data-count="5""#));
        assert!(svg.contains("01-01 02:00 UTC: 5 requests"));
        assert!(svg.contains("Requests &lt;per hour&gt;"), "escaped");
        assert!(svg.contains(r#"data-total="7""#));
        // The tallest bar reaches the scale's top (5 of 5).
        assert!(svg.contains(&format!(r#"height="{:.2}""#, H - TOP - BOTTOM)));
        assert!(!svg.contains("limited"));
    }

    #[test]
    fn limited_requests_are_marked_on_their_bar() {
        let s = UsageSeries {
            key_id: None,
            bucket: Bucket::Hour,
            from: 0,
            to: 3600,
            total: 6,
            points: vec![UsagePoint {
                at: 0,
                count: 6,
                limited: 4,
                credits_exhausted: 0,
            }],
        };
        let svg = bar_chart("usage", "Requests", &s);
        assert_eq!(svg.matches("<rect class=\"bar limited\"").count(), 1);
        assert!(svg.contains(r#"data-limited="4""#));
        assert!(svg.contains("4 limited"));
        // The scale holds both: 6 allowed and 4 limited reach the top (10).
        let plot_h = H - TOP - BOTTOM;
        assert!(svg.contains(&format!(r#"height="{:.2}""#, plot_h * 0.4)));
        assert!(!svg.contains("bar exhausted"));
    }

    #[test]
    fn refusals_for_credits_are_marked_apart_from_rate_limits() {
        let s = UsageSeries {
            key_id: None,
            bucket: Bucket::Hour,
            from: 0,
            to: 3600,
            total: 5,
            points: vec![UsagePoint {
                at: 0,
                count: 5,
                limited: 2,
                credits_exhausted: 3,
            }],
        };
        let svg = bar_chart("usage", "Requests", &s);
        assert_eq!(svg.matches("<rect class=\"bar limited\"").count(), 1);
        assert_eq!(svg.matches("<rect class=\"bar exhausted\"").count(), 1);
        assert!(svg.contains(r#"data-credits-exhausted="3""#));
        assert!(svg.contains("3 refused (credits used up)"));
        // The scale holds all three: 5 + 2 + 3 reach the top (10).
        let plot_h = H - TOP - BOTTOM;
        assert!(svg.contains(&format!(r#"height="{:.2}""#, plot_h * 0.3)));
    }
}
