//! The bucket advisor: a team's real usage replayed under every self-serve plan and
//! bucket size the catalog sells, through the same fold that bills it, so each figure
//! is one the team would really have been invoiced.
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::event::{AccountChange, AccountEvent, Event, ImageProcessed, Plan, PlanTerms};
use crate::ids::{EventId, TeamId};
use crate::money::{fmt_cents, round_cents};
use crate::plans::Advised;
use crate::report::{fmt_time, per_image};
use crate::team::Team;
use crate::timeline::calendar::cycle_start;

/// Bucket sizes tried per plan at most; past it they are spread over the range.
pub const MAX_SIZES_PER_PLAN: u64 = 16;

/// What one plan would have cost over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanCost {
    pub plan: String,
    pub total: String,
    pub forfeited: String,
    pub overage: String,
    pub effective_cost_per_image: Option<String>,
    #[serde(skip)]
    pub total_exact: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Advice {
    pub team_id: String,
    pub period: crate::report::Period,
    pub cycles: u32,
    pub price_book_version: String,
    pub billable_images: u64,
    /// What the team was really invoiced for these cycles, when it was.
    pub invoiced: Option<String>,
    /// Every plan tried, cheapest first (ties: the listed order).
    pub options: Vec<PlanCost>,
    pub cheapest: Option<String>,
}

/// The plans a team can buy itself at `at`: every bucket size from one step up to the
/// one covering the busiest cycle's usage at list rates, and the partner plan. Trials
/// are free (not a purchase), contracts negotiated, credits no longer sold.
pub fn candidates(catalog: &Catalog, at: DateTime<Utc>, busiest_value: Decimal) -> Vec<PlanTerms> {
    let Some(version) = catalog.version_at(at) else { return Vec::new() };
    let mut out = Vec::new();
    for plan in Plan::ALL {
        let Some(rule) = version.plan(plan) else { continue };
        match rule.advised() {
            Advised::Buckets { step_images, step_price } => {
                let covering = (busiest_value / step_price).ceil();
                let steps = u64::try_from(covering).unwrap_or(1).max(1);
                for k in sizes(steps) {
                    out.push(PlanTerms { plan, bucket_images: k * step_images, upgrade_policy: None });
                }
            }
            Advised::AsIs => out.push(PlanTerms { plan, bucket_images: 0, upgrade_policy: None }),
            Advised::Not => {}
        }
    }
    out
}

/// `1..=steps`, or `MAX_SIZES_PER_PLAN` of them: 1, then evenly spread up to `steps`.
fn sizes(steps: u64) -> Vec<u64> {
    if steps <= MAX_SIZES_PER_PLAN {
        return (1..=steps).collect();
    }
    let spread = MAX_SIZES_PER_PLAN - 1;
    let mut out = vec![1];
    out.extend((1..=spread).map(|i| (i * steps).div_ceil(spread)));
    out.dedup();
    out
}

/// The usage of `images` inside the window, valued at the list rates in force at `at`.
pub fn busiest_cycle_value(
    catalog: &Catalog,
    anchor: DateTime<Utc>,
    cycles: u32,
    images: &[ImageProcessed],
) -> Decimal {
    let Some(version) = catalog.version_at(anchor) else { return Decimal::ZERO };
    (0..cycles)
        .map(|k| {
            let (start, end) = (cycle_start(anchor, k), cycle_start(anchor, k + 1));
            images
                .iter()
                .filter(|e| !e.sandbox && start <= e.occurred_at && e.occurred_at < end)
                .filter_map(|e| version.rate(e.api).map(|r| r * Decimal::from(e.images)))
                .sum::<Decimal>()
        })
        .max()
        .unwrap_or_default()
}

/// Bills `images` (the window's usage, refunded images left out) on `terms` from
/// `anchor` for `cycles` cycles, with the real fold, and sums the invoices.
pub fn simulate(
    catalog: &Catalog,
    team: &TeamId,
    anchor: DateTime<Utc>,
    cycles: u32,
    terms: &PlanTerms,
    images: &[ImageProcessed],
) -> Result<PlanCost, String> {
    let end = cycle_start(anchor, cycles);
    let mut state = Team::new(team.clone());
    let start = Event::Account(AccountEvent {
        event_id: EventId::new("advise.plan").expect("valid id"),
        team_id: team.clone(),
        occurred_at: anchor,
        change: AccountChange::PlanStarted(terms.clone()),
    });
    let mut invoices = Vec::new();
    let mut keep = |applied: Vec<crate::team::Applied>| {
        invoices.extend(applied.into_iter().filter_map(|a| a.effects.invoice).filter(|i| i.period_start < end));
    };
    keep(state.submit(catalog, start, None).map_err(|r| r.to_string())?);
    let mut usage: Vec<&ImageProcessed> =
        images.iter().filter(|e| anchor <= e.occurred_at && e.occurred_at < end).collect();
    usage.sort_by(|a, b| (a.occurred_at, &a.event_id).cmp(&(b.occurred_at, &b.event_id)));
    for e in usage {
        keep(state.submit(catalog, Event::Image(e.clone()), None).map_err(|r| r.to_string())?);
    }
    // Close the window's cycles, not the one after it (a grace is shorter than a cycle).
    keep(state.close_until(catalog, cycle_start(anchor, cycles + 1) - Duration::seconds(1)));
    let total: Decimal = invoices.iter().map(|i| i.total_exact).sum();
    let forfeited: Decimal = invoices.iter().map(|i| round_cents(i.forfeited_exact)).sum();
    let overage: Decimal = invoices.iter().map(|i| i.overage_exact).sum();
    let billable: u64 = invoices.iter().map(|i| i.usage.billable_images).sum();
    Ok(PlanCost {
        plan: terms.name(),
        total: fmt_cents(total),
        forfeited: fmt_cents(forfeited),
        overage: fmt_cents(overage),
        effective_cost_per_image: per_image(total, billable),
        total_exact: total,
    })
}

/// Ranks what `simulate` found for each candidate (in `candidates` order).
pub fn rank(
    catalog: &Catalog,
    team: &TeamId,
    anchor: DateTime<Utc>,
    cycles: u32,
    images: &[ImageProcessed],
    invoiced: Option<Decimal>,
    mut options: Vec<PlanCost>,
) -> Result<Advice, String> {
    let version = catalog.version_at(anchor).ok_or_else(|| format!("no catalog version at {}", fmt_time(anchor)))?;
    // Stable: equal totals keep the catalog's order (smaller bucket first).
    options.sort_by_key(|o| o.total_exact);
    let billable = images
        .iter()
        .filter(|e| !e.sandbox && anchor <= e.occurred_at && e.occurred_at < cycle_start(anchor, cycles))
        .map(|e| u64::from(e.images))
        .sum();
    Ok(Advice {
        team_id: team.to_string(),
        period: crate::report::Period::new(anchor, cycle_start(anchor, cycles)),
        cycles,
        price_book_version: version.id.clone(),
        billable_images: billable,
        invoiced: invoiced.map(fmt_cents),
        cheapest: options.first().map(|o| o.plan.clone()),
        options,
    })
}
