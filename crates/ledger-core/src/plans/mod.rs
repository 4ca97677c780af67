//! The plan families, one module each (checks, cycle opening, draw-down, meters, invoice
//! lines and summary), and every decision by family as an exhaustive match: here over
//! `Allowance` (what a generation is worth), in `family` over `Family`, `Plan` and
//! `PlanRule`. Adding a family means a variant in each, its module, and a rule in the
//! catalog; the compiler then lists every decision to take for it (ARCHITECTURE.md).
pub mod app;
pub mod bucket;
pub mod contract;
pub mod credits;
pub mod family;
pub mod partner;
pub mod trial;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::catalog::{Catalog, PlanRule, Version};
use crate::event::{Api, PlanTerms};
use crate::figures::{Draws, GenFigures};
use crate::ids::EventId;
use crate::reject::{Reject, RejectCode};
use crate::timeline::derive::Next;
use crate::timeline::{cycle_of, version_in_force, CycleSpec, Rules, Violation};

pub use app::AppMonth;
pub use contract::ContractMonth;
pub use family::{Advised, Family, StartedBy};

/// What an allowance is worth in one bucket generation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Allowance {
    /// Prepaid value, drawn down at the called API's rate; usage beyond it is overage.
    Bucket { value: Decimal },
    /// A free allowance valued at list rates; usage past it is recorded, never billed.
    Trial { value: Decimal, sandbox_images: Option<u64> },
    /// Usage billed as it comes, with a monthly commitment in background-removal images.
    Partner { commitment_images: u64, rate: Decimal },
    /// Legacy credits: images of either API draw one credit each (worth `image_rate`).
    /// Past the credits an image is billed at the catalog's rate for its API when
    /// `past_at_list` (rules V2, where that rate differs from the credit's), else at
    /// `image_rate` (rules V1, or a catalog whose rates are the credit's).
    Credits { image_rate: Decimal, past_at_list: bool },
    /// One month of an enterprise contract's term: the allotment drawn first (with what
    /// rolled over), then overage at the contract rate less volume discounts.
    Contract(ContractMonth),
    /// One month of an app subscription: exports and AI credits that reset monthly.
    App(AppMonth),
}

impl Allowance {
    /// The allowance `terms` give under `version` (contracts and app plans open their
    /// own cycles); `value` is what a bucket is worth (its price, or an upgrade charge).
    pub(crate) fn of_rule(version: &Version, terms: &PlanTerms, value: Decimal, rules: Rules) -> Allowance {
        match version.plan(terms.plan).expect("checked plan") {
            PlanRule::Bucket { .. } => Allowance::Bucket { value },
            PlanRule::Trial { api, allowance_images, sandbox_images, .. } => {
                trial::allowance(version, *api, *allowance_images, *sandbox_images)
            }
            PlanRule::Partner { commitment_images, remove_background_rate, .. } => {
                Allowance::Partner { commitment_images: *commitment_images, rate: *remove_background_rate }
            }
            PlanRule::Credits { image_rate, .. } => {
                Allowance::Credits { image_rate: *image_rate, past_at_list: credits::past_at_list(version, rules) }
            }
            PlanRule::Enterprise { .. } | PlanRule::App { .. } => {
                unreachable!("check_plan refuses contracts and app plans without their terms")
            }
        }
    }

    /// What a team pays per image of `api` under this allowance and `terms`.
    pub fn rate(&self, version: &Version, terms: &PlanTerms, api: Api) -> Option<Decimal> {
        match self {
            Allowance::Contract(m) => m.terms.rate(api),
            // App usage is paid by the subscription; API calls are not part of it.
            Allowance::App(_) => api.is_app().then_some(Decimal::ZERO),
            Allowance::Bucket { .. }
            | Allowance::Trial { .. }
            | Allowance::Partner { .. }
            | Allowance::Credits { .. }
                if api.is_app() =>
            {
                None
            }
            Allowance::Credits { past_at_list: true, .. } => version.rate(api),
            Allowance::Bucket { .. }
            | Allowance::Trial { .. }
            | Allowance::Partner { .. }
            | Allowance::Credits { past_at_list: false, .. } => version.rate_for(terms, api),
        }
    }

    /// What an image is billed at, as refunds and late usage price it: a free allowance
    /// bills nothing.
    pub fn billed_rate(&self, version: &Version, terms: &PlanTerms, api: Api) -> Option<Decimal> {
        let rate = self.rate(version, terms, api)?;
        Some(if self.is_free() { Decimal::ZERO } else { rate })
    }

