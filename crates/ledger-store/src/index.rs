//! The event-id index. On disk: one immutable segment per batch (`I` + batch number),
//! listing every event the batch appended. Loaded from them: a compact map from a
//! 64-bit hash of the id to where the event lives. Its newer events are in memory,
//! 12-byte slots (32 more bits of the hash, a team number, a sequence number) in 65,536
//! arrays, one per value of the hash's top 16 bits, each sorted by hash; the newest wait
//! in a hash map until they number an eighth of the events in memory, then merge into
//! their arrays. Many small arrays rather than one large one: growing one reallocates
//! it whole, which held the old array beside the new for a moment. Once the arrays hold
//! `INDEX_MEMORY_EVENTS` events (or as many as the operator says) they move to sorted
//! runs on disk (`runs`): memory then grows only by the filter's 1–2 bytes an event
//! and a run's page directory (1/32 byte an event). In front of all, a
//! blocked Bloom filter (one cache line a lookup, 8–16 bits an event) answers most
//! lookups of a new id (the common case) without touching any. A hash hit is confirmed
//! against the entry itself, so a collision can never turn into a wrong dedup.
mod bloom;
mod runs;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};

use ledger_core::{Event, TeamId};
use sha2::{Digest, Sha256};

use crate::store::Store;
use crate::tables;
use crate::{Error, Result};
use bloom::Bloom;
use runs::{Cover, Runs};

/// Keys are already hashes: pass them through.
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type FastMap<V> = HashMap<u64, V, BuildHasherDefault<PassThrough>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub team: u32,
    pub seq: u64,
}

/// One event in a bucket's array: 12 bytes. The bucket holds the hash's top 16 bits,
/// `part` the next 32; the low 16 are not kept (48 bits tell ids apart well enough:
/// every hit is confirmed against the entry). Events numbered past `u32::MAX` in their
/// team's ledger stay in `Index::big` instead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Slot {
    part: u32,
    team: u32,
    seq: u32,
}

impl Slot {
    fn of(hash: u64, loc: Loc) -> Option<Slot> {
        Some(Slot { part: part(hash), team: loc.team, seq: u32::try_from(loc.seq).ok()? })
    }

    fn loc(self) -> Loc {
        Loc { team: self.team, seq: u64::from(self.seq) }
    }
}

/// The merged slots are split into an array for each value of the hash's top
/// `BUCKET_BITS` bits.
const BUCKET_BITS: u32 = 16;

fn bucket(hash: u64) -> usize {
    (hash >> (64 - BUCKET_BITS)) as usize
}

/// The 32 bits of the hash below the bucket's.
fn part(hash: u64) -> u32 {
    (hash >> (32 - BUCKET_BITS)) as u32
}

/// The hash as a slot in bucket `b` keeps it: its low 16 bits zero.
fn kept_hash(b: usize, part: u32) -> u64 {
    (b as u64) << (64 - BUCKET_BITS) | u64::from(part) << (32 - BUCKET_BITS)
}
/// The newest events merge into the arrays once they number this many and an eighth
/// of the events in memory.
const RECENT_MIN: usize = 1 << 16;

#[derive(Default)]
pub(crate) struct Index {
    teams: Vec<TeamId>,
    team_no: HashMap<TeamId, u32>,
    /// Every merged event, `buckets[b]` those whose hash's top bits are `b`, sorted by
    /// hash (equal hashes adjacent); empty until the first event.
    buckets: Vec<Vec<Slot>>,
    /// The newest events, not merged yet.
    recent: FastMap<Loc>,
    /// Newest events whose id hash equals one already in `recent` (rare).
    recent_more: Vec<(u64, Loc)>,
    /// Events past `u32::MAX` in their team's ledger (never merged).
    big: FastMap<Vec<Loc>>,
    /// The older events, on disk (none for an index that only lives in memory).
    runs: Option<Runs>,
    /// Every hash above, in front of them all.
    bloom: Bloom,
    /// Past this many events in memory, `spill_due`.
    hot_max: u64,
    pub next_segment: u64,
    pub len: u64,
}

