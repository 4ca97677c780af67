//! The index's older events on disk, so that its memory does not grow with them:
//! sorted runs of 16-byte records (the id hash's top 48 bits, a team number, a
//! sequence number) in `index/` beside sled's files, merged like a binary counter (a
//! run merges into the one before it once that is no larger), so there are at most
//! log2(events / spill size) of them. A manifest names the runs, the team numbers, and
//! the index segments they cover, bound to the store by the last covered segment's
//! CRC. The runs are a cache of table `I`: a manifest that is missing, damaged or bound
//! to other segments, or a run whose size or CRC is wrong, is thrown away and the runs
//! are rebuilt from the segments. In memory a run keeps only the first hash of each
//! 4 KiB page (1/32 byte an event); a lookup reads one page, rarely two.
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use tracing::{info, warn};

use crate::fs::{fsync_dir, io};
use crate::{Error, Result};

/// One event in a run: its id hash with the low 16 bits zero, team number, sequence
/// number.
pub(crate) type Record = (u64, u32, u32);

pub(crate) const RECORD: usize = 16;
/// Records in a page, the unit a lookup reads: 4 KiB.
const PAGE: usize = 256;
const MANIFEST: &str = "manifest.json";
/// The index's bloom filter as it stood when the manifest was written (`Index`).
pub(crate) const BLOOM: &str = "bloom";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Manifest {
    version: u32,
    /// The runs hold every event of index segments `0..segments`.
    segments: u64,
    /// CRC-32 of segment `segments - 1` as stored: binds the runs to this store.
    last_segment_crc: u32,
    /// Team number n is `teams[n]`.
    teams: Vec<String>,
    runs: Vec<RunMeta>,
    next_file: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunMeta {
    file: String,
    len: u64,
    crc: u32,
}

struct Run {
    meta: RunMeta,
    file: File,
    pages: Pages,
}

/// A run's directory in memory, built as it is written or checked: each page's first
/// hash and CRC (a lookup checks the page it reads), and the whole run's CRC.
#[derive(Default)]
struct Pages {
    firsts: Vec<u64>,
    crcs: Vec<u32>,
    page: crc32fast::Hasher,
    whole: crc32fast::Hasher,
    len: u64,
    last: u64,
}

impl Pages {
    /// Adds the next record and returns its bytes; none if it is out of hash order.
    fn add(&mut self, r: Record) -> Option<[u8; RECORD]> {
        if r.0 < self.last {
            return None;
        }
        if self.len.is_multiple_of(PAGE as u64) {
            if self.len > 0 {
                self.crcs.push(std::mem::take(&mut self.page).finalize());
            }
            self.firsts.push(r.0);
        }
        let bytes = encode(r);
        self.page.update(&bytes);
        self.whole.update(&bytes);
        self.len += 1;
        self.last = r.0;
        Some(bytes)
    }

    /// The whole run's CRC, once the last page's is recorded.
    fn finish(&mut self) -> u32 {
        if self.len > 0 {
            self.crcs.push(std::mem::take(&mut self.page).finalize());
        }
        std::mem::take(&mut self.whole).finalize()
    }
}

/// The runs of one store's index.
pub(crate) struct Runs {
    dir: PathBuf,
    runs: Vec<Run>,
    next_file: u64,
    manifest_digest: Option<[u8; 32]>,
}

/// What the runs found on disk cover.
pub(crate) struct Covered {
    pub segments: u64,
    pub teams: Vec<String>,
}

/// Where the runs are stored: the segments they cover, for the manifest.
pub(crate) struct Cover<'a> {
    pub segments: u64,
    pub last_segment: &'a [u8],
    pub teams: &'a [ledger_core::TeamId],
}

/// A run's records, read in order.
struct Reader {
    inner: BufReader<File>,
    left: u64,
}

