//! Which partitions this member owns, and their ledgers. The rebalance callback does the
//! minimum librdkafka needs at once (take the ledger's file lock, read its positions);
//! the main loop folds a newly assigned ledger before it applies the partition's records.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ledger_core::Catalog;
use ledger_kafka::{ChangelogWriter, PartitionReader, Partitions, CHANGELOG};
use ledger_store::{LastConsumed, Ledger, OpenOptions, Store};
use tracing::{info, warn};

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
    /// The open ledgers' stores as the HTTP API reads them, published again whenever
    /// `open` changes: a read never waits for this lock, which the loop holds for a
    /// whole batch (sled applies a batch atomically, and it is in the changelog before
    /// it is in the store).
    pub readable: Arc<Mutex<Arc<Vec<Store>>>>,
    released: BTreeMap<i32, Ledger>,
    pub released_at: Option<Instant>,
    pub owned: BTreeSet<(String, i32)>,
    /// How partition ledgers are opened: the takeover wait and sled's cache.
    options: OpenOptions,
    /// Why the service cannot go on (a ledger built from another partition count, a
    /// handover that could not reach the changelog): it stops on it.
    pub failure: Option<String>,
    /// Partitions stopped, with why (a gap in the input, a changelog that does not link,
    /// a ledger that cannot be opened): their ledgers are closed and their records not
    /// fetched until a rebalance hands them over again; the others are served.
    pub stopped: BTreeMap<i32, String>,
    /// Stopped partitions the main loop has not paused in the consumer yet.
    pub to_pause: Vec<i32>,
    /// Every partition stopped during the run (the exit status says so).
    pub stops: BTreeSet<i32>,
    /// Where each ledger's batches are replicated (`changelog`), and restored from.
    changelog: Changelog,
    /// The input topics' partition count: each ledger records the one it was built from.
    pub input_partitions: i32,
    /// The Kafka cluster's id, if the brokers say: each ledger records the first it was
    /// opened with.
    cluster: Option<String>,
    /// Copies of partitions this member does not own, kept up to their changelog
    /// (`--standby`; `standby.rs`), each with whether its owner took it over (locked by
    /// each catch-up).
    pub standby: BTreeMap<i32, (Store, Arc<Mutex<bool>>)>,
}

/// The changelog topic's broker and writer.
#[derive(Clone)]
pub(super) struct Changelog {
    pub brokers: String,
    pub writer: Arc<ChangelogWriter>,
}

/// One ledger's changelog partition, as the store's `Replica`.
struct KafkaReplica {
    writer: Arc<ChangelogWriter>,
    partition: i32,
}

impl ledger_store::Replica for KafkaReplica {
    fn append(&self, record: &[u8]) -> Result<u64, String> {
        self.writer.append(self.partition, record)
    }

    fn name(&self) -> String {
        format!("{CHANGELOG}/{}", self.partition)
    }
}

/// How long ledgers released by an eager revocation wait for the assignment that follows
/// (the next owner waits up to `--takeover-wait-ms` for them).
pub(super) const RELEASED_WAIT: Duration = Duration::from_secs(5);

impl Shards {
    pub fn new(
        dir: &Path,
        options: OpenOptions,
        changelog: Changelog,
        input_partitions: i32,
        cluster: Option<String>,
    ) -> Shards {
        Shards {
            dir: dir.to_path_buf(),
            catalog: Catalog::builtin(),
            assigned: BTreeMap::new(),
            open: BTreeMap::new(),
            readable: Arc::default(),
            released: BTreeMap::new(),
            released_at: None,
            owned: BTreeSet::new(),
            options,
            failure: None,
            stopped: BTreeMap::new(),
            to_pause: Vec::new(),
            stops: BTreeSet::new(),
            changelog,
            input_partitions,
            cluster,
            standby: BTreeMap::new(),
        }
    }

    /// Whether this member holds the partition's ledger as its owner (assigned, open,
    /// released for a moment, or stopped).
    pub fn holds(&self, partition: i32) -> bool {
        self.assigned.contains_key(&partition)
            || self.open.contains_key(&partition)
            || self.released.contains_key(&partition)
            || self.stopped.contains_key(&partition)
    }

