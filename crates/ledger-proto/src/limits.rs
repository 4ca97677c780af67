//! Limits on everything that enters: every string, count, amount and rate has a bound,
//! checked here, where wire input becomes core types. The bounds keep every figure the
//! core computes from input far inside `Decimal` and `u64` (a cycle would need ~10^14
//! events at the largest values to overflow), so no input can make the fold overflow.
//! Each refusal has its own reason code (the README's table of bad inputs).
use chrono::{DateTime, Duration, Utc};
use ledger_core::{AccountChange, ContractTerms, Event};
use rust_decimal::Decimal;

/// Bytes of a free-text field: a refund's reason, a request id, an operation.
pub const TEXT_MAX_BYTES: usize = 256;
/// Bytes of an enumerated field (plan, policy, interval), checked before it is echoed.
pub const NAME_MAX_BYTES: usize = 64;
/// Operations listed on one image event.
pub const OPERATIONS_MAX: usize = 32;
/// Images one event may report (a batch call).
pub const IMAGES_MAX: u32 = 1_000_000;
/// The largest bucket sold, in images.
pub const BUCKET_IMAGES_MAX: u64 = 100_000_000;
/// Credits in one purchase.
pub const CREDITS_MAX: u64 = 1_000_000_000;
/// Seats of one app subscription.
pub const SEATS_MAX: u32 = 100_000;
/// A contract's yearly commitment, in images.
pub const COMMITTED_IMAGES_MAX: u64 = 1_000_000_000_000;
/// A contract's term, in months.
pub const TERM_MONTHS_MAX: u32 = 120;
/// Volume tiers of one contract.
pub const TIERS_MAX: usize = 16;
/// Dollars: a purchase's amount, a contract's annual fee (two decimals at most).
pub const AMOUNT_MAX: i64 = 1_000_000_000;
/// Dollars per image: a contract rate (six decimals at most).
pub const RATE_MAX: i64 = 1_000;
/// How far past "now" an event may be dated, by default.
pub const FUTURE_SKEW_DEFAULT: Duration = Duration::hours(24);

