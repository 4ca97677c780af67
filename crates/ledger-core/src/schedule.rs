//! The plan timeline turned into cycles: which plan, bucket generation and catalog
//! version govern each instant, and the prepaid charges each cycle carries (§2).
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::catalog::{Catalog, PlanRule, Version};
use crate::cycle::{cycle_start, fraction_left};
use crate::event::{
    AccountChange, AccountEvent, Api, AppOptions, BillingInterval, ContractTerms, Plan, PlanTerms, UpgradePolicy,
};
use crate::ids::EventId;
use crate::money::round_cents;

/// What an allowance is worth in one bucket generation.
#[derive(Debug, Clone, PartialEq)]
pub enum Allowance {
    /// Prepaid value, drawn down at the called API's rate; usage beyond it is overage.
    Bucket { value: Decimal },
    /// A free allowance valued at list rates; usage past it is recorded, never billed.
    Trial { value: Decimal, sandbox_images: Option<u64> },
    /// Usage billed as it comes, with a monthly commitment in background-removal images.
    Partner { commitment_images: u64, rate: Decimal },
    /// Legacy credits: images of either API draw one credit each (worth `image_rate`);
    /// past the credits they are billed at `image_rate`.
    Credits { image_rate: Decimal },
    /// One month of an enterprise contract's term: the allotment drawn first (with what
    /// rolled over), then overage at the contract rate less volume discounts.
    Contract(ContractMonth),
    /// One month of an app subscription: exports and AI credits that reset monthly.
    App(AppMonth),
}

/// Where a cycle sits in an app subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct AppMonth {
    /// The interval, and the seats resolved (never 0).
    pub options: AppOptions,
    pub exports: u64,
    pub ai_credits: u64,
    /// Start of the subscription (this plan on this interval): weeks and years count from it.
    pub since: DateTime<Utc>,
    /// Cycles since `since`.
    pub month: u32,
    pub top_ups: bool,
}

impl AppMonth {
    /// Month `month` since `since` of `plan` on `interval` with `seats`: the allowances
    /// the version's rule gives that many seats.
    fn on(version: &Version, plan: Plan, options: AppOptions, since: DateTime<Utc>, month: u32) -> Option<AppMonth> {
        let Some(PlanRule::App { exports_per_month, ai_credits_per_month, top_ups, .. }) = version.plan(plan) else {
            return None;
        };
        let seats = u64::from(options.seats);
        Some(AppMonth {
            options,
            exports: exports_per_month * seats,
            ai_credits: ai_credits_per_month * seats,
            since,
            month,
            top_ups: *top_ups,
        })
    }

    /// A yearly subscription holds its plan until the year it paid for ends.
    pub fn holds_next_cycle(&self) -> bool {
        self.options.interval == BillingInterval::Yearly && !(self.month + 1).is_multiple_of(12)
    }

    /// Weekly fees due in `[start, end)`: the weeks from `since` that start in it.
    pub fn weeks_starting_in(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> u64 {
        let week = chrono::Duration::days(7).num_nanoseconds().expect("fits");
        let since = |t: DateTime<Utc>| (t - self.since).num_nanoseconds().expect("within centuries").max(0);
        // Week k starts at since + k weeks: count the k with start ≤ that < end.
        let ceil_weeks = |nanos: i64| (nanos + week - 1) / week;
        (ceil_weeks(since(end)) - ceil_weeks(since(start))).max(0) as u64
    }
}

/// Where a cycle sits in an enterprise contract's term.
#[derive(Debug, Clone, PartialEq)]
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
}

impl Allowance {
    /// What a team pays per image of `api` under this allowance and `terms`.
    pub fn rate(&self, version: &Version, terms: &PlanTerms, api: Api) -> Option<Decimal> {
        match self {
            Allowance::Contract(m) => m.terms.rate(api),
            // App usage is paid by the subscription; API calls are not part of it.
            Allowance::App(_) => api.is_app().then_some(Decimal::ZERO),
            _ if api.is_app() => None,
            _ => version.rate_for(terms, api),
        }
    }
}

