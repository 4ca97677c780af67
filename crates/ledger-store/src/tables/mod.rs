//! The tables of the single `ledger` sled tree: the key kinds, the key parts they
//! share, and one module per table holding its keys, its value codec and its reads.
//!
//! Every key starts with its table's `KeyKind` byte. Team and event ids never contain
//! 0x00 (their alphabet is [A-Za-z0-9._:-]), so it separates key parts.
//!
//! | kind | key                                | value                              | module      |
//! |------|------------------------------------|------------------------------------|-------------|
//! | `E`  | team 0 first_seq (u64 BE)          | block of entries                   | `entries`   |
//! | `I`  | batch number (u64 BE)              | index segment: the batch's events  | `index`     |
//! | `A`  | team 0 n (u64 BE)                  | alert JSON                         | `alerts`    |
//! | `V`  | team 0 period_start (i64 BE ^sign) | final invoice JSON                 | `invoices`  |
//! | `X`  | n (u64 BE)                         | outbox message                     | `outbox`    |
//! | `O`  | source (`topic/partition`)         | next offset (u64 BE)               | `offsets`   |
//! | `C`  | team 0 event_id 0 n (u64 BE)       | conflict record JSON               | `conflicts` |
//! | `M`  | `format`, `catalog`                | encoding version, recorded catalog | `meta`      |
//! | `P`  | team 0 refund event_id             | parked refund                      | `parked`    |
//! | `F`  | n (u64 BE)                         | outbox message refused for good    | `outbox`    |
//! | `R`  | n (u64 BE)                         | a batch's operations, not yet in the changelog | `unreplicated` |
//! | `S`  | team                               | the team's state at one entry (checkpoint) | `checkpoints` |
//! | `L`  | source (`topic/partition`)         | offset (u64 BE) and fingerprint (32 bytes) of the last record consumed | `offsets` |
//!
//! Reserved: `H` (`KeyKind::RetiredHeads`: per-team chain heads, retired when the
//! index became per-batch segments; heads are folded from the entries). A retired kind
//! stays in the enum and is never reused.
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub(crate) mod alerts;
pub(crate) mod checkpoints;
pub(crate) mod conflicts;
pub(crate) mod entries;
pub(crate) mod index;
pub(crate) mod invoices;
pub(crate) mod meta;
pub(crate) mod offsets;
pub(crate) mod outbox;
pub(crate) mod parked;
#[cfg(test)]
mod tests;
pub(crate) mod unreplicated;

/// Bump on any change to the encoding. A new store records this one; a store recorded
/// with an older readable format is read and written in its own (its blocks keep their
/// encoding), any other is refused, never misread. Format 2 (issue 12): entry blocks
/// LZ4-compressed; every other table as in format 1. Format 3: alerts and invoices wait
/// in the outbox as the protobuf messages they are published as (built from the core
/// values at staging), not as JSON converted at publishing; blocks as in format 2.
pub const FORMAT_VERSION: u8 = 3;

/// The formats this build reads (and writes, into stores that recorded them).
pub const FORMATS_READABLE: [u8; 3] = [1, 2, 3];

/// The first byte of every key: the table it belongs to. The values are on disk: never
/// renumber one, and never reuse a reserved one (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum KeyKind {
    Entry = b'E',
    Index = b'I',
    Alert = b'A',
    Invoice = b'V',
    Outbox = b'X',
    Offset = b'O',
    Conflict = b'C',
    Meta = b'M',
    Parked = b'P',
    /// Added in format 1 without changing any other encoding: older builds ignore it.
    Failed = b'F',
    /// Batches a replicated ledger committed while no changelog writer was attached
    /// (`close`, `serve`'s close), waiting to be appended to the changelog first.
    Unreplicated = b'R',
    /// Added in format 3 without changing any other encoding: older builds ignore it
    /// (they fold every entry), and a checkpoint they left behind is still the state at
    /// its entry.
    Checkpoint = b'S',
    /// Added in format 3 without changing any other encoding: older builds ignore it
    /// (and move offsets on without it: a fingerprint is checked only when it belongs to
    /// the record just before the recorded offset).
    LastConsumed = b'L',
    /// Retired: per-team chain heads, before the index became per-batch segments (heads
    /// are folded from the entries). Reserved so it is never reused; nothing writes it.
    #[allow(dead_code)]
    RetiredHeads = b'H',
}

