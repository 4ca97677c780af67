//! Folding the stored entries back into core state: every team from its first entry
//! (`replay`, `verify`), or from its checkpoint (a writer's open, a team's balance),
//! checking each hash chain as it reads.
use std::collections::HashMap;

use ledger_core::{Catalog, Effects, Entry, Team, TeamId};
use tracing::warn;

use crate::store::Store;
use crate::tables::checkpoints::{self, Checkpoint, Counts};
use crate::tables::entries::{self, Hash, StoredEntry};
use crate::{Error, Result};

/// A team's state as a reader keeps it between reads (the HTTP API's views): folded
/// through the team's last block as it stood, and brought up to date by folding only
/// what was appended since.
#[derive(Debug)]
pub struct TeamRead {
    pub state: Team,
    head: Hash,
    tip: Option<(sled::IVec, sled::IVec)>,
}

impl TeamRead {
    /// Usage records the state keeps (its size, for a cache's bound).
    pub fn records(&self) -> usize {
        self.state.pending_len()
    }

    /// Bytes of the team's last block, kept to tell whether anything was appended.
    pub fn tip_bytes(&self) -> usize {
        self.tip.as_ref().map_or(0, |(k, v)| k.len() + v.len())
    }
}

/// Every team's folded state with its chain head.
pub(crate) type Folded = HashMap<TeamId, (Team, Hash)>;

type Visit<'a> = dyn FnMut(&mut Team, &StoredEntry, &Entry, Effects) -> Result<()> + 'a;

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(8)
}

impl Store {
    /// Folds every team's entries from the first on all cores: the key space is cut at
    /// team boundaries into one contiguous range per thread (teams are independent).
    /// Each range gets its own accumulator; they come back in key order.
    pub(crate) fn fold_all<A: Default + Send>(
        &self,
        catalog: &Catalog,
        visit: impl Fn(&mut A, &mut Team, &StoredEntry, &Entry, Effects) -> Result<()> + Sync,
    ) -> Result<(Folded, Vec<A>)> {
        let bounds = entries::team_bounds(&self.tree, threads())?;
        let ranges: Vec<_> = bounds.windows(2).map(|w| (w[0].clone(), w[1].clone())).collect();
        on_threads(ranges, |acc: &mut A, range| {
            self.fold_range(catalog, range, &mut |t, s, e, fx| visit(acc, t, s, e, fx))
        })
    }

    /// Folds every team from its checkpoint, on all cores: `resumed` sees what each
    /// checkpoint counted, `visit` only the entries after it. A team without a readable
    /// checkpoint, or whose checkpoint does not stand at a stored entry with its hash,
    /// is folded from its first entry (a warning names it; `verify` reports it).
    pub(crate) fn fold_resumed<A: Default + Send>(
        &self,
        catalog: &Catalog,
        resumed: impl Fn(&mut A, &TeamId, Counts) + Sync,
        visit: impl Fn(&mut A, &mut Team, &StoredEntry, &Entry, Effects) -> Result<()> + Sync,
    ) -> Result<(Folded, Vec<A>)> {
        let teams = entries::teams(&self.tree)?;
        let per = teams.len().div_ceil(threads()).max(1);
        let chunks: Vec<&[String]> = teams.chunks(per).collect();
        on_threads(chunks, |acc: &mut A, chunk| {
            let acc = std::cell::RefCell::new(acc);
            let mut folded = Folded::with_capacity(chunk.len());
            for team in chunk {
                let id = TeamId::new(team.clone()).map_err(|e| Error::Corrupt(format!("team key {team:?}: {e}")))?;
                let (state, head) = self.resume_team(
                    catalog,
                    &id,
                    &mut |r| resumed(&mut acc.borrow_mut(), &id, r),
                    &mut |t, s, e, fx| visit(&mut acc.borrow_mut(), t, s, e, fx),
                )?;
                folded.insert(id, (state, head));
            }
            Ok(folded)
        })
    }

    /// The team's state folded from its checkpoint, to be kept and `refresh`ed.
    pub fn read_team(&self, catalog: &Catalog, team: &TeamId) -> Result<TeamRead> {
        // The tip is taken first: the fold sees at least what it names, so a read that
        // finds the same tip later has folded everything there is.
        let tip = entries::tip(&self.tree, team.as_str())?;
        let (state, head) = self.resume_team(catalog, team, &mut |_| {}, &mut |_, _, _, _| Ok(()))?;
        Ok(TeamRead { state, head, tip })
    }

    /// Whether the team's stored entries are still those `read` folded (one seek; the
    /// last block compared by its buffer, or its bytes).
    pub fn is_current(&self, read: &TeamRead) -> Result<bool> {
        let tip = entries::tip(&self.tree, read.state.id().as_str())?;
        Ok(match (&tip, &read.tip) {
            (None, None) => true,
            (Some((k, v)), Some((k2, v2))) => k == k2 && entries::same_bytes(v, v2),
            _ => false,
        })
    }

    /// Brings `read` up to date: folds the entries appended after the last one it holds,
    /// from the block holding that one. A read whose last entry is no longer stored with
    /// its hash (the store was rebuilt under it) is folded again from the checkpoint.
    /// Whether anything changed. On an error `read` is left empty: drop it.
    pub fn refresh(&self, catalog: &Catalog, read: &mut TeamRead) -> Result<bool> {
        if self.is_current(read)? {
            return Ok(false);
        }
        let id = read.state.id().clone();
        let tip = entries::tip(&self.tree, id.as_str())?;
        let seq = read.state.last_seq();
        let placeholder = Team::new(id.clone());
        let from = Checkpoint {
            counts: Counts { seq, ..Counts::default() },
            head: read.head,
            team: std::mem::replace(&mut read.state, placeholder),
        };
        let folded = match seq {
            0 => None,
            _ => self.fold_after(catalog, from, &mut |_| {}, &mut |_, _, _, _| Ok(()))?,
        };
        *read = match folded {
            Some((state, head)) => TeamRead { state, head, tip },
            None => self.read_team(catalog, &id)?,
        };
        Ok(true)
    }

