//! Walks a team's plan changes in time order and opens each cycle: starts anchor the
//! cycles, upgrades apply at once, everything else waits for the period paid for.
use chrono::{DateTime, Utc};

use crate::catalog::Catalog;
use crate::event::BillingInterval;
use crate::event::{AccountChange, AccountEvent, AppOptions, ContractTerms, PlanTerms, UpgradePolicy};
use crate::ids::EventId;
use crate::plans::{self, app, bucket, contract, AppMonth, ContractMonth, StartedBy};
use crate::reject::{Reject, RejectCode};
use crate::timeline::calendar::cycle_start;
use crate::timeline::{CycleSpec, Rules, Violation};

/// Which cycles are priced under older rules: the starts of those whose close recorded
/// them, sorted. Every other cycle is priced under `Rules::CURRENT`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuleBook<'a> {
    pub older: &'a [(DateTime<Utc>, Rules)],
}

impl RuleBook<'_> {
    /// The rules of the cycle starting at `start`.
    pub fn at(&self, start: DateTime<Utc>) -> Rules {
        self.older.binary_search_by_key(&start, |(s, _)| *s).map_or(Rules::CURRENT, |i| self.older[i].1)
    }
}

/// A change scheduled for the next cycle.
pub(crate) enum Pending {
    Change(PlanTerms),
    Contract(ContractTerms),
    App(PlanTerms, AppOptions),
    Cancel,
}

/// What the next cycle runs on.
pub(crate) enum Next {
    Plan(PlanTerms),
    /// A new contract term starting with the cycle.
    Term(ContractTerms),
    /// The next month of the current term.
    Month(ContractMonth),
    /// A new app subscription starting with the cycle, and the weekly subscription it
    /// follows, if it does.
    App(PlanTerms, AppOptions, Option<Weekly>),
    /// The next month of the current app subscription.
    AppMonth(PlanTerms, AppMonth),
}

/// A weekly app subscription as the cycle after it finds it: weeks from `since` at `fee`
/// a week (all seats).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Weekly {
    since: DateTime<Utc>,
    fee: rust_decimal::Decimal,
}

impl Weekly {
    /// The weekly subscription the cycle ends on, if it is one.
    fn of(catalog: &Catalog, cycle: &CycleSpec) -> Option<Weekly> {
        let last = cycle.gens.last()?;
        let m = last.allowance.app_month()?;
        let version = catalog.version(&cycle.version_id)?;
        let fee = app::fee(version, last.terms.plan, m.options.interval, m.options.seats)?;
        (m.options.interval == BillingInterval::Weekly).then_some(Weekly { since: m.since, fee })
    }

    /// Its fees as paid when the subscription after it starts at `start` of a cycle
    /// whose rules are `rules` (none under V1, or when the weeks paid end by then).
    fn paid(
        self,
        ended: DateTime<Utc>,
        start: DateTime<Utc>,
        year_end: DateTime<Utc>,
        rules: Rules,
    ) -> Option<app::WeeklyPaid> {
        let to = app::week_boundary_from(self.since, ended);
        (rules >= Rules::V2 && to > start).then_some(app::WeeklyPaid { since: self.since, to, fee: self.fee, year_end })
    }
}

pub(crate) struct Active {
    pub anchor: DateTime<Utc>,
    pub k: u32,
    pub policy: Option<UpgradePolicy>,
    pub pending: Option<Pending>,
    pub cycle: CycleSpec,
    pub last_event: EventId,
}

impl Active {
    /// What the cycle after this one runs on (`None`: the plan was cancelled). A plan
    /// that holds the next cycle (a contract term, a yearly app year) ignores what is
    /// pending until it lets go.
    fn next_cycle(&mut self, weekly: Option<Weekly>) -> Option<Next> {
        let last = self.cycle.gens.last().expect("a cycle has a generation");
        if let Some(next) = last.allowance.holds_next_cycle(&last.terms) {
            return Some(next);
        }
        match self.pending.take() {
            Some(Pending::Cancel) => None,
            Some(Pending::Change(terms)) => Some(Next::Plan(terms)),
            Some(Pending::Contract(terms)) => Some(Next::Term(terms)),
            Some(Pending::App(terms, options)) => Some(Next::App(terms, options, weekly)),
            None => Some(last.allowance.renewal(&last.terms)),
        }
    }
}

