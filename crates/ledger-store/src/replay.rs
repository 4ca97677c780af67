//! `replay`: rebuilds the projections (alerts, invoices) from the entries alone through
//! the same table rows live staging writes, counts the stored ones that differ, replaces
//! them, and digests every invoice.
use std::collections::HashMap;

use ledger_core::{Catalog, Effects, Entry, Team};
use sha2::{Digest, Sha256};

use crate::fold::Folded;
use crate::store::Store;
use crate::tables::checkpoints::{self, Checkpoint, Counts};
use crate::tables::entries::StoredEntry;
use crate::tables::{self, alerts, invoices, Projection};
use crate::Result;

/// Projection rows as (key, value) pairs.
type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// What `replay` rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub teams: u64,
    pub entries: u64,
    pub invoices: u64,
    pub alerts: u64,
    /// Stored projections that differed from the rebuilt ones (0 on a healthy store).
    pub mismatched: u64,
    /// Checkpoints that differ from the fold of their team's entries, stand at no stored
    /// entry, or do not decode, one line each naming the team (none on a healthy store).
    /// `replay` removes them: the next open folds those teams from their first entry.
    pub checkpoint_faults: Vec<String>,
    /// Checkpoints found equal to the fold.
    pub checkpoints: u64,
    /// SHA-256 over every final invoice (key, JSON) in key order: the same for the same
    /// ledger however its teams are spread over data directories.
    pub digest: String,
    /// The rebuilt invoices (key, JSON), kept to merge reports of several stores.
    pub(crate) invoice_items: Rows,
}

impl ReplayReport {
    /// One report for several stores (the partitions of one ledger).
    pub fn merge(reports: Vec<ReplayReport>) -> ReplayReport {
        let mut all = ReplayReport {
            teams: 0,
            entries: 0,
            invoices: 0,
            alerts: 0,
            mismatched: 0,
            checkpoint_faults: Vec::new(),
            checkpoints: 0,
            digest: String::new(),
            invoice_items: Vec::new(),
        };
        for r in reports {
            all.teams += r.teams;
            all.entries += r.entries;
            all.invoices += r.invoices;
            all.alerts += r.alerts;
            all.mismatched += r.mismatched;
            all.checkpoint_faults.extend(r.checkpoint_faults);
            all.checkpoints += r.checkpoints;
            all.invoice_items.extend(r.invoice_items);
        }
        all.invoice_items.sort();
        all.digest = digest(&all.invoice_items);
        all
    }
}

fn digest(items: &[(Vec<u8>, Vec<u8>)]) -> String {
    let mut digest = Sha256::new();
    for (k, v) in items {
        digest.update(k);
        digest.update(v);
    }
    hex::encode(digest.finalize())
}

/// Stored projections compared, one by one, with what the fold produces: `replay` (and
/// `verify`) count the ones that differ, a writer's open (`Ledger::open`) refuses a ledger
/// with any.
#[derive(Default)]
pub(crate) struct ProjectionCheck {
    pub rows: u64,
    /// Rows stored with other bytes, or not stored at all.
    pub differ: u64,
    pub missing: u64,
    /// The first that differed: its team and what it is.
    pub first: Option<String>,
}

impl ProjectionCheck {
    pub fn check(&mut self, tree: &sled::Tree, key: &[u8], value: &[u8], what: impl FnOnce() -> String) -> Result<()> {
        self.rows += 1;
        crate::progress::tick();
        let stored = tree.get(key)?;
        if stored.as_deref() != Some(value) {
            self.differ += 1;
            self.missing += u64::from(stored.is_none());
            self.first.get_or_insert_with(what);
        }
        Ok(())
    }

    pub fn merge(checks: impl IntoIterator<Item = ProjectionCheck>) -> ProjectionCheck {
        checks.into_iter().fold(ProjectionCheck::default(), |mut all, c| {
            all.rows += c.rows;
            all.differ += c.differ;
            all.missing += c.missing;
            all.first = all.first.or(c.first);
            all
        })
    }