/// One bucket generation: the plan in force from `from` until the next one (or the
/// cycle's end). An upgrade starts a new generation, whose alert thresholds fire afresh.
#[derive(Debug, Clone, PartialEq)]
pub struct Gen {
    pub from: DateTime<Utc>,
    pub number: u32,
    pub terms: PlanTerms,
    pub allowance: Allowance,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeKind {
    BucketFee,
    UpgradeCharge,
    ContractFee,
    SubscriptionFee,
}

/// A prepaid charge of the cycle: the bucket fee at its start, or an upgrade charge.
#[derive(Debug, Clone, PartialEq)]
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

#[derive(Debug, Clone, PartialEq)]
pub struct CycleSpec {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub version_id: String,
    pub grace_seconds: u32,
    pub gens: Vec<Gen>,
    pub charges: Vec<Charge>,
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
}

/// A plan change the timeline cannot accept, with the event that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub event_id: EventId,
    pub reason: String,
}

enum Pending {
    Change(PlanTerms),
    Contract(ContractTerms),
    App(PlanTerms, AppOptions),
    Cancel,
}

/// What the next cycle runs on.
enum Next {
    Plan(PlanTerms),
    /// A new contract term starting with the cycle.
    Term(ContractTerms),
    /// The next month of the current term.
    Month(ContractMonth),
    /// A new app subscription starting with the cycle.
    App(PlanTerms, AppOptions),
    /// The next month of the current app subscription.
    AppMonth(PlanTerms, AppMonth),
}

struct Active {
    anchor: DateTime<Utc>,
    k: u32,
    policy: Option<UpgradePolicy>,
    pending: Option<Pending>,
    cycle: CycleSpec,
    last_event: EventId,
}

/// Derives every cycle from the first anchor up to the cycle containing `horizon`.
/// `account` holds the plan changes sorted by `(occurred_at, event_id)`.
pub fn derive(
    account: &[AccountEvent],
    catalog: &Catalog,
    horizon: DateTime<Utc>,
) -> Result<Vec<CycleSpec>, Violation> {
    let mut cycles = Vec::new();
    let mut active: Option<Active> = None;
    let mut events = account.iter().filter(|e| e.change.is_plan_change()).peekable();
    loop {
        let next_at = events.peek().map(|e| e.occurred_at);
        if let Some(a) = active.as_mut() {
            let boundary = a.cycle.end;
            if next_at.is_none_or(|t| t >= boundary) {
                let done = next_at.is_none() && boundary > horizon;
                let last = a.cycle.gens.last().expect("a cycle has a generation");
                // Inside a contract term nothing changes until the term ends.
                // (Likewise inside a yearly app subscription's year.)
                let next = match &last.allowance {
                    Allowance::Contract(m) if !m.is_last_month() => {
                        Some(Next::Month(ContractMonth { month: m.month + 1, ..m.clone() }))
                    }
                    Allowance::App(m) if m.holds_next_cycle() => {
                        Some(Next::AppMonth(last.terms.clone(), AppMonth { month: m.month + 1, ..m.clone() }))
                    }
                    allowance => match a.pending.take() {
                        Some(Pending::Cancel) => None,
                        Some(Pending::Change(terms)) => Some(Next::Plan(terms)),
                        Some(Pending::Contract(terms)) => Some(Next::Term(terms)),
                        Some(Pending::App(terms, options)) => Some(Next::App(terms, options)),
                        // A contract ends by renewing on its terms unless changed or cancelled;
                        // a subscription goes on.
                        None => Some(match allowance {
                            Allowance::Contract(m) => Next::Term(m.terms.clone()),
                            Allowance::App(m) => {
                                Next::AppMonth(last.terms.clone(), AppMonth { month: m.month + 1, ..m.clone() })
                            }
                            _ => Next::Plan(last.terms.clone()),
                        }),
                    },
                };
                let finished = std::mem::replace(&mut a.cycle, placeholder(boundary));
                cycles.push(finished);
                match next {
                    Some(next) if !done => {
                        a.k += 1;
                        a.cycle = open_next(catalog, a, next)?;
                    }
                    _ => active = None,
                }
                if done {
                    break;
                }
                continue;
            }
        }
        let Some(e) = events.next() else { break };
        apply_change(&mut active, e, catalog)?;
    }
    Ok(cycles)
}