/// Content fingerprint of an input event: same id + same fingerprint = duplicate.
pub(crate) fn fingerprint(event: &Event) -> [u8; 16] {
    let bytes = postcard::to_allocvec(event).expect("events encode");
    let digest = Sha256::digest(&bytes);
    digest[..16].try_into().expect("16 bytes")
}

pub(crate) fn id_hash(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

impl Index {
    /// Opens the runs on disk that match the store (rebuilding them if none do), loads
    /// the segments they do not cover into the arrays, sorting each once, and moves
    /// those to a run whenever they hold `hot_max` events.
    pub fn load(store: &Store) -> Result<Index> {
        Index::load_with(store, store.index_memory_events)
    }

    fn load_with(store: &Store, hot_max: u64) -> Result<Index> {
        let (runs, covered) = Runs::open(store.dir().join("index"), &store.tree)?;
        let mut index = Index { hot_max, len: runs.len(), ..Index::default() };
        index.runs = Some(runs);
        if let Some(covered) = &covered {
            for team in &covered.teams {
                index.team_number(&TeamId::new(team.as_str()).map_err(|e| Error::Corrupt(format!("index runs: {e}")))?);
            }
            index.next_segment = covered.segments;
        }
        for segment in tables::index::segments_from(&store.tree, index.next_segment) {
            let segment = segment?;
            let n = segment.number()?;
            for run in segment.runs()? {
                let team = TeamId::new(run.team).map_err(|e| Error::Corrupt(format!("index segment {n}: {e}")))?;
                let no = index.team_number(&team);
                for (event_id, seq) in run.events {
                    let (hash, loc) = (id_hash(&event_id), Loc { team: no, seq });
                    match Slot::of(hash, loc) {
                        Some(slot) => index.bucket_mut(bucket(hash)).push(slot),
                        None => index.big.entry(hash).or_default().push(loc),
                    }
                    index.len += 1;
                }
            }
            index.next_segment = n + 1;
            if index.hot() >= index.hot_max {
                index.sort_buckets();
                index.spill_with(segment.bytes())?;
            }
        }
        index.sort_buckets();
        index.restore_bloom()?;
        Ok(index)
    }

    /// Events in `buckets`, `recent` and `recent_more`: all but those on disk and those
    /// past `u32::MAX` in their team's ledger.
    fn hot(&self) -> u64 {
        let big: usize = self.big.values().map(Vec::len).sum();
        self.len - self.runs.as_ref().map_or(0, Runs::len) - big as u64
    }

    fn sort_buckets(&mut self) {
        for bucket in &mut self.buckets {
            bucket.sort_unstable();
            bucket.shrink_to_fit();
        }
    }

    /// Whether the events in memory should move to disk (`spill`) before the next batch.
    pub fn spill_due(&self) -> bool {
        self.runs.is_some() && self.hot() >= self.hot_max
    }

    /// Whether a clean close should spill: enough events in memory that the next open
    /// would spend noticeable time rebuilding them (a sixteenth of the bound: ~0.7 s at
    /// 2M events here, so ~45 ms left).
    pub fn spill_on_close(&self) -> bool {
        self.runs.is_some() && self.next_segment > 0 && self.hot() >= (self.hot_max / 16).max(1)
    }

    /// Moves the events in memory to a run on disk. Every segment numbered below
    /// `next_segment` must be durable: the runs say they cover them. Refused like a
    /// batch when the disk lacks room for the run and the largest merge it may cause.
    pub fn spill(&mut self, store: &Store) -> Result<()> {
        let on_disk = self.runs.as_ref().map_or(0, Runs::len);
        crate::fs::ensure_free(store.dir(), (self.hot() + on_disk) * runs::RECORD as u64)?;
        let last = self.next_segment.checked_sub(1).ok_or_else(|| Error::Corrupt("spill of no segment".into()))?;
        let bytes = tables::index::segment_bytes(&store.tree, last)?
            .ok_or_else(|| Error::Corrupt(format!("index segment {last} is missing")))?;
        self.merge_recent();
        self.spill_with(&bytes)?;
        self.save_bloom()
    }

    /// Moves the arrays (sorted, `recent` empty) to a run covering the segments below
    /// `next_segment`, the last of which is `last_segment`.
    fn spill_with(&mut self, last_segment: &[u8]) -> Result<()> {
        let Some(runs) = self.runs.as_mut() else { return Ok(()) };
        let records = self
            .buckets
            .iter()
            .enumerate()
            .flat_map(|(b, slots)| slots.iter().map(move |s| (kept_hash(b, s.part), s.team, s.seq)));
        runs.add(records, Cover { segments: self.next_segment, last_segment, teams: &self.teams })?;
        self.buckets = Vec::new();
        self.recent = FastMap::default();
        self.recent_more = Vec::new();
        Ok(())
    }

    pub fn team(&self, no: u32) -> &TeamId {
        &self.teams[no as usize]
    }

    fn team_number(&mut self, team: &TeamId) -> u32 {
        if let Some(no) = self.team_no.get(team) {
            return *no;
        }
        let no = u32::try_from(self.teams.len()).expect("fewer than 2^32 teams");
        self.teams.push(team.clone());
        self.team_no.insert(team.clone(), no);
        no
    }

    pub fn insert(&mut self, hash: u64, team: &TeamId, seq: u64) -> Result<()> {
        let loc = Loc { team: self.team_number(team), seq };
        self.len += 1;
        if self.len > self.bloom.capacity {
            self.rebuild_bloom()?;
        }
        self.bloom.insert(hash);
        if Slot::of(hash, loc).is_none() {
            self.big.entry(hash).or_default().push(loc);
            return Ok(());
        }
        match self.recent.entry(hash) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(loc);
            }
            std::collections::hash_map::Entry::Occupied(_) => self.recent_more.push((hash, loc)),
        }
        if self.recent.len() >= RECENT_MIN && self.recent.len() as u64 >= self.hot() / 8 {
            self.merge_recent();
        }
        Ok(())
    }

    /// Bucket `b`'s array.
    fn bucket_mut(&mut self, b: usize) -> &mut Vec<Slot> {
        if self.buckets.is_empty() {
            self.buckets.resize_with(1 << BUCKET_BITS, Vec::new);
        }
        &mut self.buckets[b]
    }

    /// Moves the newest events into their arrays, merging each from the back in place.
    fn merge_recent(&mut self) {
        let recent = self.recent.drain().chain(self.recent_more.drain(..));
        let mut fresh: Vec<(u64, Slot)> = recent.filter_map(|(hash, loc)| Some((hash, Slot::of(hash, loc)?))).collect();
        fresh.sort_unstable();
        for run in fresh.chunk_by(|a, b| bucket(a.0) == bucket(b.0)) {
            merge_into(self.bucket_mut(bucket(run[0].0)), run);
        }
    }

    /// A filter for twice the events indexed (at least 65,536), holding every hash but
    /// the one being inserted (the caller adds it). The runs' are read from disk.
    fn rebuild_bloom(&mut self) -> Result<()> {
        let mut bloom = Bloom::with_capacity((2 * self.len).max(1 << 16));
        for hash in self.memory_hashes() {
            bloom.insert(hash);
        }
        if let Some(runs) = &self.runs {
            runs.each_hash(|hash| bloom.insert(hash))?;
        }
        self.bloom = bloom;
        Ok(())
    }

    /// The hashes of the events in memory.
    fn memory_hashes(&self) -> impl Iterator<Item = u64> + '_ {
        let recent = self.recent.keys().chain(self.recent_more.iter().map(|(h, _)| h));
        let merged =
            self.buckets.iter().enumerate().flat_map(|(b, slots)| slots.iter().map(move |s| kept_hash(b, s.part)));
        merged.chain(recent.chain(self.big.keys()).copied())
    }

    /// At open: the filter saved with the runs (they hold most events) plus the events
    /// in memory, so an open reads no run; rebuilt from the runs when the file is
    /// missing, damaged, bound to other runs or too small.
    fn restore_bloom(&mut self) -> Result<()> {
        let saved = self.runs.as_ref().and_then(|runs| {
            let binding = runs.manifest_digest()?;
            let bytes = std::fs::read(runs.dir().join(runs::BLOOM)).ok()?;
            Bloom::from_file(&bytes, &binding)
        });
        match saved {
            Some(bloom) if self.len <= bloom.capacity => {
                self.bloom = bloom;
                let hashes: Vec<u64> = self.memory_hashes().collect();
                for hash in hashes {
                    self.bloom.insert(hash);
                }
                Ok(())
            }
            // Saved for the next open: every run's hash is in it (a few more too).
            _ => {
                self.rebuild_bloom()?;
                self.save_bloom()
            }
        }
    }

    /// Saves the filter beside the runs it covers (every event is in a run right after
    /// a spill), bound to their manifest.
    fn save_bloom(&self) -> Result<()> {
        let Some(runs) = &self.runs else { return Ok(()) };
        let Some(binding) = runs.manifest_digest() else { return Ok(()) };
        runs::write_replacing(&runs.dir().join(runs::BLOOM), &self.bloom.to_file(&binding))
    }

    /// The merged slots whose hash agrees with this one in its top 48 bits.
    fn merged(&self, hash: u64) -> &[Slot] {
        let Some(range) = self.buckets.get(bucket(hash)) else {
            return &[];
        };
        let part = part(hash);
        let from = range.partition_point(|s| s.part < part);
        let to = from + range[from..].partition_point(|s| s.part == part);
        &range[from..to]
    }

    /// Where events whose id hashes to `hash` live (usually none, at most one).
    pub fn candidates(&self, hash: u64) -> Result<Vec<Loc>> {
        if !self.bloom.may_contain(hash) {
            return Ok(Vec::new());
        }
        let merged = self.merged(hash).iter().map(|s| s.loc());
        let recent = self.recent.get(&hash).copied().into_iter();
        let more = self.recent_more.iter().filter(|(h, _)| *h == hash).map(|(_, loc)| *loc);
        let big = self.big.get(&hash).into_iter().flatten().copied();
        let mut found: Vec<Loc> = merged.chain(recent).chain(more).chain(big).collect();
        if let Some(runs) = &self.runs {
            runs.find(kept_hash(bucket(hash), part(hash)), |team, seq| found.push(Loc { team, seq: u64::from(seq) }))?;
        }
        Ok(found)
    }
}

