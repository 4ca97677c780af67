//! The write path: validated events in, one atomic sled batch out, flushed before the
//! caller may acknowledge anything.
use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ledger_core::refund::unknown_after_wait;
use ledger_core::team::{Applied, RefundLookup, Reject};
use ledger_core::{AccountChange, AccountEvent, Catalog, Effects, Entry, Event, EventId, RefundTarget, Team, TeamId};
use tracing::{debug, warn};

use crate::commit::{self, InFlight, Staged};
use crate::fs::ensure_space;
use crate::index::{fingerprint, id_hash, Index};
use crate::parked::ParkedRefunds;
pub use crate::parked::{refund_wait, Parked};
use crate::store::Store;
pub use crate::submission::{BatchReport, Outcome, Source, Submission};
use crate::tables::checkpoints::{self, Counts};
use crate::tables::conflicts::{self, Conflict};
use crate::tables::entries::{self, Hash, StoredEntry};
use crate::tables::offsets::{self, InputPosition};
use crate::tables::outbox::{self, OutboxKind, OutboxMsg};
use crate::tables::{self, Projection, Row};
use crate::{Error, Result};

mod open;
mod replicate;

/// Refunds one team may have waiting for their image; past it a refund is refused at
/// once (`refund_unknown_event`), so parked refunds stay bounded.
pub const PARKED_PER_TEAM_MAX: usize = 10_000;

#[derive(Clone, Copy)]
struct Head {
    seq: u64,
    hash: Hash,
}

/// What the writer counts per team beside its state (a checkpoint keeps them).
#[derive(Debug, Clone, Copy, Default)]
struct Marks {
    events: u64,
    alerts: u64,
    invoices: u64,
    /// Entries appended since the team's last checkpoint (or folded past it at open).
    since_checkpoint: u64,
}

/// The writer: the store plus every team's folded state, rebuilt from the ledger (from
/// each team's checkpoint on) on open.
pub struct Ledger {
    store: Store,
    catalog: Catalog,
    teams: HashMap<TeamId, Team>,
    heads: HashMap<TeamId, Head>,
    marks: HashMap<TeamId, Marks>,
    index: Index,
    next_outbox: u64,
    conflicts: u64,
    /// Refunds waiting for the image they name.
    parked: ParkedRefunds,
    /// The batch being written by a committer thread (`submit_batch_deferred`).
    in_flight: Option<InFlight>,
    /// Where batches go besides the store: the changelog, first, once `replicate` was
    /// called.
    changelog: commit::Changelog,
}

impl Drop for Ledger {
    /// A batch still in flight is finished (a writer dropped after an error has none).
    fn drop(&mut self) {
        if let Some(in_flight) = self.in_flight.take() {
            if let Err(e) = in_flight.finish() {
                warn!(error = %e, "The last batch handed to the committer failed.");
            }
        }
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("dir", &self.store.dir).field("teams", &self.teams.len()).finish()
    }
}

/// An event already in the ledger (or earlier in this batch), read back from its entry.
struct Known {
    team: TeamId,
    seq: u64,
    entry: Entry,
}

impl Known {
    fn fingerprint(&self) -> [u8; 16] {
        fingerprint(&self.entry.as_event().expect("indexed entries record events"))
    }

    /// What a refund of this event needs, if it is an image event.
    fn refund_target(&self) -> Option<RefundTarget> {
        match &self.entry {
            Entry::Image(e) => Some(RefundTarget {
                seq: self.seq,
                occurred_at: e.occurred_at,
                api: e.api,
                images: e.images,
                sandbox: e.sandbox,
            }),
            _ => None,
        }
    }
}

impl Ledger {
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Where an event is in the ledger, if it was appended.
    pub fn find(&self, id: &EventId) -> Result<Option<(TeamId, u64)>> {
        Ok(self.lookup(&Staged::default(), id, id_hash(id.as_str()))?.map(|k| (k.team, k.seq)))
    }

    pub fn conflicts(&self) -> u64 {
        self.conflicts
    }

    /// Refunds waiting for the event they name.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// Appends a batch: dedup, validation and the core fold per event, then one atomic
    /// write of entries, index, heads, projections, offsets and outbox, then `flush()`.
    /// On `Err` nothing may be acknowledged and the writer must be dropped.
    pub fn submit_batch(&mut self, submissions: Vec<Submission>) -> Result<BatchReport> {
        let report = self.submit_batch_deferred(submissions)?;
        self.wait_durable()?;
        Ok(report)
    }