    /// Whether usage under the allowance is free: a trial's is recorded, never billed
    /// (refunds and late usage price it 0). App events are already rated 0 by `rate`.
    pub fn is_free(&self) -> bool {
        match self {
            Allowance::Trial { .. } => true,
            Allowance::Bucket { .. }
            | Allowance::Partner { .. }
            | Allowance::Credits { .. }
            | Allowance::Contract(_)
            | Allowance::App(_) => false,
        }
    }

    /// Whether the allowance's unused value (`value()` less what usage covered) is
    /// forfeited at the cycle's end: a bucket's is (no rollover); a trial is free; the
    /// other families meter in units (a contract forfeits allotment images,
    /// `ContractFigures::forfeited_value`).
    pub fn forfeits_unused_value(&self) -> bool {
        match self {
            Allowance::Bucket { .. } => true,
            Allowance::Trial { .. }
            | Allowance::Partner { .. }
            | Allowance::Credits { .. }
            | Allowance::Contract(_)
            | Allowance::App(_) => false,
        }
    }

    /// The value of a bucket or trial allowance; the other families meter in units.
    pub fn value(&self) -> Option<Decimal> {
        match self {
            Allowance::Bucket { value } | Allowance::Trial { value, .. } => Some(*value),
            Allowance::Partner { .. } | Allowance::Credits { .. } | Allowance::Contract(_) | Allowance::App(_) => None,
        }
    }

    /// Contracts and app subscriptions hold their plan until the period paid for ends:
    /// a change is no upgrade for them.
    pub fn holds_plan(&self) -> bool {
        match self {
            Allowance::Contract(_) | Allowance::App(_) => true,
            Allowance::Bucket { .. }
            | Allowance::Trial { .. }
            | Allowance::Partner { .. }
            | Allowance::Credits { .. } => false,
        }
    }

    /// Whether the allowance draws on what crosses cycles: legacy credits, AI-credit
    /// top-ups, a contract term's position.
    pub fn carries_over(&self) -> bool {
        match self {
            Allowance::Credits { .. } | Allowance::Contract(_) | Allowance::App(_) => true,
            Allowance::Bucket { .. } | Allowance::Trial { .. } | Allowance::Partner { .. } => false,
        }
    }

    /// The next cycle, when this one holds it whatever is pending: inside a contract
    /// term, or inside a yearly app subscription's year.
    pub(crate) fn holds_next_cycle(&self, terms: &PlanTerms) -> Option<Next> {
        match self {
            Allowance::Contract(m) => m.holds_next_cycle().then(|| Next::Month(m.next())),
            Allowance::App(m) => m.holds_next_cycle().then(|| Next::AppMonth(terms.clone(), m.next())),
            Allowance::Bucket { .. }
            | Allowance::Trial { .. }
            | Allowance::Partner { .. }
            | Allowance::Credits { .. } => None,
        }
    }

    /// The next cycle when nothing is pending: a contract renews on its terms, a
    /// subscription goes on, a plan renews.
    pub(crate) fn renewal(&self, terms: &PlanTerms) -> Next {
        match self {
            Allowance::Contract(m) => Next::Term(m.terms.clone()),
            Allowance::App(m) => Next::AppMonth(terms.clone(), m.next()),
            Allowance::Bucket { .. }
            | Allowance::Trial { .. }
            | Allowance::Partner { .. }
            | Allowance::Credits { .. } => Next::Plan(terms.clone()),
        }
    }

    /// The contract month, for a generation of a contract term.
    pub fn contract_month(&self) -> Option<&ContractMonth> {
        match self {
            Allowance::Contract(m) => Some(m),
            Allowance::Bucket { .. }
            | Allowance::Trial { .. }
            | Allowance::Partner { .. }
            | Allowance::Credits { .. }
            | Allowance::App(_) => None,
        }
    }

    /// The app subscription month, for a generation of an app subscription.
    pub fn app_month(&self) -> Option<&AppMonth> {
        match self {
            Allowance::App(m) => Some(m),
            Allowance::Bucket { .. }
            | Allowance::Trial { .. }
            | Allowance::Partner { .. }
            | Allowance::Credits { .. }
            | Allowance::Contract(_) => None,
        }
    }