fn open_next(catalog: &Catalog, a: &Active, next: Next) -> Result<CycleSpec, Violation> {
    let (start, end) = (cycle_start(a.anchor, a.k), cycle_start(a.anchor, a.k + 1));
    match next {
        Next::Plan(terms) => open_cycle(catalog, start, end, terms, &a.last_event),
        Next::Term(terms) => {
            let term_end = cycle_start(a.anchor, a.k + terms.term_months);
            let month = ContractMonth { terms, term_start: start, term_end, month: 0 };
            open_contract_cycle(catalog, start, end, month, &a.last_event)
        }
        Next::Month(month) => open_contract_cycle(catalog, start, end, month, &a.last_event),
        Next::App(terms, options) => open_app_cycle(catalog, start, end, terms, options, None, &a.last_event),
        Next::AppMonth(terms, month) => {
            open_app_cycle(catalog, start, end, terms, month.options, Some(month), &a.last_event)
        }
    }
}

fn placeholder(at: DateTime<Utc>) -> CycleSpec {
    CycleSpec { start: at, end: at, version_id: String::new(), grace_seconds: 0, gens: Vec::new(), charges: Vec::new() }
}

fn apply_change(active: &mut Option<Active>, e: &AccountEvent, catalog: &Catalog) -> Result<(), Violation> {
    let refuse = |reason: &str| Err(Violation { event_id: e.event_id.clone(), reason: reason.to_string() });
    match (&e.change, active.as_mut()) {
        (AccountChange::PlanStarted(terms) | AccountChange::PlanChanged(terms), _)
            if terms.plan == Plan::ApiEnterprise =>
        {
            refuse("api_enterprise starts with a ContractSigned carrying its terms")
        }
        (AccountChange::PlanStarted(terms) | AccountChange::PlanChanged(terms), _) if terms.plan.is_app() => {
            refuse(&format!("app plan {} needs its billing interval and seats", terms.plan.key()))
        }
        (AccountChange::PlanStarted(_) | AccountChange::AppPlanStarted(..), Some(_)) => {
            refuse("PlanStarted while a plan is active; use PlanChanged")
        }
        (AccountChange::PlanChanged(_) | AccountChange::AppPlanChanged(..) | AccountChange::PlanCancelled, None) => {
            refuse("no active plan to change or cancel")
        }
        (_, None) => {
            *active = start(e, catalog)?;
            Ok(())
        }
        (_, Some(a)) => {
            a.last_event = e.event_id.clone();
            change(a, e, catalog)
        }
    }
}

/// A plan start with no plan active: its instant anchors the cycles.
fn start(e: &AccountEvent, catalog: &Catalog) -> Result<Option<Active>, Violation> {
    let refuse = |reason: String| Violation { event_id: e.event_id.clone(), reason };
    let anchor = e.occurred_at;
    let (first_end, cause) = (cycle_start(anchor, 1), &e.event_id);
    let version = || catalog.version_at(anchor).ok_or_else(|| refuse(format!("no catalog version at {anchor}")));
    let (cycle, policy) = match &e.change {
        AccountChange::PlanStarted(terms) => {
            check_sold(catalog.version_at(anchor), terms).map_err(refuse)?;
            (open_cycle(catalog, anchor, first_end, terms.clone(), cause)?, terms.upgrade_policy)
        }
        AccountChange::AppPlanStarted(terms, options) => {
            check_app(version()?, terms, options, true).map_err(refuse)?;
            (open_app_cycle(catalog, anchor, first_end, terms.clone(), *options, None, cause)?, None)
        }
        AccountChange::ContractSigned(terms) => {
            // A contract signed with no plan active starts its term (and the cycles) now.
            check_contract(version()?, terms).map_err(refuse)?;
            let term_end = cycle_start(anchor, terms.term_months);
            let month = ContractMonth { terms: terms.clone(), term_start: anchor, term_end, month: 0 };
            (open_contract_cycle(catalog, anchor, first_end, month, cause)?, None)
        }
        _ => return Ok(None),
    };
    Ok(Some(Active { anchor, k: 0, policy, pending: None, cycle, last_event: e.event_id.clone() }))
}

