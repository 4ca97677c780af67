//! Opening the data directory, reading projections, and folding the ledger back.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ledger_core::{Catalog, Effects, Entry, Team, TeamId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::{self, Hash, StoredEntry, FORMAT_VERSION};
use crate::keys;
use crate::{Error, Result};

/// A message waiting in the outbox: published, then marked sent (deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxMsg {
    pub topic: String,
    pub key: String,
    /// Deterministic id (alert id, invoice id, dead letter source): consumers drop
    /// repeats by it.
    pub id: String,
    /// The projection as JSON (alerts, invoices); empty for dead letters.
    pub json: String,
    /// Raw bytes to publish as they are (dead letters: the original record).
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) dir: PathBuf,
    pub(crate) db: sled::Db,
    pub(crate) tree: sled::Tree,
}

/// What `replay` rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub teams: u64,
    pub entries: u64,
    pub invoices: u64,
    pub alerts: u64,
    /// Stored projections that differed from the rebuilt ones (0 on a healthy store).
    pub mismatched: u64,
    /// SHA-256 over every final invoice (key, JSON) in key order: the same for the same
    /// ledger however its teams are spread over data directories.
    pub digest: String,
    /// The rebuilt invoices (key, JSON), kept to merge reports of several stores.
    pub(crate) invoice_items: Vec<(Vec<u8>, Vec<u8>)>,
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
            digest: String::new(),
            invoice_items: Vec::new(),
        };
        for r in reports {
            all.teams += r.teams;
            all.entries += r.entries;
            all.invoices += r.invoices;
            all.alerts += r.alerts;
            all.mismatched += r.mismatched;
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

/// Every team's folded state with its chain head.
pub(crate) type Folded = HashMap<TeamId, (Team, Hash)>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.display().to_string(), source }
}

fn catalog_json(catalog: &Catalog) -> String {
    serde_json::to_string(catalog).expect("catalog serializes")
}

fn fsync_dir(path: &Path) -> Result<()> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(io(path))
}

