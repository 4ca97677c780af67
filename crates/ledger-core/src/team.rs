//! One team's ledger fold. `submit` decides which entries an event appends (closing
//! due cycles first); `apply` folds one entry into the state and returns its effects.
//! Replay calls `apply` alone, so live and replayed projections cannot differ.
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::entry::{CreditsExpired, CycleClosed, Entry, RefundTarget};
use crate::event::{AccountChange, AccountEvent, Api, Event, ImageProcessed};
use crate::ids::{EventId, TeamId};
use crate::invoice::{
    self, fmt_time, AppFigures, CarryKind, CarryLine, ContractCarry, ContractFigures, CreditInput, CycleFigures,
    Invoice, InvoiceInput, Purchase, TopUpInput, UsageRec,
};
use crate::money::fmt_exact;
use crate::schedule::{self, Allowance, CycleSpec};

/// Why an event was refused; `code` is stable (dead-letter header, metrics label).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct Reject {
    pub code: &'static str,
    pub detail: String,
}

impl Reject {
    fn new(code: &'static str, detail: impl Into<String>) -> Reject {
        Reject { code, detail: detail.into() }
    }
}

/// The ledger contradicts itself: replay found an entry the fold cannot accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("team {team_id} seq {seq}: {reason}")]
pub struct Fault {
    pub team_id: TeamId,
    pub seq: u64,
    pub reason: String,
}

/// How the store resolved the event a `QualityRefund` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundLookup {
    Found(RefundTarget),
    NotFound,
    OtherTeam(TeamId),
}

/// A threshold crossed by an allowance; `alert_id` is deterministic so consumers can
/// drop repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub alert_id: String,
    pub team_id: String,
    pub allowance: &'static str,
    pub cycle_start: String,
    pub cycle_end: String,
    pub bucket_generation: u32,
    pub threshold_percent: u32,
    pub consumed: String,
    pub allowance_value: String,
    pub triggering_event_id: String,
    pub occurred_at: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    pub alerts: Vec<Alert>,
    pub invoice: Option<Invoice>,
}

/// An entry the fold accepted, with the sequence number it takes in the team's ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub seq: u64,
    pub entry: Entry,
    pub effects: Effects,
}

