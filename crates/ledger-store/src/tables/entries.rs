//! Table `E`: each team's entries, one block per batch under `team 0 first_seq`.
//! Entries are postcard-encoded core `Entry` values; the per-team chain hashes exactly
//! those bytes, so a changed byte anywhere breaks it at that entry.
use std::sync::Arc;

use ledger_core::Entry;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{split_team_key, KeyKind, FORMAT_VERSION};

/// A compressed block decompresses to at most this many times its stored size (LZ4's
/// own bound is 255): a damaged size prefix is refused instead of allocated.
const EXPANSION_MAX: usize = 255;
use crate::{Error, Result};

pub type Hash = [u8; 32];

/// One entry as stored: its sequence number, its chain hash and its canonical bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    pub seq: u64,
    pub hash: Hash,
    pub body: Vec<u8>,
}

/// One block as read: the team, the seq of its first entry, and its entries.
pub(crate) type Block = (String, u64, Vec<StoredEntry>);

/// The key of the team's block starting at `first_seq`.
pub(crate) fn key(team: &str, first_seq: u64) -> Vec<u8> {
    KeyKind::Entry.team_key(team, first_seq)
}

/// Whether `key` is one of this table's.
pub(crate) fn is_entry(key: &[u8]) -> bool {
    key.first() == Some(&(KeyKind::Entry as u8))
}

/// The key range of every team's blocks.
pub(crate) fn all() -> (Vec<u8>, Vec<u8>) {
    below_ff(KeyKind::Entry.prefix().to_vec())
}

/// The key range of one team's blocks.
pub(crate) fn of_team(team: &str) -> (Vec<u8>, Vec<u8>) {
    below_ff(KeyKind::Entry.team_prefix(team))
}

fn below_ff(prefix: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let mut upper = prefix.clone();
    upper.push(0xff);
    (prefix, upper)
}

pub(crate) fn encode_entry(entry: &Entry) -> Vec<u8> {
    postcard::to_allocvec(entry).expect("entries encode")
}

pub(crate) fn decode_entry(body: &[u8]) -> std::result::Result<Entry, postcard::Error> {
    postcard::from_bytes(body)
}

/// hash(n) = SHA-256("usage-ledger/entry/v1" ‖ hash(n−1) ‖ seq BE ‖ body); hash(0) = zeros.
pub(crate) fn chain(prev: &Hash, seq: u64, body: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(b"usage-ledger/entry/v1");
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(body);
    h.finalize().into()
}

/// A block: its format byte, then the postcard encoding of its entries; in format 2
/// LZ4-compressed (lz4_flex's block format, the decompressed size first, u32 LE). The
/// chain hashes the entry bodies, not the block, so the encoding can change under it.
pub(crate) fn encode_block(format: u8, entries: &[StoredEntry]) -> Vec<u8> {
    let raw = postcard::to_allocvec(entries).expect("blocks encode");
    let mut out = vec![format];
    match format {
        1 => out.extend(raw),
        _ => out.extend(lz4_flex::compress_prepend_size(&raw)),
    }
    out
}

pub(crate) fn decode_block(bytes: &[u8]) -> Result<Vec<StoredEntry>> {
    let corrupt = |e: &dyn std::fmt::Display| Error::Corrupt(format!("block does not decode: {e}"));
    match bytes.first() {
        Some(1) => postcard::from_bytes(&bytes[1..]).map_err(|e| corrupt(&e)),
        Some(2) => {
            let body = &bytes[1..];
            let size = body.get(..4).map_or(0, |s| u32::from_le_bytes(s.try_into().expect("4 bytes")) as usize);
            if body.len() < 4 || size > body.len().saturating_mul(EXPANSION_MAX) {
                return Err(corrupt(&format!("a compressed block of {} bytes claims {size}", body.len())));
            }
            let raw = lz4_flex::decompress_size_prepended(body).map_err(|e| corrupt(&e))?;
            postcard::from_bytes(&raw).map_err(|e| corrupt(&e))
        }
        Some(&found) => Err(Error::Format { found, expected: FORMAT_VERSION }),
        None => Err(Error::Corrupt("empty block".into())),
    }
}