    /// Opens a partition's store for a standby copy: at once or not at all (another
    /// process holds it).
    pub fn open_standby(&self, partition: i32) -> anyhow::Result<Store> {
        let dir = ledger_store::partition_dir(&self.dir, partition);
        let options = OpenOptions { lock_wait: Duration::ZERO, ..self.options };
        Ok(Store::open_with(&dir, &self.catalog, options)?)
    }

    /// Publishes the open ledgers' stores to the readers (after `open` changed).
    fn publish(&self) {
        let stores = self.open.values().map(|ledger| ledger.store().clone()).collect();
        *self.readable.lock().expect("not poisoned") = Arc::new(stores);
    }

    pub fn brokers(&self) -> &str {
        &self.changelog.brokers
    }

    /// Stops `partition`: its ledger closed (the batches applied were flushed), its
    /// records left unconsumed; one line says why.
    fn stop(&mut self, partition: i32, why: String) {
        self.assigned.remove(&partition);
        if let Some(mut ledger) = self.open.remove(&partition) {
            self.publish();
            // What was published goes to the changelog before the ledger closes.
            if let Err(e) = ledger.flush_replica() {
                tracing::warn!(partition, error = %e, "The outbox acknowledgements did not reach the changelog.");
            }
        }
        // The whole service stops on a failure: its line says why.
        if self.stopped.contains_key(&partition) || self.failure.is_some() {
            return;
        }
        eprintln!(
            "usage-ledger: stopped partition {partition} (its records wait; the other partitions are served): {why}"
        );
        self.stopped.insert(partition, why);
        self.to_pause.push(partition);
        self.stops.insert(partition);
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
            // A standby copy is taken over once its catch-up in hand is done; otherwise
            // waiting for the lock reads nothing: the watchdog starts once it is ours.
            let store = match self.standby.remove(&partition) {
                Some((store, catching_up)) => {
                    *catching_up.lock().expect("not poisoned") = true;
                    store
                }
                None => Store::open_with(&dir, &self.catalog, self.options)?,
            };
            let partitions = self.input_partitions;
            if let Some(built) = store.check_input_partitions(partitions as u32)? {
                let why = format!(
                    "partition {partition}: its ledger was built from {built} input partitions and the topics now have {partitions}: teams map to other partitions under another count (topics recreated or repartitioned), and the ledgers would split their histories"
                );
                self.failure.get_or_insert(why.clone());
                anyhow::bail!(why);
            }
            // Another cluster is not wrong by itself (a migration that keeps offsets):
            // the positions are checked against its records, which decides.
            if let Some(before) = self.cluster.as_deref().map(|now| store.check_cluster(now)).transpose()?.flatten() {
                warn!(partition, before = %before, now = ?self.cluster, "The ledger was last opened with another Kafka cluster: its positions are checked against the records they follow here.");
            }
            self.assigned.insert(partition, store);
        }
        Ok(&self.assigned[&partition])
    }

    /// Opens the stores of newly assigned `partitions` and brings each up to its
    /// changelog, side by side (the broker serves the partitions' reads in parallel);
    /// a partition that cannot be is stopped.
    fn open_and_restore(&mut self, partitions: &[(String, i32)]) {
        let mut new = Vec::new();
        for (topic, p) in partitions {
            if !self.open.contains_key(p) && !self.assigned.contains_key(p) && !self.stopped.contains_key(p) {
                match self.store(*p) {
                    Ok(_) => new.push(*p),
                    Err(e) => self.stop(*p, format!("cannot take over partition {p} of {topic}: {e:#}")),
                }
            }
        }
        let brokers = &self.changelog.brokers;
        let assigned = &self.assigned;
        let restored: Vec<anyhow::Result<()>> = std::thread::scope(|s| {
            let restores: Vec<_> = new.iter().map(|p| s.spawn(move || restore(&assigned[p], brokers, *p))).collect();
            restores
                .into_iter()
                .map(|r| r.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a restore panicked"))))
                .collect()
        });
        for (p, result) in new.into_iter().zip(restored) {
            if let Err(e) = result {
                self.stop(p, format!("{e:#}"));
            }
        }
    }

    /// Folds the ledgers of newly assigned partitions (the main loop, before it applies
    /// their records); one that does not fold or replicate is stopped.
    pub fn fold_assigned(&mut self) {
        if self.assigned.is_empty() {
            return;
        }
        let mut opened = Vec::new();
        for (partition, store) in std::mem::take(&mut self.assigned) {
            match self.open_ledger(partition, store) {
                Ok(ledger) => {
                    self.open.insert(partition, ledger);
                    opened.push(partition);
                }
                Err(e) => self.stop(partition, format!("{e:#}")),
            }
        }
        self.publish();
        if !opened.is_empty() {
            eprintln!("usage-ledger: opened and folded the ledgers of partitions {opened:?}");
        }
    }

    fn open_ledger(&self, partition: i32, store: Store) -> anyhow::Result<Ledger> {
        let started = Instant::now();
        let dir = store.dir().to_path_buf();
        let watch = crate::watchdog::Watchdog::arm("opening a partition's ledger", &dir);
        let mut ledger = Ledger::open(store).with_context(|| format!("partition {partition}"))?;
        let replica = KafkaReplica { writer: Arc::clone(&self.changelog.writer), partition };
        ledger.replicate(Arc::new(replica)).with_context(|| format!("partition {partition}"))?;
        drop(watch);
        let (ms, cache_mb) = (started.elapsed().as_millis() as u64, self.options.cache_bytes >> 20);
        info!(partition, dir = %dir.display(), ms, cache_mb, "Opened the partition's ledger.");
        Ok(ledger)
    }
}

