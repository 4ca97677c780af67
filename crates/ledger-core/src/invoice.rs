//! Invoices: a pure function of a closed cycle's ledger entries. Usage is drawn down in
//! `(occurred_at, event_id)` order, so arrival order never changes a byte.
use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

use crate::catalog::Version;
use crate::event::{Api, PlanTerms};
use crate::ids::{EventId, TeamId};
use crate::money::{fmt_cents, fmt_exact, fmt_quantity, round_cents};
use crate::schedule::{Allowance, AppMonth, ChargeKind, ContractMonth, CycleSpec};

pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// One usage event as the billing fold needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRec {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub event_id: EventId,
    pub api: Api,
    pub images: u32,
    pub sandbox: bool,
    pub refunded: bool,
}

/// A line carried to the next invoice: late usage or a refund of an invoiced event.
#[derive(Debug, Clone, PartialEq)]
pub struct CarryLine {
    pub kind: CarryKind,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub api: Api,
    pub rate: Decimal,
    pub images: u64,
}

/// A legacy credit purchase (`CreditsPurchased`) as the billing fold needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Purchase {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub event_id: EventId,
    pub credits: u64,
    pub amount: Decimal,
    /// When unused credits expire (the catalog's date when bought).
    pub expires_at: DateTime<Utc>,
}

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
}

/// Walks the credit balance through a cycle in `(at, event_id)` order.
struct CreditWalk<'a> {
    input: &'a CreditInput<'a>,
    in_cycle_expiry: Option<DateTime<Utc>>,
    next: usize,
    balance: u64,
    out: CreditFigures,
}

impl<'a> CreditWalk<'a> {
    fn new(input: &'a CreditInput<'a>, spec: &CycleSpec) -> CreditWalk<'a> {
        CreditWalk {
            input,
            in_cycle_expiry: input.expires_at.filter(|t| spec.contains(*t)),
            next: 0,
            balance: input.carried,
            out: CreditFigures { carried: input.carried, expires_at: input.expires_at, ..Default::default() },
        }
    }

    /// Takes in every purchase up to `(at, id)`, and the expiry once `at` reaches it.
    fn advance(&mut self, at: DateTime<Utc>, id: Option<&EventId>) {
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
        drawn
    }

    fn finish(mut self, end: DateTime<Utc>) -> CreditFigures {
        self.advance(end, None);
        if let Some(t) = self.in_cycle_expiry {
            self.advance(t, None);
        }
        self.out.balance_end = self.balance;
        self.out
    }
}