/// A change while a plan is active: an upgrade applies now, the rest is scheduled.
fn change(a: &mut Active, e: &AccountEvent, catalog: &Catalog) -> Result<(), Violation> {
    let refuse = |reason: String| Violation { event_id: e.event_id.clone(), reason };
    let version = catalog.version(&a.cycle.version_id).expect("cycle version exists");
    let current = a.cycle.gens.last().expect("a cycle has a generation");
    match &e.change {
        AccountChange::ContractSigned(terms) => {
            // Signed while on another plan: the term starts with the next cycle; signed
            // during a term: it replaces the renewal at the term's end.
            check_contract(version, terms).map_err(refuse)?;
            a.pending = Some(Pending::Contract(terms.clone()));
        }
        AccountChange::AppPlanChanged(terms, options) => {
            // An upgrade on the same interval applies now; anything else when the period
            // paid for ends (the cycle; a yearly plan's year).
            let seats = check_app(version, terms, options, current.terms.plan != terms.plan).map_err(refuse)?;
            a.pending = if app_upgrade(a, version, terms, options.interval, seats, e.occurred_at) {
                None
            } else {
                Some(Pending::App(terms.clone(), *options))
            };
        }
        AccountChange::PlanChanged(terms) => {
            check_plan(version, terms).map_err(refuse)?;
            check_sold(Some(version), terms).map_err(refuse)?;
            // Contracts and app subscriptions hold their plan until the period paid for ends.
            let holds = matches!(current.allowance, Allowance::Contract(_) | Allowance::App(_));
            if !holds && version.price(terms) > version.price(&current.terms) {
                let policy = terms.upgrade_policy.or(a.policy).unwrap_or(version.upgrade_policy);
                upgrade(&mut a.cycle, version, terms.clone(), policy, e.occurred_at);
                a.pending = None;
            } else {
                a.pending = Some(Pending::Change(terms.clone()));
            }
        }
        AccountChange::PlanCancelled => a.pending = Some(Pending::Cancel),
        _ => {}
    }
    Ok(())
}

/// A contract must fit what the catalog in force sells (billing.md §4).
pub fn check_contract(version: &Version, terms: &ContractTerms) -> Result<(), String> {
    let Some(PlanRule::Enterprise { min_committed_images_per_year, term_months, .. }) =
        version.plan(Plan::ApiEnterprise)
    else {
        return Err(format!("plan api_enterprise is not offered in catalog version {}", version.id));
    };
    if !term_months.contains(&terms.term_months) {
        return Err(format!("term of {} months is not sold (terms: {term_months:?})", terms.term_months));
    }
    if terms.committed_images_per_year < *min_committed_images_per_year {
        return Err(format!(
            "committed_images_per_year {} is below the minimum of {min_committed_images_per_year}",
            terms.committed_images_per_year
        ));
    }
    if terms.rate_remove_background <= Decimal::ZERO || terms.rate_image_editing <= Decimal::ZERO {
        return Err("contract rates must be positive".into());
    }
    if terms.annual_fee < Decimal::ZERO || terms.annual_fee != round_cents(terms.annual_fee) {
        return Err(format!("annual_fee {} must be a non-negative amount in cents", terms.annual_fee));
    }
    let ascending = terms.tiers.windows(2).all(|w| w[0].from_images < w[1].from_images);
    let discounts_ok =
        terms.tiers.iter().all(|t| t.discount_percent > Decimal::ZERO && t.discount_percent < Decimal::ONE_HUNDRED);
    if !ascending || !discounts_ok {
        return Err("volume tiers need strictly ascending from_images and discounts between 0 and 100 percent".into());
    }
    Ok(())
}