impl KeyKind {
    /// The prefix of every key of this table.
    pub fn prefix(self) -> [u8; 1] {
        [self as u8]
    }

    /// `kind name`: a key with one part (meta names, offset sources, numbers).
    pub fn key(self, name: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(name.len() + 1);
        k.push(self as u8);
        k.extend_from_slice(name);
        k
    }

    /// `kind team 0`: the prefix of one team's keys.
    pub fn team_prefix(self, team: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(team.len() + 10);
        k.push(self as u8);
        k.extend_from_slice(team.as_bytes());
        k.push(0);
        k
    }

    /// `kind team 0 n(u64 BE)`.
    pub fn team_key(self, team: &str, n: u64) -> Vec<u8> {
        let mut k = self.team_prefix(team);
        k.extend_from_slice(&n.to_be_bytes());
        k
    }

    /// Every key of this table, its key bytes only.
    pub fn keys(self, tree: &sled::Tree) -> impl Iterator<Item = Result<sled::IVec>> {
        let mut order = crate::progress::Ascending::default();
        tree.scan_prefix(self.prefix()).keys().map(move |k| {
            let k = k?;
            order.check(&k, "keys")?;
            Ok(k)
        })
    }
}

/// Splits `kind team 0 n(u64 BE)` into team and `n`.
pub(crate) fn split_team_key(key: &[u8]) -> Option<(&str, u64)> {
    let body = &key[1..];
    let zero = body.iter().position(|b| *b == 0)?;
    let team = std::str::from_utf8(&body[..zero]).ok()?;
    let n = u64::from_be_bytes(body.get(zero + 1..zero + 9)?.try_into().ok()?);
    Some((team, n))
}

/// The `n` of `kind n(u64 BE)`.
pub(crate) fn number(key: &[u8], what: &str) -> Result<u64> {
    Ok(u64::from_be_bytes(key[1..].try_into().map_err(|_| Error::Corrupt(format!("{what} key")))?))
}

/// The postcard encoding of a value.
pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("values encode")
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Corrupt(format!("{what} does not decode: {e}")))
}

/// The values under `prefix` as text (the JSON projections and conflicts), in key order.
pub(crate) fn texts_under(tree: &sled::Tree, prefix: &[u8]) -> Result<Vec<String>> {
    tree.scan_prefix(prefix)
        .values()
        .inspect(|_| crate::progress::tick())
        .map(|v| String::from_utf8(v?.to_vec()).map_err(|e| Error::Corrupt(e.to_string())))
        .collect()
}

/// One projection an entry's effects make: an alert or an invoice, with its row.
pub(crate) enum Projection {
    Alert { row: Row, alert: ledger_core::Alert },
    Invoice { row: Row, invoice: Box<ledger_core::Invoice> },
}

/// What one entry's effects project, in order: its alerts (numbered on from
/// `alerts_before`, the team's alerts before them), then its invoice (naming `hash`, the
/// entry's chain hash). Every path that stores or checks projections (append, open,
/// replay) takes them from here.
pub(crate) fn projections(
    team: &str,
    alerts_before: u64,
    effects: ledger_core::Effects,
    hash: &entries::Hash,
) -> Vec<Projection> {
    let mut out: Vec<Projection> = (alerts_before..)
        .zip(effects.alerts)
        .map(|(n, alert)| Projection::Alert { row: alerts::row(team, n, &alert), alert })
        .collect();
    if let Some(invoice) = effects.invoice {
        out.push(Projection::Invoice { row: invoices::row(team, invoice.clone(), hash), invoice: Box::new(invoice) });
    }
    out
}

/// A projection row as staged live and as rebuilt by `replay`: one key and one value
/// encoding per projection, so the two cannot drift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub key: Vec<u8>,
    pub json: String,
    /// The deterministic id it is published under (consumers drop repeats by it).
    pub id: String,
}