/// Where a contract term stands when a cycle starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
    fn draw(&mut self, api: Api, images: u64) -> Decimal {
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

    fn finish(&mut self) {
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

/// AI-credit top-ups as one cycle of an app subscription sees them.
#[derive(Debug, Clone, Default)]
pub struct TopUpInput<'a> {
    /// Top-up credits left when the cycle starts (they never expire).
    pub carried: u64,
    /// Top-ups bought in the cycle, sorted by `(at, event_id)`.
    pub purchases: Vec<&'a Purchase>,
}

/// One month of an app subscription: exports and AI credits against the allowances.
#[derive(Debug, Clone, PartialEq)]
pub struct AppFigures {
    pub month: AppMonth,
    pub exports_used: u64,
    pub ai_used: u64,
    /// AI credits drawn from the month's allowance, then from top-ups.
    pub ai_from_allowance: u64,
    pub ai_from_top_ups: u64,
    pub top_ups_in: u64,
    pub top_ups_bought: u64,
    /// `(credits, amount paid)` of each top-up bought in the cycle.
    pub purchases: Vec<(u64, Decimal)>,
    pending: Vec<(DateTime<Utc>, EventId, u64, Decimal)>,
}

impl AppFigures {
    pub fn new(month: &AppMonth, top_ups: &TopUpInput<'_>) -> AppFigures {
        AppFigures {
            month: month.clone(),
            exports_used: 0,
            ai_used: 0,
            ai_from_allowance: 0,
            ai_from_top_ups: 0,
            top_ups_in: top_ups.carried,
            top_ups_bought: 0,
            purchases: Vec::new(),
            pending: top_ups.purchases.iter().rev().map(|p| (p.at, p.event_id.clone(), p.credits, p.amount)).collect(),
        }
    }

    /// Takes in the top-ups bought up to `(at, id)` (all of them with `None`).
    fn advance(&mut self, upto: Option<(DateTime<Utc>, &EventId)>) {
        while let Some((at, id, credits, amount)) = self.pending.last() {
            if upto.is_some_and(|(t, i)| (at, id) > (&t, i)) {
                break;
            }
            self.top_ups_bought += credits;
            self.purchases.push((*credits, *amount));
            self.pending.pop();
        }
    }

    fn draw(&mut self, api: Api, images: u64) {
        match api {
            Api::AppExport => self.exports_used += images,
            Api::AppAi => {
                self.ai_used += images;
                let from_allowance = (self.month.ai_credits - self.ai_from_allowance).min(images);
                self.ai_from_allowance += from_allowance;
                let from_top_ups = self.top_ups_left().min(images - from_allowance);
                self.ai_from_top_ups += from_top_ups;
            }
            Api::RemoveBackground | Api::ImageEditing => unreachable!("app plans price app usage only"),
        }
    }

    pub fn top_ups_left(&self) -> u64 {
        self.top_ups_in + self.top_ups_bought - self.ai_from_top_ups
    }

    pub fn exports_over(&self) -> u64 {
        self.exports_used.saturating_sub(self.month.exports)
    }

    /// AI usage past the allowance and the top-ups: recorded, never billed.
    pub fn ai_over(&self) -> u64 {
        self.ai_used - self.ai_from_allowance - self.ai_from_top_ups
    }
}

/// A contract rate less a volume discount in percent.
pub fn discounted(rate: Decimal, discount_percent: Decimal) -> Decimal {
    rate * (Decimal::ONE_HUNDRED - discount_percent) / Decimal::ONE_HUNDRED
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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
    pub sandbox_images: u64,
    pub remove_background_images: u64,
    /// Value beyond the allowance by API, in draw-down order.
    pub over_by_api: BTreeMap<Api, Decimal>,
}

impl GenFigures {
    fn new(g: &crate::schedule::Gen) -> GenFigures {
        GenFigures {
            number: g.number,
            terms: g.terms.clone(),
            allowance: g.allowance.clone(),
            consumed: Decimal::ZERO,
            covered: Decimal::ZERO,
            sandbox_images: 0,
            remove_background_images: 0,
            over_by_api: BTreeMap::new(),
        }
    }

    /// Books `covered` of a usage worth `value` against the allowance; returns the rest.
    fn cover(&mut self, value: Decimal, covered: Decimal) -> Decimal {
        self.covered += covered;
        value - covered
    }

    pub fn allowance_value(&self) -> Option<Decimal> {
        match self.allowance {
            Allowance::Bucket { value } | Allowance::Trial { value, .. } => Some(value),
            Allowance::Partner { .. } | Allowance::Credits { .. } | Allowance::Contract(_) | Allowance::App(_) => None,
        }
    }

    pub fn unused(&self) -> Decimal {
        self.allowance_value().map_or(Decimal::ZERO, |v| v - self.covered)
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
            self.gens.iter().filter(|g| matches!(g.allowance, Allowance::Bucket { .. })).map(GenFigures::unused).sum();
        buckets + self.contract.as_ref().map_or(Decimal::ZERO, ContractFigures::forfeited_value)
    }
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
    let mut walk = CreditWalk::new(credits, spec);
    let mut term = spec.gens.iter().find_map(|g| match &g.allowance {
        Allowance::Contract(m) => Some(ContractFigures::new(m, contract)),
        _ => None,
    });
    let mut app = spec.gens.iter().find_map(|g| match &g.allowance {
        Allowance::App(m) => Some(AppFigures::new(m, top_ups)),
        _ => None,
    });
    let mut out = CycleFigures {
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
    for rec in records {
        debug_assert!(spec.contains(rec.at));
        let g = &mut out.gens[spec.gen_at(rec.at)];
        let images = u64::from(rec.images);
        if rec.sandbox {
            g.sandbox_images += images;
            out.sandbox_images += images;
            continue;
        }
        if rec.refunded {
            out.refunded_images += images;
            continue;
        }
        let Some(rate) = g.allowance.rate(version, &g.terms, rec.api) else {
            out.unpriced_images += images;
            continue;
        };
        let value = rate * Decimal::from(rec.images);
        out.billable_images += images;
        let api = out.by_api.entry(rec.api).or_default();
        api.0 += images;
        api.1 += value;
        g.consumed += value;
        if rec.api == Api::RemoveBackground {
            g.remove_background_images += images;
        }
        walk.advance(rec.at, Some(&rec.event_id));
        let over = match &g.allowance {
            Allowance::App(_) => {
                let app = app.as_mut().expect("an app cycle has app figures");
                app.advance(Some((rec.at, &rec.event_id)));
                app.draw(rec.api, images);
                Decimal::ZERO
            }
            Allowance::Contract(_) => term.as_mut().expect("a contract cycle has its term").draw(rec.api, images),
            Allowance::Credits { image_rate } => g.cover(value, *image_rate * Decimal::from(walk.draw(rec))),
            _ => match g.allowance_value() {
                Some(limit) => g.cover(value, value.min(limit - g.covered)),
                None => Decimal::ZERO,
            },
        };
        if over > Decimal::ZERO {
            *g.over_by_api.entry(rec.api).or_default() += over;
        }
    }
    out.credits = credits.expires_at.is_some().then(|| walk.finish(spec.end));
    out.contract = term.map(|mut t| {
        t.finish();
        t
    });
    out.app = app.map(|mut a| {
        a.advance(None);
        a
    });
    out
}

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    pub kind: &'static str,
    pub description: String,
    pub quantity: String,
    pub unit_price: String,
    pub amount: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiUsage {
    pub images: u64,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageSummary {
    pub billable_images: u64,
    pub sandbox_images: u64,
    pub refunded_images: u64,
    pub by_api: BTreeMap<&'static str, ApiUsage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BucketSummary {
    pub value: String,
    pub consumed: String,
    pub forfeited: String,
    /// The forfeited value in images of the plan's own API, at its rate.
    pub forfeited_images: String,
    pub overage: String,
    pub generations: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllowanceSummary {
    pub allowance: &'static str,
    pub value: String,
    pub consumed: String,
    /// Usage past a free allowance: recorded, never billed.
    pub over_allowance: String,
    pub sandbox_images: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_cap: Option<u64>,
}

/// Legacy credits over the cycle, in credits (one per image of either API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreditSummary {
    pub carried_in: u64,
    pub purchased: u64,
    pub used: u64,
    pub expired: u64,
    pub balance: u64,
    pub expires_at: String,
}

/// A contract month: the term, the allotment and how it was drawn, in images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContractSummary {
    pub term: Period,
    pub month: u32,
    pub term_months: u32,
    pub committed_images_per_year: u64,
    pub rollover: bool,
    pub allotment: u64,
    pub rollover_in: u64,
    pub drawn: u64,
    pub overage_images: u64,
    pub rollover_out: u64,
    pub forfeited_images: u64,
    pub forfeited_value: String,
    /// Images used in the term through this month, and the term's commitment.
    pub term_used: u64,
    pub term_commitment: u64,
}

/// An app subscription's month: its interval, seats and AI-credit top-ups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppSummary {
    pub billing_interval: &'static str,
    pub seats: u32,
    /// 1-based month of the subscription.
    pub month: u32,
    pub top_ups_carried_in: u64,
    pub top_ups_bought: u64,
    pub top_ups_used: u64,
    pub top_ups_left: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerRef {
    pub first_seq: u64,
    pub last_seq: u64,
    pub head_hash: String,
}

/// The invoice in the shape of contract.md; every figure is explainable from the
/// entries between `ledger.first_seq` and `ledger.last_seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invoice {
    pub team_id: String,
    pub period: Period,
    pub status: &'static str,
    pub price_book_version: String,
    pub currency: &'static str,
    pub plan: String,
    pub lines: Vec<Line>,
    pub total: String,
    pub usage: UsageSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<BucketSummary>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowances: Vec<AllowanceSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits: Option<CreditSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contract: Option<ContractSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<AppSummary>,
    pub effective_cost_per_image: Option<String>,
    pub ledger: LedgerRef,
    #[serde(skip)]
    pub period_start: DateTime<Utc>,
    #[serde(skip)]
    pub total_exact: Decimal,
    #[serde(skip)]
    pub forfeited_exact: Decimal,
}

impl Invoice {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("invoice serializes")
    }
}