fn check_plan(version: &Version, terms: &PlanTerms) -> Result<(), String> {
    match version.plan(terms.plan) {
        None => Err(format!("plan {} is not offered in catalog version {}", terms.plan.key(), version.id)),
        Some(PlanRule::Enterprise { .. }) => Err("api_enterprise starts with a ContractSigned".into()),
        Some(PlanRule::App { .. }) => {
            Err(format!("app plan {} needs its billing interval and seats", terms.plan.key()))
        }
        Some(PlanRule::Bucket { step_images, .. })
            if terms.bucket_images == 0 || !terms.bucket_images.is_multiple_of(*step_images) =>
        {
            Err(format!("bucket_images {} is not a positive multiple of {step_images}", terms.bucket_images))
        }
        Some(_) => Ok(()),
    }
}

/// New subscriptions to a plan the version keeps only for existing holders are refused.
fn check_sold(version: Option<&Version>, terms: &PlanTerms) -> Result<(), String> {
    match version.and_then(|v| v.plan(terms.plan).map(|rule| (v, rule))) {
        Some((v, PlanRule::Credits { purchasable: false, .. })) => {
            Err(format!("plan {} is legacy in catalog version {}: no new subscriptions", terms.plan.key(), v.id))
        }
        _ => Ok(()),
    }
}

fn open_cycle(
    catalog: &Catalog,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    terms: PlanTerms,
    cause: &EventId,
) -> Result<CycleSpec, Violation> {
    let version = version_in_force(catalog, start, cause)?;
    check_plan(version, &terms).map_err(|reason| Violation { event_id: cause.clone(), reason })?;
    let price = version.price(&terms);
    let allowance = allowance(version, &terms, price);
    let mut charges = Vec::new();
    if price > Decimal::ZERO {
        let description = format!("{} bucket, {} images", label(version, &terms), terms.bucket_images);
        charges.push(Charge::once(ChargeKind::BucketFee, description, round_cents(price), Decimal::ONE));
    }
    Ok(cycle_of(start, end, version, terms, allowance, charges))
}

/// An app subscription must be one the catalog sells, on an interval it prices, with at
/// least its minimum seats.
fn check_app(version: &Version, terms: &PlanTerms, options: &AppOptions, new: bool) -> Result<u32, String> {
    let Some(PlanRule::App { prices, min_seats, sold, .. }) = version.plan(terms.plan) else {
        return Err(format!("plan {} is not offered in catalog version {}", terms.plan.key(), version.id));
    };
    if new && !sold {
        return Err(format!(
            "plan {} is legacy in catalog version {}: no new subscriptions",
            terms.plan.key(),
            version.id
        ));
    }
    if prices.get(options.interval).is_none() {
        return Err(format!(
            "plan {} is not sold {} in catalog version {}",
            terms.plan.key(),
            options.interval.key(),
            version.id
        ));
    }
    match options.seats {
        0 => Ok(*min_seats),
        n if n < *min_seats => Err(format!("plan {} needs at least {min_seats} seats, got {n}", terms.plan.key())),
        n => Ok(n),
    }
}

/// An app plan's fee per billing period: its price on the interval × seats.
fn app_fee(version: &Version, plan: Plan, interval: BillingInterval, seats: u32) -> Option<Decimal> {
    match version.plan(plan) {
        Some(PlanRule::App { prices, .. }) => prices.get(interval).map(|p| p * Decimal::from(seats)),
        _ => None,
    }
}

