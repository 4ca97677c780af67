//! App subscriptions (`app_*`): a fee per seat billed weekly, monthly or yearly, monthly
//! allowances of exports and AI credits that reset each cycle (usage past them is
//! recorded, never billed), AI-credit top-ups kept until used, and upgrades on the same
//! interval that apply at once for the fee difference of the period left.
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::catalog::{Catalog, PlanRule, Version};
use crate::event::{Api, AppOptions, BillingInterval, Plan, PlanTerms};
use crate::figures::{CycleFigures, Purchase};
use crate::ids::EventId;
use crate::money::round_cents;
use crate::plans::{label, Allowance, Meter, MeterInput, MeterKind, Usage};
use crate::reject::{Reject, RejectCode};
use crate::statement::LineItem;
use crate::timeline::calendar::{cycle_start, fmt_time, fraction_left};
use crate::timeline::derive::Active;
use crate::timeline::{cycle_of, version_in_force, Charge, ChargeKind, CycleSpec, Gen, Violation};

/// Where a cycle sits in an app subscription.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// Where the weekly subscription before this one was paid to, inside this cycle,
    /// and its fee a week (all seats): the days before are paid for (rules V2).
    pub paid_to: Option<(DateTime<Utc>, Decimal)>,
}

impl AppMonth {
    /// Month `month` since `since` of `plan` on `interval` with `seats`: the allowances
    /// the version's rule gives that many seats.
    pub(crate) fn on(
        version: &Version,
        plan: Plan,
        options: AppOptions,
        since: DateTime<Utc>,
        month: u32,
    ) -> Option<AppMonth> {
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
            paid_to: None,
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

    pub(crate) fn next(&self) -> AppMonth {
        AppMonth { month: self.month + 1, paid_to: None, ..self.clone() }
    }
}

/// An app subscription must be one the catalog sells, on an interval it prices, with at
/// least its minimum seats. Returns the seats (0 = the plan's minimum).
pub(crate) fn check(version: &Version, terms: &PlanTerms, options: &AppOptions, new: bool) -> Result<u32, Reject> {
    let plan = terms.plan.key();
    let Some(PlanRule::App { prices, min_seats, sold, .. }) = version.plan(terms.plan) else {
        let detail = format!("plan {plan} is not offered in catalog version {}", version.id);
        return Err(Reject::new(RejectCode::PlanNotOffered, detail));
    };
    if new && !sold {
        let detail = format!("plan {plan} is legacy in catalog version {}: no new subscriptions", version.id);
        return Err(Reject::new(RejectCode::PlanNotSold, detail));
    }
    if prices.get(options.interval).is_none() {
        let detail = format!("plan {plan} is not sold {} in catalog version {}", options.interval.key(), version.id);
        return Err(Reject::new(RejectCode::AppInterval, detail));
    }
    match options.seats {
        0 => Ok(*min_seats),
        n if n < *min_seats => {
            Err(Reject::new(RejectCode::AppSeats, format!("plan {plan} needs at least {min_seats} seats, got {n}")))
        }
        n => Ok(n),
    }
}

/// A top-up is bought on an app plan that sells them.
pub(crate) fn check_top_up(month: &AppMonth, at: DateTime<Utc>) -> Result<(), Reject> {
    if month.top_ups {
        return Ok(());
    }
    let detail = format!("the app plan active at {} sells no AI-credit top-ups", fmt_time(at));
    Err(Reject::new(RejectCode::TopUpsNotSold, detail))
}

/// An app plan's fee per billing period: its price on the interval × seats.
pub(crate) fn fee(version: &Version, plan: Plan, interval: BillingInterval, seats: u32) -> Option<Decimal> {
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
pub(crate) fn upgrade(
    a: &mut Active,
    version: &Version,
    terms: &PlanTerms,
    interval: BillingInterval,
    seats: u32,
    at: DateTime<Utc>,
) -> bool {
    let gen = a.cycle.gens.last().expect("a cycle has a generation");
    let Some(month) = gen.allowance.app_month() else { return false };
    let old_fee = fee(version, gen.terms.plan, month.options.interval, month.options.seats);
    let new_fee = fee(version, terms.plan, interval, seats);
    let (Some(old_fee), Some(new_fee)) = (old_fee, new_fee) else { return false };
    if interval != month.options.interval || new_fee <= old_fee {
        return false;
    }
    let paid = month.paid_to;
    let (left, amount, what) = match interval {
        BillingInterval::Monthly => {
            let period = (a.cycle.start, a.cycle.end);
            (fraction_left(period.0, period.1, at), upgrade_amount(new_fee, old_fee, period, at, paid), "of the cycle")
        }
        BillingInterval::Yearly => {
            let year_k = a.k - month.month % 12;
            let year = (cycle_start(a.anchor, year_k), cycle_start(a.anchor, year_k + 12));
            (
                fraction_left(year.0, year.1, at),
                upgrade_amount(new_fee, old_fee, year, at, paid),
                "of the subscription year",
            )
        }
        BillingInterval::Weekly => {
            let week = chrono::Duration::days(7);
            let n =
                (at - month.since).num_nanoseconds().expect("within centuries") / week.num_nanoseconds().expect("fits");
            let week_start = month.since + week * n as i32;
            let later = Decimal::from(month.weeks_starting_in(at + chrono::Duration::nanoseconds(1), a.cycle.end));
            let current = upgrade_amount(new_fee, old_fee, (week_start, week_start + week), at, paid);
            (fraction_left(week_start, week_start + week, at) + later, current + (new_fee - old_fee) * later, "weeks")
        }
    };
    let options = AppOptions { interval, seats };
    let Some(upgraded) = AppMonth::on(version, terms.plan, options, month.since, month.month) else { return false };
    let upgraded = AppMonth { paid_to: month.paid_to, ..upgraded };
    let description =
        format!("Upgrade to {}, {seats} seat(s), {} {what} left", label(version, terms), left.normalize());
    a.cycle.charges.push(Charge::once(ChargeKind::UpgradeCharge, description, round_cents(amount), left));
    let gen = a.cycle.gens.last_mut().expect("a cycle has a generation");
    *gen = Gen { from: gen.from, number: gen.number + 1, terms: terms.clone(), allowance: Allowance::App(upgraded) };
    true
}

/// What an upgrade at `at` to a fee of `new` a period costs for what is left of the
/// `period` paid at `old`: the difference for the rest of it; but where its days before
/// `paid.0` were paid by an earlier weekly subscription at `paid.1` a week (rules V2),
/// those days cost the new fee's share less what that week's fee paid for them (never
/// below zero: nothing is refunded).
fn upgrade_amount(
    new: Decimal,
    old: Decimal,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    at: DateTime<Utc>,
    paid: Option<(DateTime<Utc>, Decimal)>,
) -> Decimal {
    let share = |t| fraction_left(start, end, t);
    match paid {
        Some((to, weekly)) if at < to => {
            let week = chrono::Duration::days(7);
            let before = new * (share(at) - share(to)) - weekly * fraction_left(to - week, to, at);
            (new - old) * share(to) + before.max(Decimal::ZERO)
        }
        _ => (new - old) * share(at),
    }
}

/// How an app cycle opens: the next month of a subscription, or a new subscription
/// (after a weekly one whose last week was paid to `WeeklyPaid::to`, rules V2).
pub(crate) enum Opening {
    Next(AppMonth),
    New(Option<WeeklyPaid>),
}

/// A weekly subscription's fees as a deferred change finds them: weeks from `since`,
/// paid to `to` (the end of the last week that started before the change took effect),
/// at `fee` a week (all seats).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct WeeklyPaid {
    pub since: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub fee: Decimal,
    /// Where a yearly subscription starting with the cycle would end its first year.
    pub year_end: DateTime<Utc>,
}

/// The first boundary of the weeks from `since` at or after `t`.
pub(crate) fn week_boundary_from(since: DateTime<Utc>, t: DateTime<Utc>) -> DateTime<Utc> {
    let week = chrono::Duration::days(7).num_nanoseconds().expect("fits");
    let nanos = (t - since).num_nanoseconds().expect("within centuries").max(0);
    since + chrono::Duration::nanoseconds((nanos + week - 1) / week * week)
}

/// A cycle of an app subscription. Renewals are priced by the catalog in force at each
/// cycle's start. A new subscription after a weekly one bills from where the weekly fees
/// were paid to, so no day is billed twice: weekly fees go on along the same weeks; a
/// monthly or yearly fee is charged for the share of its period left from there.
pub(crate) fn open_cycle(
    catalog: &Catalog,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    terms: PlanTerms,
    options: AppOptions,
    opening: Opening,
    cause: &EventId,
) -> Result<CycleSpec, Violation> {
    let version = version_in_force(catalog, start, cause)?;
    let seats = check(version, &terms, &options, false).map_err(|reject| Violation::new(cause, reject))?;
    let (since, n, paid, paid_to) = match opening {
        Opening::Next(m) => (m.since, m.month, None, None),
        Opening::New(Some(p)) if options.interval == BillingInterval::Weekly => {
            (p.since, 0, None, Some((p.to, p.fee)).filter(|_| p.to > start))
        }
        Opening::New(paid) => {
            let paid = paid.filter(|p| p.to > start);
            (start, 0, paid, paid.map(|p| (p.to, p.fee)))
        }
    };
    let options = AppOptions { interval: options.interval, seats };
    let month = AppMonth::on(version, terms.plan, options, since, n).expect("check found the rule");
    let month = AppMonth { paid_to, ..month };
    let label = label(version, &terms);
    let price = fee(version, terms.plan, options.interval, 1).expect("check found the price");
    let periods = match options.interval {
        BillingInterval::Monthly => 1,
        BillingInterval::Yearly => u64::from(month.month.is_multiple_of(12)),
        BillingInterval::Weekly => month.weeks_starting_in(start, end),
    };
    let mut charges = Vec::new();
    if price > Decimal::ZERO && periods > 0 {
        let what = match options.interval {
            BillingInterval::Weekly => format!("{periods} week(s)"),
            BillingInterval::Monthly => "month".to_string(),
            BillingInterval::Yearly => "year".to_string(),
        };
        let description = format!("{label}, {} billing: {what}, {seats} seat(s)", options.interval.key());
        charges.push(match paid {
            Some(p) => first_fee_after_weeks(description, &options, price, (start, end), p),
            None => {
                let quantity = periods * u64::from(seats);
                Charge {
                    kind: ChargeKind::SubscriptionFee,
                    description,
                    quantity,
                    unit_price: price,
                    amount: price * Decimal::from(quantity),
                    fraction: Decimal::ONE,
                }
            }
        });
    }
    Ok(cycle_of(start, end, version, terms, Allowance::App(month), charges))
}

/// The first monthly or yearly fee after weekly ones paid to `paid.to`: the share of its
/// period left from there, per seat, rounded to cents.
fn first_fee_after_weeks(
    description: String,
    options: &AppOptions,
    price: Decimal,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    paid: WeeklyPaid,
) -> Charge {
    let period_end = if options.interval == BillingInterval::Yearly { paid.year_end } else { end };
    let fraction = fraction_left(start, period_end, paid.to);
    let unit_price = round_cents(price * fraction);
    let seats = u64::from(options.seats);
    let description =
        format!("{description}, from {} (weekly fees paid to then), {} of it", fmt_time(paid.to), fraction.normalize());
    Charge {
        kind: ChargeKind::SubscriptionFee,
        description,
        quantity: seats,
        unit_price,
        amount: unit_price * Decimal::from(seats),
        fraction,
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
    pub(crate) fn advance(&mut self, upto: Option<(DateTime<Utc>, &EventId)>) {
        while let Some((at, id, credits, amount)) = self.pending.last() {
            if upto.is_some_and(|(t, i)| (at, id) > (&t, i)) {
                break;
            }
            self.top_ups_bought += credits;
            self.purchases.push((*credits, *amount));
            self.pending.pop();
        }
    }

    /// Draws an app event: exports count against theirs, AI credits come from the
    /// month's allowance, then from top-ups.
    pub(crate) fn draw(&mut self, usage: Usage<'_>) {
        self.advance(Some((usage.rec.at, &usage.rec.event_id)));
        let images = usage.images;
        match usage.rec.api {
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

    /// AI credits the month had: its allowance, top-ups carried in and bought.
    pub fn ai_available(&self) -> u64 {
        self.month.ai_credits + self.top_ups_in + self.top_ups_bought
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

/// The month's exports, and its AI credits with the top-ups available so far.
pub(crate) fn meters(month: &AppMonth, m: &MeterInput) -> Vec<Meter> {
    vec![
        Meter::count(MeterKind::Exports, m.exports, month.exports),
        Meter::count(MeterKind::AiCredits, m.ai, m.ai_available),
    ]
}

/// AI-credit top-ups bought in the cycle: prepaid, charged at the amount paid.
pub(crate) fn top_up_lines(figures: &CycleFigures) -> Vec<LineItem> {
    let purchases = figures.app.as_ref().map(|a| a.purchases.as_slice()).unwrap_or_default();
    LineItem::purchases(purchases, "AI credits (top-up; kept until used)")
}

/// A month's allowance on the invoice, in units.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub meter: MeterKind,
    pub value: u64,
    pub consumed: u64,
    pub over_allowance: u64,
}

/// Exports and AI credits, for an app cycle.
pub fn summaries(figures: &CycleFigures) -> Vec<Summary> {
    let Some(a) = figures.app.as_ref() else { return Vec::new() };
    if !figures.gens.iter().any(|g| g.allowance.app_month().is_some()) {
        return Vec::new();
    }
    vec![
        Summary {
            meter: MeterKind::Exports,
            value: a.month.exports,
            consumed: a.exports_used,
            over_allowance: a.exports_over(),
        },
        Summary {
            meter: MeterKind::AiCredits,
            value: a.ai_available(),
            consumed: a.ai_used,
            over_allowance: a.ai_over(),
        },
    ]
}