/// Brings a partition's store up to its changelog before its positions are read: a new
/// machine (an empty store) rebuilds the ledger its previous owner wrote, a stale copy
/// catches up. A store holding history but no changelog position (written before the
/// changelog) is exported into it by `Ledger::replicate` once folded, and only into an
/// empty changelog partition.
fn restore(store: &Store, brokers: &str, partition: i32) -> anyhow::Result<()> {
    let Some((report, secs)) = catch_up(store, brokers, partition)? else { return Ok(()) };
    let name = format!("{CHANGELOG}/{partition}");
    eprintln!(
        "usage-ledger: restored partition {partition} from {name}: {} records ({} entries) in {secs:.2} s ({:.2} s reading){}",
        report.applied,
        report.entries,
        report.read_secs,
        if report.skipped > 0 { format!(", {} skipped (a fenced writer's)", report.skipped) } else { String::new() }
    );
    Ok(())
}

/// Applies what the partition's changelog holds past the store's position: the report
/// and the seconds it took, or `None` when there was nothing.
pub(super) fn catch_up(
    store: &Store,
    brokers: &str,
    partition: i32,
) -> anyhow::Result<Option<(ledger_store::RestoreReport, f64)>> {
    let position = store.changelog_position()?;
    let from = position.map_or(0, |p| p.next);
    let name = format!("{CHANGELOG}/{partition}");
    let mut reader = PartitionReader::open(brokers, CHANGELOG, partition, from)
        .map_err(|e| anyhow::anyhow!("partition {partition}: {e}"))?;
    if reader.end() == from {
        return Ok(None);
    }
    if position.is_none() && store.holds_history()? {
        anyhow::bail!(
            "partition {partition}: this ledger holds history written before the changelog, and {name} already holds {} records: export it into an empty changelog partition, or move the data dir away to restore from the changelog",
            reader.end()
        );
    }
    let started = std::time::Instant::now();
    let report = store.restore(&name, &mut reader)?;
    let secs = started.elapsed().as_secs_f64();
    info!(
        partition,
        records = report.applied,
        skipped = report.skipped,
        entries = report.entries,
        secs,
        "Restored the partition's ledger from its changelog."
    );
    Ok(Some((report, secs)))
}

