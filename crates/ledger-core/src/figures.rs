//! The draw-down: a cycle's usage, sorted by `(occurred_at, event_id)`, folded through
//! its generations (each family draws in `plans`), so arrival order never changes a
//! figure. Everything here is exact `Decimal`; rounding happens at the invoice line.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::catalog::Version;
use crate::event::{Api, PlanTerms};
use crate::ids::EventId;
use crate::plans::app::{AppFigures, TopUpInput};
use crate::plans::contract::{ContractCarry, ContractFigures};
use crate::plans::credits::{CreditFigures, CreditInput, CreditWalk};
use crate::plans::{Allowance, MeterInput, Usage};
use crate::timeline::{CycleSpec, Gen};

/// One usage event as the billing fold needs it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UsageRec {
    pub seq: u64,
    /// An event's time, inside the range the entry encodes it in.
    #[serde(with = "chrono::serde::ts_nanoseconds")]
    pub at: DateTime<Utc>,
    pub event_id: EventId,
    pub api: Api,
    pub images: u32,
    pub sandbox: bool,
    pub refunded: bool,
}

/// A line carried to the next invoice: late usage or a refund of an invoiced event.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CarryLine {
    pub kind: CarryKind,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub api: Api,
    pub rate: Decimal,
    pub images: u64,
}

/// A legacy credit purchase (`CreditsPurchased`) as the billing fold needs it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Purchase {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub event_id: EventId,
    pub credits: u64,
    pub amount: Decimal,
    /// When unused credits expire (the catalog's date when bought).
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum CarryKind {
    LateUsage,
    RefundCredit,
}

/// What one bucket generation did in a cycle (or up to an instant of it).
#[derive(Debug, Clone, PartialEq)]
pub struct GenFigures {
    pub number: u32,
    pub terms: PlanTerms,
    pub allowance: Allowance,
    /// Value drawn at list (or partner) rates, refunds and sandbox excluded.
    pub consumed: Decimal,
    /// Value of the bucket or trial allowance that usage covered.
    pub covered: Decimal,
    pub billable_images: u64,
    pub sandbox_images: u64,
    pub remove_background_images: u64,
    /// Value beyond the allowance by API, in draw-down order.
    pub over_by_api: BTreeMap<Api, Decimal>,
}

impl GenFigures {
    fn new(g: &Gen) -> GenFigures {
        GenFigures {
            number: g.number,
            terms: g.terms.clone(),
            allowance: g.allowance.clone(),
            consumed: Decimal::ZERO,
            covered: Decimal::ZERO,
            billable_images: 0,
            sandbox_images: 0,
            remove_background_images: 0,
            over_by_api: BTreeMap::new(),
        }
    }

    /// Books `covered` of a usage worth `value` against the allowance; returns the rest.
    pub(crate) fn cover(&mut self, value: Decimal, covered: Decimal) -> Decimal {
        self.covered += covered;
        value - covered
    }

    /// Covers a usage worth `value` from an allowance worth `limit`, as far as it goes;
    /// returns the rest.
    pub(crate) fn cover_up_to(&mut self, limit: Decimal, value: Decimal) -> Decimal {
        self.cover(value, value.min(limit - self.covered))
    }

    /// Value of a bucket or trial allowance left unused.
    pub fn unused(&self) -> Decimal {
        self.allowance.value().map_or(Decimal::ZERO, |v| v - self.covered)
    }