/// How to open a data directory.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// How long to wait for the directory lock held by another process (or, for a
    /// moment, by sled's own threads after a drop) before giving up.
    pub lock_wait: std::time::Duration,
    /// sled's page cache.
    pub cache_bytes: u64,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions { lock_wait: std::time::Duration::from_secs(3), cache_bytes: 256 << 20 }
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
        std::fs::create_dir_all(dir).map_err(io(dir))?;
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
        let store = Store { dir: dir.to_path_buf(), db, tree };
        store.check_meta(catalog)?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn check_meta(&self, catalog: &Catalog) -> Result<()> {
        let format_key = keys::simple(keys::META, b"format");
        match self.tree.get(&format_key)? {
            Some(v) if v.as_ref() == [FORMAT_VERSION] => self.record_catalog(catalog),
            Some(v) => Err(Error::Format { found: v.first().copied().unwrap_or(0), expected: FORMAT_VERSION }),
            None => {
                let mut batch = sled::Batch::default();
                batch.insert(format_key, vec![FORMAT_VERSION]);
                batch.insert(keys::simple(keys::META, b"catalog"), codec::encode(&catalog_json(catalog)));
                self.tree.apply_batch(batch)?;
                self.db.flush()?;
                Ok(())
            }
        }
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
        self.tree.insert(keys::simple(keys::META, b"catalog"), codec::encode(&catalog_json(&catalog)))?;
        self.db.flush()?;
        Ok(())
    }

    /// The catalog recorded when the store was created: a replay never depends on a
    /// catalog file that changed later.
    pub fn catalog(&self) -> Result<Catalog> {
        let raw = self
            .tree
            .get(keys::simple(keys::META, b"catalog"))?
            .ok_or_else(|| Error::Corrupt("no catalog recorded".into()))?;
        let json: String = codec::decode(&raw, "catalog")?;
        serde_json::from_str(&json).map_err(|e| Error::Corrupt(format!("recorded catalog: {e}")))
    }

    fn values_under(&self, prefix: &[u8]) -> Result<Vec<String>> {
        self.tree
            .scan_prefix(prefix)
            .values()
            .map(|v| String::from_utf8(v?.to_vec()).map_err(|e| Error::Corrupt(e.to_string())))
            .collect()
    }

    /// The team's final invoices as JSON, oldest period first.
    pub fn invoices(&self, team: &str) -> Result<Vec<String>> {
        self.values_under(&keys::team_prefix(keys::INVOICE, team))
    }

    /// The team's alerts as JSON, in the order they were raised.
    pub fn alerts(&self, team: &str) -> Result<Vec<String>> {
        self.values_under(&keys::team_prefix(keys::ALERT, team))
    }

    /// Conflicting duplicates recorded for the team (same event id, other content).
    pub fn conflicts(&self, team: &str) -> Result<Vec<String>> {
        self.values_under(&keys::team_prefix(keys::CONFLICT, team))
    }

    /// The next offset to consume for a source (topic/partition), if one was recorded.
    pub fn offset(&self, source: &str) -> Result<Option<u64>> {
        Ok(self
            .tree
            .get(keys::simple(keys::OFFSET, source.as_bytes()))?
            .map(|v| u64::from_be_bytes(v.as_ref().try_into().expect("offsets are 8 bytes"))))
    }

    /// Unsent outbox messages, oldest first, with their outbox numbers.
    pub fn outbox(&self, limit: usize) -> Result<Vec<(u64, OutboxMsg)>> {
        self.tree
            .scan_prefix([keys::OUTBOX])
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                let n = u64::from_be_bytes(k[1..].try_into().map_err(|_| Error::Corrupt("outbox key".into()))?);
                Ok((n, codec::decode(&v, "outbox message")?))
            })
            .collect()
    }

    /// Marks outbox messages sent.
    pub fn ack_outbox(&self, numbers: &[u64]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for n in numbers {
            batch.remove(keys::outbox(*n));
        }
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Reads entry `seq` of `team` from the block that holds it.
    pub fn read_entry(&self, team: &str, seq: u64) -> Result<Option<Entry>> {
        let upper = keys::team_key(keys::ENTRY, team, seq);
        let lower = keys::team_prefix(keys::ENTRY, team);
        let Some(kv) = self.tree.range(lower..=upper).next_back() else { return Ok(None) };
        let (_, v) = kv?;
        let entries = codec::decode_block(&v)?;
        match entries.iter().find(|e| e.seq == seq) {
            Some(stored) => Ok(Some(
                codec::decode_entry(&stored.body).map_err(|e| Error::Corrupt(format!("team {team} seq {seq}: {e}")))?,
            )),
            None => Ok(None),
        }
    }

    /// Every team's entries in ledger order, chain-checked, as `(team, stored entries)`
    /// runs (one per block).
    pub(crate) fn blocks(&self, prefix: &[u8]) -> impl Iterator<Item = Result<(String, u64, Vec<StoredEntry>)>> + '_ {
        let mut upper = prefix.to_vec();
        upper.push(0xff);
        self.blocks_in(prefix.to_vec(), upper)
    }

    fn blocks_in(
        &self,
        lower: Vec<u8>,
        upper: Vec<u8>,
    ) -> impl Iterator<Item = Result<(String, u64, Vec<StoredEntry>)>> + '_ {
        self.tree.range(lower..upper).map(|kv| {
            let (k, v) = kv?;
            let (team, first) = keys::split_team_key(&k).ok_or_else(|| Error::Corrupt("entry key".into()))?;
            let entries = codec::decode_block(&v)
                .map_err(|e| Error::Corrupt(format!("team {team} block at seq {first}: {e}")))?;
            Ok((team.to_string(), first, entries))
        })
    }

    /// Folds every entry of `prefix` (all teams, or one team's) through fresh core
    /// state, checking the chain as it reads. `visit` sees each entry and its effects.
    pub(crate) fn fold(
        &self,
        catalog: &Catalog,
        prefix: &[u8],
        mut visit: impl FnMut(&mut Team, &StoredEntry, &Entry, Effects) -> Result<()>,
    ) -> Result<Folded> {
        let mut upper = prefix.to_vec();
        upper.push(0xff);
        self.fold_range(catalog, prefix.to_vec(), upper, &mut visit)
    }

    /// Folds every team's entries on all cores: the key space is cut at team boundaries
    /// into one contiguous range per thread (teams are independent). Each range gets
    /// its own accumulator; they come back in key order.
    pub(crate) fn fold_all<A: Default + Send>(
        &self,
        catalog: &Catalog,
        visit: impl Fn(&mut A, &mut Team, &StoredEntry, &Entry, Effects) -> Result<()> + Sync,
    ) -> Result<(Folded, Vec<A>)> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        let bounds = self.team_bounds(threads)?;
        let results: Vec<Result<(Folded, A)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = bounds
                .windows(2)
                .map(|w| {
                    let (lower, upper) = (w[0].clone(), w[1].clone());
                    let visit = &visit;
                    scope.spawn(move || {
                        let mut acc = A::default();
                        let teams =
                            self.fold_range(catalog, lower, upper, &mut |t, s, e, fx| visit(&mut acc, t, s, e, fx))?;
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

    /// `parts + 1` keys cutting the entry key space at team boundaries into `parts`
    /// ranges with about the same number of blocks.
    fn team_bounds(&self, parts: usize) -> Result<Vec<Vec<u8>>> {
        // Each team's key prefix (`E` team 0) with the number of blocks before it.
        let mut starts: Vec<(Vec<u8>, usize)> = Vec::new();
        let mut blocks = 0usize;
        for k in self.tree.scan_prefix([keys::ENTRY]).keys() {
            let k = k?;
            let prefix_len = k.iter().position(|b| *b == 0).map_or(k.len(), |zero| zero + 1);
            if starts.last().is_none_or(|(p, _)| p.as_slice() != &k[..prefix_len]) {
                starts.push((k[..prefix_len].to_vec(), blocks));
            }
            blocks += 1;
        }
        let mut bounds = vec![vec![keys::ENTRY]];
        for part in 1..parts {
            let target = blocks * part / parts;
            if let Some((prefix, _)) = starts.iter().find(|(_, before)| *before >= target) {
                if bounds.last().is_some_and(|b| b < prefix) {
                    bounds.push(prefix.clone());
                }
            }
        }
        bounds.push(vec![keys::ENTRY + 1]);
        Ok(bounds)
    }

    fn fold_range(
        &self,
        catalog: &Catalog,
        lower: Vec<u8>,
        upper: Vec<u8>,
        visit: &mut dyn FnMut(&mut Team, &StoredEntry, &Entry, Effects) -> Result<()>,
    ) -> Result<Folded> {
        let mut teams: Folded = HashMap::new();
        let mut current: Option<(TeamId, Team, Hash)> = None;
        for block in self.blocks_in(lower, upper) {
            let (team, _, entries) = block?;
            if current.as_ref().is_none_or(|(id, _, _)| id.as_str() != team) {
                if let Some((id, t, h)) = current.take() {
                    teams.insert(id, (t, h));
                }
                let id = TeamId::new(team.clone()).map_err(|e| Error::Corrupt(format!("team key {team:?}: {e}")))?;
                current = Some((id.clone(), Team::new(id), [0; 32]));
            }
            let (_, state, head) = current.as_mut().expect("set above");
            for stored in &entries {
                if codec::chain(head, stored.seq, &stored.body) != stored.hash {
                    return Err(Error::Corrupt(format!("team {team} seq {}: hash chain broken", stored.seq)));
                }
                let entry = codec::decode_entry(&stored.body).map_err(|e| {
                    Error::Corrupt(format!("team {team} seq {}: entry does not decode: {e}", stored.seq))
                })?;
                let effects = state.apply(catalog, stored.seq, &entry)?;
                *head = stored.hash;
                visit(state, stored, &entry, effects)?;
            }
        }
        if let Some((id, t, h)) = current {
            teams.insert(id, (t, h));
        }
        Ok(teams)
    }

    /// Whether the team has entries here.
    pub fn has_team(&self, team: &str) -> Result<bool> {
        Ok(self.tree.scan_prefix(keys::team_prefix(keys::ENTRY, team)).next().transpose()?.is_some())
    }

    /// Every team with entries here, in key order.
    pub fn teams(&self) -> Result<Vec<String>> {
        let mut teams: Vec<String> = Vec::new();
        for k in self.tree.scan_prefix([keys::ENTRY]).keys() {
            let k = k?;
            let (team, _) = keys::split_team_key(&k).ok_or_else(|| Error::Corrupt("entry key".into()))?;
            if teams.last().is_none_or(|t| t != team) {
                teams.push(team.to_string());
            }
        }
        Ok(teams)
    }

    /// One team's state folded from its entries alone (for balances and drafts).
    pub fn load_team(&self, catalog: &Catalog, team: &TeamId) -> Result<Team> {
        let mut teams = self.fold(catalog, &keys::team_prefix(keys::ENTRY, team.as_str()), |_, _, _, _| Ok(()))?;
        Ok(teams.remove(team).map(|(t, _)| t).unwrap_or_else(|| Team::new(team.clone())))
    }

    /// One team's entries in ledger order, folded on the way (a ledger that contradicts
    /// itself is an error here too).
    pub fn team_entries(&self, catalog: &Catalog, team: &TeamId) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        self.fold(catalog, &keys::team_prefix(keys::ENTRY, team.as_str()), |_, _, entry, _| {
            entries.push(entry.clone());
            Ok(())
        })?;
        Ok(entries)
    }

    /// Rebuilds every projection (alerts, invoices) from the ledger alone, replaces the
    /// stored ones, and returns a digest of all invoices.
    pub fn replay(&self, catalog: &Catalog) -> Result<ReplayReport> {
        #[derive(Default)]
        struct Acc {
            entries: u64,
            rebuilt: Vec<(Vec<u8>, Vec<u8>)>,
            alert_no: HashMap<String, u64>,
        }
        let (teams, accs) = self.fold_all(catalog, |acc: &mut Acc, team, stored, _, effects| {
            acc.entries += 1;
            let team_id = team.id().as_str();
            for alert in effects.alerts {
                let n = acc.alert_no.entry(team_id.to_string()).or_default();
                acc.rebuilt.push((
                    keys::team_key(keys::ALERT, team_id, *n),
                    serde_json::to_vec(&alert).expect("alert serializes"),
                ));
                *n += 1;
            }
            if let Some(mut invoice) = effects.invoice {
                invoice.ledger.head_hash = hex::encode(stored.hash);
                let key = keys::time_key(keys::INVOICE, team_id, invoice.period_start.timestamp());
                acc.rebuilt.push((key, invoice.to_json().into_bytes()));
            }
            Ok(())
        })?;
        let entries: u64 = accs.iter().map(|a| a.entries).sum();
        let mut rebuilt: Vec<(Vec<u8>, Vec<u8>)> = accs.into_iter().flat_map(|a| a.rebuilt).collect();
        let mut mismatched = 0u64;
        let mut stored_keys = 0u64;
        for prefix in [keys::ALERT, keys::INVOICE] {
            stored_keys += self.tree.scan_prefix([prefix]).count() as u64;
        }
        let mut batch = sled::Batch::default();
        for prefix in [keys::ALERT, keys::INVOICE] {
            for k in self.tree.scan_prefix([prefix]).keys() {
                batch.remove(k?);
            }
        }
        let mut invoice_items = Vec::new();
        let mut alerts = 0u64;
        rebuilt.sort();
        for (k, v) in &rebuilt {
            if self.tree.get(k)?.as_deref() != Some(v.as_slice()) {
                mismatched += 1;
            }
            if k[0] == keys::INVOICE {
                invoice_items.push((k.clone(), v.clone()));
            } else {
                alerts += 1;
            }
            batch.insert(k.as_slice(), v.as_slice());
        }
        mismatched += stored_keys.saturating_sub(rebuilt.len() as u64);
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok(ReplayReport {
            teams: teams.len() as u64,
            entries,
            invoices: invoice_items.len() as u64,
            alerts,
            mismatched,
            digest: digest(&invoice_items),
            invoice_items,
        })
    }

    /// Bytes the data directory takes on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
}
