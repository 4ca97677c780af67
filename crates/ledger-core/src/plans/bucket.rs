//! Prepaid buckets (`api_basic`, `api_plus`), bought in steps of images of the plan's
//! own API and drawn down at the called API's rate: the size check, the bucket fee,
//! upgrades (restart or difference, prorated), overage by API, and the summary.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::catalog::{PlanRule, Version};
use crate::event::{Api, PlanTerms, UpgradePolicy};
use crate::figures::{CycleFigures, GenFigures};
use crate::money::round_cents;
use crate::plans::{label, Allowance};
use crate::reject::{Reject, RejectCode};
use crate::statement::LineItem;
use crate::timeline::calendar::fraction_left;
use crate::timeline::{Charge, ChargeKind, CycleSpec, Gen, Rules};

/// A bucket is a positive multiple of the plan's step.
pub(crate) fn check_size(terms: &PlanTerms, step_images: u64) -> Result<(), Reject> {
    if terms.bucket_images == 0 || !terms.bucket_images.is_multiple_of(step_images) {
        return Err(Reject::new(
            RejectCode::BucketSize,
            format!("bucket_images {} is not a positive multiple of {step_images}", terms.bucket_images),
        ));
    }
    Ok(())
}

/// The bucket fee a cycle on `terms` opens with, if the plan has a price.
pub(crate) fn fee(version: &Version, terms: &PlanTerms, price: Decimal) -> Option<Charge> {
    (price > Decimal::ZERO).then(|| {
        let description = format!("{} bucket, {} images", label(version, terms), terms.bucket_images);
        Charge::once(ChargeKind::BucketFee, description, round_cents(price), Decimal::ONE)
    })
}

/// An upgrade to a pricier bucket applies now, by the policy in force.
pub(crate) fn upgrade(
    cycle: &mut CycleSpec,
    version: &Version,
    terms: PlanTerms,
    policy: UpgradePolicy,
    at: DateTime<Utc>,
) {
    let (r, rules) = (fraction_left(cycle.start, cycle.end, at), cycle.rules);
    let new_price = version.price(&terms);
    let last = cycle.gens.last().expect("a cycle has a generation");
    let (number, last_price) = (last.number + 1, version.price(&last.terms));
    let name = format!("{} bucket, {} images", label(version, &terms), terms.bucket_images);
    match policy {
        UpgradePolicy::RestartProrated => {
            // The new bucket is worth exactly what was charged for it; the old one's
            // unused value is forfeited.
            let amount = round_cents(new_price * r);
            let description = format!("Upgrade to {name}, {} of the cycle left (restart_prorated)", r.normalize());
            cycle.charges.push(Charge::once(ChargeKind::UpgradeCharge, description, amount, r));
            cycle.gens.push(gen(version, terms, at, number, amount, rules));
        }
        UpgradePolicy::DifferenceProrated => {
            // The bucket becomes the new size for the whole cycle; usage so far counts.
            let amount = round_cents((new_price - last_price) * r);
            let description = format!("Upgrade to {name}, {} of the cycle left (difference_prorated)", r.normalize());
            cycle.charges.push(Charge::once(ChargeKind::UpgradeCharge, description, amount, r));
            let last = cycle.gens.last_mut().expect("a cycle has a generation");
            *last = gen(version, terms, last.from, number, new_price, rules);
        }
    }
}

/// Overage beyond the buckets' value, by API at its list rate.
pub(crate) fn overage_lines(figures: &CycleFigures, version: &Version) -> Vec<LineItem> {
    let mut over: BTreeMap<Api, Decimal> = BTreeMap::new();
    for g in figures.gens.iter().filter(|g| matches!(g.allowance, Allowance::Bucket { .. })) {
        for (api, v) in &g.over_by_api {
            *over.entry(*api).or_default() += *v;
        }
    }
    over.into_iter()
        .map(|(api, value)| {
            LineItem::overage(api, version.rate(api).expect("api has a rate"), value, "the bucket's value")
        })
        .collect()
}

/// The cycle's buckets together.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub value: Decimal,
    pub consumed: Decimal,
    pub forfeited: Decimal,
    /// The forfeited value in images of the plan's own API, at its rate.
    pub forfeited_images: Decimal,
    pub overage: Decimal,
    pub generations: u32,
}

pub fn summary(figures: &CycleFigures, version: &Version) -> Option<Summary> {
    let buckets: Vec<&GenFigures> =
        figures.gens.iter().filter(|g| matches!(g.allowance, Allowance::Bucket { .. })).collect();
    if buckets.is_empty() {
        return None;
    }
    let forfeited_images = buckets
        .iter()
        .map(|g| {
            let rate = match version.plan(g.terms.plan) {
                Some(PlanRule::Bucket { api, .. }) => version.rate(*api),
                _ => None,
            };
            rate.map_or(Decimal::ZERO, |r| g.unused() / r)
        })
        .sum();
    Some(Summary {
        value: buckets.iter().filter_map(|g| g.allowance.value()).sum(),
        consumed: buckets.iter().map(|g| g.consumed).sum(),
        forfeited: figures.forfeited(),
        forfeited_images,
        overage: buckets.iter().flat_map(|g| g.over_by_api.values()).sum(),
        generations: buckets.len() as u32,
    })
}

/// A generation of `terms` worth `value` from `from`.
fn gen(version: &Version, terms: PlanTerms, from: DateTime<Utc>, number: u32, value: Decimal, rules: Rules) -> Gen {
    let allowance = Allowance::of_rule(version, &terms, value, rules);
    Gen { from, number, terms, allowance }
}