pub struct InvoiceInput<'a> {
    pub team_id: &'a TeamId,
    pub spec: &'a CycleSpec,
    pub version: &'a Version,
    pub figures: &'a CycleFigures,
    pub carry: &'a [CarryLine],
    pub draft: bool,
    pub first_seq: u64,
    pub last_seq: u64,
}

pub fn build(input: InvoiceInput<'_>) -> Invoice {
    let InvoiceInput { team_id, spec, version, figures, carry, draft, first_seq, last_seq } = input;
    let mut lines: Vec<Line> = spec
        .charges
        .iter()
        .map(|c| Line {
            kind: match c.kind {
                ChargeKind::BucketFee => "bucket_fee",
                ChargeKind::UpgradeCharge => "upgrade_charge",
                ChargeKind::ContractFee => "contract_fee",
                ChargeKind::SubscriptionFee => "subscription_fee",
            },
            description: c.description.clone(),
            quantity: c.quantity.to_string(),
            unit_price: fmt_cents(c.unit_price),
            amount: fmt_cents(c.amount),
            period: None,
        })
        .collect();
    lines.extend(credit_purchase_lines(figures));
    lines.extend(usage_lines(figures, version));
    lines.extend(contract_lines(figures));
    lines.extend(credit_expiry_lines(figures));
    lines.extend(carry_lines(carry));
    let total: Decimal = lines.iter().map(|l| l.amount.parse::<Decimal>().expect("amount parses")).sum();
    let effective = per_image(total, figures.billable_images);
    Invoice {
        team_id: team_id.to_string(),
        period: Period::new(spec.start, spec.end),
        status: if draft { "draft" } else { "final" },
        price_book_version: spec.version_id.clone(),
        currency: "USD",
        plan: plan_name(spec),
        lines,
        total: fmt_cents(total),
        usage: UsageSummary {
            billable_images: figures.billable_images,
            sandbox_images: figures.sandbox_images,
            refunded_images: figures.refunded_images,
            by_api: [Api::RemoveBackground, Api::ImageEditing, Api::AppExport, Api::AppAi]
                .into_iter()
                .filter(|api| !api.is_app() || figures.app.is_some())
                .map(|api| {
                    let (images, value) = figures.by_api.get(&api).copied().unwrap_or_default();
                    (api.key(), ApiUsage { images, value: fmt_exact(value) })
                })
                .collect(),
        },
        bucket: bucket_summary(figures, version),
        allowances: allowance_summaries(figures),
        credits: figures.credits.as_ref().map(|c| CreditSummary {
            carried_in: c.carried,
            purchased: c.purchased,
            used: c.used,
            expired: c.expired,
            balance: c.balance_end,
            expires_at: c.expires_at.map(fmt_time).unwrap_or_default(),
        }),
        contract: figures.contract.as_ref().map(|c| ContractSummary {
            term: Period::new(c.month.term_start, c.month.term_end),
            month: c.month.month + 1,
            term_months: c.month.terms.term_months,
            committed_images_per_year: c.month.terms.committed_images_per_year,
            rollover: c.month.terms.rollover,
            allotment: c.allotment,
            rollover_in: c.rollover_in,
            drawn: c.drawn,
            overage_images: c.over_images(),
            rollover_out: c.rollover_out,
            forfeited_images: c.forfeited,
            forfeited_value: fmt_cents(c.forfeited_value()),
            term_used: c.used_end,
            term_commitment: c.month.term_commitment(),
        }),
        app: figures.app.as_ref().map(|a| AppSummary {
            billing_interval: a.month.options.interval.key(),
            seats: a.month.options.seats,
            month: a.month.month + 1,
            top_ups_carried_in: a.top_ups_in,
            top_ups_bought: a.top_ups_bought,
            top_ups_used: a.ai_from_top_ups,
            top_ups_left: a.top_ups_left(),
        }),
        effective_cost_per_image: effective,
        ledger: LedgerRef { first_seq, last_seq, head_hash: String::new() },
        period_start: spec.start,
        total_exact: total,
        forfeited_exact: figures.forfeited(),
    }
}

