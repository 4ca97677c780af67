//! Opening the data directory, reading it through its tables, and folding the ledger
//! back.
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use ledger_core::{Catalog, Entry, Team, TeamId};

use crate::fs::{fsync_dir, io};
use crate::tables::entries;
use crate::tables::outbox::{self, OutboxMsg};
use crate::tables::{alerts, conflicts, invoices, meta, offsets, FORMATS_READABLE, FORMAT_VERSION};
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) dir: PathBuf,
    pub(crate) db: sled::Db,
    pub(crate) tree: sled::Tree,
    /// The format the store recorded: what its new blocks are written in.
    pub(crate) format: u8,
    pub(crate) index_memory_events: u64,
    /// Writes made outside a batch (outbox acknowledgements) that the changelog has not
    /// carried yet; `None` while the ledger is not replicated.
    pub(crate) unreplicated: std::sync::Arc<std::sync::Mutex<Option<Vec<crate::batch::Op>>>>,
    /// Blocks decoded for single-entry reads (`read_entry`), shared by the clones.
    pub(crate) blocks: std::sync::Arc<entries::BlockCache>,
}

/// The events the index keeps in memory before it moves them to a run on disk, unless
/// the store was opened saying otherwise (`OpenOptions`): 24 MiB of slots.
pub const INDEX_MEMORY_EVENTS: u64 = 1 << 21;

/// How to open a data directory.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// How long to wait for the directory lock held by another process (or, for a
    /// moment, by sled's own threads after a drop) before giving up.
    pub lock_wait: std::time::Duration,
    /// sled's page cache.
    pub cache_bytes: u64,
    /// Events the event-id index of a writer keeps in memory before it moves them to
    /// runs on disk.
    pub index_memory_events: u64,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions {
            lock_wait: std::time::Duration::from_secs(3),
            cache_bytes: 256 << 20,
            index_memory_events: INDEX_MEMORY_EVENTS,
        }
    }
}

