//! The fast path for rule tests: the scenario language of `support` run against the
//! pure core (`ledger_core::Team`s in memory, no sled). The store's submission rules
//! around the fold (an id seen before is a duplicate or a conflict, a refund is resolved
//! to its image, parked until it comes, given up after the wait) are kept in a few maps.
//! `support::run_scenario` runs every scenario both ways and asserts they agree, so
//! this path stays honest; alone it runs a rule in well under a millisecond.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use ledger_core::refund::{refund_wait, unknown_after_wait};
use ledger_core::team::{Applied, RefundLookup};
use ledger_core::{AccountChange, AccountEvent, Catalog, Event, EventId, RefundTarget, Reject, Team, TeamId};
use ledger_proto::parse_json_line;

use crate::support::{render_invoice, step, Step};

/// What became of one submission, as the store reports it.
enum Outcome {
    Appended,
    Duplicate,
    Conflict,
    Rejected(Reject),
    Parked,
}

#[derive(Default)]
struct Books {
    catalog: Option<Catalog>,
    teams: BTreeMap<TeamId, Team>,
    /// Every appended event by id: its team, sequence number and the event itself.
    index: HashMap<EventId, (TeamId, u64, Event)>,
    /// Refunds waiting for their image, in arrival order.
    parked: Vec<AccountEvent>,
    invoices: BTreeMap<String, Vec<String>>,
    alerts: BTreeMap<String, Vec<String>>,
    /// Parked refunds settled by the last call: `(refund id, outcome)`.
    settled: Vec<(EventId, Outcome)>,
}

impl Books {
    fn submit(&mut self, event: Event) -> Outcome {
        if let Some((_, _, known)) = self.index.get(event.event_id()) {
            return if *known == event { Outcome::Duplicate } else { Outcome::Conflict };
        }
        let mut lookup = None;
        if let Event::Account(a @ AccountEvent { change: AccountChange::QualityRefund { original_event_id, .. }, .. }) =
            &event
        {
            match self.resolve(&a.team_id, original_event_id) {
                Some(found) => lookup = Some(found),
                None => return self.park(a.clone()),
            }
        }
        let team_id = event.team_id().clone();
        let team = self.teams.entry(team_id.clone()).or_insert_with(|| Team::new(team_id.clone()));
        let catalog = self.catalog.as_ref().expect("set");
        match team.submit(catalog, event.clone(), lookup) {
            Ok(applied) => {
                let seq = applied.last().expect("an event appends").seq;
                let clock = team.clock().expect("a team with entries has a clock");
                self.record(&team_id, applied);
                self.index.insert(event.event_id().clone(), (team_id.clone(), seq, event.clone()));
                self.unpark(event.event_id());
                self.give_up(Some(&team_id), clock);
                Outcome::Appended
            }
            Err(reject) => Outcome::Rejected(reject),
        }
    }

    fn resolve(&self, team: &TeamId, original: &EventId) -> Option<RefundLookup> {
        let (owner, seq, event) = self.index.get(original)?;
        if owner != team {
            return Some(RefundLookup::OtherTeam(owner.clone()));
        }
        Some(match event {
            Event::Image(e) => RefundLookup::Found(RefundTarget {
                seq: *seq,
                occurred_at: e.occurred_at,
                api: e.api,
                images: e.images,
                sandbox: e.sandbox,
            }),
            Event::Account(_) => RefundLookup::NotFound,
        })
    }

    fn park(&mut self, refund: AccountEvent) -> Outcome {
        let clock = self.teams.get(&refund.team_id).and_then(Team::clock);
        if clock.is_some_and(|c| refund.occurred_at + refund_wait() <= c) {
            return Outcome::Rejected(unknown_after_wait(&refund));
        }
        self.parked.retain(|p| (&p.team_id, &p.event_id) != (&refund.team_id, &refund.event_id));
        self.parked.push(refund);
        Outcome::Parked
    }

