//! `verify`: walks every team's hash chain, head and the event-id index, and names the
//! team and sequence number of every fault it finds.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ledger_core::Catalog;

use crate::store::Store;
use crate::tables::entries::{self, Hash};
use crate::tables::index;
use crate::{Error, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub teams: u64,
    pub entries: u64,
    pub index_records: u64,
    /// Checkpoints found equal to the fold of their team's entries (`replay`'s check).
    pub checkpoints: u64,
    /// One line per fault, each naming the team and sequence number (or event id).
    pub faults: Vec<String>,
}

impl Store {
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        // (team, seq) -> event id, to check the index both ways.
        let mut events: HashMap<(String, u64), String> = HashMap::new();
        let mut chains: HashMap<String, (u64, Hash)> = HashMap::new();
        for block in entries::blocks(&self.tree, entries::all()) {
            let (team, first, entries) = match block {
                Ok(b) => b,
                Err(e) => {
                    report.faults.push(e.to_string());
                    continue;
                }
            };
            let chain = chains.entry(team.clone()).or_insert((0, [0; 32]));
            if first != chain.0 + 1 {
                report.faults.push(format!("team {team} seq {}: block starts at seq {first}", chain.0 + 1));
            }
            for stored in entries {
                report.entries += 1;
                if stored.seq != chain.0 + 1 {
                    report.faults.push(format!(
                        "team {team} seq {}: found seq {} (gap or repeat)",
                        chain.0 + 1,
                        stored.seq
                    ));
                }
                if entries::chain(&chain.1, stored.seq, &stored.body) != stored.hash {
                    report.faults.push(format!("team {team} seq {}: hash chain broken (entry altered)", stored.seq));
                }
                match entries::decode_entry(&stored.body) {
                    Ok(entry) => {
                        if let Some(id) = entry.event_id() {
                            events.insert((team.clone(), stored.seq), id.to_string());
                        }
                    }
                    Err(e) => report.faults.push(format!("team {team} seq {}: entry does not decode: {e}", stored.seq)),
                }
                *chain = (stored.seq, stored.hash);
            }
        }
        report.teams = chains.len() as u64;
        self.verify_index(&mut events, &mut report)?;
        Ok(report)
    }

    /// Every index record points at an entry recording that event, and every event
    /// entry is indexed exactly once.
    fn verify_index(&self, events: &mut HashMap<(String, u64), String>, report: &mut VerifyReport) -> Result<()> {
        for segment in index::segments(&self.tree) {
            let segment = segment?;
            let runs = match segment.runs() {
                Ok(runs) => runs,
                Err(e) => {
                    report.faults.push(format!("index segment {}: {e}", segment.label()));
                    continue;
                }
            };
            for run in runs {
                for (event_id, seq) in run.events {
                    report.index_records += 1;
                    let team = &run.team;
                    match events.remove(&(team.clone(), seq)) {
                        Some(found) if found == event_id => {}
                        Some(found) => report
                            .faults
                            .push(format!("team {team} seq {seq}: index says event {event_id}, entry is {found}")),
                        None => report.faults.push(format!(
                            "team {team} seq {seq}: index points at event {event_id}, no such entry (or indexed twice)"
                        )),
                    }
                }
            }
        }
        let mut missing: Vec<_> = events.drain().collect();
        missing.sort();
        for ((team, seq), id) in missing {
            report.faults.push(format!("team {team} seq {seq}: event {id} is missing from the index"));
        }
        Ok(())
    }
}

/// Flips one byte of the stored body of entry `seq` of `team`, leaving its recorded
/// hash alone: what `verify` must catch. For tests and drills only.
pub fn tamper_entry(dir: &Path, team: &str, seq: u64) -> Result<()> {
    let store = Store::open(dir, &Catalog::builtin())?;
    for kv in entries::team_blocks(&store.tree, team) {
        let (k, v) = kv?;
        let mut run = entries::decode_block(&v)?;
        if let Some(e) = run.iter_mut().find(|e| e.seq == seq) {
            let at = e.body.len() / 2;
            e.body[at] ^= 0x01;
            store.tree.insert(k, entries::encode_block(entries::block_format(&v), &run))?;
            store.db.flush()?;
            return Ok(());
        }
    }
    Err(Error::Corrupt(format!("team {team} has no entry {seq}")))
}