fn open_locked(dir: &Path, options: OpenOptions) -> Result<sled::Db> {
    let config = sled::Config::new().path(dir).cache_capacity(options.cache_bytes).flush_every_ms(None);
    let deadline = std::time::Instant::now() + options.lock_wait;
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() > deadline {
                    return Err(Error::Io {
                        path: dir.display().to_string(),
                        source: std::io::Error::other("the data dir is in use by another process"),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl Store {
    /// Opens (creating if needed) the data directory. On first creation the directory
    /// and its parent are fsynced, which sled 0.34.7 does not do itself.
    pub fn open(dir: &Path, catalog: &Catalog) -> Result<Store> {
        Store::open_with(dir, catalog, OpenOptions::default())
    }

    pub fn open_with(dir: &Path, catalog: &Catalog, options: OpenOptions) -> Result<Store> {
        let created = !dir.join("db").exists();
        // Readable by this user only: the ledger holds every team's usage and money.
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
        // No background flusher: every batch is flushed explicitly before it is
        // acknowledged, and the flusher thread would hold the directory lock for up to
        // its period after the handle is dropped.
        let db = open_locked(dir, options)?;
        let tree = db.open_tree("ledger")?;
        if created {
            db.flush()?;
            fsync_dir(dir)?;
            if let Some(parent) = dir.canonicalize().ok().and_then(|d| d.parent().map(Path::to_path_buf)) {
                fsync_dir(&parent)?;
            }
        }
        let index_memory_events = options.index_memory_events.max(1);
        let mut store = Store {
            dir: dir.to_path_buf(),
            db,
            tree,
            format: FORMAT_VERSION,
            index_memory_events,
            unreplicated: Default::default(),
            blocks: Default::default(),
        };
        store.format = store.check_meta(catalog)?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The store's recorded format, once checked readable (a new store records this
    /// build's), and its catalog recorded.
    fn check_meta(&self, catalog: &Catalog) -> Result<u8> {
        match meta::format(&self.tree)? {
            Some(v) if v.len() == 1 && FORMATS_READABLE.contains(&v[0]) => {
                self.record_catalog(catalog)?;
                Ok(v[0])
            }
            Some(v) => Err(Error::Format { found: v.first().copied().unwrap_or(0), expected: FORMAT_VERSION }),
            None => {
                let mut batch = crate::batch::Batch::default();
                meta::insert_new(&mut batch, catalog);
                self.tree.apply_batch(batch.to_sled())?;
                self.db.flush()?;
                Ok(FORMAT_VERSION)
            }
        }
    }

    /// The format the store recorded (1 for stores written before format 2).
    pub fn format(&self) -> u8 {
        self.format
    }

    /// Records the versions of `loaded` this ledger has not seen. Recorded versions are
    /// immutable (a price change is a new version) and never dropped. A new version may
    /// take effect before every recorded one (history: no cycle can have started
    /// then) or in the future; never inside the history already billed.
    fn record_catalog(&self, loaded: &Catalog) -> Result<()> {
        let recorded = self.catalog()?;
        let mut merged = recorded.versions.clone();
        let first = recorded.versions.first().map(|v| v.effective_from);
        let now = chrono::Utc::now();
        let mut changed = false;
        for v in &loaded.versions {
            match recorded.version(&v.id) {
                // An older build (lacking plans added since) reads what was recorded.
                Some(r) if r.extends(v) => {}
                // A plan added to a recorded version: nothing in the ledger used it (events
                // naming it were refused), so no recorded figure can change.
                Some(_) if v.extends(recorded.version(&v.id).expect("matched")) => {
                    let slot = merged.iter_mut().find(|m| m.id == v.id).expect("recorded version is merged");
                    *slot = v.clone();
                    changed = true;
                }
                Some(_) => {
                    return Err(Error::CatalogChange(format!(
                        "catalog version {} differs from the one this ledger recorded; published versions are immutable (add a new version)",
                        v.id
                    )))
                }
                None if first.is_none_or(|f| v.effective_from < f) || v.effective_from > now => {
                    merged.push(v.clone());
                    changed = true;
                }
                None => {
                    return Err(Error::CatalogChange(format!(
                        "catalog version {} takes effect at {}, inside the history this ledger already billed",
                        v.id, v.effective_from
                    )))
                }
            }
        }
        if !changed {
            return Ok(());
        }
        merged.sort_by_key(|v| v.effective_from);
        let catalog = Catalog::from_versions(merged)?;
        tracing::info!(versions = catalog.versions.len(), "Recorded new catalog versions or plans.");
        meta::set_catalog(&self.tree, &catalog)?;
        self.db.flush()?;
        Ok(())
    }

    /// The catalog recorded when the store was created: a replay never depends on a
    /// catalog file that changed later.
    pub fn catalog(&self) -> Result<Catalog> {
        meta::catalog(&self.tree)
    }

    /// The team's final invoices as JSON, oldest period first.
    pub fn invoices(&self, team: &str) -> Result<Vec<String>> {
        invoices::of_team(&self.tree, team)
    }

    /// The team's alerts as JSON, in the order they were raised.
    pub fn alerts(&self, team: &str) -> Result<Vec<String>> {
        alerts::of_team(&self.tree, team)
    }

    /// Conflicting duplicates recorded for the team (same event id, other content).
    pub fn conflicts(&self, team: &str) -> Result<Vec<String>> {
        conflicts::of_team(&self.tree, team)
    }

    /// The next offset to consume for a source (topic/partition), if one was recorded.
    pub fn offset(&self, source: &str) -> Result<Option<u64>> {
        offsets::get(&self.tree, source)
    }

    /// The last record consumed of a source (topic/partition), if its fingerprint was
    /// recorded; it identifies the log only when it is the record just before `offset`.
    pub fn last_consumed(&self, source: &str) -> Result<Option<offsets::LastConsumed>> {
        offsets::last(&self.tree, source)
    }

    /// Unsent outbox messages, oldest first, with their outbox numbers.
    pub fn outbox(&self, limit: usize) -> Result<Vec<(u64, OutboxMsg)>> {
        outbox::oldest(&self.tree, limit)
    }

    /// How many outbox messages wait to be published (keys counted, values not read).
    pub fn outbox_len(&self) -> Result<u64> {
        let mut n = 0u64;
        for k in outbox::keys(&self.tree) {
            k?;
            n += 1;
        }
        Ok(n)
    }

    /// Marks outbox messages sent.
    pub fn ack_outbox(&self, numbers: &[u64]) -> Result<()> {
        let mut batch = crate::batch::Batch::default();
        for n in numbers {
            outbox::remove(&mut batch, *n);
        }
        self.tree.apply_batch(batch.to_sled())?;
        self.db.flush()?;
        self.not_replicated_yet(batch);
        Ok(())
    }

    /// Moves messages the broker refused for good out of the outbox, with the reason:
    /// the rest flow on.
    pub fn fail_outbox(&self, failed: &[(u64, OutboxMsg, String)]) -> Result<()> {
        let mut batch = crate::batch::Batch::default();
        for (n, msg, reason) in failed {
            outbox::fail(&mut batch, *n, msg, reason);
        }
        self.tree.apply_batch(batch.to_sled())?;
        self.db.flush()?;
        self.not_replicated_yet(batch);
        Ok(())
    }

    /// Keeps a write made outside a batch for the changelog's next record.
    fn not_replicated_yet(&self, batch: crate::batch::Batch) {
        if let Some(ops) = self.unreplicated.lock().expect("not poisoned").as_mut() {
            ops.extend(batch.ops().iter().cloned());
        }
    }

    /// Checks the ledger against the input topics' partition count, recording it the
    /// first time: the count it was built from when that differs (teams map to other
    /// partitions under another count, so the ledger would split their histories).
    pub fn check_input_partitions(&self, partitions: u32) -> Result<Option<u32>> {
        match meta::inputs(&self.tree)? {
            Some(built) if built != partitions => Ok(Some(built)),
            Some(_) => Ok(None),
            None => {
                meta::set_inputs(&self.tree, partitions)?;
                self.db.flush()?;
                Ok(None)
            }
        }
    }

    /// Records the Kafka cluster the ledger is opened with: the one it was opened with
    /// before, when that differs (said once: the new one is recorded).
    pub fn check_cluster(&self, id: &str) -> Result<Option<String>> {
        let before = meta::cluster(&self.tree)?;
        if before.as_deref() == Some(id) {
            return Ok(None);
        }
        meta::set_cluster(&self.tree, id)?;
        self.db.flush()?;
        Ok(before)
    }

    /// Whether the store holds anything besides its own metadata.
    pub fn holds_history(&self) -> Result<bool> {
        for kv in self.tree.iter().keys() {
            if !meta::is_meta(&kv?) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether writes wait for the changelog's next record.
    pub fn has_unreplicated(&self) -> bool {
        self.unreplicated.lock().expect("not poisoned").as_ref().is_some_and(|ops| !ops.is_empty())
    }

    /// Messages the broker refused for good, oldest first.
    pub fn failed_outbox(&self) -> Result<Vec<(u64, OutboxMsg)>> {
        outbox::failed(&self.tree)
    }

    /// Reads entry `seq` of `team` from the block that holds it.
    pub fn read_entry(&self, team: &str, seq: u64) -> Result<Option<Entry>> {
        entries::read(&self.tree, &self.blocks, team, seq)
    }

    /// Whether the team has entries here.
    pub fn has_team(&self, team: &str) -> Result<bool> {
        entries::has_team(&self.tree, team)
    }

    /// Every team with entries here, in key order.
    pub fn teams(&self) -> Result<Vec<String>> {
        entries::teams(&self.tree)
    }

    /// One team's state folded from its entries alone, from its checkpoint on (for balances
    /// and drafts).
    pub fn load_team(&self, catalog: &Catalog, team: &TeamId) -> Result<Team> {
        Ok(self.resume_team(catalog, team, &mut |_| {}, &mut |_, _, _, _| Ok(()))?.0)
    }

    /// One team's entries in ledger order, folded on the way (a ledger that contradicts
    /// itself is an error here too).
    pub fn team_entries(&self, catalog: &Catalog, team: &TeamId) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        self.fold_range(catalog, entries::of_team(team.as_str()), &mut |_, _, entry, _| {
            entries.push(entry.clone());
            Ok(())
        })?;
        Ok(entries)
    }

    /// Bytes the data directory takes on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
}
