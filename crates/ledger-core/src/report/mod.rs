//! The documents the ledger shows the world (invoices, alerts, balances): the only
//! serializable types of the core. Figures arrive as exact `Decimal`s and become text
//! here, once, by the formats of `money`.
mod alert;
mod balance;
mod invoice;

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

pub use crate::timeline::calendar::fmt_time;
pub use alert::Alert;
pub use balance::{
    AllowanceBalance, AllowanceForecast, Balance, CycleView, Exceptions, Forecast, MeterSeries, SeriesPoint, Unplanned,
    UsageSeries,
};
pub use invoice::{
    build, AllowanceSummary, ApiUsage, AppSummary, BucketSummary, ContractSummary, CreditSummary, Invoice,
    InvoiceInput, LedgerRef, Line, UsageSummary,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Period {
    pub start: String,
    pub end: String,
}

impl Period {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Period {
        Period { start: fmt_time(start), end: fmt_time(end) }
    }
}

/// Total ÷ images, 4 decimals (half away from zero); none without images.
pub fn per_image(total: Decimal, images: u64) -> Option<String> {
    (images > 0).then(|| {
        let mut e = (total / Decimal::from(images)).round_dp_with_strategy(4, RoundingStrategy::MidpointAwayFromZero);
        e.rescale(4);
        e.to_string()
    })
}