#[derive(Debug, Clone, Default)]
struct Agg {
    value: Decimal,
    images: u64,
    app_exports: u64,
    app_ai: u64,
    remove_background_images: u64,
    sandbox_images: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AlertKey {
    allowance: &'static str,
    cycle_start: DateTime<Utc>,
    /// The end of the span the meter covers: the cycle's, or a contract term's.
    span_end: DateTime<Utc>,
    generation: u32,
    threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unplanned {
    pub event_id: String,
    pub occurred_at: String,
    pub api: &'static str,
    pub images: u32,
}

#[derive(Debug)]
pub struct Team {
    id: TeamId,
    next_seq: u64,
    open_from_seq: u64,
    clock: Option<DateTime<Utc>>,
    /// Plan changes, sorted by `(occurred_at, event_id)`.
    account: Vec<AccountEvent>,
    schedule: Vec<CycleSpec>,
    horizon: DateTime<Utc>,
    /// `schedule[..closed]` are closed; they end at `closed_through`.
    closed: usize,
    closed_through: Option<DateTime<Utc>>,
    closed_figures: Vec<CycleFigures>,
    /// Usage not yet in a closed cycle, in ledger order.
    pending: Vec<UsageRec>,
    aggs: HashMap<(DateTime<Utc>, usize), Agg>,
    fired: HashSet<AlertKey>,
    carry: Vec<CarryLine>,
    refunded: HashSet<EventId>,
    unplanned: Vec<Unplanned>,
    /// Legacy credit purchases, sorted by `(at, event_id)`.
    purchases: Vec<Purchase>,
    /// Credits and contract term position at the end of the last closed cycle.
    carried: Carried,
    /// AI-credit top-ups of app subscriptions, sorted by `(at, event_id)`.
    top_ups: Vec<Purchase>,
    /// The recorded expiry: `(seq, credits)`.
    credits_expired: Option<(u64, u64)>,
}

const HORIZON_STEP_DAYS: i64 = 62;

/// The instants an alert meter covers: a cycle, or a contract term.
type Span = (DateTime<Utc>, DateTime<Utc>);

/// What one cycle hands the next: legacy credits left, the contract term's position and
/// AI-credit top-ups left.
#[derive(Debug, Clone, Copy, Default)]
struct Carried {
    credits: u64,
    contract: ContractCarry,
    top_ups: u64,
}

impl Carried {
    /// What a cycle that started with `into` and ended with `figures` hands on.
    fn out_of(into: Carried, figures: &CycleFigures) -> Carried {
        Carried {
            credits: figures.credits.as_ref().map_or(0, |c| c.balance_end),
            contract: figures.contract.as_ref().map(ContractFigures::carry).unwrap_or_default(),
            // Top-ups wait, unused, through cycles off the app track.
            top_ups: figures.app.as_ref().map_or(into.top_ups, AppFigures::top_ups_left),
        }
    }
}

impl Team {
    pub fn new(id: TeamId) -> Team {
        Team {
            id,
            next_seq: 1,
            open_from_seq: 1,
            clock: None,
            account: Vec::new(),
            schedule: Vec::new(),
            horizon: DateTime::<Utc>::MIN_UTC,
            closed: 0,
            closed_through: None,
            closed_figures: Vec::new(),
            pending: Vec::new(),
            aggs: HashMap::new(),
            fired: HashSet::new(),
            carry: Vec::new(),
            refunded: HashSet::new(),
            unplanned: Vec::new(),
            purchases: Vec::new(),
            carried: Carried::default(),
            top_ups: Vec::new(),
            credits_expired: None,
        }
    }

    pub fn id(&self) -> &TeamId {
        &self.id
    }

    /// Sequence number of the last entry folded (0 = none).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    pub fn clock(&self) -> Option<DateTime<Utc>> {
        self.clock
    }

    /// Validates `event`, then appends: the `CycleClosed` markers its time makes due,
    /// then the event itself. A rejected event changes nothing.
    pub fn submit(
        &mut self,
        catalog: &Catalog,
        event: Event,
        refund: Option<RefundLookup>,
    ) -> Result<Vec<Applied>, Reject> {
        debug_assert_eq!(event.team_id(), &self.id);
        let until = self.clock.map_or(event.occurred_at(), |c| c.max(event.occurred_at()));
        let due = self.due(catalog, until);
        let closed_through = if due > 0 { Some(self.schedule[self.closed + due - 1].end) } else { self.closed_through };
        let entry = self.admit(catalog, event, refund, closed_through)?;
        let mut applied = self.close_due(catalog, until, due);
        let seq = self.next_seq;
        let effects = self.apply(catalog, seq, &entry).unwrap_or_else(|f| panic!("a validated entry must fold: {f}"));
        applied.push(Applied { seq, entry, effects });
        // A plan event can create cycles the clock has already passed (its usage arrived
        // first): close those now rather than waiting for the next event.
        if let Some(clock) = self.clock {
            let due = self.due(catalog, clock);
            applied.extend(self.close_due(catalog, clock, due));
        }
        Ok(applied)
    }

    /// Closes every cycle whose end + grace ≤ `until` (the operator's `close --until`).
    pub fn close_until(&mut self, catalog: &Catalog, until: DateTime<Utc>) -> Vec<Applied> {
        let due = self.due(catalog, until);
        self.close_due(catalog, until, due)
    }

    fn close_due(&mut self, catalog: &Catalog, closed_by: DateTime<Utc>, due: usize) -> Vec<Applied> {
        let mut applied = Vec::new();
        for _ in 0..due {
            // Credits expiring inside this cycle expire before it closes, onto its invoice.
            let end = self.schedule[self.closed].end;
            applied.extend(self.expire_credits(catalog, closed_by, Some(end)));
            let spec = &self.schedule[self.closed];
            let invoice = self.invoice_for(catalog, self.closed, false, self.next_seq);
            let entry = Entry::CycleClosed(CycleClosed {
                period_start: spec.start,
                period_end: spec.end,
                closed_by,
                total: invoice.total_exact,
                forfeited: invoice.forfeited_exact,
            });
            let seq = self.next_seq;
            let effects = self.apply(catalog, seq, &entry).unwrap_or_else(|f| panic!("a close must fold: {f}"));
            applied.push(Applied { seq, entry, effects });
        }
        applied.extend(self.expire_credits(catalog, closed_by, None));
        applied
    }

    /// When the team's credits expire, if it ever bought any.
    fn credits_expire_at(&self) -> Option<DateTime<Utc>> {
        self.purchases.first().map(|p| p.expires_at)
    }

    /// Appends `CreditsExpired` once `until` passes the expiry + grace (and, with
    /// `before_end`, only if the expiry falls before that cycle end).
    fn expire_credits(
        &mut self,
        catalog: &Catalog,
        until: DateTime<Utc>,
        before_end: Option<DateTime<Utc>>,
    ) -> Option<Applied> {
        let at = self.credits_expire_at()?;
        let grace = catalog.version_at(at).map_or(3600, |v| v.grace_seconds);
        if self.credits_expired.is_some()
            || until < at + Duration::seconds(i64::from(grace))
            || before_end.is_some_and(|end| end <= at)
        {
            return None;
        }
        let entry = Entry::CreditsExpired(CreditsExpired { at, credits: self.credits_left_at_expiry(catalog) });
        let seq = self.next_seq;
        let effects = self.apply(catalog, seq, &entry).unwrap_or_else(|f| panic!("an expiry must fold: {f}"));
        Some(Applied { seq, entry, effects })
    }

    /// Credits left when they expire: the open cycle holding the expiry says, or the
    /// balance carried past the last cycle before it.
    fn credits_left_at_expiry(&self, catalog: &Catalog) -> u64 {
        let Some(at) = self.credits_expire_at() else { return 0 };
        let mut carried = self.carried;
        for c in self.closed..self.schedule.len() {
            if self.schedule[c].start > at {
                break;
            }
            let figures = self.figures_with(catalog, c, None, carried);
            if self.schedule[c].contains(at) {
                return figures.credits.unwrap_or_default().expired;
            }
            carried = Carried::out_of(carried, &figures);
        }
        carried.credits
    }

    /// How many open cycles close by `until`.
    fn due(&mut self, catalog: &Catalog, until: DateTime<Utc>) -> usize {
        self.ensure_horizon(catalog, until);
        self.schedule[self.closed..].iter().take_while(|c| c.closes_at() <= until).count()
    }

    fn admit(
        &self,
        catalog: &Catalog,
        event: Event,
        refund: Option<RefundLookup>,
        closed_through: Option<DateTime<Utc>>,
    ) -> Result<Entry, Reject> {
        match event {
            Event::Image(e) => Ok(Entry::Image(e)),
            Event::Account(e) => match &e.change {
                AccountChange::PlanStarted(_)
                | AccountChange::PlanChanged(_)
                | AccountChange::PlanCancelled
                | AccountChange::ContractSigned(_)
                | AccountChange::AppPlanStarted(..)
                | AccountChange::AppPlanChanged(..) => {
                    if closed_through.is_some_and(|b| e.occurred_at < b) {
                        return Err(Reject::new(
                            "late_account_change",
                            format!(
                                "plan change at {} falls in a closed cycle (closed through {})",
                                fmt_time(e.occurred_at),
                                fmt_time(closed_through.unwrap())
                            ),
                        ));
                    }
                    let mut account = self.account.clone();
                    insert_sorted(&mut account, e.clone());
                    let horizon = self.horizon.max(e.occurred_at);
                    schedule::derive(&account, catalog, horizon).map_err(|v| Reject::new("plan_rule", v.reason))?;
                    Ok(Entry::Account(e))
                }
                AccountChange::QualityRefund { original_event_id, .. } => {
                    let target = self.check_refund(catalog, original_event_id, refund)?;
                    Ok(Entry::Refund { event: e, target })
                }
                AccountChange::CreditsPurchased { credits, amount } => {
                    self.check_purchase(catalog, e.occurred_at, *credits, *amount, closed_through)?;
                    Ok(Entry::Account(e))
                }
            },
        }
    }

    /// Credits are bought on the `api_credits` plan, while the catalog sells them and
    /// before they expire, in an open cycle (its invoice charges them).
    fn check_purchase(
        &self,
        catalog: &Catalog,
        at: DateTime<Utc>,
        credits: u64,
        amount: Decimal,
        closed_through: Option<DateTime<Utc>>,
    ) -> Result<(), Reject> {
        if credits == 0 || amount < Decimal::ZERO {
            return Err(Reject::new("plan_rule", format!("credits {credits} must be ≥ 1 and amount {amount} ≥ 0")));
        }
        if closed_through.is_some_and(|b| at < b) {
            return Err(Reject::new(
                "late_account_change",
                format!("credit purchase at {} falls in a closed cycle", fmt_time(at)),
            ));
        }
        if let Some(app) = self.app_month_at(at) {
            return if app.top_ups {
                Ok(())
            } else {
                Err(Reject::new(
                    "plan_rule",
                    format!("the app plan active at {} sells no AI-credit top-ups", fmt_time(at)),
                ))
            };
        }
        let on_credits = self
            .in_force(at)
            .map(|(c, gen)| (matches!(gen.allowance, Allowance::Credits { .. }), &self.schedule[c].version_id));
        let Some((true, version_id)) = on_credits else {
            return Err(Reject::new("plan_rule", format!("no api_credits plan is active at {}", fmt_time(at))));
        };
        match catalog.version(version_id).and_then(|v| v.credits()) {
            Some((_, true, expires)) if at < expires => Ok(()),
            Some((_, _, expires)) if at >= expires => {
                Err(Reject::new("plan_rule", format!("credits expired at {}; none can be bought", fmt_time(expires))))
            }
            _ => Err(Reject::new("plan_rule", format!("catalog version {version_id} sells no credits"))),
        }
    }

    /// The cycle and plan generation in force at `t`, if any.
    fn in_force(&self, t: DateTime<Utc>) -> Option<(usize, &crate::schedule::Gen)> {
        let c = self.cycle_at(t)?;
        let spec = &self.schedule[c];
        Some((c, &spec.gens[spec.gen_at(t)]))
    }

    /// The cycle and rate an image of `api` at `t` is billed at, if a plan in force prices
    /// it (app usage needs an app plan, API calls an API plan); free allowances bill 0.
    fn rate_in_force(&self, catalog: &Catalog, t: DateTime<Utc>, api: Api) -> Option<(usize, Decimal)> {
        let (c, gen) = self.in_force(t)?;
        let version = catalog.version(&self.schedule[c].version_id).expect("cycle version exists");
        let rate = gen.allowance.rate(version, &gen.terms, api)?;
        Some((c, if matches!(gen.allowance, Allowance::Trial { .. }) { Decimal::ZERO } else { rate }))
    }

    /// Whether a plan in force at the record's time prices its API.
    fn priced(&self, catalog: &Catalog, rec: &UsageRec) -> bool {
        self.rate_in_force(catalog, rec.at, rec.api).is_some()
    }

    /// The app subscription month in force at `t`, if the team is on one.
    fn app_month_at(&self, t: DateTime<Utc>) -> Option<&crate::schedule::AppMonth> {
        match &self.in_force(t)?.1.allowance {
            Allowance::App(m) => Some(m),
            _ => None,
        }
    }

    fn check_refund(
        &self,
        catalog: &Catalog,
        original: &EventId,
        lookup: Option<RefundLookup>,
    ) -> Result<RefundTarget, Reject> {
        let target = match lookup {
            Some(RefundLookup::Found(t)) => t,
            Some(RefundLookup::OtherTeam(team)) => {
                return Err(Reject::new("refund_other_team", format!("event {original} belongs to team {team}")))
            }
            Some(RefundLookup::NotFound) | None => {
                return Err(Reject::new("refund_unknown_event", format!("no image event {original} in the ledger")))
            }
        };
        if target.sandbox {
            return Err(Reject::new("refund_sandbox", format!("event {original} is a sandbox event and cost nothing")));
        }
        if self.refunded.contains(original) {
            return Err(Reject::new("refund_repeated", format!("event {original} was already refunded")));
        }
        if self.charge_of(catalog, &target).is_none_or(|(_, _, rate)| rate.is_zero()) {
            return Err(Reject::new(
                "refund_unbilled",
                format!("event {original} was not billed (no plan, or a free allowance)"),
            ));
        }
        Ok(target)
    }

    /// The cycle, API and rate an image at `target` was billed at, if any plan priced it.
    fn charge_of(&self, catalog: &Catalog, target: &RefundTarget) -> Option<(usize, Api, Decimal)> {
        let (c, rate) = self.rate_in_force(catalog, target.occurred_at, target.api)?;
        Some((c, target.api, rate))
    }

    /// Folds one ledger entry. The same function serves live appends and replay.
    pub fn apply(&mut self, catalog: &Catalog, seq: u64, entry: &Entry) -> Result<Effects, Fault> {
        let team_id = self.id.clone();
        let fault = |reason: String| Fault { team_id: team_id.clone(), seq, reason };
        if seq != self.next_seq {
            return Err(fault(format!("expected seq {}", self.next_seq)));
        }
        let effects = match entry {
            Entry::Image(e) => self.apply_image(catalog, seq, e),
            Entry::Account(e) if matches!(e.change, AccountChange::CreditsPurchased { .. }) => {
                self.apply_purchase(catalog, seq, e).map_err(fault)?
            }
            Entry::Account(e) => self.apply_plan_change(catalog, e).map_err(fault)?,
            Entry::Refund { event, target } => self.apply_refund(catalog, event, target).map_err(fault)?,
            Entry::CycleClosed(m) => self.apply_close(catalog, seq, m).map_err(fault)?,
            Entry::CreditsExpired(x) => self.apply_expiry(catalog, seq, x).map_err(fault)?,
        };
        self.next_seq += 1;
        Ok(effects)
    }

    fn advance_clock(&mut self, t: DateTime<Utc>) {
        self.clock = Some(self.clock.map_or(t, |c| c.max(t)));
    }

    fn apply_image(&mut self, catalog: &Catalog, seq: u64, e: &ImageProcessed) -> Effects {
        self.advance_clock(e.occurred_at);
        let rec = UsageRec {
            seq,
            at: e.occurred_at,
            event_id: e.event_id.clone(),
            api: e.api,
            images: e.images,
            sandbox: e.sandbox,
            refunded: false,
        };
        if self.closed_through.is_some_and(|b| e.occurred_at < b) {
            self.apply_late(catalog, rec);
            return Effects::default();
        }
        self.ensure_horizon(catalog, e.occurred_at);
        let slot = self.aggregate(catalog, &rec);
        self.pending.push(rec);
        let mut effects = Effects::default();
        if let Some((c, g)) = slot {
            effects.alerts = self.check_alerts(catalog, c, g, &e.event_id, e.occurred_at);
        }
        effects
    }

    /// Late usage: its cycle is closed, so it becomes a line on the next invoice.
    fn apply_late(&mut self, catalog: &Catalog, rec: UsageRec) {
        let target =
            RefundTarget { seq: rec.seq, occurred_at: rec.at, api: rec.api, images: rec.images, sandbox: rec.sandbox };
        match self.charge_of(catalog, &target) {
            Some(_) if rec.sandbox => {}
            Some((c, api, rate)) => self.carry_line(CarryKind::LateUsage, c, api, rate, rec.images),
            None => self.unplanned.push(unplanned_of(&rec)),
        }
    }

    fn apply_plan_change(&mut self, catalog: &Catalog, e: &AccountEvent) -> Result<Effects, String> {
        self.advance_clock(e.occurred_at);
        if !e.change.is_plan_change() {
            return Err(format!("account change {:?} is not folded by this version", e.change));
        }
        insert_sorted(&mut self.account, e.clone());
        self.horizon = self.horizon.max(e.occurred_at);
        self.rederive(catalog).map_err(|v| format!("plan change {} breaks the timeline: {}", v.event_id, v.reason))?;
        // A change can move usage between generations: rebuild, then fire what is now crossed.
        self.aggs.clear();
        let pending = std::mem::take(&mut self.pending);
        for rec in &pending {
            self.aggregate(catalog, rec);
        }
        self.pending = pending;
        let mut alerts = Vec::new();
        for c in self.closed..self.schedule.len() {
            for g in 0..self.schedule[c].gens.len() {
                alerts.extend(self.check_alerts(catalog, c, g, &e.event_id, e.occurred_at));
            }
        }
        Ok(Effects { alerts, invoice: None })
    }

    fn apply_purchase(&mut self, catalog: &Catalog, seq: u64, e: &AccountEvent) -> Result<Effects, String> {
        self.advance_clock(e.occurred_at);
        let AccountChange::CreditsPurchased { credits, amount } = e.change else {
            return Err("purchase entry without CreditsPurchased".into());
        };
        if self.app_month_at(e.occurred_at).is_some() {
            // An AI-credit top-up: kept until used (no expiry).
            let top_up = Purchase {
                seq,
                at: e.occurred_at,
                event_id: e.event_id.clone(),
                credits,
                amount,
                expires_at: DateTime::<Utc>::MAX_UTC,
            };
            let i = self.top_ups.partition_point(|p| (p.at, &p.event_id) <= (top_up.at, &top_up.event_id));
            self.top_ups.insert(i, top_up);
            return Ok(Effects::default());
        }
        let version = self
            .cycle_at(e.occurred_at)
            .and_then(|c| catalog.version(&self.schedule[c].version_id))
            .ok_or_else(|| format!("credit purchase {} outside any cycle", e.event_id))?;
        let (_, _, expires_at) = version.credits().ok_or_else(|| format!("version {} has no credits", version.id))?;
        let purchase = Purchase { seq, at: e.occurred_at, event_id: e.event_id.clone(), credits, amount, expires_at };
        let i = self.purchases.partition_point(|p| (p.at, &p.event_id) <= (purchase.at, &purchase.event_id));
        self.purchases.insert(i, purchase);
        Ok(Effects::default())
    }

    fn apply_expiry(&mut self, catalog: &Catalog, seq: u64, x: &CreditsExpired) -> Result<Effects, String> {
        if self.credits_expired.is_some() || self.credits_expire_at() != Some(x.at) {
            return Err(format!("CreditsExpired at {} does not match the team's credits", fmt_time(x.at)));
        }
        let left = self.credits_left_at_expiry(catalog);
        if left != x.credits {
            return Err(format!("recomputed {left} credits left at expiry, the ledger says {}", x.credits));
        }
        self.credits_expired = Some((seq, x.credits));
        Ok(Effects::default())
    }

    fn apply_refund(
        &mut self,
        catalog: &Catalog,
        event: &AccountEvent,
        target: &RefundTarget,
    ) -> Result<Effects, String> {
        self.advance_clock(event.occurred_at);
        let AccountChange::QualityRefund { original_event_id, .. } = &event.change else {
            return Err("refund entry without a QualityRefund".into());
        };
        if !self.refunded.insert(original_event_id.clone()) {
            return Err(format!("event {original_event_id} refunded twice"));
        }
        if let Some(i) = self.pending.iter().position(|r| r.seq == target.seq) {
            // Open cycle: the value returns to the bucket (or reduces overage).
            let rec = self.pending[i].clone();
            self.unaggregate(catalog, &rec);
            self.pending[i].refunded = true;
            return Ok(Effects::default());
        }
        let (c, api, rate) = self
            .charge_of(catalog, target)
            .ok_or_else(|| format!("refunded event {original_event_id} was never billed"))?;
        self.carry_line(CarryKind::RefundCredit, c, api, rate, target.images);
        Ok(Effects::default())
    }

    /// Carries a line for closed cycle `c` to the next invoice.
    fn carry_line(&mut self, kind: CarryKind, c: usize, api: Api, rate: Decimal, images: u32) {
        let (period_start, period_end) = (self.schedule[c].start, self.schedule[c].end);
        self.carry.push(CarryLine { kind, period_start, period_end, api, rate, images: u64::from(images) });
    }

    fn apply_close(&mut self, catalog: &Catalog, seq: u64, m: &CycleClosed) -> Result<Effects, String> {
        self.ensure_horizon(catalog, m.closed_by);
        let Some(spec) = self.schedule.get(self.closed) else {
            return Err(format!("CycleClosed for {} but no open cycle", fmt_time(m.period_start)));
        };
        if (spec.start, spec.end) != (m.period_start, m.period_end) || spec.closes_at() > m.closed_by {
            return Err(format!(
                "CycleClosed for {}..{} does not match the next due cycle",
                fmt_time(m.period_start),
                fmt_time(m.period_end)
            ));
        }
        let invoice = self.invoice_for(catalog, self.closed, false, seq);
        if (invoice.total_exact, invoice.forfeited_exact) != (m.total, m.forfeited) {
            return Err(format!(
                "recomputed total {} / forfeit {} differ from the recorded {} / {}",
                invoice.total_exact, invoice.forfeited_exact, m.total, m.forfeited
            ));
        }
        let figures = self.cycle_figures(catalog, self.closed, None);
        self.carried = Carried::out_of(self.carried, &figures);
        let (start, end) = (spec.start, spec.end);
        let mut kept = Vec::with_capacity(self.pending.len());
        for rec in std::mem::take(&mut self.pending) {
            if rec.at >= end {
                kept.push(rec);
            } else if rec.at < start || !self.schedule[self.closed].contains(rec.at) || !self.priced(catalog, &rec) {
                self.unplanned.push(unplanned_of(&rec));
            }
        }
        self.pending = kept;
        self.aggs.retain(|(s, _), _| *s != start);
        self.fired.retain(|k| k.span_end > end);
        self.carry.clear();
        self.closed_figures.push(figures);
        self.closed += 1;
        self.closed_through = Some(end);
        self.open_from_seq = seq + 1;
        Ok(Effects { alerts: Vec::new(), invoice: Some(invoice) })
    }

    fn ensure_horizon(&mut self, catalog: &Catalog, t: DateTime<Utc>) {
        if t >= self.horizon {
            self.horizon = t + Duration::days(HORIZON_STEP_DAYS);
            self.rederive(catalog).expect("an accepted timeline derives");
        }
    }

    fn rederive(&mut self, catalog: &Catalog) -> Result<(), schedule::Violation> {
        let schedule = schedule::derive(&self.account, catalog, self.horizon)?;
        debug_assert!(self.schedule[..self.closed] == schedule[..self.closed], "closed cycles never change");
        self.schedule = schedule;
        Ok(())
    }

    fn cycle_at(&self, t: DateTime<Utc>) -> Option<usize> {
        let i = self.schedule.partition_point(|c| c.start <= t);
        (i > 0 && self.schedule[i - 1].contains(t)).then(|| i - 1)
    }

    /// Adds `rec` to its open cycle's generation totals; returns the slot it landed in.
    fn aggregate(&mut self, catalog: &Catalog, rec: &UsageRec) -> Option<(usize, usize)> {
        let c = self.cycle_at(rec.at).filter(|c| *c >= self.closed)?;
        let spec = &self.schedule[c];
        let g = spec.gen_at(rec.at);
        let images = u64::from(rec.images);
        let version = catalog.version(&spec.version_id).expect("cycle version exists");
        let gen = &spec.gens[g];
        // Usage the plan does not price is kept, reported as unplanned, and meters nothing.
        let rate = gen.allowance.rate(version, &gen.terms, rec.api)?;
        let value = if rec.sandbox || rec.refunded { Decimal::ZERO } else { rate * Decimal::from(rec.images) };
        let agg = self.aggs.entry((spec.start, g)).or_default();
        if rec.sandbox {
            agg.sandbox_images += images;
        } else if !rec.refunded {
            agg.value += value;
            agg.images += images;
            match rec.api {
                Api::AppExport => agg.app_exports += images,
                Api::AppAi => agg.app_ai += images,
                Api::RemoveBackground | Api::ImageEditing => {}
            }
            if rec.api == Api::RemoveBackground {
                agg.remove_background_images += images;
            }
        }
        Some((c, g))
    }

    fn unaggregate(&mut self, catalog: &Catalog, rec: &UsageRec) {
        let Some(c) = self.cycle_at(rec.at).filter(|c| *c >= self.closed) else {
            return;
        };
        let spec = &self.schedule[c];
        let g = spec.gen_at(rec.at);
        let version = catalog.version(&spec.version_id).expect("cycle version exists");
        let gen = &spec.gens[g];
        let Some(rate) = gen.allowance.rate(version, &gen.terms, rec.api) else { return };
        let value = rate * Decimal::from(rec.images);
        if let Some(agg) = self.aggs.get_mut(&(spec.start, g)) {
            agg.value -= value;
            agg.images -= u64::from(rec.images);
            if rec.api == Api::RemoveBackground {
                agg.remove_background_images -= u64::from(rec.images);
            }
        }
    }

    /// Fires each threshold of generation `g` of cycle `c` that is reached for the first time.
    fn check_alerts(
        &mut self,
        catalog: &Catalog,
        c: usize,
        g: usize,
        trigger: &EventId,
        at: DateTime<Utc>,
    ) -> Vec<Alert> {
        let spec = &self.schedule[c];
        let gen = &spec.gens[g];
        let Some(agg) = self.aggs.get(&(spec.start, g)) else {
            return Vec::new();
        };
        let version = catalog.version(&spec.version_id).expect("cycle version exists");
        // (allowance, consumed, limit, span): the span is the cycle, or a contract's term.
        let cycle = (spec.start, spec.end);
        let mut meters: Vec<(&'static str, Decimal, Decimal, Span)> = Vec::new();
        let mut push = |allowance, consumed, limit| meters.push((allowance, consumed, limit, cycle));
        match &gen.allowance {
            &Allowance::Bucket { value } => push("bucket", agg.value, value),
            &Allowance::Trial { value, sandbox_images } => {
                push("trial", agg.value, value);
                if let Some(cap) = sandbox_images {
                    push("sandbox", Decimal::from(agg.sandbox_images), Decimal::from(cap));
                }
            }
            &Allowance::Partner { commitment_images, .. } => {
                push("commitment", Decimal::from(agg.remove_background_images), Decimal::from(commitment_images))
            }
            &Allowance::Credits { image_rate } => {
                // The credits the cycle had: carried in plus bought in it so far.
                let bought: u64 = self.purchases.iter().filter(|p| spec.contains(p.at)).map(|p| p.credits).sum();
                let available = self.carried_into(catalog, c).credits + bought;
                push("credits", agg.value, image_rate * Decimal::from(available));
            }
            Allowance::App(m) => {
                // The month's exports, and its AI credits with the top-ups available so far.
                push("exports", Decimal::from(agg.app_exports), Decimal::from(m.exports));
                let bought: u64 =
                    self.top_ups.iter().filter(|p| spec.contains(p.at) && p.at <= at).map(|p| p.credits).sum();
                let available = m.ai_credits + self.carried_into(catalog, c).top_ups + bought;
                push("ai_credits", Decimal::from(agg.app_ai), Decimal::from(available));
            }
            Allowance::Contract(m) => {
                // The month's allotment (with what rolled over), and the term's commitment.
                let month = ContractFigures::new(m, self.carried_into(catalog, c).contract);
                push("allotment", Decimal::from(agg.images), Decimal::from(month.available()));
                let used = Decimal::from(month.used_before + agg.images);
                meters.push(("commitment", used, Decimal::from(m.term_commitment()), (m.term_start, m.term_end)));
            }
        }
        let mut alerts = Vec::new();
        for (allowance, consumed, limit, (start, end)) in meters {
            if limit <= Decimal::ZERO {
                continue;
            }
            for &threshold in &version.alert_thresholds {
                let key = AlertKey { allowance, cycle_start: start, span_end: end, generation: gen.number, threshold };
                if consumed * Decimal::ONE_HUNDRED < Decimal::from(threshold) * limit || self.fired.contains(&key) {
                    continue;
                }
                self.fired.insert(key);
                alerts.push(Alert {
                    alert_id: format!("{}:{allowance}:{}:g{}:{threshold}", self.id, fmt_time(start), gen.number),
                    team_id: self.id.to_string(),
                    allowance,
                    cycle_start: fmt_time(start),
                    cycle_end: fmt_time(end),
                    bucket_generation: gen.number,
                    threshold_percent: threshold,
                    consumed: fmt_exact(consumed),
                    allowance_value: fmt_exact(limit),
                    triggering_event_id: trigger.to_string(),
                    occurred_at: fmt_time(at),
                });
            }
        }
        alerts
    }

    /// Figures of cycle `c` from its pending usage, optionally only up to `at`.
    fn cycle_figures(&self, catalog: &Catalog, c: usize, at: Option<DateTime<Utc>>) -> CycleFigures {
        let carried = self.carried_into(catalog, c);
        self.figures_with(catalog, c, at, carried)
    }

    /// Credits left when open cycle `c` starts (the open cycles before it drew some).
    fn carried_into(&self, catalog: &Catalog, c: usize) -> Carried {
        let is_contract = |spec: &CycleSpec| spec.gens.iter().any(|g| matches!(g.allowance, Allowance::Contract(_)));
        if c == self.closed {
            return self.carried;
        }
        if self.purchases.is_empty()
            && self.top_ups.is_empty()
            && !self.schedule[self.closed..c].iter().any(is_contract)
        {
            return Carried::default();
        }
        (self.closed..c)
            .fold(self.carried, |carried, k| Carried::out_of(carried, &self.figures_with(catalog, k, None, carried)))
    }

    fn figures_with(&self, catalog: &Catalog, c: usize, at: Option<DateTime<Utc>>, carried: Carried) -> CycleFigures {
        let spec = &self.schedule[c];
        let version = catalog.version(&spec.version_id).expect("cycle version exists");
        let mut records: Vec<&UsageRec> =
            self.pending.iter().filter(|r| spec.contains(r.at) && at.is_none_or(|t| r.at <= t)).collect();
        records.sort_by(|a, b| (a.at, &a.event_id).cmp(&(b.at, &b.event_id)));
        let credits = CreditInput {
            carried: carried.credits,
            purchases: self.purchases.iter().filter(|p| spec.contains(p.at) && at.is_none_or(|t| p.at <= t)).collect(),
            expires_at: self.credits_expire_at(),
            expiry_seq: self.credits_expired.map(|(seq, _)| seq),
        };
        let top_ups = TopUpInput {
            carried: carried.top_ups,
            purchases: self.top_ups.iter().filter(|p| spec.contains(p.at) && at.is_none_or(|t| p.at <= t)).collect(),
        };
        invoice::figures(spec, version, &records, &credits, carried.contract, &top_ups)
    }

    fn invoice_for(&self, catalog: &Catalog, c: usize, draft: bool, last_seq: u64) -> Invoice {
        let spec = &self.schedule[c];
        let version = catalog.version(&spec.version_id).expect("cycle version exists");
        let figures = self.cycle_figures(catalog, c, None);
        invoice::build(InvoiceInput {
            team_id: &self.id,
            spec,
            version,
            figures: &figures,
            carry: &self.carry,
            draft,
            first_seq: self.open_from_seq,
            last_seq,
        })
    }

    /// The open cycle's invoice as it stands (status "draft"), if a cycle is open.
    pub fn draft_invoice(&mut self, catalog: &Catalog) -> Option<Invoice> {
        if let Some(clock) = self.clock {
            self.ensure_horizon(catalog, clock);
        }
        let c = self.clock.and_then(|t| self.cycle_at(t)).filter(|c| *c >= self.closed)?;
        Some(self.invoice_for(catalog, c, true, self.last_seq()))
    }

    /// Allowances, consumed and remaining in the cycle containing `at` (default: the team's clock).
    pub fn balance(&mut self, catalog: &Catalog, at: Option<DateTime<Utc>>) -> Balance {
        let at = at.or(self.clock);
        if let Some(t) = at {
            self.ensure_horizon(catalog, t);
        }
        let cycle = at.and_then(|t| self.cycle_at(t));
        let (cycle_view, allowances) = match cycle {
            Some(c) => {
                let spec = &self.schedule[c];
                let closed = c < self.closed;
                let figures = if closed { self.closed_figures[c].clone() } else { self.cycle_figures(catalog, c, at) };
                let view = CycleView {
                    start: fmt_time(spec.start),
                    end: fmt_time(spec.end),
                    status: if closed { "closed" } else { "open" },
                    price_book_version: spec.version_id.clone(),
                };
                (Some(view), allowance_balances(&figures))
            }
            None => (None, Vec::new()),
        };
        let mut unplanned = self.unplanned.clone();
        unplanned.extend(self.pending.iter().filter(|r| !self.priced(catalog, r)).map(unplanned_of));
        Balance {
            team_id: self.id.to_string(),
            at: at.map(fmt_time),
            cycle: cycle_view,
            allowances,
            exceptions: Exceptions { unplanned, pending_lines: self.carry.len() },
        }
    }
}

fn unplanned_of(rec: &UsageRec) -> Unplanned {
    Unplanned {
        event_id: rec.event_id.to_string(),
        occurred_at: fmt_time(rec.at),
        api: rec.api.key(),
        images: rec.images,
    }
}

fn insert_sorted(account: &mut Vec<AccountEvent>, e: AccountEvent) {
    let i = account.partition_point(|x| (x.occurred_at, &x.event_id) <= (e.occurred_at, &e.event_id));
    account.insert(i, e);
}

fn allowance_balances(figures: &CycleFigures) -> Vec<AllowanceBalance> {
    let mut out = Vec::new();
    for g in &figures.gens {
        let (allowance, value, consumed) = match g.allowance {
            Allowance::Bucket { value } => ("bucket", value, g.consumed),
            Allowance::Trial { value, sandbox_images } => {
                if let Some(cap) = sandbox_images {
                    out.push(balance_row("sandbox", g.number, Decimal::from(cap), Decimal::from(g.sandbox_images)));
                }
                ("trial", value, g.consumed)
            }
            Allowance::Partner { commitment_images, .. } => {
                ("commitment", Decimal::from(commitment_images), Decimal::from(g.remove_background_images))
            }
            Allowance::Credits { image_rate } => {
                let c = figures.credits.clone().unwrap_or_default();
                ("credits", image_rate * Decimal::from(c.carried + c.purchased), g.consumed)
            }
            Allowance::App(_) => {
                let a = figures.app.as_ref().expect("an app cycle has app figures");
                let ai = Decimal::from(a.month.ai_credits + a.top_ups_in + a.top_ups_bought);
                out.push(balance_row(
                    "exports",
                    g.number,
                    Decimal::from(a.month.exports),
                    Decimal::from(a.exports_used),
                ));
                ("ai_credits", ai, Decimal::from(a.ai_used))
            }
            Allowance::Contract(ref m) => {
                let c = figures.contract.as_ref().expect("a contract cycle has contract figures");
                let month_used = Decimal::from(c.drawn + c.over_images());
                out.push(balance_row("allotment", g.number, Decimal::from(c.available()), month_used));
                ("commitment", Decimal::from(m.term_commitment()), Decimal::from(c.used_end))
            }
        };
        out.push(balance_row(allowance, g.number, value, consumed));
    }
    out
}

fn balance_row(allowance: &'static str, generation: u32, value: Decimal, consumed: Decimal) -> AllowanceBalance {
    let percent = if value.is_zero() { Decimal::ZERO } else { (consumed * Decimal::ONE_HUNDRED / value).round_dp(2) };
    AllowanceBalance {
        allowance,
        generation,
        value: fmt_exact(value),
        consumed: fmt_exact(consumed),
        remaining: fmt_exact((value - consumed).max(Decimal::ZERO)),
        over: fmt_exact((consumed - value).max(Decimal::ZERO)),
        percent: fmt_exact(percent),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CycleView {
    pub start: String,
    pub end: String,
    pub status: &'static str,
    pub price_book_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllowanceBalance {
    pub allowance: &'static str,
    pub generation: u32,
    pub value: String,
    pub consumed: String,
    pub remaining: String,
    pub over: String,
    pub percent: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exceptions {
    pub unplanned: Vec<Unplanned>,
    pub pending_lines: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub team_id: String,
    pub at: Option<String>,
    pub cycle: Option<CycleView>,
    pub allowances: Vec<AllowanceBalance>,
    pub exceptions: Exceptions,
}
