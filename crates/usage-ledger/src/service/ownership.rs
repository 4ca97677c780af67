//! Which partitions this member owns, and their ledgers. The rebalance callback does the
//! minimum librdkafka needs at once (take the ledger's file lock, read its positions);
//! the main loop folds a newly assigned ledger before it applies the partition's records.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledger_core::Catalog;
use ledger_kafka::Partitions;
use ledger_store::{Ledger, OpenOptions, Store};
use tracing::info;

/// The ledgers of the partitions this member owns: one per input partition number, so
/// that partition N of both input topics (range assignment keeps them on one member)
/// lands in one ledger, and a team, keyed to one partition number, in one ledger.
/// A ledger's store is opened when its partition is assigned (sled's file lock keeps a
/// second process from writing a ledger it was not handed yet), folded by the main loop,
/// and closed when revoked. An eager rebalance revokes every partition before it
/// reassigns them: their ledgers wait in `released` until the assignment, so those that
/// come back are not folded again.
pub(super) struct Shards {
    dir: PathBuf,
    catalog: Catalog,
    /// Assigned: the store is open (its lock held), the ledger not folded yet.
    assigned: BTreeMap<i32, Store>,
    pub open: BTreeMap<i32, Ledger>,
    released: BTreeMap<i32, Ledger>,
    pub released_at: Option<Instant>,
    pub owned: BTreeSet<(String, i32)>,
    /// How partition ledgers are opened: the takeover wait and sled's cache.
    options: OpenOptions,
    /// Why an assigned partition's ledger could not be opened: the service stops on it.
    pub failure: Option<String>,
}

/// How long ledgers released by an eager revocation wait for the assignment that follows
/// (the next owner waits up to `--takeover-wait-ms` for them).
pub(super) const RELEASED_WAIT: Duration = Duration::from_secs(5);

impl Shards {
    pub fn new(dir: &Path, options: OpenOptions) -> Shards {
        Shards {
            dir: dir.to_path_buf(),
            catalog: Catalog::builtin(),
            assigned: BTreeMap::new(),
            open: BTreeMap::new(),
            released: BTreeMap::new(),
            released_at: None,
            owned: BTreeSet::new(),
            options,
            failure: None,
        }
    }

    /// Closes the released ledgers the new assignment did not give back.
    pub fn hand_over_released(&mut self) {
        self.released_at = None;
        if !self.released.is_empty() {
            self.released.clear();
            eprintln!("usage-ledger: handed over partitions; owns {:?}", self.partitions());
        }
    }

    /// Assigned partitions whose ledgers the loop has not folded yet.
    pub fn pending_folds(&self) -> usize {
        self.assigned.len()
    }

    /// The partition numbers whose ledgers this member holds.
    fn partitions(&self) -> Vec<i32> {
        self.open.keys().chain(self.assigned.keys()).copied().collect::<BTreeSet<i32>>().into_iter().collect()
    }

    /// The store of an assigned partition, opened (waiting for the previous owner to let
    /// go of it) unless its ledger is already open.
    fn store(&mut self, partition: i32) -> anyhow::Result<&Store> {
        if let Some(ledger) = self.open.get(&partition) {
            return Ok(ledger.store());
        }
        if !self.assigned.contains_key(&partition) {
            let dir = ledger_store::partition_dir(&self.dir, partition);
            // Waiting for the lock reads nothing: the watchdog starts once it is ours.
            let store = Store::open_with(&dir, &self.catalog, self.options)?;
            self.assigned.insert(partition, store);
        }
        Ok(&self.assigned[&partition])
    }

    /// Folds the ledgers of newly assigned partitions (the main loop, before it applies
    /// their records).
    pub fn fold_assigned(&mut self) -> anyhow::Result<()> {
        if self.assigned.is_empty() {
            return Ok(());
        }
        let opened: Vec<i32> = self.assigned.keys().copied().collect();
        for (partition, store) in std::mem::take(&mut self.assigned) {
            let started = Instant::now();
            let dir = store.dir().to_path_buf();
            let watch = crate::watchdog::Watchdog::arm("opening a partition's ledger", &dir);
            self.open.insert(partition, Ledger::open(store)?);
            drop(watch);
            let (ms, cache_mb) = (started.elapsed().as_millis() as u64, self.options.cache_bytes >> 20);
            info!(partition, dir = %dir.display(), ms, cache_mb, "Opened the partition's ledger.");
        }
        eprintln!("usage-ledger: opened and folded the ledgers of partitions {opened:?}");
        Ok(())
    }
}

pub(super) struct Owner(pub Arc<Mutex<Shards>>);

impl Partitions for Owner {
    fn assigned(&self, partitions: &[(String, i32)]) -> Vec<Option<i64>> {
        let mut shards = self.0.lock().expect("not poisoned");
        // Back after an eager revocation: kept open, not folded again.
        for (_, partition) in partitions {
            if let Some(ledger) = shards.released.remove(partition) {
                shards.open.insert(*partition, ledger);
            }
        }
        shards.hand_over_released();
        let positions = partitions
            .iter()
            .map(|(topic, partition)| {
                shards.owned.insert((topic.clone(), *partition));
                let position = shards
                    .store(*partition)
                    .and_then(|store| Ok(store.offset(&format!("{topic}/{partition}"))?.map(|n| n as i64)));
                position.unwrap_or_else(|e| {
                    shards.failure.get_or_insert(format!("partition {partition} of {topic}: {e:#}"));
                    None
                })
            })
            .collect();
        eprintln!("usage-ledger: owns partitions {:?}", shards.partitions());
        positions
    }

    fn revoked(&self, partitions: &[(String, i32)], eager: bool) {
        let mut shards = self.0.lock().expect("not poisoned");
        for p in partitions {
            shards.owned.remove(p);
        }
        let keep: BTreeSet<i32> = shards.owned.iter().map(|(_, p)| *p).collect();
        // Never folded: closing the store lets the next owner have it at once.
        shards.assigned.retain(|p, _| keep.contains(p));
        let gone: Vec<i32> = shards.open.keys().filter(|p| !keep.contains(p)).copied().collect();
        for partition in gone {
            // Every batch was flushed before it was acknowledged; dropping closes sled.
            let ledger = shards.open.remove(&partition).expect("listed");
            shards.released.insert(partition, ledger);
        }
        if eager {
            shards.released_at.get_or_insert_with(Instant::now);
        } else {
            shards.hand_over_released();
        }
    }
}