fn plan_name(spec: &CycleSpec) -> String {
    let names: Vec<String> = spec.gens.iter().map(|g| g.terms.name()).collect();
    names.join(" -> ")
}

fn usage_lines(figures: &CycleFigures, version: &Version) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut over: BTreeMap<Api, Decimal> = BTreeMap::new();
    let mut partner: BTreeMap<Api, (u64, Decimal)> = BTreeMap::new();
    let mut shortfall: Option<(u64, Decimal)> = None;
    let mut past_credits: BTreeMap<(Api, Decimal), Decimal> = BTreeMap::new();
    for g in &figures.gens {
        match &g.allowance {
            Allowance::Credits { image_rate } => {
                for (api, v) in &g.over_by_api {
                    *past_credits.entry((*api, *image_rate)).or_default() += *v;
                }
            }
            Allowance::Bucket { .. } => {
                for (api, v) in &g.over_by_api {
                    *over.entry(*api).or_default() += *v;
                }
            }
            Allowance::Trial { .. } | Allowance::Contract(_) | Allowance::App(_) => {}
            Allowance::Partner { commitment_images, rate } => {
                for (api, (images, _)) in &figures.by_api {
                    let r = g.allowance.rate(version, &g.terms, *api).expect("api has a rate");
                    partner.insert(*api, (*images, r));
                }
                let short = commitment_images.saturating_sub(g.remove_background_images);
                if short > 0 {
                    shortfall = Some((short, *rate));
                }
            }
        }
    }
    let overage = |api: Api, rate: Decimal, value: Decimal, beyond: &str| Line {
        kind: "overage",
        description: format!("{} beyond {beyond}", api_label(api)),
        quantity: fmt_quantity(value / rate),
        unit_price: fmt_exact(rate),
        amount: fmt_cents(value),
        period: None,
    };
    for (api, value) in over {
        lines.push(overage(api, version.rate(api).expect("api has a rate"), value, "the bucket's value"));
    }
    for ((api, rate), value) in past_credits {
        lines.push(overage(api, rate, value, "the credits"));
    }
    for (api, (images, rate)) in partner {
        lines.push(Line {
            kind: "usage",
            description: api_label(api).to_string(),
            quantity: images.to_string(),
            unit_price: fmt_exact(rate),
            amount: fmt_cents(rate * Decimal::from(images)),
            period: None,
        });
    }
    if let Some((images, rate)) = shortfall {
        lines.push(Line {
            kind: "commitment_shortfall",
            description: "Monthly commitment not reached (background removal images)".into(),
            quantity: images.to_string(),
            unit_price: fmt_exact(rate),
            amount: fmt_cents(rate * Decimal::from(images)),
            period: None,
        });
    }
    lines
}