    /// Submits the refunds that waited for `appended`, right after it.
    fn unpark(&mut self, appended: &EventId) {
        let (waiting, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| matches!(&p.change, AccountChange::QualityRefund { original_event_id, .. } if original_event_id == appended));
        self.parked = rest;
        for refund in waiting {
            let id = refund.event_id.clone();
            let outcome = self.submit(Event::Account(refund));
            self.settled.push((id, outcome));
        }
    }

    /// Gives up the refunds (of `team`, or all) whose wait `until` has passed, in
    /// `(occurred_at, refund id)` order.
    fn give_up(&mut self, team: Option<&TeamId>, until: DateTime<Utc>) {
        let (mut due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| team.is_none_or(|t| *t == p.team_id) && p.occurred_at + refund_wait() <= until);
        self.parked = rest;
        due.sort_by(|a, b| (a.occurred_at, &a.event_id).cmp(&(b.occurred_at, &b.event_id)));
        for refund in due {
            self.settled.push((refund.event_id.clone(), Outcome::Rejected(unknown_after_wait(&refund))));
        }
    }

    fn close(&mut self, until: DateTime<Utc>) {
        self.give_up(None, until);
        let ids: Vec<TeamId> = self.teams.keys().cloned().collect();
        for id in ids {
            let catalog = self.catalog.as_ref().expect("set");
            let applied = self.teams.get_mut(&id).expect("listed").close_until(catalog, until);
            self.record(&id, applied);
        }
    }

    /// Keeps what the fold published: invoices (as the store renders them) and alerts.
    fn record(&mut self, team: &TeamId, applied: Vec<Applied>) {
        for a in applied {
            if let Some(invoice) = a.effects.invoice {
                self.invoices.entry(team.to_string()).or_default().push(invoice.to_json());
            }
            for alert in a.effects.alerts {
                let line = format!(
                    "alert {team} {} g{} {}% by {}",
                    alert.allowance, alert.bucket_generation, alert.threshold_percent, alert.triggering_event_id
                );
                self.alerts.entry(team.to_string()).or_default().push(line);
            }
        }
    }
}

/// Runs a scenario through the pure core and renders it exactly as
/// `support::run_scenario` renders the store's run.
pub fn run_scenario_core(script: &str) -> String {
    let mut books = Books { catalog: Some(Catalog::builtin()), ..Books::default() };
    let mut out = String::new();
    let mut teams = BTreeSet::new();
    for (n, line) in script.lines().map(str::trim).filter(|l| !l.is_empty()).enumerate() {
        match step(n, line) {
            Step::Close(until) => books.close(until.parse().unwrap()),
            Step::Line(json) => {
                let event = parse_json_line(&json).unwrap_or_else(|e| panic!("{line}: {e}"));
                let id = event.event_id().to_string();
                teams.insert(event.team_id().to_string());
                match books.submit(event) {
                    Outcome::Appended => {}
                    Outcome::Duplicate => writeln!(out, "duplicate {id}").unwrap(),
                    Outcome::Conflict => writeln!(out, "conflict {id}").unwrap(),
                    Outcome::Rejected(r) => writeln!(out, "reject {id} {}", r.code).unwrap(),
                    Outcome::Parked => writeln!(out, "parked {id}").unwrap(),
                }
            }
        }
        for (id, outcome) in std::mem::take(&mut books.settled) {
            match outcome {
                Outcome::Rejected(r) => writeln!(out, "reject {id} {}", r.code).unwrap(),
                _ => writeln!(out, "unparked {id}").unwrap(),
            }
        }
    }
    for team in teams {
        for invoice in books.invoices.get(&team).into_iter().flatten() {
            out.push_str(&render_invoice(invoice));
        }
        for alert in books.alerts.get(&team).into_iter().flatten() {
            writeln!(out, "{alert}").unwrap();
        }
        if let Some(state) = books.teams.get_mut(&TeamId::new(team.clone()).unwrap()) {
            let catalog = books.catalog.as_ref().expect("set");
            crate::support::render_unplanned(&mut out, &team, &state.balance(catalog, None).exceptions);
        }
    }
    out
}
