//! Table `X`: messages waiting to be published, numbered in commit order (`n`, u64 BE),
//! written in the batch that created them and removed once the broker acknowledged
//! them.
//!
//! The value is the postcard encoding of `OutboxMsg`.
use serde::{Deserialize, Serialize};

use super::{decode, encode, number, KeyKind};
use crate::Result;

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

fn key(n: u64) -> Vec<u8> {
    KeyKind::Outbox.key(&n.to_be_bytes())
}

/// Stages message number `n`.
pub(crate) fn insert(batch: &mut sled::Batch, n: u64, msg: &OutboxMsg) {
    batch.insert(key(n), encode(msg));
}

/// Stages the removal of message number `n` (sent).
pub(crate) fn remove(batch: &mut sled::Batch, n: u64) {
    batch.remove(key(n));
}

/// The number the next message takes: one past the newest unsent one.
pub(crate) fn next_number(tree: &sled::Tree) -> Result<u64> {
    match tree.scan_prefix(KeyKind::Outbox.prefix()).keys().next_back() {
        Some(k) => Ok(number(&k?, "outbox")? + 1),
        None => Ok(0),
    }
}

/// Up to `limit` unsent messages, oldest first, with their numbers.
pub(crate) fn oldest(tree: &sled::Tree, limit: usize) -> Result<Vec<(u64, OutboxMsg)>> {
    tree.scan_prefix(KeyKind::Outbox.prefix())
        .take(limit)
        .map(|kv| {
            let (k, v) = kv?;
            let n = number(&k, "outbox")?;
            Ok((n, decode(&v, "outbox message")?))
        })
        .collect()
}
