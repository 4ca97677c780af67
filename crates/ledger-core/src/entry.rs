//! Ledger entries: the rows of a team's immutable ledger. Every projection (balances,
//! alerts, invoices) is a fold over them.
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::event::{AccountEvent, Api, Event, ImageProcessed};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    Image(ImageProcessed),
    Account(AccountEvent),
    /// A `QualityRefund`, with the original event it refunds resolved at append time so
    /// the ledger alone explains it.
    Refund {
        event: AccountEvent,
        target: RefundTarget,
    },
    /// A cycle closed: appended once the team's clock passed its end + grace. Carries the
    /// figures computed when it closed; replay recomputes and asserts them.
    CycleClosed(CycleClosed),
    /// The team's unused legacy credits expired: appended once its clock passed the
    /// expiry + grace, before the cycle holding it closes. Replay recomputes the count.
    CreditsExpired(CreditsExpired),
    /// A cycle closed under billing rules `rules` (`timeline::Rules::number`).
    /// `CycleClosed` above is a close under rules 1, and is still what a close writes
    /// where the current rules price the cycle as rules 1 did, so a ledger untouched by
    /// a rule change chains byte for byte as every earlier build wrote it.
    ClosedUnder {
        close: CycleClosed,
        rules: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditsExpired {
    #[serde(with = "chrono::serde::ts_nanoseconds")]
    pub at: DateTime<Utc>,
    pub credits: u64,
}

/// The original image event a refund points at, as the ledger recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundTarget {
    pub seq: u64,
    #[serde(with = "chrono::serde::ts_nanoseconds")]
    pub occurred_at: DateTime<Utc>,
    pub api: Api,
    pub images: u32,
    pub sandbox: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleClosed {
    #[serde(with = "chrono::serde::ts_nanoseconds")]
    pub period_start: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_nanoseconds")]
    pub period_end: DateTime<Utc>,
    /// The clock instant that closed it (newest event time, or the operator's `--until`).
    #[serde(with = "chrono::serde::ts_nanoseconds")]
    pub closed_by: DateTime<Utc>,
    pub total: Decimal,
    pub forfeited: Decimal,
}

impl Entry {
    /// The input event this entry records, if it records one.
    pub fn event_id(&self) -> Option<&crate::EventId> {
        match self {
            Entry::Image(e) => Some(&e.event_id),
            Entry::Account(e) | Entry::Refund { event: e, .. } => Some(&e.event_id),
            Entry::CycleClosed(_) | Entry::CreditsExpired(_) | Entry::ClosedUnder { .. } => None,
        }
    }

    /// The input event as it arrived (for dedup fingerprints and exports).
    pub fn as_event(&self) -> Option<Event> {
        match self {
            Entry::Image(e) => Some(Event::Image(e.clone())),
            Entry::Account(e) | Entry::Refund { event: e, .. } => Some(Event::Account(e.clone())),
            Entry::CycleClosed(_) | Entry::CreditsExpired(_) | Entry::ClosedUnder { .. } => None,
        }
    }
}