/// The format byte a stored block was written in (to rewrite it in the same one).
pub(crate) fn block_format(bytes: &[u8]) -> u8 {
    bytes.first().copied().unwrap_or(block_format_of(FORMAT_VERSION))
}

/// The block encoding a store of format `store_format` writes: its own up to format 2
/// (format 3 changed the outbox, not the blocks).
pub(crate) fn block_format_of(store_format: u8) -> u8 {
    store_format.min(2)
}

/// Stages the team's block starting at `first_seq`, for a store of format `store_format`.
pub(crate) fn insert(
    batch: &mut crate::batch::Batch,
    store_format: u8,
    team: &str,
    first_seq: u64,
    entries: &[StoredEntry],
) {
    batch.insert(key(team, first_seq), encode_block(block_format_of(store_format), entries));
}

/// The blocks last decoded for single-entry reads, each with the bytes it was decoded
/// from: a duplicate or conflict check reads one entry, and decoding its whole block (up
/// to 65,536 entries, ~9 ms) per check made a resumed import ~100× slower than its
/// first pass. A block is served from here only while its stored bytes are still those
/// (compared whole, so a block rewritten since is decoded again).
#[derive(Debug, Default)]
pub(crate) struct BlockCache(std::sync::Mutex<std::collections::VecDeque<(sled::IVec, Arc<Vec<StoredEntry>>)>>);

/// Enough for the blocks a run of duplicates walks through, and the teams beside it.
const CACHED_BLOCKS: usize = 8;

impl BlockCache {
    pub(crate) fn decoded(&self, bytes: &sled::IVec) -> Result<Arc<Vec<StoredEntry>>> {
        if let Some((_, entries)) = self.0.lock().expect("not poisoned").iter().find(|(b, _)| same_bytes(b, bytes)) {
            return Ok(Arc::clone(entries));
        }
        let entries = Arc::new(decode_block(bytes)?);
        let mut cached = self.0.lock().expect("not poisoned");
        if cached.len() >= CACHED_BLOCKS {
            cached.pop_front();
        }
        cached.push_back((bytes.clone(), Arc::clone(&entries)));
        Ok(entries)
    }
}

/// Whether two stored values are the same bytes: the same buffer (sled hands out shared
/// ones, and a kept one stays alive, so its address cannot be reused), else compared.
pub(crate) fn same_bytes(a: &sled::IVec, b: &sled::IVec) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

/// Entry `seq` of `team`, read from the block that holds it.
pub(crate) fn read(tree: &sled::Tree, cache: &BlockCache, team: &str, seq: u64) -> Result<Option<Entry>> {
    let upper = key(team, seq);
    let lower = KeyKind::Entry.team_prefix(team);
    let Some(kv) = tree.range(lower..=upper).next_back() else { return Ok(None) };
    crate::progress::tick();
    let (_, v) = kv?;
    let entries = cache.decoded(&v)?;
    match entries.iter().find(|e| e.seq == seq) {
        Some(stored) => {
            Ok(Some(decode_entry(&stored.body).map_err(|e| Error::Corrupt(format!("team {team} seq {seq}: {e}")))?))
        }
        None => Ok(None),
    }
}

/// The blocks in `lower..upper`, in key order (each team's in ledger order).
pub(crate) fn blocks(tree: &sled::Tree, (lower, upper): (Vec<u8>, Vec<u8>)) -> impl Iterator<Item = Result<Block>> {
    let mut order = crate::progress::Ascending::default();
    tree.range(lower..upper).map(move |kv| {
        let (k, v) = kv?;
        order.check(&k, "entries")?;
        let (team, first) = split_team_key(&k).ok_or_else(|| Error::Corrupt("entry key".into()))?;
        let entries = decode_block(&v).map_err(|e| Error::Corrupt(format!("team {team} block at seq {first}: {e}")))?;
        Ok((team.to_string(), first, entries))
    })
}