/// Derives every cycle from the first anchor up to the cycle containing `horizon`.
/// `account` holds the plan changes sorted by `(occurred_at, event_id)`.
pub fn derive(
    account: &[AccountEvent],
    catalog: &Catalog,
    horizon: DateTime<Utc>,
    book: RuleBook<'_>,
) -> Result<Vec<CycleSpec>, Violation> {
    let mut cycles = Vec::new();
    let mut active: Option<Active> = None;
    let mut events = account.iter().filter(|e| e.change.is_plan_change()).peekable();
    // A weekly subscription cancelled, and where its last cycle ended: a new one started
    // before the weeks paid end bills from there.
    let mut cancelled: Option<(Weekly, DateTime<Utc>)> = None;
    loop {
        let next_at = events.peek().map(|e| e.occurred_at);
        if let Some(a) = active.as_mut() {
            let boundary = a.cycle.end;
            if next_at.is_none_or(|t| t >= boundary) {
                let done = next_at.is_none() && boundary > horizon;
                let weekly = Weekly::of(catalog, &a.cycle);
                let next = a.next_cycle(weekly);
                cycles.push(std::mem::replace(&mut a.cycle, placeholder(boundary)));
                match next {
                    Some(next) if !done => {
                        a.k += 1;
                        a.cycle = open_next(catalog, a, next, book)?;
                    }
                    next => {
                        cancelled = weekly.filter(|_| next.is_none()).map(|w| (w, boundary));
                        active = None;
                    }
                }
                if done {
                    break;
                }
                continue;
            }
        }
        let Some(e) = events.next() else { break };
        apply_change(&mut active, e, catalog, book, cancelled.take())?;
    }
    Ok(cycles)
}

fn open_next(catalog: &Catalog, a: &Active, next: Next, book: RuleBook<'_>) -> Result<CycleSpec, Violation> {
    let (start, end) = (cycle_start(a.anchor, a.k), cycle_start(a.anchor, a.k + 1));
    let rules = book.at(start);
    let mut spec = match next {
        Next::Plan(terms) => plans::open_cycle(catalog, start, end, terms, &a.last_event, rules),
        Next::Term(terms) => {
            let term_end = cycle_start(a.anchor, a.k + terms.term_months);
            let month = ContractMonth { terms, term_start: start, term_end, month: 0 };
            contract::open_cycle(catalog, start, end, month, &a.last_event)
        }
        Next::Month(month) => contract::open_cycle(catalog, start, end, month, &a.last_event),
        Next::App(terms, options, weekly) => {
            // Under the current rules the weekly fees paid run to the end of their week:
            // the new plan's billing takes over there (billing.md §4, app track).
            let paid = weekly.and_then(|w| w.paid(start, start, cycle_start(a.anchor, a.k + 12), rules));
            app::open_cycle(catalog, start, end, terms, options, app::Opening::New(paid), &a.last_event)
        }
        Next::AppMonth(terms, month) => {
            app::open_cycle(catalog, start, end, terms, month.options, app::Opening::Next(month), &a.last_event)
        }
    }?;
    spec.rules = rules;
    Ok(spec)
}

fn placeholder(at: DateTime<Utc>) -> CycleSpec {
    CycleSpec {
        start: at,
        end: at,
        version_id: String::new(),
        grace_seconds: 0,
        rules: Rules::CURRENT,
        gens: Vec::new(),
        charges: Vec::new(),
    }
}

fn apply_change(
    active: &mut Option<Active>,
    e: &AccountEvent,
    catalog: &Catalog,
    book: RuleBook<'_>,
    cancelled: Option<(Weekly, DateTime<Utc>)>,
) -> Result<(), Violation> {
    let refuse = |code, reason: String| Err(Violation::new(&e.event_id, Reject::new(code, reason)));
    // Plans that come with their own terms are not started or changed to by a plain
    // plan event.
    if let AccountChange::PlanStarted(terms) | AccountChange::PlanChanged(terms) = &e.change {
        match terms.plan.family().started_by() {
            StartedBy::PlanEvent => {}
            StartedBy::ContractSigned => {
                return refuse(
                    RejectCode::ContractRequired,
                    "api_enterprise starts with a ContractSigned carrying its terms".into(),
                );
            }
            StartedBy::AppPlanEvent => {
                return refuse(
                    RejectCode::AppOptionsRequired,
                    format!("app plan {} needs its billing interval and seats", terms.plan.key()),
                );
            }
        }
    }
    match (&e.change, active.as_mut()) {
        (AccountChange::PlanStarted(_) | AccountChange::AppPlanStarted(..), Some(_)) => {
            refuse(RejectCode::PlanAlreadyActive, "PlanStarted while a plan is active; use PlanChanged".into())
        }
        (AccountChange::PlanChanged(_) | AccountChange::AppPlanChanged(..) | AccountChange::PlanCancelled, None) => {
            refuse(RejectCode::NoActivePlan, "no active plan to change or cancel".into())
        }
        (_, None) => {
            *active = start(e, catalog, book, cancelled)?;
            Ok(())
        }
        (_, Some(a)) => {
            a.last_event = e.event_id.clone();
            change(a, e, catalog)
        }
    }
}

