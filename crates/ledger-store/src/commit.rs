//! The commit side of the write path: a batch as staged (its team blocks, its sled
//! batch), the space check before sled sees it, and the committer thread that encodes,
//! writes and flushes it while the writer folds the next batch (see `Ledger`).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ledger_core::{Entry, TeamId};

use crate::batch::Batch;
use crate::changelog::{self, Position, Replica};
use crate::store::Store;
use crate::submission::BatchReport;
use crate::tables;
use crate::tables::entries::{self, StoredEntry};
use crate::tables::index::IndexRunRef;
use crate::{Error, Result};

/// One team's part of a batch: its new entries (one block) and their index records.
pub(crate) struct StagedBlock {
    pub team: TeamId,
    pub first_seq: u64,
    pub entries: Vec<StoredEntry>,
    pub events: Vec<(String, u64)>,
}

/// Per-batch staging: what becomes one `apply_batch`.
#[derive(Default)]
pub(crate) struct Staged {
    pub batch: crate::batch::Batch,
    pub blocks: Vec<StagedBlock>,
    pub block_of: HashMap<TeamId, usize>,
    pub report: BatchReport,
}

impl Staged {
    /// About how many bytes the batch writes: its entries, their index records and a
    /// share for positions, projections and outbox messages.
    pub fn bytes(&self) -> u64 {
        let entries: usize = self.blocks.iter().flat_map(|b| &b.entries).map(|e| e.body.len() + 48).sum();
        let index: usize = self.blocks.iter().flat_map(|b| &b.events).map(|(id, _)| id.len() + 16).sum();
        (entries + index) as u64 + 64 * 1024
    }

    /// The index of the team's block in this batch, started at `first_seq` if new.
    pub fn block_for(&mut self, team: &TeamId, first_seq: u64) -> usize {
        if let Some(b) = self.block_of.get(team) {
            return *b;
        }
        self.blocks.push(StagedBlock { team: team.clone(), first_seq, entries: Vec::new(), events: Vec::new() });
        self.block_of.insert(team.clone(), self.blocks.len() - 1);
        self.blocks.len() - 1
    }

    /// Entry `seq` of `team` if this batch appended it.
    pub fn entry(&self, team: &TeamId, seq: u64) -> Result<Option<Entry>> {
        entry_in(&self.blocks, &self.block_of, team, seq)
    }
}

/// A batch handed to a committer thread: its blocks stay readable here (lookups of the
/// next batch may need them) until the write and its flush are done.
pub(crate) struct InFlight {
    pub blocks: Arc<Vec<StagedBlock>>,
    pub block_of: HashMap<TeamId, usize>,
    pub bytes: u64,
    pub done: std::thread::JoinHandle<Result<()>>,
}

impl InFlight {
    /// Entry `seq` of `team` if this batch appended it.
    pub fn entry(&self, team: &TeamId, seq: u64) -> Result<Option<Entry>> {
        entry_in(&self.blocks, &self.block_of, team, seq)
    }

    /// Waits for the write and the flush.
    pub fn finish(self) -> Result<()> {
        self.done.join().unwrap_or_else(|_| Err(Error::Corrupt("the committer thread panicked".into())))
    }
}

/// Entry `seq` of `team` if `blocks` (staged or in flight) hold it.
fn entry_in(
    blocks: &[StagedBlock],
    block_of: &HashMap<TeamId, usize>,
    team: &TeamId,
    seq: u64,
) -> Result<Option<Entry>> {
    let Some(block) = block_of.get(team).map(|b| &blocks[*b]) else { return Ok(None) };
    let Some(stored) = seq.checked_sub(block.first_seq).and_then(|i| block.entries.get(i as usize)) else {
        return Ok(None);
    };
    entries::decode_entry(&stored.body).map(Some).map_err(|e| Error::Corrupt(format!("staged entry: {e}")))
}

/// Where a ledger's batches go besides its store.
#[derive(Clone)]
pub(crate) enum Changelog {
    /// Nowhere: the ledger was never replicated.
    Local,
    /// The ledger is replicated but no writer is attached (`close`, `serve`'s close):
    /// each batch waits in table `R` to be appended first by the next writer.
    Detached,
    /// To the changelog, first (`Ledger::replicate`).
    Attached(Replication),
}

/// A replicated ledger's changelog and its position in it.
#[derive(Clone)]
pub(crate) struct Replication {
    pub replica: Arc<dyn Replica>,
    pub position: Arc<Mutex<Position>>,
}

impl Replication {
    /// Appends `batch` (with the writes waiting for the changelog before it) as the next
    /// record and stages the new position into it; the position moves once the caller
    /// committed it. Nothing to replicate: `None`.
    fn append(&self, store: &Store, batch: &mut Batch) -> Result<Option<Position>> {
        let waiting = store.unreplicated.lock().expect("not poisoned").as_mut().map(std::mem::take);
        batch.prepend(waiting.unwrap_or_default());
        if batch.is_empty() {
            return Ok(None);
        }
        let position = *self.position.lock().expect("not poisoned");
        let next = changelog::append(self.replica.as_ref(), position, batch.ops())?;
        tables::meta::insert_changelog(batch, &next);
        Ok(Some(next))
    }
}

/// Encodes the blocks and the index segment into `batch`, appends it to the changelog
/// when the ledger is replicated (the broker's acknowledgement first: the store is never
/// ahead of its changelog), writes it atomically and flushes, on a thread of its own
/// (`ledger-commit`).
pub(crate) fn spawn(
    store: &Store,
    blocks: Arc<Vec<StagedBlock>>,
    segment_no: Option<u64>,
    mut batch: crate::batch::Batch,
    changelog: Changelog,
) -> Result<std::thread::JoinHandle<Result<()>>> {
    let (tree, db, format) = (store.tree.clone(), store.db.clone(), store.format);
    let store_ = store.clone();
    std::thread::Builder::new()
        .name("ledger-commit".into())
        .spawn(move || {
            let mut segment: Vec<IndexRunRef<'_>> = Vec::with_capacity(blocks.len());
            for block in blocks.iter() {
                entries::insert(&mut batch, format, block.team.as_str(), block.first_seq, &block.entries);
                if !block.events.is_empty() {
                    segment.push(IndexRunRef { team: block.team.as_str(), events: &block.events });
                }
            }
            if let Some(n) = segment_no {
                tables::index::insert(&mut batch, n, &segment);
            }
            let moved = match &changelog {
                Changelog::Attached(r) => r.append(&store_, &mut batch)?.map(|next| (r, next)),
                Changelog::Detached if !batch.is_empty() => {
                    let ops = batch.ops().to_vec();
                    tables::unreplicated::insert(&tree, &mut batch, &ops)?;
                    None
                }
                Changelog::Detached | Changelog::Local => None,
            };
            tree.apply_batch(batch.to_sled())?;
            db.flush()?;
            if let Some((r, next)) = moved {
                *r.position.lock().expect("not poisoned") = next;
            }
            Ok(())
        })
        .map_err(|e| Error::Io { path: store.dir().display().to_string(), source: e })
}
