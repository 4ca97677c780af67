//! One team's ledger fold. `submit` decides which entries an event appends (closing
//! due cycles first, `decide`); `apply` folds one entry into the state and returns its
//! effects (`fold`, `close`). Replay calls `apply` alone, so live and replayed
//! projections cannot differ. `meters` fires alerts; `views` answers balances and drafts.
mod close;
mod decide;
mod fold;
mod meters;
mod views;

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;

use crate::catalog::Catalog;
use crate::entry::{Entry, RefundTarget};
use crate::event::{AccountEvent, Api, Event};
use crate::figures::{CarryLine, Purchase, UsageRec};
use crate::ids::{EventId, TeamId};
use crate::plans::{Meter, MeterInput};
use crate::report::{fmt_time, Alert, Invoice, Unplanned};
use crate::timeline::{self, CycleSpec, Gen, RuleBook, Rules};

pub use crate::reject::{Fault, Reject};
use close::Carried;
use meters::AlertKey;

/// How the store resolved the event a `QualityRefund` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundLookup {
    Found(RefundTarget),
    NotFound,
    OtherTeam(TeamId),
}

/// What folding an entry produced, as values for the adapters to publish.
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

/// A team's folded state. It serializes (`serde`) for the store's checkpoints: every
/// change to its fields, or to a type it holds, bumps `Team::STATE_VERSION`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Team {
    id: TeamId,
    next_seq: u64,
    open_from_seq: u64,
    clock: Option<DateTime<Utc>>,
    /// Plan changes, sorted by `(occurred_at, event_id)`.
    account: Vec<AccountEvent>,
    schedule: Vec<CycleSpec>,
    horizon: DateTime<Utc>,
    /// `schedule[..closed]` are closed, and hollow (`CycleSpec::hollow`); they end at
    /// `closed_through`.
    closed: usize,
    closed_through: Option<DateTime<Utc>>,
    /// Each closed cycle's meters, as its balance shows them (its figures are gone).
    closed_meters: Vec<Vec<(Meter, u32)>>,
    /// Usage not yet in a closed cycle, in ledger order.
    pending: Vec<UsageRec>,
    /// What each open generation used so far, by (cycle start, generation).
    aggs: HashMap<(DateTime<Utc>, usize), MeterInput>,
    fired: HashSet<AlertKey>,
    carry: Vec<CarryLine>,
    refunded: HashSet<EventId>,
    /// The newest usage of closed cycles no plan priced (at most `UNPLANNED_LISTED`),
    /// and how much there was in all.
    unplanned: VecDeque<UsageRec>,
    unplanned_total: u64,
    /// Legacy credit purchases, sorted by `(at, event_id)`.
    purchases: Vec<Purchase>,
    /// Credits and contract term position at the end of the last closed cycle.
    carried: Carried,
    /// AI-credit top-ups of app subscriptions, sorted by `(at, event_id)`.
    top_ups: Vec<Purchase>,
    /// The recorded expiry: `(seq, credits)`.
    credits_expired: Option<(u64, u64)>,
    /// Credits each usage record of a closed cycle drew, where images past the credits
    /// were billed at another rate than the credit's (rules V2): what a refund gives back.
    credit_draws: HashMap<u64, u32>,
}

const HORIZON_STEP_DAYS: i64 = 62;