/// A contract month's statement: what the allotment covered, overage at the contract
/// rate by volume tier, and allotment forfeited (amount 0: the annual fee paid for it).
fn contract_lines(figures: &CycleFigures) -> Vec<Line> {
    let Some(c) = figures.contract.as_ref() else { return Vec::new() };
    let zero_line = |kind: &'static str, description: String, quantity: u64| Line {
        kind,
        description,
        quantity: quantity.to_string(),
        unit_price: "0.00".into(),
        amount: "0.00".into(),
        period: None,
    };
    let mut lines = vec![zero_line(
        "commitment_drawdown",
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
        lines.push(Line {
            kind: "overage",
            description: format!("{} beyond the commitment ({tier})", api_label(api)),
            quantity: images.to_string(),
            unit_price: fmt_exact(rate),
            amount: fmt_cents(rate * Decimal::from(images)),
            period: None,
        });
    }
    if c.forfeited > 0 {
        let when = if c.month.terms.rollover { "at the term's end" } else { "at the month's end (no rollover)" };
        lines.push(zero_line("commitment_forfeited", format!("Unused committed images forfeited {when}"), c.forfeited));
    }
    lines
}

/// Credits bought in the cycle (legacy API credits, then AI-credit top-ups): prepaid,
/// charged on its invoice at the amount paid.
fn credit_purchase_lines(figures: &CycleFigures) -> Vec<Line> {
    let legacy = figures.credits.as_ref().map(|c| c.purchases.as_slice()).unwrap_or_default();
    let top_ups = figures.app.as_ref().map(|a| a.purchases.as_slice()).unwrap_or_default();
    let lines = |purchases: &[(u64, Decimal)], what: &'static str| {
        purchases
            .iter()
            .map(|(credits, amount)| Line {
                kind: "credits_purchase",
                description: format!("{credits} {what}"),
                quantity: credits.to_string(),
                unit_price: fmt_exact((amount / Decimal::from(*credits)).normalize()),
                amount: fmt_cents(*amount),
                period: None,
            })
            .collect::<Vec<_>>()
    };
    let mut out = lines(legacy, "API credits (one per image of either API)");
    out.extend(lines(top_ups, "AI credits (top-up; kept until used)"));
    out
}

/// Credits that expired in the cycle: shown, not refunded (amount 0).
fn credit_expiry_lines(figures: &CycleFigures) -> Vec<Line> {
    let Some(c) = figures.credits.as_ref().filter(|c| c.expired > 0) else { return Vec::new() };
    vec![Line {
        kind: "credits_expired",
        description: format!(
            "{} unused API credits expired at {} (not refunded)",
            c.expired,
            c.expires_at.map(fmt_time).unwrap_or_default()
        ),
        quantity: c.expired.to_string(),
        unit_price: "0.00".into(),
        amount: "0.00".into(),
        period: None,
    }]
}

