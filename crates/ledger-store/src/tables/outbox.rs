//! Table `X`: messages waiting to be published, numbered in commit order (`n`, u64 BE),
//! written in the batch that created them and removed once the broker acknowledged
//! them.
//!
//! The value is the postcard encoding of `Stored`. Its first field holds the kind as a
//! string; those strings are what format 1 wrote (the topic names of that time) and
//! are only an encoding here: the store names no topics, and the binary publishes each
//! kind to the topic it is configured with.
use serde::{Deserialize, Serialize};

use super::{decode, encode, number, KeyKind};
use crate::{Error, Result};

/// What an outbox message is, which decides where and how it is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    Alert,
    Invoice,
    DeadLetter,
}

impl OutboxKind {
    const ALL: [OutboxKind; 3] = [OutboxKind::Alert, OutboxKind::Invoice, OutboxKind::DeadLetter];

    /// The kind's tag on disk (format 1). Never change one.
    fn stored(self) -> &'static str {
        match self {
            OutboxKind::Alert => "usage.alerts.v1",
            OutboxKind::Invoice => "billing.invoices.v1",
            OutboxKind::DeadLetter => "usage.deadletter.v1",
        }
    }
}

/// A message waiting in the outbox: published, then marked sent (deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMsg {
    pub kind: OutboxKind,
    pub key: String,
    /// Deterministic id (alert id, invoice id, dead letter source): consumers drop
    /// repeats by it.
    pub id: String,
    /// The projection as JSON (alerts and invoices of format-1 and -2 stores, converted
    /// at publishing); empty otherwise.
    pub json: String,
    /// The bytes to publish as they are: the encoded message (alerts and invoices of a
    /// format-3 store), the dead letter's original record.
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// The value on disk; the field order is the format.
#[derive(Serialize, Deserialize)]
struct Stored<T, P, H> {
    kind: T,
    key: T,
    id: T,
    json: T,
    payload: P,
    headers: H,
}

fn key(n: u64) -> Vec<u8> {
    KeyKind::Outbox.key(&n.to_be_bytes())
}

fn encode_msg(m: &OutboxMsg) -> Vec<u8> {
    let stored = Stored {
        kind: m.kind.stored(),
        key: m.key.as_str(),
        id: m.id.as_str(),
        json: m.json.as_str(),
        payload: m.payload.as_slice(),
        headers: m.headers.as_slice(),
    };
    encode(&stored)
}

fn decode_msg(n: u64, bytes: &[u8]) -> Result<OutboxMsg> {
    let s: Stored<String, Vec<u8>, Vec<(String, String)>> = decode(bytes, "outbox message")?;
    let kind = OutboxKind::ALL
        .into_iter()
        .find(|k| k.stored() == s.kind)
        .ok_or_else(|| Error::Corrupt(format!("outbox message {n}: unknown kind {:?}", s.kind)))?;
    Ok(OutboxMsg { kind, key: s.key, id: s.id, json: s.json, payload: s.payload, headers: s.headers })
}

/// Every waiting message's key (values not read).
pub(crate) fn keys(tree: &sled::Tree) -> impl Iterator<Item = Result<sled::IVec>> {
    KeyKind::Outbox.keys(tree)
}

/// Stages message number `n`.
pub(crate) fn insert(batch: &mut crate::batch::Batch, n: u64, msg: &OutboxMsg) {
    batch.insert(key(n), encode_msg(msg));
}

/// Stages the removal of message number `n` (sent).
pub(crate) fn remove(batch: &mut crate::batch::Batch, n: u64) {
    batch.remove(key(n));
}

/// The number the next message takes: one past the newest unsent or failed one.
pub(crate) fn next_number(tree: &sled::Tree) -> Result<u64> {
    let mut next = 0;
    for kind in [KeyKind::Outbox, KeyKind::Failed] {
        if let Some(k) = tree.scan_prefix(kind.prefix()).keys().next_back() {
            next = next.max(number(&k?, "outbox")? + 1);
        }
    }
    Ok(next)
}

/// The header a failed message carries its refusal in.
pub const FAILED_REASON: &str = "failed.reason";

/// Stages moving message `n` out of the outbox, refused for good with `reason`: kept,
/// never retried, listed for an operator.
pub(crate) fn fail(batch: &mut crate::batch::Batch, n: u64, msg: &OutboxMsg, reason: &str) {
    let mut failed = msg.clone();
    failed.headers.push((FAILED_REASON.to_string(), reason.to_string()));
    batch.remove(key(n));
    batch.insert(KeyKind::Failed.key(&n.to_be_bytes()), encode_msg(&failed));
}

/// Every message refused for good, oldest first, with its number.
pub(crate) fn failed(tree: &sled::Tree) -> Result<Vec<(u64, OutboxMsg)>> {
    tree.scan_prefix(KeyKind::Failed.prefix())
        .inspect(|_| crate::progress::tick())
        .map(|kv| {
            let (k, v) = kv?;
            let n = number(&k, "failed outbox")?;
            Ok((n, decode_msg(n, &v)?))
        })
        .collect()
}

/// Up to `limit` unsent messages, oldest first, with their numbers.
pub(crate) fn oldest(tree: &sled::Tree, limit: usize) -> Result<Vec<(u64, OutboxMsg)>> {
    tree.scan_prefix(KeyKind::Outbox.prefix())
        .take(limit)
        .inspect(|_| crate::progress::tick())
        .map(|kv| {
            let (k, v) = kv?;
            let n = number(&k, "outbox")?;
            Ok((n, decode_msg(n, &v)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reads_back_as_written() {
        for kind in OutboxKind::ALL {
            let msg = OutboxMsg {
                kind,
                key: "t1".into(),
                id: "t1:2026-04-01".into(),
                json: "{}".into(),
                payload: vec![1, 2, 3],
                headers: vec![("reason".into(), "why".into())],
            };
            assert_eq!(decode_msg(0, &encode_msg(&msg)).unwrap(), msg);
        }
    }

    /// Postcard strings and byte vectors are a varint length, then the bytes.
    fn framed(parts: &[&[u8]]) -> Vec<u8> {
        parts.iter().flat_map(|p| std::iter::once(p.len() as u8).chain(p.iter().copied())).collect()
    }

    /// The compatibility fixture holds alerts and invoices but no dead letters (only the
    /// service writes them): their bytes are pinned here.
    #[test]
    fn a_dead_letter_is_stored_as_format_1_wrote_it() {
        let msg = OutboxMsg {
            kind: OutboxKind::DeadLetter,
            key: "t1".into(),
            id: "images.processed.v1/0/7".into(),
            json: String::new(),
            payload: vec![0xde, 0xad],
            headers: vec![("reason.code".into(), "invalid".into())],
        };
        let mut expected = framed(&[b"usage.deadletter.v1", b"t1", b"images.processed.v1/0/7", b"", &[0xde, 0xad]]);
        expected.push(1);
        expected.extend(framed(&[b"reason.code", b"invalid"]));
        assert_eq!(encode_msg(&msg), expected);
    }
}