    /// The generation's meters as the cycle's figures state them.
    pub fn meter_input(&self, cycle: &CycleFigures) -> MeterInput {
        let credits = cycle.credits.as_ref().map_or(0, |c| c.carried + c.purchased);
        let (exports, ai, ai_available) =
            cycle.app.as_ref().map_or((0, 0, 0), |a| (a.exports_used, a.ai_used, a.ai_available()));
        let (contract_available, contract_used_before) =
            cycle.contract.as_ref().map_or((0, 0), |c| (c.available(), c.used_before));
        MeterInput {
            value: self.consumed,
            images: self.billable_images,
            remove_background_images: self.remove_background_images,
            sandbox_images: self.sandbox_images,
            exports,
            ai,
            credits,
            ai_available,
            contract_available,
            contract_used_before,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CycleFigures {
    pub gens: Vec<GenFigures>,
    pub by_api: BTreeMap<Api, (u64, Decimal)>,
    pub billable_images: u64,
    pub sandbox_images: u64,
    pub refunded_images: u64,
    /// Legacy credits, for teams that ever bought any.
    pub credits: Option<CreditFigures>,
    /// The contract month's statement, for a cycle of a contract term.
    pub contract: Option<ContractFigures>,
    /// The app subscription's month, for a cycle of one.
    pub app: Option<AppFigures>,
    /// Usage the plan in force does not price (app events on an API plan, API calls on
    /// an app plan): kept in the ledger, reported as unplanned, never billed.
    pub unpriced_images: u64,
}

impl CycleFigures {
    /// Value forfeited at the cycle's end: unused bucket value (no rollover) and unused
    /// contract allotment at the fee paid per committed image.
    pub fn forfeited(&self) -> Decimal {
        let buckets: Decimal =
            self.gens.iter().filter(|g| g.allowance.forfeits_unused_value()).map(GenFigures::unused).sum();
        buckets + self.contract.as_ref().map_or(Decimal::ZERO, ContractFigures::forfeited_value)
    }
}

/// The cross-cycle walks a cycle's draw-down advances: legacy credits, the contract
/// month, the app month.
#[derive(Clone)]
pub(crate) struct Draws<'a> {
    pub credits: CreditWalk<'a>,
    pub contract: Option<ContractFigures>,
    pub app: Option<AppFigures>,
}

/// Folds a cycle's usage (sorted by `(at, event_id)`) through its generations, and the
/// team's credits through both.
pub fn figures(
    spec: &CycleSpec,
    version: &Version,
    records: &[&UsageRec],
    credits: &CreditInput<'_>,
    contract: ContractCarry,
    top_ups: &TopUpInput<'_>,
) -> CycleFigures {
    let mut walk = Walk::new(spec, version, credits, contract, top_ups);
    for rec in records {
        walk.draw(rec);
    }
    walk.finish()
}

/// A cycle's draw-down part way: records drawn one at a time in `(at, event_id)`
/// order, finished (on a copy) whenever the figures so far are wanted. The figures of
/// the first `n` records are those of `figures` over them, with the same inputs.
#[derive(Clone)]
pub(crate) struct Walk<'a> {
    spec: &'a CycleSpec,
    version: &'a Version,
    expiring: bool,
    draws: Draws<'a>,
    out: CycleFigures,
}

impl<'a> Walk<'a> {
    pub fn new(
        spec: &'a CycleSpec,
        version: &'a Version,
        credits: &'a CreditInput<'a>,
        contract: ContractCarry,
        top_ups: &TopUpInput<'_>,
    ) -> Walk<'a> {
        let draws = Draws {
            credits: CreditWalk::new(credits, spec),
            contract: spec
                .gens
                .iter()
                .find_map(|g| g.allowance.contract_month())
                .map(|m| ContractFigures::new(m, contract)),
            app: spec.gens.iter().find_map(|g| g.allowance.app_month()).map(|m| AppFigures::new(m, top_ups)),
        };
        let out = CycleFigures {
            gens: spec.gens.iter().map(GenFigures::new).collect(),
            by_api: BTreeMap::new(),
            billable_images: 0,
            sandbox_images: 0,
            refunded_images: 0,
            credits: None,
            contract: None,
            app: None,
            unpriced_images: 0,
        };
        Walk { spec, version, expiring: credits.expires_at.is_some(), draws, out }
    }

    /// Draws the next record (records come in `(at, event_id)` order).
    pub fn draw(&mut self, rec: &UsageRec) {
        debug_assert!(self.spec.contains(rec.at));
        draw(&mut self.out, self.spec.gen_at(rec.at), self.version, &mut self.draws, rec);
    }

    /// The cycle's figures with the records drawn so far.
    pub fn finish(self) -> CycleFigures {
        let Walk { spec, expiring, draws, mut out, .. } = self;
        out.credits = expiring.then(|| draws.credits.finish(spec.end));
        out.contract = draws.contract.map(|mut t| {
            t.finish();
            t
        });
        out.app = draws.app.map(|mut a| {
            a.advance(None);
            a
        });
        out
    }
}

/// Draws one record from generation `g`.
fn draw(out: &mut CycleFigures, g: usize, version: &Version, draws: &mut Draws<'_>, rec: &UsageRec) {
    let g = &mut out.gens[g];
    let images = u64::from(rec.images);
    if rec.sandbox {
        g.sandbox_images += images;
        out.sandbox_images += images;
        return;
    }
    if rec.refunded {
        out.refunded_images += images;
        return;
    }
    let Some(rate) = g.allowance.rate(version, &g.terms, rec.api) else {
        out.unpriced_images += images;
        return;
    };
    let value = rate * Decimal::from(rec.images);
    out.billable_images += images;
    let api = out.by_api.entry(rec.api).or_default();
    api.0 += images;
    api.1 += value;
    g.consumed += value;
    g.billable_images += images;
    if rec.api == Api::RemoveBackground {
        g.remove_background_images += images;
    }
    draws.credits.advance(rec.at, Some(&rec.event_id));
    let over = crate::plans::draw(g, draws, Usage { rec, images, rate, value });
    if over > Decimal::ZERO {
        *g.over_by_api.entry(rec.api).or_default() += over;
    }
}