    /// `submit_batch` whose write and flush run on a committer thread while the caller
    /// folds the next batch: the report is of a batch that is **not yet durable**. It is
    /// once the next `submit_batch_deferred` or `wait_durable` returns `Ok`; acknowledge
    /// nothing of it before. On `Err` (of this batch or of the one before it) nothing
    /// unacknowledged may be acknowledged and the writer must be dropped.
    pub fn submit_batch_deferred(&mut self, submissions: Vec<Submission>) -> Result<BatchReport> {
        let mut positions: HashMap<String, u64> = HashMap::new();
        for sub in &submissions {
            if let Some(stream) = &sub.source.stream {
                positions.insert(stream.clone(), sub.source.offset + 1);
            }
        }
        let positions: Vec<InputPosition> =
            positions.into_iter().map(|(source, next)| InputPosition { source, next, last: None }).collect();
        self.submit_batch_with_deferred(submissions, &positions, |_, _| Vec::new())
    }

    /// A clean close: every batch durable, and the index's events in memory moved to a
    /// run on disk (when there are enough), so the next open does not rebuild them from
    /// the ledger's segments. A ledger dropped without it (a crash) opens as before.
    pub fn close(&mut self) -> Result<()> {
        self.wait_durable()?;
        if self.index.spill_on_close() {
            self.index.spill(&self.store)?;
        }
        Ok(())
    }

    /// Waits until every batch submitted so far is written and flushed.
    pub fn wait_durable(&mut self) -> Result<()> {
        match self.in_flight.take() {
            Some(in_flight) => in_flight.finish(),
            None => Ok(()),
        }
    }

    /// `submit_batch` with explicit source positions (the next offset of each stream and
    /// the fingerprint of the record before it, covering records that never became
    /// submissions) and outbox messages the caller derives from
    /// the outcomes (dead letters), all in the same atomic write.
    pub fn submit_batch_with(
        &mut self,
        submissions: Vec<Submission>,
        positions: &[InputPosition],
        extra: impl FnOnce(&[Outcome], &[(Parked, Outcome)]) -> Vec<OutboxMsg>,
    ) -> Result<BatchReport> {
        let report = self.submit_batch_with_deferred(submissions, positions, extra)?;
        self.wait_durable()?;
        Ok(report)
    }

    /// `submit_batch_with`, written and flushed by a committer thread: durable once
    /// `wait_durable` returns `Ok` (see `submit_batch_deferred`). The service hands each
    /// partition ledger's batch over, so their flushes run side by side.
    pub fn submit_batch_with_deferred(
        &mut self,
        submissions: Vec<Submission>,
        positions: &[InputPosition],
        extra: impl FnOnce(&[Outcome], &[(Parked, Outcome)]) -> Vec<OutboxMsg>,
    ) -> Result<BatchReport> {
        let staged = self.stage_batch(submissions, positions, extra)?;
        self.commit_deferred(staged)
    }

    /// Dedup, validation and the fold of every submission, staged for one write.
    fn stage_batch(
        &mut self,
        submissions: Vec<Submission>,
        positions: &[InputPosition],
        extra: impl FnOnce(&[Outcome], &[(Parked, Outcome)]) -> Vec<OutboxMsg>,
    ) -> Result<Staged> {
        if self.index.spill_due() {
            // The runs cover whole durable segments: the batch in flight first.
            self.wait_durable()?;
            self.index.spill(&self.store)?;
        }
        let mut staged = Staged::default();
        for sub in submissions {
            let outcome = self.submit_one(&mut staged, sub)?;
            staged.report.outcomes.push(outcome);
        }
        for position in positions {
            offsets::insert(&mut staged.batch, position);
        }
        for msg in extra(&staged.report.outcomes, &staged.report.settled) {
            self.stage_outbox(&mut staged, &msg);
        }
        self.stage_checkpoints(&mut staged);
        Ok(staged)
    }

    /// Stages a checkpoint of each team of the batch that is due one (`checkpoints::due`).
    fn stage_checkpoints(&mut self, staged: &mut Staged) {
        for block in &staged.blocks {
            let id = &block.team;
            let team = &self.teams[id];
            let marks = self.marks.get_mut(id).expect("a team with entries has marks");
            if !checkpoints::due(marks.since_checkpoint, team.pending_len()) {
                continue;
            }
            let head = self.heads[id];
            debug_assert_eq!(team.last_seq(), head.seq);
            let counts = Counts { seq: head.seq, events: marks.events, alerts: marks.alerts, invoices: marks.invoices };
            checkpoints::insert(&mut staged.batch, counts, &head.hash, team);
            marks.since_checkpoint = 0;
        }
    }