/// Merges `fresh` (sorted by hash) into `into` (sorted by `part`), from the back, in
/// place.
fn merge_into(into: &mut Vec<Slot>, fresh: &[(u64, Slot)]) {
    let old = into.len();
    into.reserve_exact(fresh.len());
    into.resize(old + fresh.len(), Slot::default());
    let (mut i, mut j) = (old, fresh.len());
    while j > 0 {
        let k = i + j - 1;
        if i > 0 && into[i - 1].part > fresh[j - 1].1.part {
            into[k] = into[i - 1];
            i -= 1;
        } else {
            into[k] = fresh[j - 1].1;
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::index::{IndexRun, IndexRunRef};

    /// Writes index segments `from..to` of `per` events each (ids `e<k>`, spread over
    /// three teams), as a batch commit does.
    fn write_segments(store: &Store, from: u64, to: u64, per: u64, prefix: &str) {
        for n in from..to {
            let runs: Vec<IndexRun> = (0..3)
                .map(|t| IndexRun {
                    team: format!("team-{t}"),
                    events: (0..per)
                        .filter(|i| i % 3 == t)
                        .map(|i| (format!("{prefix}{}", n * per + i), n * per + i + 1))
                        .collect(),
                })
                .collect();
            let refs: Vec<IndexRunRef<'_>> =
                runs.iter().map(|r| IndexRunRef { team: &r.team, events: &r.events }).collect();
            let mut batch = crate::batch::Batch::default();
            tables::index::insert(&mut batch, n, &refs);
            store.tree.apply_batch(batch.to_sled()).unwrap();
        }
    }

    /// Batch `n` as a writer does it: 1,000 events inserted, their segment written, a
    /// spill when due (whether there was one).
    fn insert_batch(index: &mut Index, store: &Store, n: u64) -> bool {
        for i in 0..1000 {
            let k = n * 1000 + i;
            let team = TeamId::new(format!("team-{}", i % 3)).unwrap();
            index.insert(id_hash(&format!("e{k}")), &team, k + 1).unwrap();
        }
        write_segments(store, n, n + 1, 1000, "e");
        index.next_segment = n + 1;
        let due = index.spill_due();
        if due {
            index.spill(store).unwrap();
        }
        due
    }

    /// Event `k` as found: its team's name and sequence number.
    fn found(index: &Index, id: &str) -> Vec<(String, u64)> {
        let locs = index.candidates(id_hash(id)).unwrap();
        locs.iter().map(|l| (index.team(l.team).to_string(), l.seq)).collect()
    }

    fn run_files(store: &Store) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(store.dir().join("index"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("run-"))
            .collect();
        names.sort();
        names
    }

    /// Past `hot_max` events the index moves them to runs on disk, at most log2 of
    /// them; every event is found there, before and after reopening (which reads the
    /// runs, not the segments they cover), through later spills; runs that fail their
    /// CRC or were built from other segments are rebuilt from the segments.
    #[test]
    fn older_events_move_to_runs_on_disk_and_are_found_after_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), &ledger_core::Catalog::builtin()).unwrap();
        write_segments(&store, 0, 40, 1000, "e");
        let check = |index: &Index, upto: u64| {
            for k in (0..upto).step_by(7).chain([upto - 1]) {
                assert_eq!(found(index, &format!("e{k}")), [(format!("team-{}", k % 1000 % 3), k + 1)], "event {k}");
            }
            assert!(found(index, &format!("e{upto}")).is_empty());
        };
        let index = Index::load_with(&store, 4096).unwrap();
        assert!(index.hot() < 4096 + 1000 && index.len == 40_000, "{} in memory of {}", index.hot(), index.len);
        let runs = run_files(&store);
        assert!((1..=4).contains(&runs.len()), "{runs:?}");
        check(&index, 40_000);
        drop(index);

        let mut index = Index::load_with(&store, 4096).unwrap();
        assert_eq!(run_files(&store), runs, "reopening reads the runs");
        check(&index, 40_000);
        // Live: events inserted, their segments written, a spill when due.
        for n in 40..50 {
            insert_batch(&mut index, &store, n);
        }
        check(&index, 50_000);
        drop(index);
        let index = Index::load_with(&store, 4096).unwrap();
        check(&index, 50_000);
        drop(index);

        // A byte flipped under an open index: a lookup reading its page fails, naming the
        // run; the next open rebuilds the runs from the segments.
        let index = Index::load_with(&store, 4096).unwrap();
        let runs = run_files(&store);
        let path = store.dir().join("index").join(&runs[0]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let failed: Vec<Error> =
            (0..50_000).filter_map(|k| index.candidates(id_hash(&format!("e{k}"))).err()).collect();
        assert!(!failed.is_empty(), "a lookup read the damaged page");
        assert!(failed[0].to_string().contains(&runs[0]), "{}", failed[0]);
        drop(index);
        let index = Index::load_with(&store, 4096).unwrap();
        let rebuilt = run_files(&store);
        assert_ne!(rebuilt, runs, "the runs were rebuilt");
        check(&index, 50_000);
        drop(index);
        let index = Index::load_with(&store, 4096).unwrap();
        assert_eq!(run_files(&store), rebuilt, "the rebuilt runs pass their checks");
        drop(index);

        // The segments the runs cover rewritten with other ids: the runs are rebuilt too.
        write_segments(&store, 0, 50, 1000, "x");
        let index = Index::load_with(&store, 4096).unwrap();
        assert!(found(&index, "e123").is_empty());
        assert_eq!(found(&index, "x123"), [("team-0".to_string(), 124)]);
    }

    /// The bloom filter saved beside the runs at each spill is read back at open (no
    /// run is read); one damaged, or saved with other runs (an older spill's), is
    /// refused and rebuilt from the runs: every event is still found.
    #[test]
    fn the_saved_bloom_filter_is_used_only_with_the_runs_it_was_saved_with() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), &ledger_core::Catalog::builtin()).unwrap();
        let bloom = store.dir().join("index").join(runs::BLOOM);
        let mut index = Index::load_with(&store, 4096).unwrap();
        let mut older = None;
        for n in 0..12 {
            if insert_batch(&mut index, &store, n) {
                older = older.or_else(|| Some(std::fs::read(&bloom).unwrap()));
            }
        }
        drop(index);
        let saved = std::fs::read(&bloom).unwrap();
        assert_ne!(Some(&saved), older.as_ref(), "each spill saves the filter again");
        let all_found = |index: &Index| (0..12_000).all(|k| found(index, &format!("e{k}")).len() == 1);
        let reopened = Index::load_with(&store, 4096).unwrap();
        assert!(all_found(&reopened));
        assert_eq!(std::fs::read(&bloom).unwrap(), saved, "a filter that matches is read, not rebuilt");
        drop(reopened);
        let runs = Runs::open(store.dir().join("index"), &store.tree).unwrap().0;
        let binding = runs.manifest_digest().unwrap();
        assert!(Bloom::from_file(&saved, &binding).is_some());
        let mut flipped = saved.clone();
        flipped[100] ^= 1;
        assert!(Bloom::from_file(&flipped, &binding).is_none(), "a damaged filter is refused");
        assert!(Bloom::from_file(older.as_ref().unwrap(), &binding).is_none(), "another spill's filter is refused");
        for replaced in [flipped, older.unwrap(), Vec::new()] {
            std::fs::write(&bloom, &replaced).unwrap();
            let index = Index::load_with(&store, 4096).unwrap();
            assert!(all_found(&index));
            let again = std::fs::read(&bloom).unwrap();
            assert!(Bloom::from_file(&again, &binding).is_some(), "rebuilt from the runs and saved again");
        }
    }

    fn sorted_locs(index: &Index, hash: u64) -> Vec<(u32, u64)> {
        let mut locs: Vec<_> = index.candidates(hash).unwrap().iter().map(|l| (l.team, l.seq)).collect();
        locs.sort_unstable();
        locs
    }

    /// Every event inserted is found under its hash, through several merges, with
    /// colliding hashes, a sequence number past `u32::MAX`, and none found that was not.
    #[test]
    fn finds_every_event_through_merges_and_collisions() {
        let team = TeamId::new("team-a").unwrap();
        let other = TeamId::new("team-b").unwrap();
        let mut index = Index::default();
        let n = 300_000u64;
        let hash = |i: u64| id_hash(&format!("e{i}"));
        for i in 0..n {
            index.insert(hash(i), &team, i + 1).unwrap();
        }
        // Three collisions: one against a merged event, two against a fresh one.
        index.insert(hash(5), &other, 1).unwrap();
        index.insert(hash(n - 1), &other, 2).unwrap();
        index.insert(hash(n - 1), &other, 3).unwrap();
        index.insert(hash(n), &other, u64::from(u32::MAX) + 7).unwrap();
        // An id whose hash differs from a merged one's only in the bits a slot drops.
        let twin = hash(7) ^ 1;
        index.insert(twin, &other, 9).unwrap();
        let merged: usize = index.buckets.iter().map(Vec::len).sum();
        assert!(merged >= 200_000, "merged: {merged}");
        assert!(!index.recent.is_empty());
        for (b, bucket) in index.buckets.iter().enumerate() {
            assert!(bucket.windows(2).all(|w| w[0].part <= w[1].part), "bucket {b} is out of order");
        }
        for i in (0..n).step_by(997) {
            assert_eq!(sorted_locs(&index, hash(i)), [(0, i + 1)], "event {i}");
        }
        assert_eq!(sorted_locs(&index, hash(5)), [(0, 6), (1, 1)]);
        assert_eq!(sorted_locs(&index, hash(n - 1)), [(0, n), (1, 2), (1, 3)]);
        assert_eq!(sorted_locs(&index, hash(n)), [(1, u64::from(u32::MAX) + 7)]);
        assert_eq!(sorted_locs(&index, twin), [(0, 8), (1, 9)], "both are candidates, the entry decides");
        assert_eq!(index.candidates(hash(n + 1)).unwrap().len(), 0);
        assert_eq!(index.len, n + 5);
        assert_eq!(index.team(1), &other);
        // The filter lets few ids it never saw through (8-16 bits an event, 4 bits set).
        let passed = (n + 1..n + 100_001).filter(|i| index.bloom.may_contain(hash(*i))).count();
        assert!(passed < 5_000, "{passed} of 100,000 unseen ids passed the filter");
    }
}