/// Carried lines group by kind, period, API and rate.
type CarryKey = (CarryKind, DateTime<Utc>, DateTime<Utc>, Api, Decimal);

fn carry_lines(carry: &[CarryLine]) -> Vec<Line> {
    let mut grouped: BTreeMap<CarryKey, u64> = BTreeMap::new();
    for c in carry {
        *grouped.entry((c.kind, c.period_start, c.period_end, c.api, c.rate)).or_default() += c.images;
    }
    grouped
        .into_iter()
        .map(|((kind, start, end, api, rate), images)| {
            let (kind, sign, what) = match kind {
                CarryKind::LateUsage => ("late_usage", Decimal::ONE, "late usage"),
                CarryKind::RefundCredit => ("refund_credit", Decimal::NEGATIVE_ONE, "money-back refund"),
            };
            Line {
                kind,
                description: format!("{}, {what} of {}", api_label(api), &fmt_time(start)[..10]),
                quantity: images.to_string(),
                unit_price: fmt_exact(sign * rate),
                amount: fmt_cents(sign * rate * Decimal::from(images)),
                period: Some(Period::new(start, end)),
            }
        })
        .collect()
}

fn api_label(api: Api) -> &'static str {
    match api {
        Api::RemoveBackground => "Background removal",
        Api::ImageEditing => "Image editing",
        Api::AppExport => "App export",
        Api::AppAi => "App AI",
    }
}

fn bucket_summary(figures: &CycleFigures, version: &Version) -> Option<BucketSummary> {
    let buckets: Vec<&GenFigures> =
        figures.gens.iter().filter(|g| matches!(g.allowance, Allowance::Bucket { .. })).collect();
    if buckets.is_empty() {
        return None;
    }
    let value: Decimal = buckets.iter().filter_map(|g| g.allowance_value()).sum();
    let consumed: Decimal = buckets.iter().map(|g| g.consumed).sum();
    let overage: Decimal = buckets.iter().flat_map(|g| g.over_by_api.values()).sum();
    let forfeited_images: Decimal = buckets
        .iter()
        .map(|g| {
            let rate = match version.plan(g.terms.plan) {
                Some(crate::catalog::PlanRule::Bucket { api, .. }) => version.rate(*api),
                _ => None,
            };
            rate.map_or(Decimal::ZERO, |r| g.unused() / r)
        })
        .sum();
    Some(BucketSummary {
        value: fmt_exact(value),
        consumed: fmt_exact(consumed),
        forfeited: fmt_exact(figures.forfeited()),
        forfeited_images: fmt_quantity(forfeited_images),
        overage: fmt_exact(overage),
        generations: buckets.len() as u32,
    })
}

fn allowance_summaries(figures: &CycleFigures) -> Vec<AllowanceSummary> {
    figures
        .gens
        .iter()
        .filter_map(|g| match g.allowance {
            Allowance::Trial { value, sandbox_images } => Some(vec![AllowanceSummary {
                allowance: "trial",
                value: fmt_exact(value),
                consumed: fmt_exact(g.consumed),
                over_allowance: fmt_exact(g.over_by_api.values().sum()),
                sandbox_images: g.sandbox_images,
                sandbox_cap: sandbox_images,
            }]),
            Allowance::App(_) => {
                let a = figures.app.as_ref().expect("an app cycle has app figures");
                let count = |allowance, value: u64, consumed: u64, over: u64| AllowanceSummary {
                    allowance,
                    value: value.to_string(),
                    consumed: consumed.to_string(),
                    over_allowance: over.to_string(),
                    sandbox_images: 0,
                    sandbox_cap: None,
                };
                let ai_value = a.month.ai_credits + a.top_ups_in + a.top_ups_bought;
                Some(vec![
                    count("exports", a.month.exports, a.exports_used, a.exports_over()),
                    count("ai_credits", ai_value, a.ai_used, a.ai_over()),
                ])
            }
            _ => None,
        })
        .flatten()
        .collect()
}

/// Total ÷ images, 4 decimals (half away from zero); none without images.
pub fn per_image(total: Decimal, images: u64) -> Option<String> {
    (images > 0).then(|| {
        let mut e = (total / Decimal::from(images)).round_dp_with_strategy(4, RoundingStrategy::MidpointAwayFromZero);
        e.rescale(4);
        e.to_string()
    })
}

/// Rounds a figure the way every invoice line is rounded (for checks outside the core).
pub fn line_amount(d: Decimal) -> Decimal {
    round_cents(d)
}