    /// Closes every cycle whose end + grace ≤ `until`, in one batch, and gives up the
    /// parked refunds `until` has passed by `refund_wait()`.
    pub fn close_until(&mut self, until: DateTime<Utc>) -> Result<BatchReport> {
        self.close_until_with(until, |_| Vec::new())
    }

    /// `close_until` with outbox messages derived from the refunds it gives up (dead
    /// letters), in the same atomic write.
    pub fn close_until_with(
        &mut self,
        until: DateTime<Utc>,
        extra: impl FnOnce(&[(Parked, Outcome)]) -> Vec<OutboxMsg>,
    ) -> Result<BatchReport> {
        let mut staged = Staged::default();
        self.give_up(&mut staged, None, until);
        for msg in extra(&staged.report.settled) {
            self.stage_outbox(&mut staged, &msg);
        }
        let mut ids: Vec<TeamId> = self.teams.keys().cloned().collect();
        ids.sort();
        for id in ids {
            let team = self.teams.get_mut(&id).expect("listed");
            let applied = team.close_until(&self.catalog, until);
            self.stage(&mut staged, &id, applied);
        }
        self.stage_checkpoints(&mut staged);
        self.commit(staged)
    }

    fn submit_one(&mut self, staged: &mut Staged, sub: Submission) -> Result<Outcome> {
        let Submission { event, source } = sub;
        let hash = id_hash(event.event_id().as_str());
        if let Some(existing) = self.lookup(staged, event.event_id(), hash)? {
            if existing.fingerprint() == fingerprint(&event) {
                return Ok(Outcome::Duplicate { seq: existing.seq });
            }
            self.record_conflict(staged, &event, &existing);
            return Ok(Outcome::Conflict { team: existing.team.to_string(), seq: existing.seq });
        }
        let refund = match &event {
            Event::Account(a) => match &a.change {
                AccountChange::QualityRefund { original_event_id, .. } => {
                    match self.resolve_refund(staged, &a.team_id, original_event_id)? {
                        Some(lookup) => Some(lookup),
                        None => return Ok(self.park(staged, a.clone(), source)),
                    }
                }
                _ => None,
            },
            Event::Image(_) => None,
        };
        if !self.teams.contains_key(event.team_id()) {
            let id = event.team_id().clone();
            self.teams.insert(id.clone(), Team::new(id));
        }
        let team_id = event.team_id().clone();
        let team = self.teams.get_mut(&team_id).expect("inserted above");
        match team.submit(&self.catalog, event, refund) {
            Ok(applied) => {
                let seq = applied.last().expect("an accepted event appends").seq;
                let appended_id = applied.last().and_then(|a| a.entry.event_id().cloned());
                self.index.insert(hash, &team_id, seq)?;
                self.stage(staged, &team_id, applied);
                if !self.parked.is_empty() {
                    self.unpark(staged, appended_id)?;
                    let clock = self.teams[&team_id].clock().expect("a team with entries has a clock");
                    self.give_up(staged, Some(&team_id), clock);
                }
                Ok(Outcome::Appended { seq })
            }
            Err(reject) => {
                // A refusal leaves nothing behind, not even an empty team.
                if team.last_seq() == 0 {
                    self.teams.remove(&team_id);
                }
                Ok(Outcome::Rejected(reject))
            }
        }
    }

    /// Keeps a refund of an unknown event until that event arrives (a repeat of a
    /// parked refund replaces it: same key), at most `PARKED_PER_TEAM_MAX` per team.
    fn park(&mut self, staged: &mut Staged, event: AccountEvent, source: Source) -> Outcome {
        let clock = self.teams.get(&event.team_id).and_then(Team::clock);
        if clock.is_some_and(|c| event.occurred_at + refund_wait() <= c) {
            // The team's time is already past the wait: nothing to wait for.
            return Outcome::Rejected(unknown_after_wait(&event));
        }
        if self.parked.waiting(&event.team_id) >= PARKED_PER_TEAM_MAX {
            let detail = format!("{PARKED_PER_TEAM_MAX} refunds of the team already wait for their image");
            return Outcome::Rejected(Reject::new(ledger_core::RejectCode::RefundUnknownEvent, detail));
        }
        let parked = Parked { event, stream: source.stream, offset: source.offset };
        tables::parked::insert(&mut staged.batch, &parked);
        debug!(team_id = %parked.event.team_id, event_id = %parked.event.event_id, original = %parked.original(), "Parked a refund until its event arrives.");
        self.parked.insert(parked);
        Outcome::Parked
    }

