//! Table `I`: the event-id index on disk, one immutable segment per batch under the
//! batch number, listing every event the batch appended (see `crate::index` for the
//! map it is loaded into).
use serde::{Deserialize, Serialize};

use super::{decode, encode, number, KeyKind};
use crate::Result;

/// One team's part of an index segment: the events a batch appended to its ledger,
/// with their sequence numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IndexRun {
    pub team: String,
    pub events: Vec<(String, u64)>,
}

fn key(segment: u64) -> Vec<u8> {
    KeyKind::Index.key(&segment.to_be_bytes())
}

/// `IndexRun` borrowed: the same encoding, written without copying the ids.
#[derive(Debug, Serialize)]
pub(crate) struct IndexRunRef<'a> {
    pub team: &'a str,
    pub events: &'a [(String, u64)],
}

/// Stages segment number `segment`.
pub(crate) fn insert(batch: &mut crate::batch::Batch, segment: u64, runs: &[IndexRunRef<'_>]) {
    batch.insert(key(segment), encode(&runs));
}

/// A stored segment, not yet decoded (`verify` reports a bad one and goes on).
pub(crate) struct Segment {
    key: sled::IVec,
    value: sled::IVec,
}

impl Segment {
    pub fn number(&self) -> Result<u64> {
        number(&self.key, "index segment")
    }

    /// The segment number as it is written in faults: its key bytes in hex.
    pub fn label(&self) -> String {
        hex::encode(&self.key[1..])
    }

    pub fn bytes(&self) -> &[u8] {
        &self.value
    }

    pub fn runs(&self) -> Result<Vec<IndexRun>> {
        decode(&self.value, "index segment")
    }
}

/// Every segment, oldest first.
pub(crate) fn segments(tree: &sled::Tree) -> impl Iterator<Item = Result<Segment>> {
    segments_from(tree, 0)
}

/// The segments numbered `from` and up, oldest first.
pub(crate) fn segments_from(tree: &sled::Tree, from: u64) -> impl Iterator<Item = Result<Segment>> {
    let mut order = crate::progress::Ascending::default();
    let prefix = KeyKind::Index.prefix();
    tree.range(key(from)..).take_while(move |kv| kv.as_ref().map_or(true, |(key, _)| key.starts_with(&prefix))).map(
        move |kv| {
            let (key, value) = kv?;
            order.check(&key, "index")?;
            Ok(Segment { key, value })
        },
    )
}

/// Segment number `n`'s stored bytes, if it exists.
pub(crate) fn segment_bytes(tree: &sled::Tree, n: u64) -> Result<Option<sled::IVec>> {
    Ok(tree.get(key(n))?)
}
