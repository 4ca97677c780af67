//! A team's balance: the cycle, each meter's value, consumed and remaining, and usage
//! no plan prices.
use chrono::{DateTime, Utc};
use rust_decimal::prelude::ToPrimitive as _;
use rust_decimal::Decimal;
use serde::Serialize;

use super::fmt_time;

use crate::money::fmt_exact;
use crate::plans::Meter;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unplanned {
    pub event_id: String,
    pub occurred_at: String,
    pub api: &'static str,
    pub images: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CycleView {
    pub start: String,
    pub end: String,
    pub status: &'static str,
    pub price_book_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllowanceBalance {
    pub allowance: &'static str,
    pub generation: u32,
    pub value: String,
    pub consumed: String,
    pub remaining: String,
    pub over: String,
    pub percent: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exceptions {
    /// The newest usage no plan priced (at most `team::UNPLANNED_LISTED`), oldest first.
    pub unplanned: Vec<Unplanned>,
    /// Every such event, listed or not: present when the list is cut short.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unplanned_total: Option<u64>,
    pub pending_lines: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub team_id: String,
    pub at: Option<String>,
    pub cycle: Option<CycleView>,
    pub allowances: Vec<AllowanceBalance>,
    pub exceptions: Exceptions,
    /// Where each meter ends its span (the cycle, or a contract's term) if usage goes on
    /// at the pace since the span started; for an open cycle only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Forecast>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forecast {
    /// The pace: consumption so far over the time elapsed since the span started.
    pub basis: &'static str,
    pub allowances: Vec<AllowanceForecast>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllowanceForecast {
    pub allowance: &'static str,
    pub generation: u32,
    /// The end of the span the projection reaches.
    pub at: String,
    pub projected_consumed: String,
    pub projected_over: String,
    pub projected_percent: String,
    /// When the limit is reached at this pace, if before the span ends.
    pub runs_out_at: Option<String>,
}

impl AllowanceBalance {
    /// A meter of generation `generation` as a balance row.
    pub fn of(meter: &Meter, generation: u32) -> AllowanceBalance {
        let (value, consumed) = (meter.limit, meter.consumed);
        let percent =
            if value.is_zero() { Decimal::ZERO } else { (consumed * Decimal::ONE_HUNDRED / value).round_dp(2) };
        AllowanceBalance {
            allowance: meter.kind.key(),
            generation,
            value: fmt_exact(value),
            consumed: fmt_exact(consumed),
            remaining: fmt_exact((value - consumed).max(Decimal::ZERO)),
            over: fmt_exact((consumed - value).max(Decimal::ZERO)),
            percent: fmt_exact(percent),
        }
    }
}

impl AllowanceForecast {
    /// Meter `meter` of generation `generation` at `at`, projected linearly to the end of
    /// its span (`cycle` unless the meter has a term of its own). `None` before the span
    /// starts, at its very start, or past its end (nothing to project).
    pub fn of(
        meter: &Meter,
        generation: u32,
        cycle: (DateTime<Utc>, DateTime<Utc>),
        at: DateTime<Utc>,
    ) -> Option<AllowanceForecast> {
        let (start, end) = meter.term.unwrap_or(cycle);
        let elapsed = Decimal::from((at - start).num_seconds());
        let span = Decimal::from((end - start).num_seconds());
        if elapsed <= Decimal::ZERO || elapsed >= span {
            return None;
        }
        // consumed ≤ 1e12 and span ≤ ~4e9 s: the product fits a Decimal; checked anyway.
        let projected = meter.consumed.checked_mul(span)?.checked_div(elapsed)?.round_dp(2);
        let limit = meter.limit;
        let percent = if limit.is_zero() {
            Decimal::ZERO
        } else {
            projected.checked_mul(Decimal::ONE_HUNDRED)?.checked_div(limit)?.round_dp(2)
        };
        let runs_out_at = (meter.consumed > Decimal::ZERO && projected > limit)
            .then(|| limit.checked_mul(elapsed)?.checked_div(meter.consumed))
            .flatten()
            .and_then(|secs| secs.floor().to_i64())
            .map(|secs| fmt_time(start + chrono::Duration::seconds(secs)));
        Some(AllowanceForecast {
            allowance: meter.kind.key(),
            generation,
            at: fmt_time(end),
            projected_consumed: fmt_exact(projected),
            projected_over: fmt_exact((projected - limit).max(Decimal::ZERO)),
            projected_percent: fmt_exact(percent),
            runs_out_at,
        })
    }
}

/// An open cycle's consumption over time, per meter: the dashboard's chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageSeries {
    pub team_id: String,
    pub cycle: Option<CycleView>,
    /// The price book's list rate per image of each API in this cycle (a value meter's
    /// remainder over a rate is the images it still buys).
    pub rates: std::collections::BTreeMap<&'static str, String>,
    pub meters: Vec<MeterSeries>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeterSeries {
    pub allowance: &'static str,
    pub generation: u32,
    /// The meter's limit at the last point.
    pub value: String,
    pub points: Vec<SeriesPoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeriesPoint {
    pub at: String,
    pub consumed: String,
}
