//! Refunds that overtook the image event they name (the two input topics have no order
//! between them): kept until that event is appended, or given up after a wait measured
//! in the team's own time. The ledger records a refund only when it applies; this is
//! input buffering, persisted under `P` in the same batches as the entries.
use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use ledger_core::{AccountChange, AccountEvent, EventId, TeamId};
use serde::{Deserialize, Serialize};

pub use ledger_core::refund::refund_wait;

/// A `QualityRefund` that arrived before the image event it names. Kept in the store
/// (written in the batch that took it, with the source position) and submitted right
/// after that event is appended; given up once the team's clock passes the refund by
/// `refund_wait()`, or when `close --until` passes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    pub event: AccountEvent,
    /// Where it came from (`topic/partition` and offset for Kafka, a line for a file).
    pub stream: Option<String>,
    pub offset: u64,
}

impl Parked {
    pub fn original(&self) -> &EventId {
        match &self.event.change {
            AccountChange::QualityRefund { original_event_id, .. } => original_event_id,
            _ => unreachable!("only refunds are parked"),
        }
    }

    /// When the wait ends, in the team's time.
    fn deadline(&self) -> DateTime<Utc> {
        self.event.occurred_at + refund_wait()
    }
}

/// Parked refunds by the event they wait for, and each team's deadlines in order, so an
/// append costs a map lookup and a look at the team's earliest deadline.
#[derive(Debug, Default)]
pub(crate) struct ParkedRefunds {
    by_original: HashMap<EventId, Vec<Parked>>,
    /// (team, refund id) → the event it waits for.
    original_of: HashMap<(TeamId, EventId), EventId>,
    deadlines: HashMap<TeamId, BTreeSet<(DateTime<Utc>, EventId)>>,
}

impl ParkedRefunds {
    pub fn len(&self) -> usize {
        self.deadlines.values().map(BTreeSet::len).sum()
    }

    /// Refunds of `team` waiting.
    pub fn waiting(&self, team: &TeamId) -> usize {
        self.deadlines.get(team).map_or(0, BTreeSet::len)
    }

    pub fn is_empty(&self) -> bool {
        self.deadlines.is_empty()
    }

    /// Keeps `p`; a refund with the same id that was waiting is replaced (same key).
    pub fn insert(&mut self, p: Parked) {
        self.remove_refund(&p.event.team_id, &p.event.event_id);
        let team = self.deadlines.entry(p.event.team_id.clone()).or_default();
        team.insert((p.deadline(), p.event.event_id.clone()));
        self.original_of.insert((p.event.team_id.clone(), p.event.event_id.clone()), p.original().clone());
        self.by_original.entry(p.original().clone()).or_default().push(p);
    }

    /// The refunds waiting for `original`, no longer parked.
    pub fn take_for(&mut self, original: &EventId) -> Vec<Parked> {
        let waiting = self.by_original.remove(original).unwrap_or_default();
        for p in &waiting {
            self.original_of.remove(&(p.event.team_id.clone(), p.event.event_id.clone()));
            self.forget_deadline(&p.event.team_id, &(p.deadline(), p.event.event_id.clone()));
        }
        waiting
    }

    /// The refunds (of `team`, or of every team) whose wait `until` has passed, no longer
    /// parked, in `(occurred_at, refund id)` order.
    pub fn take_due(&mut self, team: Option<&TeamId>, until: DateTime<Utc>) -> Vec<Parked> {
        let teams: Vec<TeamId> = match team {
            Some(t) if self.deadlines.contains_key(t) => vec![t.clone()],
            Some(_) => return Vec::new(),
            None => self.deadlines.keys().cloned().collect(),
        };
        let mut due = Vec::new();
        for team in teams {
            let deadlines = self.deadlines.get_mut(&team).expect("listed");
            while deadlines.first().is_some_and(|(at, _)| *at <= until) {
                let (_, refund) = deadlines.pop_first().expect("checked");
                due.push((team.clone(), refund));
            }
        }
        let mut out: Vec<Parked> = due.iter().filter_map(|(team, refund)| self.remove_refund(team, refund)).collect();
        self.deadlines.retain(|_, d| !d.is_empty());
        out.sort_by(|a, b| (a.event.occurred_at, &a.event.event_id).cmp(&(b.event.occurred_at, &b.event.event_id)));
        out
    }

