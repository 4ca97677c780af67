//! Table `S`: each team's folded state at one of its entries (a checkpoint), so a
//! writer's open folds only the entries after it. A checkpoint is derived, never
//! history: it rides the same atomic batch (and changelog record) as the entry it
//! stands at, open checks that entry's chain hash against it, and `verify` folds every
//! team from its first entry and compares. One this build cannot read (another
//! encoding or state version) is passed over: the team is folded from its first entry.
use ledger_core::{Team, TeamId};
use serde::{Deserialize, Serialize};

use super::entries::Hash;
use super::KeyKind;
use crate::batch::Batch;
use crate::{Error, Result};

/// The value's first byte; then `Team::STATE_VERSION` (u16 BE), then the LZ4-compressed
/// postcard encoding of `Checkpoint`.
const ENCODING: u8 = 1;

/// A decompressed checkpoint is at most this many times its stored size.
const EXPANSION_MAX: usize = 255;

/// A team's entries past its checkpoint before a batch writes a new one: at least this
/// many, and at least half the usage records its state holds (`due`).
pub(crate) const EVERY_ENTRIES_MIN: u64 = 64;

/// Whether a team `since` entries past its checkpoint, whose state holds `pending` usage
/// records, is due a new one. A checkpoint writes the state, so this costs at most about
/// two usage records written per entry appended, plus the state's
/// fixed part every 64 entries; an open folds at most that many entries per team past its
/// checkpoint, so it grows with the state (teams, open usage), not with history.
pub(crate) fn due(since: u64, pending: usize) -> bool {
    since >= EVERY_ENTRIES_MIN.max(pending as u64 / 2)
}

/// What the writer counted through a team's entry `seq`; a fold resumed at the
/// checkpoint sees only the entries after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counts {
    pub seq: u64,
    /// Entries through `seq` that record an event (each is indexed once).
    pub events: u64,
    /// Alerts and invoices entries through `seq` raised (stored as projections).
    pub alerts: u64,
    pub invoices: u64,
}

/// A team's state after entry `counts.seq`, whose chain hash is `head`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Checkpoint {
    pub counts: Counts,
    pub head: Hash,
    pub team: Team,
}

/// `Checkpoint` as written, borrowing the writer's state (the same encoding).
#[derive(Serialize)]
struct Written<'a> {
    counts: Counts,
    head: &'a Hash,
    team: &'a Team,
}

fn key(team: &str) -> Vec<u8> {
    KeyKind::Checkpoint.key(team.as_bytes())
}

fn encode(counts: Counts, head: &Hash, team: &Team) -> Vec<u8> {
    let raw = postcard::to_allocvec(&Written { counts, head, team }).expect("checkpoints encode");
    let mut out = vec![ENCODING];
    out.extend_from_slice(&Team::STATE_VERSION.to_be_bytes());
    out.extend(lz4_flex::compress_prepend_size(&raw));
    out
}

/// The checkpoint, or `None` when it is of an encoding or state version this build does
/// not read. An error when it is of this build's and does not decode.
pub(crate) fn decode(team: &str, bytes: &[u8]) -> Result<Option<Checkpoint>> {
    let corrupt = |e: &dyn std::fmt::Display| Error::Corrupt(format!("team {team}: checkpoint does not decode: {e}"));
    if bytes.len() < 3 || bytes[0] != ENCODING || u16::from_be_bytes([bytes[1], bytes[2]]) != Team::STATE_VERSION {
        return Ok(None);
    }
    let body = &bytes[3..];
    let size = body.get(..4).map_or(0, |s| u32::from_le_bytes(s.try_into().expect("4 bytes")) as usize);
    if body.len() < 4 || size > body.len().saturating_mul(EXPANSION_MAX) {
        return Err(corrupt(&format!("{} bytes claim {size}", body.len())));
    }
    let raw = lz4_flex::decompress_size_prepended(body).map_err(|e| corrupt(&e))?;
    let checkpoint: Checkpoint = postcard::from_bytes(&raw).map_err(|e| corrupt(&e))?;
    if checkpoint.team.id().as_str() != team || checkpoint.team.last_seq() != checkpoint.counts.seq {
        return Err(corrupt(&format!("it holds team {} at seq {}", checkpoint.team.id(), checkpoint.team.last_seq())));
    }
    Ok(Some(checkpoint))
}

/// Stages `team`'s state after the entry `counts.seq`, whose chain hash is `head`.
pub(crate) fn insert(batch: &mut Batch, counts: Counts, head: &Hash, team: &Team) {
    batch.insert(key(team.id().as_str()), encode(counts, head, team));
}

pub(crate) fn remove(batch: &mut Batch, team: &str) {
    batch.remove(key(team));
}

/// The team's checkpoint, if it has one this build reads.
pub(crate) fn read(tree: &sled::Tree, team: &TeamId) -> Result<Option<Checkpoint>> {
    match tree.get(key(team.as_str()))? {
        Some(v) => decode(team.as_str(), &v),
        None => Ok(None),
    }
}

/// Every stored checkpoint's team and value, in key order.
pub(crate) fn all(tree: &sled::Tree) -> impl Iterator<Item = Result<(String, sled::IVec)>> {
    tree.scan_prefix(KeyKind::Checkpoint.prefix()).map(|kv| {
        let (k, v) = kv?;
        let team = std::str::from_utf8(&k[1..]).map_err(|_| Error::Corrupt("checkpoint key".into()))?;
        Ok((team.to_string(), v))
    })
}