impl Reader {
    fn open(path: &Path, len: u64) -> Result<Reader> {
        let file = File::open(path).map_err(io(path))?;
        Ok(Reader { inner: BufReader::with_capacity(1 << 16, file), left: len })
    }

    fn next(&mut self) -> std::io::Result<Option<Record>> {
        if self.left == 0 {
            return Ok(None);
        }
        let mut buf = [0; RECORD];
        self.inner.read_exact(&mut buf)?;
        self.left -= 1;
        Ok(Some(decode(&buf)))
    }
}

fn decode(b: &[u8]) -> Record {
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    (u64::from_le_bytes(b[..8].try_into().expect("8 bytes")), u32_at(8), u32_at(12))
}

/// Writes a run, building its directory on the way.
struct Writer {
    out: BufWriter<File>,
    file: String,
    pages: Pages,
}

impl Writer {
    fn push(&mut self, r: Record) -> std::io::Result<()> {
        let bytes = self.pages.add(r).ok_or_else(|| std::io::Error::other("a run written out of hash order"))?;
        self.out.write_all(&bytes)
    }
}

impl Runs {
    /// The runs under `dir` that match the store, with what they cover; none (and the
    /// directory emptied) if they are missing or do not match.
    pub fn open(dir: PathBuf, tree: &sled::Tree) -> Result<(Runs, Option<Covered>)> {
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut runs = Runs { dir, runs: Vec::new(), next_file: 0, manifest_digest: None };
        let covered = match runs.load(tree) {
            Ok(covered) => covered,
            Err(why) => {
                warn!(dir = %runs.dir.display(), %why, "The index's runs do not match the store; rebuilding them from its segments.");
                runs.runs.clear();
                // New runs never take the name of one just refused.
                runs.next_file = runs.file_numbers()?.max().map_or(0, |n| n + 1);
                None
            }
        };
        runs.remove_unlisted()?;
        Ok((runs, covered))
    }

    fn load(&mut self, tree: &sled::Tree) -> Result<Option<Covered>, String> {
        let path = self.dir.join(MANIFEST);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let m: Manifest = serde_json::from_slice(&text).map_err(|e| format!("{MANIFEST}: {e}"))?;
        let digest: [u8; 32] = sha2::Sha256::digest(&text).into();
        if m.version != VERSION {
            return Err(format!("{MANIFEST} is version {}, this build writes {VERSION}", m.version));
        }
        let last = m.segments.checked_sub(1).ok_or("the manifest covers no segment")?;
        let stored = crate::tables::index::segment_bytes(tree, last).map_err(|e| e.to_string())?;
        if stored.map(|b| crc32fast::hash(&b)) != Some(m.last_segment_crc) {
            return Err(format!("index segment {last} is missing or not the one the runs were built from"));
        }
        let unique: std::collections::HashSet<&str> = m.teams.iter().map(String::as_str).collect();
        if unique.len() != m.teams.len() {
            return Err("the manifest numbers a team twice".into());
        }
        for meta in m.runs {
            let run = self.check(meta, m.teams.len())?;
            self.runs.push(run);
        }
        self.next_file = m.next_file;
        self.manifest_digest = Some(digest);
        Ok(Some(Covered { segments: m.segments, teams: m.teams }))
    }

    /// Opens a run, checking its size, order, team numbers and CRC.
    fn check(&self, meta: RunMeta, teams: usize) -> Result<Run, String> {
        let path = self.dir.join(&meta.file);
        let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let size = file.metadata().map_err(|e| format!("{}: {e}", path.display()))?.len();
        if Some(size) != meta.len.checked_mul(RECORD as u64) {
            return Err(format!("{} holds {size} bytes, not {} records", meta.file, meta.len));
        }
        let mut reader = Reader::open(&path, meta.len).map_err(|e| e.to_string())?;
        let mut pages = Pages::default();
        while let Some(r) = reader.next().map_err(|e| format!("{}: {e}", meta.file))? {
            if pages.add(r).is_none() {
                return Err(format!("{} is out of order at record {}", meta.file, pages.len));
            }
            if r.1 as usize >= teams {
                return Err(format!("{} names team number {} of {teams} at record {}", meta.file, r.1, pages.len));
            }
        }
        if pages.finish() != meta.crc {
            return Err(format!("{} fails its CRC", meta.file));
        }
        Ok(Run { meta, file, pages })
    }