/// How much unplanned usage a balance lists (the newest; every event stays in the
/// ledger, and the balance counts them all).
pub const UNPLANNED_LISTED: usize = 100;

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
            closed_meters: Vec::new(),
            pending: Vec::new(),
            aggs: HashMap::new(),
            fired: HashSet::new(),
            carry: Vec::new(),
            refunded: HashSet::new(),
            unplanned: VecDeque::new(),
            unplanned_total: 0,
            purchases: Vec::new(),
            carried: Carried::default(),
            top_ups: Vec::new(),
            credits_expired: None,
            credit_draws: HashMap::new(),
        }
    }

    /// The version of the serialized state: a checkpoint of another version is not read
    /// (the team is folded from its entries instead).
    pub const STATE_VERSION: u16 = 1;

    /// Usage records the state holds (the open cycles' usage): what a checkpoint of it
    /// weighs, about.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether `other` holds the same state once both timelines reach equally far: a
    /// writer derives cycles further ahead than a fold of its entries when it refused
    /// an event from later (the cycles ahead are derived, not state).
    pub fn agrees_with(&self, catalog: &Catalog, other: &Team) -> bool {
        let horizon = self.horizon.max(other.horizon);
        let widened = |team: &Team| {
            let mut team = team.clone();
            if team.horizon < horizon {
                team.horizon = horizon;
                team.rederive(catalog).ok()?;
            }
            Some(team)
        };
        matches!((widened(self), widened(other)), (Some(a), Some(b)) if a == b)
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

    /// How many open cycles close by `until`.
    fn due(&mut self, catalog: &Catalog, until: DateTime<Utc>) -> usize {
        self.ensure_horizon(catalog, until);
        self.schedule[self.closed..].iter().take_while(|c| c.closes_at() <= until).count()
    }

    /// The open cycle and plan generation in force at `t`, if any.
    fn in_force(&self, t: DateTime<Utc>) -> Option<(usize, &Gen)> {
        let c = self.cycle_at(t).filter(|c| *c >= self.closed)?;
        let spec = &self.schedule[c];
        Some((c, &spec.gens[spec.gen_at(t)]))
    }

    /// The cycle and rate an image of `api` at `t` is billed at, if a plan in force prices
    /// it (app usage needs an app plan, API calls an API plan); free allowances bill 0.
    /// A closed cycle is hollow: its plan is derived again (late usage and refunds of
    /// closed cycles, rare next to the usage of open ones).
    fn rate_in_force(&self, catalog: &Catalog, t: DateTime<Utc>, api: Api) -> Option<(usize, Decimal)> {
        let c = self.cycle_at(t)?;
        let derived;
        let spec = if c < self.closed {
            let book = self.older_rules();
            let cycles = timeline::derive(&self.account, catalog, self.schedule[c].start, RuleBook { older: &book });
            derived = cycles.expect("an accepted timeline derives").swap_remove(c);
            debug_assert!((derived.start, derived.end) == (self.schedule[c].start, self.schedule[c].end));
            &derived
        } else {
            &self.schedule[c]
        };
        let gen = &spec.gens[spec.gen_at(t)];
        let version = catalog.version(&spec.version_id).expect("cycle version exists");
        Some((c, gen.allowance.billed_rate(version, &gen.terms, api)?))
    }

    /// Whether a plan in force at the record's time prices its API.
    fn priced(&self, catalog: &Catalog, rec: &UsageRec) -> bool {
        self.rate_in_force(catalog, rec.at, rec.api).is_some()
    }

    fn ensure_horizon(&mut self, catalog: &Catalog, t: DateTime<Utc>) {
        if t >= self.horizon {
            self.horizon = t + Duration::days(HORIZON_STEP_DAYS);
            self.rederive(catalog).expect("an accepted timeline derives");
        }
    }

    fn rederive(&mut self, catalog: &Catalog) -> Result<(), timeline::Violation> {
        let book = self.older_rules();
        let mut schedule = timeline::derive(&self.account, catalog, self.horizon, RuleBook { older: &book })?;
        let closed = self.closed.min(schedule.len());
        for (new, old) in schedule[..closed].iter_mut().zip(&self.schedule) {
            new.hollow();
            // A team the rules do not concern derives its closed cycles under the current
            // rules; they price them the same, and the close recorded which it was.
            new.rules = old.rules;
        }
        // Kept for the team's life, one a cycle: no room to grow (derive pushed them).
        schedule.shrink_to_fit();
        debug_assert!(self.schedule[..self.closed] == schedule[..self.closed], "closed cycles never change");
        self.schedule = schedule;
        Ok(())
    }

    /// Whether the rule sets can price this team's cycles differently: it had a weekly
    /// app subscription or legacy credits (`Rules`). Other teams derive every cycle under
    /// the current rules.
    fn rules_matter(&self) -> bool {
        self.account.iter().any(|e| e.change.rules_matter())
    }

    /// The cycles priced under older rules (their closes said so, or the one being
    /// closed is tagged so), for the derivation: empty where the rules do not matter.
    fn older_rules(&self) -> Vec<(DateTime<Utc>, Rules)> {
        if !self.rules_matter() {
            return Vec::new();
        }
        self.schedule.iter().filter(|c| c.rules != Rules::CURRENT).map(|c| (c.start, c.rules)).collect()
    }

    /// Usage no plan prices, once it can no longer change: listed while among the newest.
    fn keep_unplanned(&mut self, rec: &UsageRec) {
        if self.unplanned.len() == UNPLANNED_LISTED {
            self.unplanned.pop_front();
        }
        self.unplanned.push_back(rec.clone());
        self.unplanned_total += 1;
    }

    fn cycle_at(&self, t: DateTime<Utc>) -> Option<usize> {
        let i = self.schedule.partition_point(|c| c.start <= t);
        (i > 0 && self.schedule[i - 1].contains(t)).then(|| i - 1)
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