    /// What credits bought now would be: top-ups on an app month, legacy credits on the
    /// credits plan; the other families sell none.
    pub(crate) fn purchasable(&self) -> Option<Purchasable<'_>> {
        match self {
            Allowance::App(m) => Some(Purchasable::TopUps(m)),
            Allowance::Credits { .. } => Some(Purchasable::Credits),
            Allowance::Bucket { .. } | Allowance::Trial { .. } | Allowance::Partner { .. } | Allowance::Contract(_) => {
                None
            }
        }
    }

    /// What a generation had available beside its own allowance, from what crossed
    /// cycles and was bought: legacy `credits`, an app month's AI credits with its
    /// `top_ups`, a contract month's allotment (with the rollover in `carry`) and the
    /// term's usage before it. Asked only where `carries_over`.
    pub(crate) fn available(
        &self,
        used: MeterInput,
        credits: u64,
        top_ups: u64,
        carry: contract::ContractCarry,
    ) -> MeterInput {
        match self {
            Allowance::Credits { .. } => MeterInput { credits, ..used },
            Allowance::App(m) => MeterInput { credits, ai_available: m.ai_credits + top_ups, ..used },
            Allowance::Contract(m) => {
                let month = contract::ContractFigures::new(m, carry);
                MeterInput {
                    credits,
                    contract_available: month.available(),
                    contract_used_before: month.used_before,
                    ..used
                }
            }
            Allowance::Bucket { .. } | Allowance::Trial { .. } | Allowance::Partner { .. } => used,
        }
    }

    /// Whether a cycle of this allowance hands the next one a position even when nothing
    /// was bought: a contract term's usage and rollover. Legacy credits and AI-credit
    /// top-ups cross cycles only once bought (`carried_into` checks the purchases itself).
    pub fn carries_without_purchases(&self) -> bool {
        match self {
            Allowance::Contract(_) => true,
            Allowance::Bucket { .. }
            | Allowance::Trial { .. }
            | Allowance::Partner { .. }
            | Allowance::Credits { .. }
            | Allowance::App(_) => false,
        }
    }

    /// Whether a refund after the close needs each record's credit draws: images past
    /// the credits were billed at the catalog's rate, not the credit's (rules V2,
    /// `past_at_list`).
    pub fn keeps_credit_draws(&self) -> bool {
        match self {
            Allowance::Credits { past_at_list, .. } => *past_at_list,
            Allowance::Bucket { .. }
            | Allowance::Trial { .. }
            | Allowance::Partner { .. }
            | Allowance::Contract(_)
            | Allowance::App(_) => false,
        }
    }

    /// The allowance's meters (what alerts fire on and the balance shows), in the order
    /// alerts are checked.
    pub fn meters(&self, m: &MeterInput) -> Vec<Meter> {
        match self {
            Allowance::Bucket { value } => vec![Meter::of(MeterKind::Bucket, m.value, *value)],
            Allowance::Trial { value, sandbox_images } => trial::meters(*value, *sandbox_images, m),
            Allowance::Partner { commitment_images, .. } => partner::meters(*commitment_images, m),
            Allowance::Credits { image_rate, .. } => credits::meters(*image_rate, m),
            Allowance::Contract(month) => contract::meters(month, m),
            Allowance::App(month) => app::meters(month, m),
        }
    }
}

/// Draws one usage record from generation `g`; returns the value past the allowance
/// (overage, or usage over a free allowance).
pub(crate) fn draw(g: &mut GenFigures, draws: &mut Draws<'_>, usage: Usage<'_>) -> Decimal {
    match g.allowance {
        // A bucket's or a trial's value covers usage first; the rest is past it.
        Allowance::Bucket { value } | Allowance::Trial { value, .. } => g.cover_up_to(value, usage.value),
        Allowance::Partner { .. } => Decimal::ZERO,
        Allowance::Credits { .. } => credits::draw(g, draws, usage),
        Allowance::Contract(_) => draws.contract.as_mut().expect("a contract cycle has its term").draw(usage),
        Allowance::App(_) => {
            draws.app.as_mut().expect("an app cycle has app figures").draw(usage);
            Decimal::ZERO
        }
    }
}

/// What a `CreditsPurchased` buys while a generation of an allowance is in force.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purchasable<'a> {
    /// AI-credit top-ups of an app month (`app::check_top_up`: whether its plan sells them).
    TopUps(&'a AppMonth),
    /// Legacy API credits (`credits::check_purchase`).
    Credits,
}

/// One usage record as a generation draws it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage<'a> {
    pub rec: &'a crate::figures::UsageRec,
    pub images: u64,
    /// What one image is billed at, and `images` of them.
    pub rate: Decimal,
    pub value: Decimal,
}

/// What a meter measures. The order is the balance's row order within a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum MeterKind {
    Bucket,
    Sandbox,
    Trial,
    Credits,
    Exports,
    AiCredits,
    Allotment,
    Commitment,
}