/// The team's blocks as stored, key and value (to rewrite one: `tamper_entry`).
pub(crate) fn team_blocks(tree: &sled::Tree, team: &str) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec)>> {
    tree.scan_prefix(KeyKind::Entry.team_prefix(team)).map(|kv| {
        crate::progress::tick();
        Ok(kv?)
    })
}

/// The team's head: its last entry's sequence number and hash, if it has entries.
pub(crate) fn head(tree: &sled::Tree, team: &str) -> Result<Option<(u64, Hash)>> {
    let Some(kv) = tree.scan_prefix(KeyKind::Entry.team_prefix(team)).next_back() else { return Ok(None) };
    let (_, v) = kv?;
    Ok(decode_block(&v)?.last().map(|e| (e.seq, e.hash)))
}

/// The team's last block as stored, key and bytes: while it is unchanged, so is every
/// entry of the team (blocks are only ever appended, or the last one rewritten longer).
pub(crate) fn tip(tree: &sled::Tree, team: &str) -> Result<Option<(sled::IVec, sled::IVec)>> {
    Ok(tree.scan_prefix(KeyKind::Entry.team_prefix(team)).next_back().transpose()?)
}

/// Whether the team has entries.
pub(crate) fn has_team(tree: &sled::Tree, team: &str) -> Result<bool> {
    Ok(tree.scan_prefix(KeyKind::Entry.team_prefix(team)).next().transpose()?.is_some())
}

/// Every team with entries, in key order: one seek per team (past the team's keys to
/// the next team's first), whatever its number of blocks.
pub(crate) fn teams(tree: &sled::Tree) -> Result<Vec<String>> {
    let mut teams: Vec<String> = Vec::new();
    let (mut lower, upper) = all();
    while let Some(kv) = tree.range(lower.clone()..upper.clone()).next() {
        let (k, _) = kv?;
        let (team, _) = split_team_key(&k).ok_or_else(|| Error::Corrupt("entry key".into()))?;
        if teams.last().is_some_and(|t| t.as_str() >= team) {
            return Err(Error::Corrupt(format!("entry keys out of order at team {team}")));
        }
        // `E team 1` sorts after every key of the team (`E team 0 …`) and before the next.
        lower = KeyKind::Entry.team_prefix(team);
        *lower.last_mut().expect("a prefix ends in 0") = 1;
        teams.push(team.to_string());
    }
    Ok(teams)
}

/// `parts + 1` keys cutting the entry key space at team boundaries into `parts`
/// ranges with about the same number of blocks.
pub(crate) fn team_bounds(tree: &sled::Tree, parts: usize) -> Result<Vec<Vec<u8>>> {
    // Each team's key prefix (`E` team 0) with the number of blocks before it.
    let mut starts: Vec<(Vec<u8>, usize)> = Vec::new();
    let mut blocks = 0usize;
    for k in KeyKind::Entry.keys(tree) {
        let k = k?;
        let prefix_len = k.iter().position(|b| *b == 0).map_or(k.len(), |zero| zero + 1);
        if starts.last().is_none_or(|(p, _)| p.as_slice() != &k[..prefix_len]) {
            starts.push((k[..prefix_len].to_vec(), blocks));
        }
        blocks += 1;
    }
    let mut bounds = vec![KeyKind::Entry.prefix().to_vec()];
    for part in 1..parts {
        let target = blocks * part / parts;
        if let Some((prefix, _)) = starts.iter().find(|(_, before)| *before >= target) {
            if bounds.last().is_some_and(|b| b < prefix) {
                bounds.push(prefix.clone());
            }
        }
    }
    bounds.push(vec![KeyKind::Entry as u8 + 1]);
    Ok(bounds)
}