/// Applies an app upgrade now, if it is one: the same interval at a higher fee (another
/// plan, or more seats). The cycle's allowances become the new plan's (usage so far
/// counts against them, and the alert thresholds fire afresh), and the team pays the
/// fee difference for what is left of the period paid for: the cycle (monthly), the
/// subscription year (yearly), or the current week plus the weeks still to start in
/// the cycle (weekly).
fn app_upgrade(
    a: &mut Active,
    version: &Version,
    terms: &PlanTerms,
    interval: BillingInterval,
    seats: u32,
    at: DateTime<Utc>,
) -> bool {
    let gen = a.cycle.gens.last().expect("a cycle has a generation");
    let Allowance::App(month) = &gen.allowance else { return false };
    let old_fee = app_fee(version, gen.terms.plan, month.options.interval, month.options.seats);
    let new_fee = app_fee(version, terms.plan, interval, seats);
    let (Some(old_fee), Some(new_fee)) = (old_fee, new_fee) else { return false };
    if interval != month.options.interval || new_fee <= old_fee {
        return false;
    }
    let diff = new_fee - old_fee;
    let (left, what) = match interval {
        BillingInterval::Monthly => (fraction_left(a.cycle.start, a.cycle.end, at), "of the cycle"),
        BillingInterval::Yearly => {
            let year_k = a.k - month.month % 12;
            let year = (cycle_start(a.anchor, year_k), cycle_start(a.anchor, year_k + 12));
            (fraction_left(year.0, year.1, at), "of the subscription year")
        }
        BillingInterval::Weekly => {
            let week = chrono::Duration::days(7);
            let n =
                (at - month.since).num_nanoseconds().expect("within centuries") / week.num_nanoseconds().expect("fits");
            let week_start = month.since + week * n as i32;
            let later = month.weeks_starting_in(at + chrono::Duration::nanoseconds(1), a.cycle.end);
            (fraction_left(week_start, week_start + week, at) + Decimal::from(later), "weeks")
        }
    };
    let options = AppOptions { interval, seats };
    let Some(upgraded) = AppMonth::on(version, terms.plan, options, month.since, month.month) else { return false };
    let description =
        format!("Upgrade to {}, {seats} seat(s), {} {what} left", label(version, terms), left.normalize());
    a.cycle.charges.push(Charge::once(ChargeKind::UpgradeCharge, description, round_cents(diff * left), left));
    let gen = a.cycle.gens.last_mut().expect("a cycle has a generation");
    *gen = Gen { from: gen.from, number: gen.number + 1, terms: terms.clone(), allowance: Allowance::App(upgraded) };
    true
}

/// A cycle of an app subscription: `month` continues one, `None` starts one. Renewals
/// are priced by the catalog in force at each cycle's start.
fn open_app_cycle(
    catalog: &Catalog,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    terms: PlanTerms,
    options: AppOptions,
    month: Option<AppMonth>,
    cause: &EventId,
) -> Result<CycleSpec, Violation> {
    let version = version_in_force(catalog, start, cause)?;
    let seats =
        check_app(version, &terms, &options, false).map_err(|reason| Violation { event_id: cause.clone(), reason })?;
    let (since, n) = month.map_or((start, 0), |m| (m.since, m.month));
    let options = AppOptions { interval: options.interval, seats };
    let month = AppMonth::on(version, terms.plan, options, since, n).expect("check_app found the rule");
    let label = label(version, &terms);
    let price = app_fee(version, terms.plan, options.interval, 1).expect("check_app found the price");
    let periods = match options.interval {
        BillingInterval::Monthly => 1,
        BillingInterval::Yearly => u64::from(month.month.is_multiple_of(12)),
        BillingInterval::Weekly => month.weeks_starting_in(start, end),
    };
    let mut charges = Vec::new();
    if price > Decimal::ZERO && periods > 0 {
        let quantity = periods * u64::from(seats);
        let what = match options.interval {
            BillingInterval::Weekly => format!("{periods} week(s)"),
            BillingInterval::Monthly => "month".to_string(),
            BillingInterval::Yearly => "year".to_string(),
        };
        charges.push(Charge {
            kind: ChargeKind::SubscriptionFee,
            description: format!("{label}, {} billing: {what}, {seats} seat(s)", options.interval.key()),
            quantity,
            unit_price: price,
            amount: price * Decimal::from(quantity),
            fraction: Decimal::ONE,
        });
    }
    Ok(cycle_of(start, end, version, terms, Allowance::App(month), charges))
}