    /// Submits the refunds that waited for the event just appended.
    fn unpark(&mut self, staged: &mut Staged, appended: Option<EventId>) -> Result<()> {
        let Some(id) = appended else { return Ok(()) };
        for p in self.parked.take_for(&id) {
            tables::parked::remove(&mut staged.batch, &p);
            let source = Source { stream: p.stream.clone(), offset: p.offset };
            let outcome = self.submit_one(staged, Submission { event: Event::Account(p.event.clone()), source })?;
            staged.report.settled.push((p, outcome));
        }
        Ok(())
    }

    /// Gives up the parked refunds (of `team`, or all) that `until` passed by the wait.
    fn give_up(&mut self, staged: &mut Staged, team: Option<&TeamId>, until: DateTime<Utc>) {
        for p in self.parked.take_due(team, until) {
            tables::parked::remove(&mut staged.batch, &p);
            let reject = unknown_after_wait(&p.event);
            warn!(team_id = %p.event.team_id, event_id = %p.event.event_id, detail = %reject.detail, "Gave up a parked refund.");
            staged.report.settled.push((p, Outcome::Rejected(reject)));
        }
    }

    /// Finds an event by id through the index, confirmed on the entry itself (in this
    /// batch or in the store): a 64-bit hash collision is never taken for a match.
    fn lookup(&self, staged: &Staged, id: &EventId, hash: u64) -> Result<Option<Known>> {
        for loc in self.index.candidates(hash)? {
            let team = self.index.team(loc.team);
            // This batch, then the one in flight, then the store: the first that has it.
            let entry = match staged.entry(team, loc.seq)? {
                Some(entry) => entry,
                None => match self.in_flight.as_ref().map(|f| f.entry(team, loc.seq)).transpose()?.flatten() {
                    Some(entry) => entry,
                    None => self.store.read_entry(team.as_str(), loc.seq)?.ok_or_else(|| {
                        Error::Corrupt(format!(
                            "team {team} seq {}: indexed for event {id} but not in the ledger",
                            loc.seq
                        ))
                    })?,
                },
            };
            if entry.event_id() == Some(id) {
                return Ok(Some(Known { team: team.clone(), seq: loc.seq, entry }));
            }
        }
        Ok(None)
    }

    /// What a refund's original event is, or `None` when no event has that id (yet).
    fn resolve_refund(&self, staged: &Staged, team: &TeamId, original: &EventId) -> Result<Option<RefundLookup>> {
        let Some(known) = self.lookup(staged, original, id_hash(original.as_str()))? else {
            return Ok(None);
        };
        if known.team != *team {
            return Ok(Some(RefundLookup::OtherTeam(known.team)));
        }
        Ok(Some(known.refund_target().map_or(RefundLookup::NotFound, RefundLookup::Found)))
    }

    fn record_conflict(&mut self, staged: &mut Staged, event: &Event, existing: &Known) {
        self.conflicts += 1;
        let team = event.team_id().as_str();
        let conflict = Conflict {
            team,
            event_id: event.event_id().as_str(),
            existing_team: existing.team.as_str(),
            existing_seq: existing.seq,
        };
        conflicts::insert(&mut staged.batch, self.conflicts, &conflict);
        debug!(team_id = team, event_id = %event.event_id(), existing_seq = existing.seq, "Recorded a conflicting duplicate.");
    }

