//! `Ledger::open`: every team's state rebuilt from its checkpoint and the entries after
//! it, the stored projections those entries raised checked, the index loaded.
use std::collections::HashMap;

use ledger_core::{Effects, Entry, TeamId};
use tracing::info;

use super::{Head, Ledger, Marks};
use crate::commit;
use crate::index::Index;
use crate::parked::ParkedRefunds;
use crate::replay::ProjectionCheck;
use crate::store::Store;
use crate::tables::checkpoints::Counts;
use crate::tables::entries::StoredEntry;
use crate::tables::outbox;
use crate::tables::{self, Projection};
use crate::{Error, Result};

/// What `Ledger::open` gathers while it folds: counts, each team's marks, and the
/// stored projections the fold past the checkpoints produces, checked.
#[derive(Default)]
struct OpenAcc {
    /// Entries folded (past the checkpoints) and entries the checkpoints stood for.
    folded: u64,
    resumed: u64,
    marks: HashMap<TeamId, Marks>,
    projections: ProjectionCheck,
}

impl OpenAcc {
    /// A team resumed at its checkpoint: the projections before it count as checked
    /// (`verify` folds them again from the first entry).
    fn resume(&mut self, team: &TeamId, counts: Counts) {
        self.resumed += counts.seq;
        self.projections.rows += counts.alerts + counts.invoices;
        let Counts { events, alerts, invoices, .. } = counts;
        self.marks.insert(team.clone(), Marks { events, alerts, invoices, since_checkpoint: 0 });
    }

    fn visit(
        &mut self,
        tree: &sled::Tree,
        team: &TeamId,
        stored: &StoredEntry,
        entry: &Entry,
        effects: Effects,
    ) -> Result<()> {
        self.folded += 1;
        let id = team.as_str();
        let marks = self.marks.entry(team.clone()).or_default();
        marks.since_checkpoint += 1;
        marks.events += u64::from(entry.event_id().is_some());
        for projection in tables::projections(id, marks.alerts, effects, &stored.hash) {
            match projection {
                Projection::Alert { row, .. } => {
                    let n = marks.alerts;
                    self.projections.check(tree, &row.key, row.json.as_bytes(), || format!("team {id} alert {n}"))?;
                    marks.alerts += 1;
                }
                Projection::Invoice { row, invoice } => {
                    marks.invoices += 1;
                    let period = &invoice.period.start;
                    self.projections
                        .check(tree, &row.key, row.json.as_bytes(), || format!("team {id} invoice {period}"))?;
                }
            }
        }
        Ok(())
    }
}

impl Ledger {
    /// Opens the store and rebuilds every team's state: from its checkpoint, folding the
    /// entries after it (every entry of a team without one).
    pub fn open(store: Store) -> Result<Ledger> {
        let catalog = store.catalog()?;
        let started = std::time::Instant::now();
        // The index (events after its last spill) loads beside the teams' fold: they
        // read different tables.
        let (index, fold) = std::thread::scope(|s| {
            let index = s.spawn(|| {
                let started = std::time::Instant::now();
                Index::load(&store).map(|index| (index, started.elapsed()))
            });
            let fold = store.fold_resumed(
                &catalog,
                |acc: &mut OpenAcc, team, counts| acc.resume(team, counts),
                |acc: &mut OpenAcc, team, stored, entry, effects| {
                    acc.visit(&store.tree, team.id(), stored, entry, effects)
                },
            );
            (index.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), fold)
        });
        let (index, index_took) = index?;
        let (folded, mut accs) = fold?;
        let (n, resumed) = accs.iter().fold((0, 0), |(n, r), a| (n + a.folded, r + a.resumed));
        let projections = ProjectionCheck::merge(accs.iter_mut().map(|a| std::mem::take(&mut a.projections)));
        let marks: HashMap<TeamId, Marks> = accs.into_iter().flat_map(|a| a.marks).collect();
        let events: u64 = marks.values().map(|m| m.events).sum();
        projections.verdict(store.projection_keys()?)?;
        let mut teams = HashMap::with_capacity(folded.len());
        let mut heads = HashMap::with_capacity(folded.len());
        for (id, (team, hash)) in folded {
            heads.insert(id.clone(), Head { seq: team.last_seq(), hash });
            teams.insert(id, team);
        }
        let next_outbox = outbox::next_number(&store.tree)?;
        let changelog = match store.changelog_position()? {
            Some(_) => commit::Changelog::Detached,
            None => commit::Changelog::Local,
        };
        if events != index.len {
            return Err(Error::Corrupt(format!(
                "the ledger holds {events} events but the index {}; run verify",
                index.len
            )));
        }
        info!(
            entries = n + resumed,
            folded = n,
            teams = teams.len(),
            index_ms = index_took.as_millis() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Folded the ledger."
        );
        let mut parked = ParkedRefunds::default();
        for p in tables::parked::all(&store.tree)? {
            parked.insert(p);
        }
        Ok(Ledger {
            store,
            catalog,
            teams,
            heads,
            marks,
            index,
            next_outbox,
            conflicts: 0,
            parked,
            in_flight: None,
            changelog,
        })
    }
}
