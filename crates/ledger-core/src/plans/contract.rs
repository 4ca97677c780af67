//! Enterprise contracts (`api_enterprise`): terms signed with a `ContractSigned` (rates,
//! a yearly commitment split into monthly allotments, an annual fee, rollover, volume
//! tiers), checked against the catalog; each month draws the allotment first, prices
//! the rest by tier, and rolls over or forfeits what is left.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::catalog::{Catalog, PlanRule, Version};
use crate::event::{Api, ContractTerms, Plan, PlanTerms};
use crate::figures::CycleFigures;
use crate::ids::EventId;
use crate::money::round_cents;
use crate::plans::{Allowance, Meter, MeterInput, MeterKind, Usage};
use crate::reject::{Reject, RejectCode};
use crate::statement::{LineItem, LineKind, UnitPrice};
use crate::timeline::{cycle_of, version_in_force, Charge, ChargeKind, CycleSpec, Violation};

/// Where a cycle sits in an enterprise contract's term.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContractMonth {
    pub terms: ContractTerms,
    pub term_start: DateTime<Utc>,
    pub term_end: DateTime<Utc>,
    /// 0-based month of the term.
    pub month: u32,
}

impl ContractMonth {
    pub fn allotment(&self) -> u64 {
        self.terms.allotment(self.month)
    }

    pub fn is_last_month(&self) -> bool {
        self.month + 1 == self.terms.term_months
    }

    /// The annual fee is invoiced on the first statement of each contract year.
    pub fn opens_a_year(&self) -> bool {
        self.month.is_multiple_of(12)
    }

    /// Images committed over the whole term.
    pub fn term_commitment(&self) -> u64 {
        let years_x12 = u128::from(self.terms.committed_images_per_year) * u128::from(self.terms.term_months);
        (years_x12 / 12) as u64
    }

    /// Inside a term the next cycle is the term's next month, whatever is pending.
    pub(crate) fn holds_next_cycle(&self) -> bool {
        !self.is_last_month()
    }

    pub(crate) fn next(&self) -> ContractMonth {
        ContractMonth { month: self.month + 1, ..self.clone() }
    }
}

/// A contract must fit what the catalog in force sells (billing.md §4).
pub fn check(version: &Version, terms: &ContractTerms) -> Result<(), Reject> {
    let bad = |detail: String| Err(Reject::new(RejectCode::ContractTerms, detail));
    let Some(PlanRule::Enterprise { min_committed_images_per_year, term_months, .. }) =
        version.plan(Plan::ApiEnterprise)
    else {
        return Err(Reject::new(
            RejectCode::PlanNotOffered,
            format!("plan api_enterprise is not offered in catalog version {}", version.id),
        ));
    };
    if !term_months.contains(&terms.term_months) {
        return bad(format!("term of {} months is not sold (terms: {term_months:?})", terms.term_months));
    }
    if terms.committed_images_per_year < *min_committed_images_per_year {
        return bad(format!(
            "committed_images_per_year {} is below the minimum of {min_committed_images_per_year}",
            terms.committed_images_per_year
        ));
    }
    if terms.rate_remove_background <= Decimal::ZERO || terms.rate_image_editing <= Decimal::ZERO {
        return bad("contract rates must be positive".into());
    }
    if terms.annual_fee < Decimal::ZERO || terms.annual_fee != round_cents(terms.annual_fee) {
        return bad(format!("annual_fee {} must be a non-negative amount in cents", terms.annual_fee));
    }
    let ascending = terms.tiers.windows(2).all(|w| w[0].from_images < w[1].from_images);
    let discounts_ok =
        terms.tiers.iter().all(|t| t.discount_percent > Decimal::ZERO && t.discount_percent < Decimal::ONE_HUNDRED);
    if !ascending || !discounts_ok {
        return bad("volume tiers need strictly ascending from_images and discounts between 0 and 100 percent".into());
    }
    Ok(())
}

/// A cycle of a contract term (its terms were checked when signed; a renewal keeps them).
pub(crate) fn open_cycle(
    catalog: &Catalog,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    month: ContractMonth,
    cause: &EventId,
) -> Result<CycleSpec, Violation> {
    let version = version_in_force(catalog, start, cause)?;
    let mut charges = Vec::new();
    if month.opens_a_year() && month.terms.annual_fee > Decimal::ZERO {
        let year = month.month / 12 + 1;
        let description = format!(
            "Enterprise contract, year {year} of {}: {} committed images, invoiced up front",
            month.terms.term_months.div_ceil(12),
            month.terms.committed_images_per_year
        );
        charges.push(Charge::once(ChargeKind::ContractFee, description, month.terms.annual_fee, Decimal::ONE));
    }
    let terms = PlanTerms { plan: Plan::ApiEnterprise, bucket_images: 0, upgrade_policy: None };
    Ok(cycle_of(start, end, version, terms, Allowance::Contract(month), charges))
}

/// Where a contract term stands when a cycle starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContractCarry {
    /// The term the figures belong to; a cycle of another term starts from zero.
    pub term_start: Option<DateTime<Utc>>,
    /// Billable images used in the term before the cycle.
    pub used: u64,
    /// Unused allotment rolled over into the cycle.
    pub rollover: u64,
}