/// Rewrites the first stored final invoice of `team` (its first amount a cent higher),
/// in whichever ledger of the data dir holds it, leaving the entries alone: what `verify`
/// and every writer's open must catch. For tests and drills only.
pub fn tamper_invoice(dir: &Path, team: &str) -> Result<()> {
    for store in crate::datadir::open_all(dir, &Catalog::builtin(), crate::OpenOptions::default())? {
        if let Some((k, v)) = crate::tables::invoices::first_of(&store.tree, team)? {
            let json = String::from_utf8_lossy(&v).replacen(".00\"", ".01\"", 1);
            if json.as_bytes() == &v[..] {
                return Err(Error::Corrupt(format!("team {team}'s invoice has no amount to change")));
            }
            store.tree.insert(k, json.as_bytes())?;
            store.db.flush()?;
            return Ok(());
        }
    }
    Err(Error::Corrupt(format!("team {team} has no final invoice")))
}

/// How `tamper_checkpoint` damages a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointTamper {
    /// One more alert counted than the entries raised: it still decodes and links.
    Counts,
    /// Marked with a state version this build does not have (a newer build's).
    Version,
}

/// Damages the checkpoint of `team` in whichever ledger of the data dir holds one: what
/// `verify` must report and an open must not trust. For tests and drills only.
pub fn tamper_checkpoint(dir: &Path, team: &str, how: CheckpointTamper) -> Result<()> {
    use crate::tables::checkpoints;
    for store in crate::datadir::open_all(dir, &Catalog::builtin(), crate::OpenOptions::default())? {
        let id = ledger_core::TeamId::new(team).map_err(|e| Error::Corrupt(e.to_string()))?;
        let Some(mut checkpoint) = checkpoints::read(&store.tree, &id)? else { continue };
        let mut batch = crate::batch::Batch::default();
        match how {
            CheckpointTamper::Counts => checkpoint.counts.alerts += 1,
            CheckpointTamper::Version => {}
        }
        checkpoints::insert(&mut batch, checkpoint.counts, &checkpoint.head, &checkpoint.team);
        let mut ops = batch.ops().to_vec();
        if how == CheckpointTamper::Version {
            let value = ops[0].1.as_mut().expect("an insert");
            value[1..3].copy_from_slice(&(ledger_core::Team::STATE_VERSION + 1).to_be_bytes());
        }
        store.tree.apply_batch(crate::batch::Batch::from_ops(ops).to_sled())?;
        store.db.flush()?;
        return Ok(());
    }
    Err(Error::Corrupt(format!("team {team} has no checkpoint")))
}

/// `verify` over every ledger of the directory, as one; also checks that no team has
/// entries in two of them (each team has one owner).
pub fn verify_all(stores: &[Store]) -> Result<VerifyReport> {
    let mut all = VerifyReport::default();
    let mut owner: HashMap<String, PathBuf> = HashMap::new();
    for store in stores {
        let report = store.verify()?;
        let label = |fault: String| {
            if stores.len() > 1 {
                format!("{}: {fault}", store.dir().display())
            } else {
                fault
            }
        };
        all.teams += report.teams;
        all.entries += report.entries;
        all.index_records += report.index_records;
        all.faults.extend(report.faults.into_iter().map(label));
        for team in store.teams()? {
            if let Some(first) = owner.insert(team.clone(), store.dir().to_path_buf()) {
                all.faults.push(format!(
                    "team {team}: entries in two ledgers, {} and {} (it has one owner)",
                    first.display(),
                    store.dir().display()
                ));
            }
        }
    }
    Ok(all)
}