/// Which limit an input broke. `code()` is its dead-letter reason code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Limit {
    #[error("{field} is {len} bytes, more than {max}")]
    TextTooLong { field: &'static str, len: usize, max: usize },
    #[error("{field} lists {n} items, more than {max}")]
    TooMany { field: &'static str, n: usize, max: usize },
    #[error("{field} is {value}, more than {max}")]
    TooLarge { field: &'static str, value: u64, max: u64 },
    #[error("{field} {value} is outside [0, {max}] or has more than {decimals} decimals")]
    Amount { field: &'static str, value: Decimal, max: i64, decimals: u32 },
    #[error("occurred_at {at} is after now + the allowed skew ({latest})")]
    FutureEvent { at: DateTime<Utc>, latest: DateTime<Utc> },
    #[error("occurred_at {at} is before the first catalog version ({first})")]
    BeforeCatalog { at: DateTime<Utc>, first: DateTime<Utc> },
}

impl Limit {
    pub fn code(&self) -> &'static str {
        match self {
            Limit::TextTooLong { .. } => "text_too_long",
            Limit::TooMany { .. } => "too_many_items",
            Limit::TooLarge { .. } => "too_large",
            Limit::Amount { .. } => "amount_out_of_range",
            Limit::FutureEvent { .. } => "future_event",
            Limit::BeforeCatalog { .. } => "before_catalog",
        }
    }
}

pub(crate) fn text(field: &'static str, s: &str, max: usize) -> Result<(), Limit> {
    match s.len() {
        len if len > max => Err(Limit::TextTooLong { field, len, max }),
        _ => Ok(()),
    }
}

pub(crate) fn count(field: &'static str, n: usize, max: usize) -> Result<(), Limit> {
    match n {
        n if n > max => Err(Limit::TooMany { field, n, max }),
        _ => Ok(()),
    }
}

pub(crate) fn at_most(field: &'static str, value: u64, max: u64) -> Result<(), Limit> {
    match value {
        v if v > max => Err(Limit::TooLarge { field, value, max }),
        _ => Ok(()),
    }
}

/// A non-negative decimal up to `max` with at most `decimals` decimals.
pub(crate) fn amount(field: &'static str, value: Decimal, max: i64, decimals: u32) -> Result<(), Limit> {
    let fits = !value.is_sign_negative() && value <= Decimal::from(max) && value.normalize().scale() <= decimals;
    if fits {
        Ok(())
    } else {
        Err(Limit::Amount { field, value, max, decimals })
    }
}

pub(crate) fn contract(c: &ContractTerms) -> Result<(), Limit> {
    at_most("term_months", u64::from(c.term_months), u64::from(TERM_MONTHS_MAX))?;
    at_most("committed_images_per_year", c.committed_images_per_year, COMMITTED_IMAGES_MAX)?;
    amount("rate_remove_background", c.rate_remove_background, RATE_MAX, 6)?;
    amount("rate_image_editing", c.rate_image_editing, RATE_MAX, 6)?;
    // Cents are the core's rule for a fee (`contract_terms`); here only the bounds.
    amount("annual_fee", c.annual_fee, AMOUNT_MAX, 6)?;
    count("tiers", c.tiers.len(), TIERS_MAX)?;
    for t in &c.tiers {
        at_most("from_images", t.from_images, COMMITTED_IMAGES_MAX * u64::from(TERM_MONTHS_MAX))?;
        amount("discount_percent", t.discount_percent, 100, 4)?;
    }
    Ok(())
}

/// The instants an event may be dated: from the first catalog version (nothing can be
/// billed before it) to "now" plus a skew. "Now" is read once at the edge (the service,
/// `import`) and passed in, so the core stays clock-free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub first: DateTime<Utc>,
    pub latest: DateTime<Utc>,
}

impl Window {
    pub fn new(first: DateTime<Utc>, now: DateTime<Utc>, future_skew: Duration) -> Window {
        Window { first, latest: now + future_skew }
    }

    /// Refuses an event dated outside the window. A change dated too far ahead would
    /// move its team's clock and close (irreversibly) every cycle up to it.
    pub fn admit(&self, event: &Event) -> Result<(), Limit> {
        let at = event.occurred_at();
        if at > self.latest {
            return Err(Limit::FutureEvent { at, latest: self.latest });
        }
        if at < self.first {
            return Err(Limit::BeforeCatalog { at, first: self.first });
        }
        Ok(())
    }
}

/// Limits of an account change's own fields (ids and time are checked by the caller).
pub(crate) fn account_change(change: &AccountChange) -> Result<(), Limit> {
    match change {
        AccountChange::PlanStarted(t) | AccountChange::PlanChanged(t) => {
            at_most("bucket_images", t.bucket_images, BUCKET_IMAGES_MAX)
        }
        AccountChange::AppPlanStarted(t, o) | AccountChange::AppPlanChanged(t, o) => {
            at_most("bucket_images", t.bucket_images, BUCKET_IMAGES_MAX)?;
            at_most("seats", u64::from(o.seats), u64::from(SEATS_MAX))
        }
        AccountChange::PlanCancelled => Ok(()),
        AccountChange::QualityRefund { reason, .. } => text("reason", reason, TEXT_MAX_BYTES),
        AccountChange::CreditsPurchased { credits, amount: paid } => {
            at_most("credits", *credits, CREDITS_MAX)?;
            amount("amount", *paid, AMOUNT_MAX, 2)
        }
        AccountChange::ContractSigned(c) => contract(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn amounts_have_a_ceiling_and_few_decimals() {
        assert!(amount("a", d("1000000000"), AMOUNT_MAX, 2).is_ok());
        assert!(amount("a", d("9.980"), AMOUNT_MAX, 2).is_ok(), "trailing zeros are not decimals");
        assert_eq!(amount("a", d("9.999"), AMOUNT_MAX, 2).unwrap_err().code(), "amount_out_of_range");
        assert!(amount("a", d("1000000000.01"), AMOUNT_MAX, 2).is_err());
        assert!(amount("a", d("-0.01"), AMOUNT_MAX, 2).is_err());
    }

    #[test]
    fn the_window_runs_from_the_first_catalog_version_to_now_plus_the_skew() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let w = Window::new(t("2024-02-01T00:00:00Z"), t("2026-11-26T00:00:00Z"), FUTURE_SKEW_DEFAULT);
        let at = |s: &str| {
            Event::Image(ledger_core::ImageProcessed {
                event_id: ledger_core::EventId::new("e").unwrap(),
                team_id: ledger_core::TeamId::new("t").unwrap(),
                occurred_at: t(s),
                api: ledger_core::Api::RemoveBackground,
                operations: Vec::new(),
                images: 1,
                sandbox: false,
                request_id: String::new(),
            })
        };
        assert!(w.admit(&at("2026-11-27T00:00:00Z")).is_ok());
        assert_eq!(w.admit(&at("2026-11-27T00:00:01Z")).unwrap_err().code(), "future_event");
        assert!(w.admit(&at("2024-02-01T00:00:00Z")).is_ok());
        assert_eq!(w.admit(&at("2024-01-31T23:59:59Z")).unwrap_err().code(), "before_catalog");
    }
}