    /// Of `stored` projection keys, those no checked row has.
    fn extra(&self, stored: u64) -> u64 {
        stored.saturating_sub(self.rows - self.missing)
    }

    /// An error unless every one of the `stored` projections is one the fold produced,
    /// byte for byte.
    pub fn verdict(self, stored: u64) -> Result<()> {
        let extra = self.extra(stored);
        if self.differ == 0 && extra == 0 {
            return Ok(());
        }
        Err(crate::Error::Corrupt(format!(
            "{} stored alert(s) or invoice(s) differ from what the entries fold to or are missing{}, {extra} stored that no entry produces; `verify` checks the store, `replay` rebuilds the projections from the entries",
            self.differ,
            self.first.map(|f| format!(" (first: {f})")).unwrap_or_default(),
        )))
    }
}

/// The projections rebuilt from the entries, each sorted.
#[derive(Default)]
struct Rebuilt {
    entries: u64,
    alerts: Rows,
    invoices: Rows,
    /// Each team's counts so far, compared with its checkpoint where the fold reaches it.
    counts: HashMap<String, Counts>,
    checkpoints: u64,
    /// Checkpoints that differ from the fold: (team, fault line).
    checkpoint_faults: Vec<TeamFault>,
}

/// A team and a fault line about it.
type TeamFault = (String, String);

impl Rebuilt {
    /// One folded entry: its projections rebuilt, the team's counts moved on, and the
    /// team's checkpoint compared with the fold if it stands at this entry.
    fn visit(
        &mut self,
        catalog: &Catalog,
        stored_checkpoints: &HashMap<String, Checkpoint>,
        team: &Team,
        (stored, entry, effects): (&StoredEntry, &Entry, Effects),
    ) {
        self.entries += 1;
        let team_id = team.id().as_str();
        let counts = self.counts.entry(team_id.to_string()).or_default();
        counts.seq = stored.seq;
        counts.events += u64::from(entry.event_id().is_some());
        for projection in tables::projections(team_id, counts.alerts, effects, &stored.hash) {
            match projection {
                Projection::Alert { row, .. } => {
                    self.alerts.push((row.key, row.json.into_bytes()));
                    counts.alerts += 1;
                }
                Projection::Invoice { row, .. } => {
                    self.invoices.push((row.key, row.json.into_bytes()));
                    counts.invoices += 1;
                }
            }
        }
        let Some(checkpoint) = stored_checkpoints.get(team_id).filter(|c| c.counts.seq == stored.seq) else { return };
        if checkpoint.counts == *counts && checkpoint.head == stored.hash && checkpoint.team.agrees_with(catalog, team)
        {
            self.checkpoints += 1;
        } else {
            let line = format!(
                "team {team_id} seq {}: the checkpoint differs from the fold of the team's entries",
                stored.seq
            );
            self.checkpoint_faults.push((team_id.to_string(), line));
        }
    }
}

/// Checkpoints standing past their team's last stored entry (the fold never reached
/// them): (team, fault line).
fn unreached(stored: &HashMap<String, Checkpoint>, teams: &Folded) -> Vec<TeamFault> {
    let heads: HashMap<&str, u64> = teams.iter().map(|(id, (t, _))| (id.as_str(), t.last_seq())).collect();
    let mut faults = Vec::new();
    for (team, checkpoint) in stored {
        let head = heads.get(team.as_str()).copied().unwrap_or(0);
        if head < checkpoint.counts.seq {
            let seq = checkpoint.counts.seq;
            let line =
                format!("team {team} seq {seq}: the checkpoint stands at no stored entry (the team's last is {head})");
            faults.push((team.clone(), line));
        }
    }
    faults
}

impl Store {
    /// Rebuilds every projection (alerts, invoices) from the ledger alone, replaces the
    /// stored ones, and returns a digest of all invoices.
    pub fn replay(&self, catalog: &Catalog) -> Result<ReplayReport> {
        self.rebuild(catalog, true)
    }

    /// `replay` that writes nothing: counts the stored projections that differ (`verify`).
    pub fn replay_read_only(&self, catalog: &Catalog) -> Result<ReplayReport> {
        self.rebuild(catalog, false)
    }