    /// Removes refund `id` of `team` from both maps, if it is parked.
    fn remove_refund(&mut self, team: &TeamId, id: &EventId) -> Option<Parked> {
        let original = self.original_of.remove(&(team.clone(), id.clone()))?;
        let waiting = self.by_original.get_mut(&original).expect("indexed refunds are parked");
        let i = waiting.iter().position(|p| p.event.team_id == *team && p.event.event_id == *id).expect("indexed");
        let p = waiting.remove(i);
        if waiting.is_empty() {
            self.by_original.remove(&original);
        }
        self.forget_deadline(team, &(p.deadline(), p.event.event_id.clone()));
        Some(p)
    }

    fn forget_deadline(&mut self, team: &TeamId, deadline: &(DateTime<Utc>, EventId)) {
        if let Some(d) = self.deadlines.get_mut(team) {
            d.remove(deadline);
            if d.is_empty() {
                self.deadlines.remove(team);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refund(team: &str, id: &str, original: &str, at: &str) -> Parked {
        Parked {
            event: AccountEvent {
                event_id: EventId::new(id).unwrap(),
                team_id: TeamId::new(team).unwrap(),
                occurred_at: at.parse().unwrap(),
                change: AccountChange::QualityRefund {
                    original_event_id: EventId::new(original).unwrap(),
                    reason: String::new(),
                },
            },
            stream: None,
            offset: 0,
        }
    }

    fn ids(parked: &[Parked]) -> Vec<&str> {
        parked.iter().map(|p| p.event.event_id.as_str()).collect()
    }

    #[test]
    fn refunds_leave_when_their_event_comes_or_their_team_time_passes_the_wait() {
        let mut parked = ParkedRefunds::default();
        parked.insert(refund("t1", "r1", "e1", "2026-04-03T00:00:00Z"));
        parked.insert(refund("t1", "r2", "e2", "2026-04-02T00:00:00Z"));
        parked.insert(refund("t2", "r3", "e1", "2026-04-01T00:00:00Z"));
        // A repeat of r2 (same key) replaces it, with its own deadline.
        parked.insert(refund("t1", "r2", "e2", "2026-04-02T12:00:00Z"));
        assert_eq!(parked.len(), 3);
        assert_eq!(ids(&parked.take_for(&EventId::new("e1").unwrap())), ["r1", "r3"]);
        assert_eq!(parked.len(), 1);
        let t1 = TeamId::new("t1").unwrap();
        assert!(parked.take_due(Some(&t1), "2026-04-03T11:59:59Z".parse().unwrap()).is_empty());
        assert_eq!(ids(&parked.take_due(Some(&t1), "2026-04-03T12:00:00Z".parse().unwrap())), ["r2"]);
        assert!(parked.is_empty());
    }

    #[test]
    fn a_close_takes_every_team_due_in_time_order() {
        let mut parked = ParkedRefunds::default();
        parked.insert(refund("t2", "r2", "e2", "2026-04-02T00:00:00Z"));
        parked.insert(refund("t1", "r1", "e1", "2026-04-01T00:00:00Z"));
        parked.insert(refund("t3", "r3", "e3", "2026-04-20T00:00:00Z"));
        assert_eq!(ids(&parked.take_due(None, "2026-04-05T00:00:00Z".parse().unwrap())), ["r1", "r2"]);
        assert_eq!(parked.len(), 1);
        assert!(parked.take_for(&EventId::new("e1").unwrap()).is_empty());
    }
}