    /// The numbers of the run files in the directory.
    fn file_numbers(&self) -> Result<impl Iterator<Item = u64>> {
        let names: Vec<String> = std::fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()
            .map_err(io(&self.dir))?;
        Ok(names.into_iter().filter_map(|n| n.strip_prefix("run-")?.strip_suffix(".bin")?.parse().ok()))
    }

    /// Removes every file the runs do not list (a run written or merged before a crash,
    /// one merged away, or all of them after a mismatch).
    fn remove_unlisted(&self) -> Result<()> {
        let listed: std::collections::HashSet<&str> = self.runs.iter().map(|r| r.meta.file.as_str()).collect();
        let keep_manifest = !self.runs.is_empty();
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if listed.contains(name.as_ref()) || (keep_manifest && (name == MANIFEST || name == BLOOM)) {
                continue;
            }
            std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
        }
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.runs.iter().map(|r| r.meta.len).sum()
    }

    /// Calls `f` with every hash in the runs.
    pub fn each_hash(&self, mut f: impl FnMut(u64)) -> Result<()> {
        for run in &self.runs {
            let path = self.dir.join(&run.meta.file);
            let mut reader = Reader::open(&path, run.meta.len)?;
            while let Some(r) = reader.next().map_err(io(&path))? {
                f(r.0);
            }
        }
        Ok(())
    }

    /// Calls `f` with the team and sequence numbers of every record whose hash is `hash`
    /// (low 16 bits zero).
    pub fn find(&self, hash: u64, mut f: impl FnMut(u32, u32)) -> Result<()> {
        let mut page = vec![0; PAGE * RECORD];
        for run in &self.runs {
            // Records equal to `hash` start in the last page whose first is below it, or
            // in the first whose first is it.
            let firsts = &run.pages.firsts;
            let mut p = firsts.partition_point(|first| *first < hash).saturating_sub(1);
            'pages: while p < firsts.len() {
                let from = (p * PAGE) as u64;
                let n = (run.meta.len - from).min(PAGE as u64) as usize;
                let path = self.dir.join(&run.meta.file);
                let bytes = &mut page[..n * RECORD];
                run.file.read_exact_at(bytes, from * RECORD as u64).map_err(io(&path))?;
                if crc32fast::hash(bytes) != run.pages.crcs[p] {
                    return Err(Error::Corrupt(format!(
                        "{} page {p} no longer matches its CRC (the next start rebuilds the index's runs)",
                        path.display()
                    )));
                }
                for r in bytes.chunks_exact(RECORD).map(decode) {
                    match r.0.cmp(&hash) {
                        std::cmp::Ordering::Less => {}
                        std::cmp::Ordering::Equal => f(r.1, r.2),
                        std::cmp::Ordering::Greater => break 'pages,
                    }
                }
                p += 1;
            }
        }
        Ok(())
    }

    /// Writes `records` (in hash order) as a new run, merges runs while the one before
    /// the newest is no larger than it, and records them in the manifest.
    pub fn add(&mut self, records: impl Iterator<Item = Record>, cover: Cover<'_>) -> Result<()> {
        let started = std::time::Instant::now();
        let mut w = self.writer()?;
        for r in records {
            w.push(r).map_err(io(&self.dir))?;
        }
        let run = self.finish(w)?;
        let added = run.meta.len;
        self.runs.push(run);
        let mut gone = Vec::new();
        while let [.., older, newer] = self.runs.as_slice() {
            if older.meta.len > newer.meta.len {
                break;
            }
            let (older, newer) = (older.meta.clone(), newer.meta.clone());
            let merged = self.merge(&older, &newer)?;
            self.runs.truncate(self.runs.len() - 2);
            gone.extend([older.file, newer.file]);
            self.runs.push(merged);
        }
        self.write_manifest(&cover)?;
        for file in gone {
            let path = self.dir.join(file);
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
        info!(
            dir = %self.dir.display(),
            added,
            runs = self.runs.len(),
            events = self.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Moved the index's older events to disk."
        );
        Ok(())
    }

    fn writer(&mut self) -> Result<Writer> {
        let name = format!("run-{:08}.bin", self.next_file);
        self.next_file += 1;
        let path = self.dir.join(&name);
        let file =
            std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(io(&path))?;
        Ok(Writer { out: BufWriter::with_capacity(1 << 16, file), file: name, pages: Pages::default() })
    }

    /// Flushes and fsyncs a written run.
    fn finish(&self, mut w: Writer) -> Result<Run> {
        let path = self.dir.join(&w.file);
        let file = w.out.into_inner().map_err(|e| io(&path)(e.into_error()))?;
        file.sync_all().map_err(io(&path))?;
        let meta = RunMeta { file: w.file, len: w.pages.len, crc: w.pages.finish() };
        Ok(Run { meta, file, pages: w.pages })
    }

    /// Merges two runs into a new one, `a`'s records first among equal hashes.
    fn merge(&mut self, a: &RunMeta, b: &RunMeta) -> Result<Run> {
        let (pa, pb) = (self.dir.join(&a.file), self.dir.join(&b.file));
        let (mut ra, mut rb) = (Reader::open(&pa, a.len)?, Reader::open(&pb, b.len)?);
        let mut w = self.writer()?;
        let (mut x, mut y) = (ra.next().map_err(io(&pa))?, rb.next().map_err(io(&pb))?);
        loop {
            let take_a = match (x, y) {
                (None, None) => break,
                (Some(x), Some(y)) => x.0 <= y.0,
                (x, _) => x.is_some(),
            };
            if take_a {
                w.push(x.expect("some")).map_err(io(&self.dir))?;
                x = ra.next().map_err(io(&pa))?;
            } else {
                w.push(y.expect("some")).map_err(io(&self.dir))?;
                y = rb.next().map_err(io(&pb))?;
            }
        }
        self.finish(w)
    }

    /// Writes the manifest beside the runs, atomically (a temporary file renamed over
    /// it), the directory fsynced before and after so the runs it names are there.
    fn write_manifest(&mut self, cover: &Cover<'_>) -> Result<()> {
        fsync_dir(&self.dir)?;
        let manifest = Manifest {
            version: VERSION,
            segments: cover.segments,
            last_segment_crc: crc32fast::hash(cover.last_segment),
            teams: cover.teams.iter().map(|t| t.as_str().to_owned()).collect(),
            runs: self.runs.iter().map(|r| r.meta.clone()).collect(),
            next_file: self.next_file,
        };
        let bytes = serde_json::to_vec(&manifest).expect("manifests encode");
        let path = self.dir.join(MANIFEST);
        write_replacing(&path, &bytes)?;
        self.manifest_digest = Some(sha2::Sha256::digest(&bytes).into());
        fsync_dir(&self.dir)
    }

    /// SHA-256 of the manifest as written or read: what a file derived from exactly
    /// these runs (the bloom filter) is bound to.
    pub fn manifest_digest(&self) -> Option<[u8; 32]> {
        self.manifest_digest
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`.
pub(crate) fn write_replacing(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn encode(r: Record) -> [u8; RECORD] {
    let mut buf = [0; RECORD];
    buf[..8].copy_from_slice(&r.0.to_le_bytes());
    buf[8..12].copy_from_slice(&r.1.to_le_bytes());
    buf[12..].copy_from_slice(&r.2.to_le_bytes());
    buf
}
