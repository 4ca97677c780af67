//! A team's balance: the cycle, each meter's value, consumed and remaining, and usage
//! no plan prices.
use rust_decimal::Decimal;
use serde::Serialize;

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
    pub unplanned: Vec<Unplanned>,
    pub pending_lines: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub team_id: String,
    pub at: Option<String>,
    pub cycle: Option<CycleView>,
    pub allowances: Vec<AllowanceBalance>,
    pub exceptions: Exceptions,
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
