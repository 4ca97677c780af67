//! Table `O`: the next offset to consume of each source (`topic/partition`), and table
//! `L`: which record the ledger consumed last there (its offset and its content's
//! fingerprint), both written in the same atomic batch as the entries they cover.
use super::KeyKind;
use crate::{Error, Result};

/// Where a batch leaves the ledger in one source: the next offset, and the fingerprint
/// of the record just before it when the caller knows it (a record consumed from Kafka).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputPosition {
    /// `topic/partition`.
    pub source: String,
    /// The next offset to consume.
    pub next: u64,
    /// The fingerprint of the record at `next - 1`.
    pub last: Option<[u8; 32]>,
}

/// The last record the ledger consumed of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastConsumed {
    /// Its offset.
    pub offset: u64,
    /// SHA-256 of its key and payload (`ledger_kafka::Record::fingerprint`).
    pub fingerprint: [u8; 32],
}

fn key(source: &str) -> Vec<u8> {
    KeyKind::Offset.key(source.as_bytes())
}

/// Stages the source's position.
pub(crate) fn insert(batch: &mut crate::batch::Batch, position: &InputPosition) {
    batch.insert(key(&position.source), position.next.to_be_bytes().to_vec());
    if let (Some(fingerprint), Some(offset)) = (position.last, position.next.checked_sub(1)) {
        let mut value = offset.to_be_bytes().to_vec();
        value.extend_from_slice(&fingerprint);
        batch.insert(KeyKind::LastConsumed.key(position.source.as_bytes()), value);
    }
}

/// The next offset to consume for a source, if one was recorded.
pub(crate) fn get(tree: &sled::Tree, source: &str) -> Result<Option<u64>> {
    match tree.get(key(source))? {
        None => Ok(None),
        Some(v) => match <[u8; 8]>::try_from(v.as_ref()) {
            Ok(bytes) => Ok(Some(u64::from_be_bytes(bytes))),
            Err(_) => Err(Error::Corrupt(format!("the position of {source} is {} bytes, not 8", v.len()))),
        },
    }
}

/// The last record consumed of a source, if its fingerprint was recorded.
pub(crate) fn last(tree: &sled::Tree, source: &str) -> Result<Option<LastConsumed>> {
    let Some(v) = tree.get(KeyKind::LastConsumed.key(source.as_bytes()))? else { return Ok(None) };
    let corrupt = || Error::Corrupt(format!("the last record consumed of {source} is {} bytes, not 40", v.len()));
    let (offset, fingerprint) = (v.get(..8).ok_or_else(corrupt)?, v.get(8..).ok_or_else(corrupt)?);
    Ok(Some(LastConsumed {
        offset: u64::from_be_bytes(offset.try_into().map_err(|_| corrupt())?),
        fingerprint: fingerprint.try_into().map_err(|_| corrupt())?,
    }))
}