/// A cycle of a contract term (its terms were checked when signed; a renewal keeps them).
fn open_contract_cycle(
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

/// The catalog version a cycle starting at `start` is governed by.
fn version_in_force<'c>(catalog: &'c Catalog, start: DateTime<Utc>, cause: &EventId) -> Result<&'c Version, Violation> {
    catalog.version_at(start).ok_or_else(|| Violation {
        event_id: cause.clone(),
        reason: format!("no catalog version is in force at {start}"),
    })
}

/// A cycle with one generation, from its start.
fn cycle_of(
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
        gens: vec![Gen { from: start, number: 0, terms, allowance }],
        charges,
    }
}

impl Charge {
    /// A charge of one unit.
    fn once(kind: ChargeKind, description: String, amount: Decimal, fraction: Decimal) -> Charge {
        Charge { kind, description, quantity: 1, unit_price: amount, amount, fraction }
    }
}

fn label(version: &Version, terms: &PlanTerms) -> String {
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

fn allowance(version: &Version, terms: &PlanTerms, value: Decimal) -> Allowance {
    match version.plan(terms.plan).expect("checked plan") {
        PlanRule::Bucket { .. } => Allowance::Bucket { value },
        PlanRule::Trial { api, allowance_images, sandbox_images, .. } => Allowance::Trial {
            value: version.rate(*api).expect("trial api has a rate") * Decimal::from(*allowance_images),
            sandbox_images: *sandbox_images,
        },
        PlanRule::Partner { commitment_images, remove_background_rate, .. } => {
            Allowance::Partner { commitment_images: *commitment_images, rate: *remove_background_rate }
        }
        PlanRule::Credits { image_rate, .. } => Allowance::Credits { image_rate: *image_rate },
        PlanRule::Enterprise { .. } | PlanRule::App { .. } => {
            unreachable!("check_plan refuses contracts and app plans without their terms")
        }
    }
}

fn upgrade(cycle: &mut CycleSpec, version: &Version, terms: PlanTerms, policy: UpgradePolicy, at: DateTime<Utc>) {
    let r = fraction_left(cycle.start, cycle.end, at);
    let new_price = version.price(&terms);
    let last = cycle.gens.last().expect("a cycle has a generation").clone();
    let number = last.number + 1;
    let name = format!("{} bucket, {} images", label(version, &terms), terms.bucket_images);
    match policy {
        UpgradePolicy::RestartProrated => {
            // The new bucket is worth exactly what was charged for it; the old one's
            // unused value is forfeited.
            let amount = round_cents(new_price * r);
            let description = format!("Upgrade to {name}, {} of the cycle left (restart_prorated)", r.normalize());
            cycle.charges.push(Charge::once(ChargeKind::UpgradeCharge, description, amount, r));
            let allowance = allowance(version, &terms, amount);
            cycle.gens.push(Gen { from: at, number, terms, allowance });
        }
        UpgradePolicy::DifferenceProrated => {
            // The bucket becomes the new size for the whole cycle; usage so far counts.
            let amount = round_cents((new_price - version.price(&last.terms)) * r);
            let description = format!("Upgrade to {name}, {} of the cycle left (difference_prorated)", r.normalize());
            cycle.charges.push(Charge::once(ChargeKind::UpgradeCharge, description, amount, r));
            let allowance = allowance(version, &terms, new_price);
            let gen = cycle.gens.last_mut().expect("a cycle has a generation");
            *gen = Gen { from: gen.from, number, terms, allowance };
        }
    }
}