/// A plan start with no plan active: its instant anchors the cycles.
fn start(
    e: &AccountEvent,
    catalog: &Catalog,
    book: RuleBook<'_>,
    cancelled: Option<(Weekly, DateTime<Utc>)>,
) -> Result<Option<Active>, Violation> {
    let refuse = |reject: Reject| Violation::new(&e.event_id, reject);
    let anchor = e.occurred_at;
    let rules = book.at(anchor);
    let (first_end, cause) = (cycle_start(anchor, 1), &e.event_id);
    let version = || {
        catalog
            .version_at(anchor)
            .ok_or_else(|| refuse(Reject::new(RejectCode::NoCatalogVersion, format!("no catalog version at {anchor}"))))
    };
    let (cycle, policy) = match &e.change {
        AccountChange::PlanStarted(terms) => {
            plans::check_sold(catalog.version_at(anchor), terms).map_err(refuse)?;
            (plans::open_cycle(catalog, anchor, first_end, terms.clone(), cause, rules)?, terms.upgrade_policy)
        }
        AccountChange::AppPlanStarted(terms, options) => {
            app::check(version()?, terms, options, true).map_err(refuse)?;
            // Started again before the weeks a cancelled weekly subscription paid for end:
            // its billing takes over there, as after a deferred change.
            let paid = cancelled.and_then(|(w, ended)| w.paid(ended, anchor, cycle_start(anchor, 12), rules));
            let opening = app::Opening::New(paid);
            (app::open_cycle(catalog, anchor, first_end, terms.clone(), *options, opening, cause)?, None)
        }
        AccountChange::ContractSigned(terms) => {
            // A contract signed with no plan active starts its term (and the cycles) now.
            contract::check(version()?, terms).map_err(refuse)?;
            let term_end = cycle_start(anchor, terms.term_months);
            let month = ContractMonth { terms: terms.clone(), term_start: anchor, term_end, month: 0 };
            (contract::open_cycle(catalog, anchor, first_end, month, cause)?, None)
        }
        AccountChange::PlanChanged(_)
        | AccountChange::AppPlanChanged(..)
        | AccountChange::PlanCancelled
        | AccountChange::QualityRefund { .. }
        | AccountChange::CreditsPurchased { .. } => return Ok(None),
    };
    let cycle = CycleSpec { rules, ..cycle };
    Ok(Some(Active { anchor, k: 0, policy, pending: None, cycle, last_event: e.event_id.clone() }))
}

/// A change while a plan is active: an upgrade applies now, the rest is scheduled.
fn change(a: &mut Active, e: &AccountEvent, catalog: &Catalog) -> Result<(), Violation> {
    let refuse = |reject: Reject| Violation::new(&e.event_id, reject);
    let version = catalog.version(&a.cycle.version_id).expect("cycle version exists");
    let current = a.cycle.gens.last().expect("a cycle has a generation");
    match &e.change {
        AccountChange::ContractSigned(terms) => {
            // Signed while on another plan: the term starts with the next cycle; signed
            // during a term: it replaces the renewal at the term's end.
            contract::check(version, terms).map_err(refuse)?;
            a.pending = Some(Pending::Contract(terms.clone()));
        }
        AccountChange::AppPlanChanged(terms, options) => {
            // An upgrade on the same interval applies now; anything else when the period
            // paid for ends (the cycle; a yearly plan's year).
            let seats = app::check(version, terms, options, current.terms.plan != terms.plan).map_err(refuse)?;
            a.pending = if app::upgrade(a, version, terms, options.interval, seats, e.occurred_at) {
                None
            } else {
                Some(Pending::App(terms.clone(), *options))
            };
        }
        AccountChange::PlanChanged(terms) => {
            plans::check_plan(version, terms).map_err(refuse)?;
            plans::check_sold(Some(version), terms).map_err(refuse)?;
            // Contracts and app subscriptions hold their plan until the period paid for ends.
            if !current.allowance.holds_plan() && version.price(terms) > version.price(&current.terms) {
                let policy = terms.upgrade_policy.or(a.policy).unwrap_or(version.upgrade_policy);
                bucket::upgrade(&mut a.cycle, version, terms.clone(), policy, e.occurred_at);
                a.pending = None;
            } else {
                a.pending = Some(Pending::Change(terms.clone()));
            }
        }
        AccountChange::PlanCancelled => a.pending = Some(Pending::Cancel),
        AccountChange::PlanStarted(_)
        | AccountChange::AppPlanStarted(..)
        | AccountChange::QualityRefund { .. }
        | AccountChange::CreditsPurchased { .. } => {}
    }
    Ok(())
}