    /// Chains and stages entries, index records, alerts and invoices one team produced.
    fn stage(&mut self, staged: &mut Staged, team_id: &TeamId, applied: Vec<Applied>) {
        if applied.is_empty() {
            return;
        }
        let mut head = self.heads.get(team_id).copied().unwrap_or(Head { seq: 0, hash: [0; 32] });
        let block = staged.block_for(team_id, head.seq + 1);
        // The team's marks exist from here on (one key clone per new team, not per entry).
        if !self.marks.contains_key(team_id) {
            self.marks.insert(team_id.clone(), Marks::default());
        }
        for a in applied {
            assert_eq!(a.seq, head.seq + 1, "team {team_id}: entries are dense");
            let body = entries::encode_entry(&a.entry);
            let hash = entries::chain(&head.hash, a.seq, &body);
            head = Head { seq: a.seq, hash };
            let block = &mut staged.blocks[block];
            let marks = self.marks.get_mut(team_id).expect("inserted above");
            marks.since_checkpoint += 1;
            if let Some(id) = a.entry.event_id() {
                block.events.push((id.to_string(), a.seq));
                marks.events += 1;
            }
            block.entries.push(StoredEntry { seq: a.seq, hash, body });
            staged.report.entries += 1;
            self.stage_effects(staged, team_id, a.effects, &hash);
        }
        match self.heads.get_mut(team_id) {
            Some(h) => *h = head,
            None => {
                self.heads.insert(team_id.clone(), head);
            }
        }
    }

    /// Stages the alerts and the invoice an entry raised (its chain hash is `hash`).
    fn stage_effects(&mut self, staged: &mut Staged, team_id: &TeamId, effects: Effects, hash: &Hash) {
        // Format 3 keeps the message it publishes; the formats before keep the JSON
        // (the builds that wrote them publish it).
        let messages = self.store.format() >= 3;
        let alerts_before = self.marks.get(team_id).expect("`stage` inserted the team's marks").alerts;
        for projection in tables::projections(team_id.as_str(), alerts_before, effects, hash) {
            let marks = self.marks.get_mut(team_id).expect("`stage` inserted the team's marks");
            match projection {
                Projection::Alert { row, alert } => {
                    marks.alerts += 1;
                    staged.report.alerts += 1;
                    let message = messages.then(|| ledger_proto::alert_message(&alert));
                    self.stage_projection(staged, team_id, OutboxKind::Alert, row, message);
                }
                Projection::Invoice { row, invoice } => {
                    marks.invoices += 1;
                    staged.report.invoices += 1;
                    let message = messages.then(|| ledger_proto::invoice_message(&invoice, &row.json, &row.id));
                    self.stage_projection(staged, team_id, OutboxKind::Invoice, row, message);
                }
            }
        }
    }

    /// Stages a projection row and the outbox message that publishes it: the encoded
    /// message (format 3) or the row's JSON.
    fn stage_projection(
        &mut self,
        staged: &mut Staged,
        team_id: &TeamId,
        kind: OutboxKind,
        row: Row,
        message: Option<Vec<u8>>,
    ) {
        staged.batch.insert(row.key, row.json.as_bytes());
        let (json, payload) = match message {
            Some(bytes) => (String::new(), bytes),
            None => (row.json, Vec::new()),
        };
        let msg = OutboxMsg { kind, key: team_id.to_string(), id: row.id, json, payload, headers: Vec::new() };
        self.stage_outbox(staged, &msg);
    }

    fn stage_outbox(&mut self, staged: &mut Staged, msg: &OutboxMsg) {
        outbox::insert(&mut staged.batch, self.next_outbox, msg);
        self.next_outbox += 1;
    }

    fn commit(&mut self, staged: Staged) -> Result<BatchReport> {
        let report = self.commit_deferred(staged)?;
        self.wait_durable()?;
        Ok(report)
    }

    /// Hands the batch to a committer thread once the one before it is durable: it
    /// encodes the blocks and the index segment, writes the batch atomically and
    /// flushes. The disk must hold this batch and the one in flight.
    fn commit_deferred(&mut self, mut staged: Staged) -> Result<BatchReport> {
        let bytes = staged.bytes();
        let in_flight_bytes = self.in_flight.as_ref().map_or(0, |f| f.bytes);
        ensure_space(self.store.dir(), bytes + in_flight_bytes)?;
        self.wait_durable()?;
        let blocks = Arc::new(std::mem::take(&mut staged.blocks));
        let block_of = std::mem::take(&mut staged.block_of);
        let segment_no = blocks.iter().any(|b| !b.events.is_empty()).then(|| {
            self.index.next_segment += 1;
            self.index.next_segment - 1
        });
        let done = commit::spawn(&self.store, Arc::clone(&blocks), segment_no, staged.batch, self.changelog.clone())?;
        self.in_flight = Some(InFlight { blocks, block_of, bytes, done });
        Ok(std::mem::take(&mut staged.report))
    }
}