/// The ledger's next offset of an input partition, once the partition's log is known to
/// be the one the ledger read and to hold it: a log that starts past it lost records the
/// ledger never saw (retention, a trimmed topic); one that ends before it, or whose record
/// just before it is not the one the ledger consumed there, is another log (the topic was
/// recreated). Each stops the partition with one line rather than billing from the middle
/// of a history or skipping a new one.
fn check_input(
    brokers: &str,
    topic: &str,
    partition: i32,
    next: Option<u64>,
    last: Option<LastConsumed>,
) -> anyhow::Result<Option<i64>> {
    let (low, high) = ledger_kafka::watermarks(brokers, topic, partition)?;
    let need = next.unwrap_or(0) as i64;
    if need < low {
        anyhow::bail!(
            "{topic}/{partition} starts at offset {low} but the ledger needs offset {need}: records it never saw were deleted (retention, a trimmed or recreated topic); it will not bill from the middle of its teams' history"
        );
    }
    if need > high {
        anyhow::bail!(
            "{topic}/{partition} ends at offset {high}, before the ledger's position {need}: this is not the log the ledger read (the topic was recreated); nothing was skipped"
        );
    }
    // The record before the position, unless retention took it (nothing to compare).
    if let Some(last) = last.filter(|l| l.offset + 1 == need as u64 && l.offset as i64 >= low) {
        let at = last.offset;
        let recorded = hex::encode(&last.fingerprint[..8]);
        match ledger_kafka::record_at(brokers, topic, partition, at, (low, high))? {
            ledger_kafka::RecordAt::Found(r) if r.fingerprint() == last.fingerprint => {}
            ledger_kafka::RecordAt::Found(r) => anyhow::bail!(
                "{topic}/{partition}: the record at offset {at} is not the one the ledger consumed there (fingerprint {}…, the ledger's {recorded}…): this is not the log the ledger read (the topic was recreated); nothing was skipped",
                hex::encode(&r.fingerprint()[..8])
            ),
            ledger_kafka::RecordAt::Trimmed => {}
            ledger_kafka::RecordAt::Missing => anyhow::bail!(
                "{topic}/{partition} holds no record at offset {at}, the last the ledger consumed (fingerprint {recorded}…): the log was compacted or recreated; nothing was skipped"
            ),
        }
    }
    Ok(next.map(|n| n as i64))
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
        shards.publish();
        shards.hand_over_released();
        shards.open_and_restore(partitions);
        let positions = partitions
            .iter()
            .map(|(topic, partition)| {
                shards.owned.insert((topic.clone(), *partition));
                if shards.stopped.contains_key(partition) {
                    return Some(ledger_kafka::END);
                }
                let brokers = shards.changelog.brokers.clone();
                let source = format!("{topic}/{partition}");
                let position = shards
                    .store(*partition)
                    .and_then(|store| Ok((store.offset(&source)?, store.last_consumed(&source)?)))
                    .and_then(|(next, last)| check_input(&brokers, topic, *partition, next, last));
                position.unwrap_or_else(|e| {
                    shards.stop(*partition, format!("{e:#}"));
                    Some(ledger_kafka::END)
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
        // A stopped partition handed over: the next owner checks it for itself (and this
        // member again, should it come back).
        shards.stopped.retain(|p, _| keep.contains(p));
        shards.to_pause.retain(|p| keep.contains(p));
        // Never folded: closing the store lets the next owner have it at once.
        shards.assigned.retain(|p, _| keep.contains(p));
        let gone: Vec<i32> = shards.open.keys().filter(|p| !keep.contains(p)).copied().collect();
        for partition in gone {
            // Every batch was flushed before it was acknowledged; dropping closes sled.
            let mut ledger = shards.open.remove(&partition).expect("listed");
            shards.publish();
            // What was published goes to the changelog before the partition goes: its
            // next owner publishes only what never was.
            if let Err(e) = ledger.flush_replica() {
                shards.failure.get_or_insert(format!("partition {partition}: {e:#}"));
            }
            shards.released.insert(partition, ledger);
        }
        if eager {
            shards.released_at.get_or_insert_with(Instant::now);
        } else {
            shards.hand_over_released();
        }
    }
}
