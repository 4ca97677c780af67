//! Legacy API credits (`api_credits`): bought in advance, one credit per image of
//! either API worth the credit rate, usage past them billed at the rate of the catalog
//! governing the cycle (rules V2; at the credit rate under V1), and the remainder
//! expiring on the catalog's date. The balance crosses cycles (`CreditWalk`).
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::catalog::{PlanRule, Version};
use crate::event::{Api, Plan};
use crate::figures::{CycleFigures, Draws, GenFigures, Purchase, UsageRec};
use crate::ids::EventId;
use crate::plans::{Allowance, Meter, MeterInput, MeterKind, Usage};
use crate::reject::{Reject, RejectCode};
use crate::statement::{LineItem, LineKind, UnitPrice};
use crate::timeline::calendar::fmt_time;
use crate::timeline::{CycleSpec, Rules};

/// The team's credits as one cycle sees them.
#[derive(Debug, Clone, Default)]
pub struct CreditInput<'a> {
    /// Credits left when the cycle starts.
    pub carried: u64,
    /// Purchases made in the cycle, sorted by `(at, event_id)`.
    pub purchases: Vec<&'a Purchase>,
    /// When the credits expire; `None`: the team never had credits.
    pub expires_at: Option<DateTime<Utc>>,
    /// Sequence number of the recorded expiry: usage appended after it draws nothing.
    pub expiry_seq: Option<u64>,
}

/// What the credits did in a cycle.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreditFigures {
    pub carried: u64,
    pub purchased: u64,
    pub used: u64,
    /// Credits that expired inside this cycle.
    pub expired: u64,
    pub expires_at: Option<DateTime<Utc>>,
    pub balance_end: u64,
    /// `(credits, amount paid)` of each purchase in the cycle.
    pub purchases: Vec<(u64, Decimal)>,
    /// `(seq, credits)` of each usage record that drew credits, in draw order: what a
    /// refund after the close gives back at the credit rate.
    pub draws: Vec<(u64, u64)>,
}

/// Walks the credit balance through a cycle in `(at, event_id)` order.
#[derive(Clone)]
pub(crate) struct CreditWalk<'a> {
    input: &'a CreditInput<'a>,
    in_cycle_expiry: Option<DateTime<Utc>>,
    next: usize,
    balance: u64,
    out: CreditFigures,
}

impl<'a> CreditWalk<'a> {
    pub(crate) fn new(input: &'a CreditInput<'a>, spec: &CycleSpec) -> CreditWalk<'a> {
        CreditWalk {
            input,
            in_cycle_expiry: input.expires_at.filter(|t| spec.contains(*t)),
            next: 0,
            balance: input.carried,
            out: CreditFigures { carried: input.carried, expires_at: input.expires_at, ..Default::default() },
        }
    }

    /// Takes in every purchase up to `(at, id)`, and the expiry once `at` reaches it.
    pub(crate) fn advance(&mut self, at: DateTime<Utc>, id: Option<&EventId>) {
        while let Some(p) = self.input.purchases.get(self.next) {
            if id.map_or(p.at >= at, |id| (p.at, &p.event_id) > (at, id)) {
                break;
            }
            self.balance += p.credits;
            self.out.purchased += p.credits;
            self.out.purchases.push((p.credits, p.amount));
            self.next += 1;
        }
        if self.in_cycle_expiry.is_some_and(|t| at >= t) {
            self.out.expired = std::mem::take(&mut self.balance);
            self.in_cycle_expiry = None;
        }
    }

    /// Credits drawn by a usage record of `images` images.
    fn draw(&mut self, rec: &UsageRec) -> u64 {
        if self.input.expiry_seq.is_some_and(|s| rec.seq > s) {
            return 0;
        }
        let drawn = self.balance.min(u64::from(rec.images));
        self.balance -= drawn;
        self.out.used += drawn;
        if drawn > 0 {
            self.out.draws.push((rec.seq, drawn));
        }
        drawn
    }

    pub(crate) fn finish(mut self, end: DateTime<Utc>) -> CreditFigures {
        self.advance(end, None);
        if let Some(t) = self.in_cycle_expiry {
            self.advance(t, None);
        }
        self.out.balance_end = self.balance;
        self.out
    }
}