    fn rebuild(&self, catalog: &Catalog, replace: bool) -> Result<ReplayReport> {
        let (stored_checkpoints, mut faults) = self.checkpoints()?;
        let (teams, accs) = self.fold_all(catalog, |acc: &mut Rebuilt, team, stored, entry, effects| {
            acc.visit(catalog, &stored_checkpoints, team, (stored, entry, effects));
            Ok(())
        })?;
        let mut all = Rebuilt::default();
        for acc in accs {
            all.entries += acc.entries;
            all.alerts.extend(acc.alerts);
            all.invoices.extend(acc.invoices);
            all.checkpoints += acc.checkpoints;
            faults.extend(acc.checkpoint_faults);
        }
        if all.checkpoints + (faults.len() as u64) < stored_checkpoints.len() as u64 {
            faults.extend(unreached(&stored_checkpoints, &teams));
        }
        faults.sort();
        if replace && !faults.is_empty() {
            self.remove_checkpoints(faults.iter().map(|(team, _)| team.as_str()))?;
        }
        let checkpoint_faults = faults.into_iter().map(|(_, line)| line).collect();
        all.alerts.sort();
        all.invoices.sort();
        let mismatched = self.compare_projections(&all, replace)?;
        Ok(ReplayReport {
            teams: teams.len() as u64,
            entries: all.entries,
            invoices: all.invoices.len() as u64,
            alerts: all.alerts.len() as u64,
            mismatched,
            checkpoint_faults,
            checkpoints: all.checkpoints,
            digest: digest(&all.invoices),
            invoice_items: all.invoices,
        })
    }

    /// Counts the stored alerts and invoices that differ from the rebuilt ones, are
    /// missing or are extra, and with `replace` replaces them all with the rebuilt ones in
    /// one flushed batch.
    fn compare_projections(&self, rebuilt: &Rebuilt, replace: bool) -> Result<u64> {
        let mut batch = crate::batch::Batch::default();
        let mut stored = 0u64;
        for k in self.projection_key_iter() {
            batch.remove(k?.to_vec());
            stored += 1;
        }
        let mut check = ProjectionCheck::default();
        for (k, v) in rebuilt.alerts.iter().chain(&rebuilt.invoices) {
            check.check(&self.tree, k, v, String::new)?;
            batch.insert(k.as_slice(), v.as_slice());
        }
        if replace {
            self.tree.apply_batch(batch.to_sled())?;
            self.db.flush()?;
        }
        Ok(check.differ + check.extra(stored))
    }

    /// How many alerts and invoices are stored.
    pub(crate) fn projection_keys(&self) -> Result<u64> {
        self.projection_key_iter().try_fold(0u64, |n, k| k.map(|_| n + 1))
    }

    /// The keys of every stored alert and invoice.
    fn projection_key_iter(&self) -> impl Iterator<Item = Result<sled::IVec>> + '_ {
        alerts::keys(&self.tree).chain(invoices::keys(&self.tree))
    }
}

impl Store {
    /// Every stored checkpoint this build reads, by team, and a fault line for each one
    /// that does not decode.
    fn checkpoints(&self) -> Result<(HashMap<String, Checkpoint>, Vec<TeamFault>)> {
        let mut found = HashMap::new();
        let mut faults = Vec::new();
        for kv in checkpoints::all(&self.tree) {
            let (team, value) = kv?;
            match checkpoints::decode(&team, &value) {
                Ok(Some(checkpoint)) => {
                    found.insert(team, checkpoint);
                }
                Ok(None) => {}
                Err(e) => faults.push((team, e.to_string())),
            }
        }
        Ok((found, faults))
    }

    /// Removes the checkpoints of `teams`.
    fn remove_checkpoints<'a>(&self, teams: impl Iterator<Item = &'a str>) -> Result<()> {
        let mut batch = crate::batch::Batch::default();
        for team in teams {
            checkpoints::remove(&mut batch, team);
        }
        self.tree.apply_batch(batch.to_sled())?;
        self.db.flush()?;
        Ok(())
    }
}