/// One month's statement of an enterprise contract.
#[derive(Debug, Clone, PartialEq)]
pub struct ContractFigures {
    pub month: ContractMonth,
    pub allotment: u64,
    pub rollover_in: u64,
    /// Images drawn from the allotment (and what rolled over).
    pub drawn: u64,
    /// Overage images by API and volume discount (percent).
    pub overage: BTreeMap<(Api, Decimal), u64>,
    pub rollover_out: u64,
    /// Allotment left unused and lost: every month without rollover, at the term's end with it.
    pub forfeited: u64,
    pub used_before: u64,
    pub used_end: u64,
}

impl ContractFigures {
    pub fn new(month: &ContractMonth, carry: ContractCarry) -> ContractFigures {
        let same_term = carry.term_start == Some(month.term_start);
        ContractFigures {
            month: month.clone(),
            allotment: month.allotment(),
            rollover_in: if same_term && month.terms.rollover { carry.rollover } else { 0 },
            drawn: 0,
            overage: BTreeMap::new(),
            rollover_out: 0,
            forfeited: 0,
            used_before: if same_term { carry.used } else { 0 },
            used_end: if same_term { carry.used } else { 0 },
        }
    }

    pub fn available(&self) -> u64 {
        self.allotment + self.rollover_in
    }

    pub fn over_images(&self) -> u64 {
        self.overage.values().sum()
    }

    /// Draws `images` of `api`: from the allotment first, the rest is overage priced by
    /// the tier each image falls in. Returns the overage value.
    /// Draws `images` of `api`: from the allotment first, the rest is overage priced by
    /// the tier each image falls in. Returns the overage value.
    pub(crate) fn draw(&mut self, usage: Usage<'_>) -> Decimal {
        let (api, images) = (usage.rec.api, usage.images);
        let drawn = (self.available() - self.drawn).min(images);
        self.drawn += drawn;
        let rate = self.month.terms.rate(api).expect("contract usage has a rate");
        let mut value = Decimal::ZERO;
        for (discount, n) in self.month.terms.split_by_tier(self.used_end + drawn, images - drawn) {
            *self.overage.entry((api, discount)).or_default() += n;
            value += discounted(rate, discount) * Decimal::from(n);
        }
        self.used_end += images;
        value
    }

    pub(crate) fn finish(&mut self) {
        let left = self.available() - self.drawn;
        if self.month.terms.rollover && !self.month.is_last_month() {
            self.rollover_out = left;
        } else {
            self.forfeited = left;
        }
    }

    /// The forfeited images valued at the fee paid per committed image.
    pub fn forfeited_value(&self) -> Decimal {
        let terms = &self.month.terms;
        terms.annual_fee * Decimal::from(self.forfeited) / Decimal::from(terms.committed_images_per_year)
    }

    pub fn carry(&self) -> ContractCarry {
        ContractCarry { term_start: Some(self.month.term_start), used: self.used_end, rollover: self.rollover_out }
    }
}

/// A contract rate less a volume discount in percent.
pub fn discounted(rate: Decimal, discount_percent: Decimal) -> Decimal {
    rate * (Decimal::ONE_HUNDRED - discount_percent) / Decimal::ONE_HUNDRED
}

/// The month's allotment (with what rolled over), and the term's commitment.
pub(crate) fn meters(month: &ContractMonth, m: &MeterInput) -> Vec<Meter> {
    let used = Decimal::from(m.contract_used_before + m.images);
    vec![
        Meter::count(MeterKind::Allotment, m.images, m.contract_available),
        Meter {
            kind: MeterKind::Commitment,
            consumed: used,
            limit: Decimal::from(month.term_commitment()),
            term: Some((month.term_start, month.term_end)),
        },
    ]
}

/// A contract month's statement: what the allotment covered, overage at the contract
/// rate by volume tier, and allotment forfeited (amount 0: the annual fee paid for it).
pub(crate) fn lines(figures: &CycleFigures) -> Vec<LineItem> {
    let Some(c) = figures.contract.as_ref() else { return Vec::new() };
    let zero_line = |kind, description: String, quantity: u64| {
        LineItem::new(kind, description, quantity, UnitPrice::Cents(Decimal::ZERO), Decimal::ZERO)
    };
    let mut lines = vec![zero_line(
        LineKind::CommitmentDrawdown,
        format!(
            "Images drawn from the commitment, month {} of {} ({} allotted, {} rolled over)",
            c.month.month + 1,
            c.month.terms.term_months,
            c.allotment,
            c.rollover_in
        ),
        c.drawn,
    )];
    for (&(api, discount), &images) in &c.overage {
        let rate = discounted(c.month.terms.rate(api).expect("contract api has a rate"), discount);
        let tier = if discount.is_zero() {
            "contract rate".to_string()
        } else {
            format!("contract rate less {}% volume discount", discount.normalize())
        };
        let description = format!("{} beyond the commitment ({tier})", LineItem::api_label(api));
        let amount = rate * Decimal::from(images);
        lines.push(LineItem::new(LineKind::Overage, description, images, UnitPrice::Exact(rate), amount));
    }
    if c.forfeited > 0 {
        let when = if c.month.terms.rollover { "at the term's end" } else { "at the month's end (no rollover)" };
        let description = format!("Unused committed images forfeited {when}");
        lines.push(zero_line(LineKind::CommitmentForfeited, description, c.forfeited));
    }
    lines
}