/// Usage draws one credit per image while credits last; the rest is billed at the
/// image's rate (the credit's under rules V1, the catalog's for the API under V2).
pub(crate) fn draw(g: &mut GenFigures, draws: &mut Draws<'_>, usage: Usage<'_>) -> Decimal {
    let credits = draws.credits.draw(usage.rec);
    g.cover(usage.value, usage.rate * Decimal::from(credits))
}

impl Version {
    /// The legacy credits rule, if this version carries one: the credit rate, whether it
    /// is sold, when credits expire. (A lookup of the credits family's own rule, so it
    /// lives with the family.)
    pub fn credits(&self) -> Option<(Decimal, bool, DateTime<Utc>)> {
        match self.plan(Plan::ApiCredits) {
            Some(PlanRule::Credits { image_rate, purchasable, expires_at, .. }) => {
                Some((*image_rate, *purchasable, *expires_at))
            }
            _ => None,
        }
    }
}

/// Whether images past the credits are billed at the catalog's rate for their API
/// rather than the credit's: under rules V2, where the two differ (from the 2025-02-27
/// catalog, a removal costs $0.02; before it every image cost the credit's $0.10).
pub(crate) fn past_at_list(version: &Version, rules: Rules) -> bool {
    let Some((image_rate, ..)) = version.credits() else { return false };
    rules >= Rules::V2
        && [Api::RemoveBackground, Api::ImageEditing].into_iter().any(|api| version.rate(api) != Some(image_rate))
}

/// One credit per image, valued at the credit rate: images drawn against credits held.
pub(crate) fn meters(image_rate: Decimal, m: &MeterInput) -> Vec<Meter> {
    vec![Meter::of(MeterKind::Credits, image_rate * Decimal::from(m.images), image_rate * Decimal::from(m.credits))]
}

/// Credits are bought on the `api_credits` plan, while the catalog version of the cycle
/// sells them and before they expire.
pub(crate) fn check_purchase(version: &Version, at: DateTime<Utc>) -> Result<(), Reject> {
    match version.credits() {
        Some((_, true, expires)) if at < expires => Ok(()),
        Some((_, _, expires)) if at >= expires => Err(Reject::new(
            RejectCode::CreditsExpired,
            format!("credits expired at {}; none can be bought", fmt_time(expires)),
        )),
        _ => Err(Reject::new(RejectCode::CreditsNotSold, format!("catalog version {} sells no credits", version.id))),
    }
}

/// Credits bought in the cycle: prepaid, charged at the amount paid.
pub(crate) fn purchase_lines(figures: &CycleFigures) -> Vec<LineItem> {
    let purchases = figures.credits.as_ref().map(|c| c.purchases.as_slice()).unwrap_or_default();
    LineItem::purchases(purchases, "API credits (one per image of either API)")
}

/// Usage past the credits, by API and the rate it was billed at.
pub(crate) fn overage_lines(figures: &CycleFigures, version: &Version) -> Vec<LineItem> {
    let mut past_credits: BTreeMap<(Api, Decimal), Decimal> = BTreeMap::new();
    for g in &figures.gens {
        let Allowance::Credits { .. } = g.allowance else { continue };
        for (api, v) in &g.over_by_api {
            let rate = g.allowance.rate(version, &g.terms, *api).expect("credits price API calls");
            *past_credits.entry((*api, rate)).or_default() += *v;
        }
    }
    past_credits.into_iter().map(|((api, rate), value)| LineItem::overage(api, rate, value, "the credits")).collect()
}

/// Credits that expired in the cycle: shown, not refunded (amount 0).
pub(crate) fn expiry_lines(figures: &CycleFigures) -> Vec<LineItem> {
    let Some(c) = figures.credits.as_ref().filter(|c| c.expired > 0) else { return Vec::new() };
    let description = format!(
        "{} unused API credits expired at {} (not refunded)",
        c.expired,
        c.expires_at.map(fmt_time).unwrap_or_default()
    );
    vec![LineItem::new(
        LineKind::CreditsExpired,
        description,
        c.expired,
        UnitPrice::Cents(Decimal::ZERO),
        Decimal::ZERO,
    )]
}