    /// One team's state, folded from its checkpoint (see `fold_resumed`).
    pub(crate) fn resume_team(
        &self,
        catalog: &Catalog,
        id: &TeamId,
        resumed: &mut dyn FnMut(Counts),
        visit: &mut Visit<'_>,
    ) -> Result<(Team, Hash)> {
        let team = id.as_str();
        let checkpoint = checkpoints::read(&self.tree, id).unwrap_or_else(|e| {
            warn!(team_id = team, error = %e, "A checkpoint does not read; folding the team from its first entry.");
            None
        });
        if let Some(checkpoint) = checkpoint {
            let seq = checkpoint.counts.seq;
            match self.fold_after(catalog, checkpoint, resumed, visit)? {
                Some(folded) => return Ok(folded),
                None => warn!(
                    team_id = team,
                    seq,
                    "The team's checkpoint does not stand at a stored entry with its hash; folding the team from its first entry."
                ),
            }
        }
        let mut teams = self.fold_range(catalog, entries::of_team(team), visit)?;
        Ok(teams.remove(id).unwrap_or_else(|| (Team::new(id.clone()), [0; 32])))
    }

    /// Folds the team's entries after its checkpoint, from the block holding the
    /// checkpoint's entry: `None` (nothing visited) when that entry is not stored with
    /// the checkpoint's hash.
    fn fold_after(
        &self,
        catalog: &Catalog,
        checkpoint: Checkpoint,
        resumed: &mut dyn FnMut(Counts),
        visit: &mut Visit<'_>,
    ) -> Result<Option<(Team, Hash)>> {
        let Checkpoint { counts, head, team: mut state } = checkpoint;
        let seq = counts.seq;
        let team = state.id().to_string();
        let (first, upper) = entries::of_team(&team);
        let lower = match self.tree.range(first.clone()..=entries::key(&team, seq)).next_back() {
            Some(kv) => kv?.0.to_vec(),
            None => return Ok(None),
        };
        let mut at_checkpoint = false;
        let mut hash = head;
        for block in entries::blocks(&self.tree, (lower, upper)) {
            let (_, _, run) = block?;
            for stored in &run {
                if !at_checkpoint {
                    if stored.seq < seq {
                        continue;
                    }
                    if stored.seq > seq || stored.hash != head {
                        return Ok(None);
                    }
                    at_checkpoint = true;
                    resumed(counts);
                    continue;
                }
                fold_one(catalog, &team, &mut state, &mut hash, stored, visit)?;
            }
        }
        Ok(at_checkpoint.then_some((state, hash)))
    }

    pub(crate) fn fold_range(
        &self,
        catalog: &Catalog,
        range: (Vec<u8>, Vec<u8>),
        visit: &mut Visit<'_>,
    ) -> Result<Folded> {
        let mut teams: Folded = HashMap::new();
        let mut current: Option<(TeamId, Team, Hash)> = None;
        for block in entries::blocks(&self.tree, range) {
            let (team, _, run) = block?;
            if current.as_ref().is_none_or(|(id, _, _)| id.as_str() != team) {
                if let Some((id, t, h)) = current.take() {
                    teams.insert(id, (t, h));
                }
                let id = TeamId::new(team.clone()).map_err(|e| Error::Corrupt(format!("team key {team:?}: {e}")))?;
                current = Some((id.clone(), Team::new(id), [0; 32]));
            }
            let (_, state, head) = current.as_mut().expect("set above");
            for stored in &run {
                fold_one(catalog, &team, state, head, stored, visit)?;
            }
        }
        if let Some((id, t, h)) = current {
            teams.insert(id, (t, h));
        }
        Ok(teams)
    }
}

/// Checks one entry's link to `head`, folds it into `state` and shows it to `visit`.
fn fold_one(
    catalog: &Catalog,
    team: &str,
    state: &mut Team,
    head: &mut Hash,
    stored: &StoredEntry,
    visit: &mut Visit<'_>,
) -> Result<()> {
    if entries::chain(head, stored.seq, &stored.body) != stored.hash {
        return Err(Error::Corrupt(format!("team {team} seq {}: hash chain broken", stored.seq)));
    }
    let entry = entries::decode_entry(&stored.body)
        .map_err(|e| Error::Corrupt(format!("team {team} seq {}: entry does not decode: {e}", stored.seq)))?;
    let effects = state.apply(catalog, stored.seq, &entry)?;
    *head = stored.hash;
    visit(state, stored, &entry, effects)
}

/// Runs `work` on each part on its own thread with its own accumulator; the folded
/// teams merge, the accumulators come back in the parts' order.
fn on_threads<P: Send, A: Default + Send>(
    parts: Vec<P>,
    work: impl Fn(&mut A, P) -> Result<Folded> + Sync,
) -> Result<(Folded, Vec<A>)> {
    let results: Vec<Result<(Folded, A)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| {
                let work = &work;
                scope.spawn(move || {
                    let mut acc = A::default();
                    let teams = work(&mut acc, part)?;
                    Ok((teams, acc))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("fold threads do not panic")).collect()
    });
    let mut teams = HashMap::new();
    let mut accs = Vec::with_capacity(results.len());
    for r in results {
        let (t, acc) = r?;
        teams.extend(t);
        accs.push(acc);
    }
    Ok((teams, accs))
}