impl MeterKind {
    /// The allowance's name in alerts, balances and invoices.
    pub fn key(self) -> &'static str {
        match self {
            MeterKind::Bucket => "bucket",
            MeterKind::Sandbox => "sandbox",
            MeterKind::Trial => "trial",
            MeterKind::Credits => "credits",
            MeterKind::Exports => "exports",
            MeterKind::AiCredits => "ai_credits",
            MeterKind::Allotment => "allotment",
            MeterKind::Commitment => "commitment",
        }
    }
}

/// One limit and how much of it is consumed (value, images or credits).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Meter {
    pub kind: MeterKind,
    pub consumed: Decimal,
    pub limit: Decimal,
    /// The span the meter covers when it is not the cycle (a contract's term).
    pub term: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Meter {
    pub(crate) fn of(kind: MeterKind, consumed: Decimal, limit: Decimal) -> Meter {
        Meter { kind, consumed, limit, term: None }
    }

    pub(crate) fn count(kind: MeterKind, consumed: u64, limit: u64) -> Meter {
        Meter::of(kind, Decimal::from(consumed), Decimal::from(limit))
    }
}

/// What a generation used and had available so far: the live aggregates and the
/// figures both describe it, so alerts and balances read the same meters.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MeterInput {
    /// Value drawn at the generation's rates (refunds and sandbox left out).
    pub value: Decimal,
    pub images: u64,
    pub remove_background_images: u64,
    pub sandbox_images: u64,
    pub exports: u64,
    pub ai: u64,
    /// Legacy credits the cycle had: carried in plus bought so far.
    pub credits: u64,
    /// AI credits available: the month's allowance, top-ups carried in and bought so far.
    pub ai_available: u64,
    /// The contract month's allotment plus rollover, and the term's images used before it.
    pub contract_available: u64,
    pub contract_used_before: u64,
}

/// A plan the catalog names, with a bucket size it sells; contracts and app plans come
/// with their own terms.
pub fn check_plan(version: &Version, terms: &PlanTerms) -> Result<(), Reject> {
    match version.plan(terms.plan) {
        None => Err(Reject::new(
            RejectCode::PlanNotOffered,
            format!("plan {} is not offered in catalog version {}", terms.plan.key(), version.id),
        )),
        Some(PlanRule::Enterprise { .. }) => {
            Err(Reject::new(RejectCode::ContractRequired, "api_enterprise starts with a ContractSigned"))
        }
        Some(PlanRule::App { .. }) => Err(Reject::new(
            RejectCode::AppOptionsRequired,
            format!("app plan {} needs its billing interval and seats", terms.plan.key()),
        )),
        Some(PlanRule::Bucket { step_images, .. }) => bucket::check_size(terms, *step_images),
        Some(PlanRule::Trial { .. } | PlanRule::Partner { .. } | PlanRule::Credits { .. }) => Ok(()),
    }
}

/// A cycle on a plan the catalog prices by rule (bucket, trial, partner, credits);
/// contracts and app subscriptions open their own.
pub(crate) fn open_cycle(
    catalog: &Catalog,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    terms: PlanTerms,
    cause: &EventId,
    rules: Rules,
) -> Result<CycleSpec, Violation> {
    let version = version_in_force(catalog, start, cause)?;
    check_plan(version, &terms).map_err(|reject| Violation::new(cause, reject))?;
    let price = version.price(&terms);
    let allowance = Allowance::of_rule(version, &terms, price, rules);
    let rule = version.plan(terms.plan).expect("checked plan");
    let charges = rule.opening_fee(version, &terms, price).into_iter().collect();
    Ok(CycleSpec { rules, ..cycle_of(start, end, version, terms, allowance, charges) })
}

/// New subscriptions to a plan the version keeps only for existing holders are refused.
pub fn check_sold(version: Option<&Version>, terms: &PlanTerms) -> Result<(), Reject> {
    let Some((v, rule)) = version.and_then(|v| v.plan(terms.plan).map(|rule| (v, rule))) else { return Ok(()) };
    if rule.sold() {
        return Ok(());
    }
    Err(Reject::new(
        RejectCode::PlanNotSold,
        format!("plan {} is legacy in catalog version {}: no new subscriptions", terms.plan.key(), v.id),
    ))
}

/// How invoices name a plan: the catalog's label, or its key.
pub fn label(version: &Version, terms: &PlanTerms) -> String {
    match version.plan(terms.plan) {
        Some(
            PlanRule::Bucket { label, .. }
            | PlanRule::Trial { label, .. }
            | PlanRule::Partner { label, .. }
            | PlanRule::Credits { label, .. }
            | PlanRule::Enterprise { label, .. }
            | PlanRule::App { label, .. },
        ) => label.clone(),
        None => terms.plan.key().to_string(),
    }
}
