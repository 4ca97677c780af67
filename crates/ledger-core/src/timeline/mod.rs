//! The plan timeline turned into cycles: which plan, bucket generation and catalog
//! version govern each instant, and the prepaid charges each cycle carries (§2).
//! `calendar` computes the cycles' instants; `derive` walks the plan changes; what
//! each plan family does at a cycle's opening lives in `plans`.
pub mod calendar;
pub(crate) mod derive;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::catalog::{Catalog, Version};
use crate::event::PlanTerms;
use crate::ids::EventId;
use crate::plans::Allowance;
use crate::reject::{Reject, RejectCode};

pub use derive::{derive, RuleBook};

/// One bucket generation: the plan in force from `from` until the next one (or the
/// cycle's end). An upgrade starts a new generation, whose alert thresholds fire afresh.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Gen {
    pub from: DateTime<Utc>,
    pub number: u32,
    pub terms: PlanTerms,
    pub allowance: Allowance,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChargeKind {
    BucketFee,
    UpgradeCharge,
    ContractFee,
    SubscriptionFee,
}

/// A prepaid charge of the cycle: the bucket fee at its start, or an upgrade charge.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Charge {
    pub kind: ChargeKind,
    pub description: String,
    /// Units charged (seats × weeks for a weekly app fee; 1 otherwise) at `unit_price`.
    pub quantity: u64,
    pub unit_price: Decimal,
    /// Rounded to cents: what the team pays, and for an upgrade what the bucket is worth.
    pub amount: Decimal,
    /// Share of the cycle charged (1 for a bucket fee).
    pub fraction: Decimal,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CycleSpec {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub version_id: String,
    pub grace_seconds: u32,
    /// The billing rules the cycle is priced under: the current ones, unless its close
    /// recorded older ones (`Rules`).
    pub rules: Rules,
    pub gens: Vec<Gen>,
    pub charges: Vec<Charge>,
}

/// The billing rules a cycle is priced under. A closed invoice is history: a cycle
/// closed under older rules is priced by them on every replay, and its close entry says
/// which (`Entry::CycleClosed` is `V1`, `Entry::ClosedUnder` names its rules).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Rules {
    /// Before issue 19: a deferred change of a weekly app subscription starts the new
    /// plan's fees afresh at the cycle start (the days left of the last week paid are
    /// billed again), and legacy-credit overage is billed at the credit rate ($0.10).
    V1,
    /// Billing.md as of issue 19: a weekly subscription's fees take over at the end of
    /// the week paid for; past the credits, an image costs the governing catalog's rate.
    #[default]
    V2,
}

impl Rules {
    /// The rules this build prices open cycles under.
    pub const CURRENT: Rules = Rules::V2;

    /// The number a close entry records.
    pub fn number(self) -> u16 {
        match self {
            Rules::V1 => 1,
            Rules::V2 => 2,
        }
    }

    pub fn from_number(n: u16) -> Option<Rules> {
        match n {
            1 => Some(Rules::V1),
            2 => Some(Rules::V2),
            _ => None,
        }
    }
}

impl CycleSpec {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }

    /// Position of the generation in force at `t` (`t` inside the cycle).
    pub fn gen_at(&self, t: DateTime<Utc>) -> usize {
        self.gens.iter().rposition(|g| g.from <= t).unwrap_or(0)
    }

    pub fn closes_at(&self) -> DateTime<Utc> {
        self.end + chrono::Duration::seconds(self.grace_seconds as i64)
    }

    /// The same cycle as `other` but for the rules it is tagged with: whether pricing it
    /// under either rule set gives the same plan, allowances and charges.
    pub fn same_pricing(&self, other: &CycleSpec) -> bool {
        (self.start, self.end, &self.version_id, self.grace_seconds, &self.gens, &self.charges)
            == (other.start, other.end, &other.version_id, other.grace_seconds, &other.gens, &other.charges)
    }

    /// Drops the generations and charges, keeping the dates, version and grace: what a
    /// closed cycle keeps (the rest is derived again when late usage needs it).
    pub fn hollow(&mut self) {
        self.gens = Vec::new();
        self.charges = Vec::new();
    }
}

/// A plan change the timeline cannot accept, with the event that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub event_id: EventId,
    pub reject: Reject,
}

impl Violation {
    pub fn new(event_id: &EventId, reject: Reject) -> Violation {
        Violation { event_id: event_id.clone(), reject }
    }
}

/// The catalog version a cycle starting at `start` is governed by.
pub(crate) fn version_in_force<'c>(
    catalog: &'c Catalog,
    start: DateTime<Utc>,
    cause: &EventId,
) -> Result<&'c Version, Violation> {
    catalog.version_at(start).ok_or_else(|| {
        let reject = Reject::new(RejectCode::NoCatalogVersion, format!("no catalog version is in force at {start}"));
        Violation::new(cause, reject)
    })
}

/// A cycle with one generation, from its start.
pub(crate) fn cycle_of(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    version: &Version,
    terms: PlanTerms,
    allowance: Allowance,
    charges: Vec<Charge>,
) -> CycleSpec {
    CycleSpec {
        start,
        end,
        version_id: version.id.clone(),
        grace_seconds: version.grace_seconds,
        rules: Rules::CURRENT,
        gens: vec![Gen { from: start, number: 0, terms, allowance }],
        charges,
    }
}

impl Charge {
    /// A charge of one unit.
    pub(crate) fn once(kind: ChargeKind, description: String, amount: Decimal, fraction: Decimal) -> Charge {
        Charge { kind, description, quantity: 1, unit_price: amount, amount, fraction }
    }
}
