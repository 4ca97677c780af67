//! Table `V`: the final invoices projection, under `team 0 period_start` (seconds,
//! sign bit flipped so keys sort by time), as JSON. Written by live staging and rebuilt
//! by `replay`, both through `row`.
use ledger_core::Invoice;

use super::entries::Hash;
use super::{texts_under, KeyKind, Row};
use crate::Result;

/// The key of the team's invoice for the period starting at `period_start` seconds.
fn key(team: &str, period_start: i64) -> Vec<u8> {
    KeyKind::Invoice.team_key(team, (period_start as u64) ^ (1 << 63))
}

/// The final invoice as stored, stamped with `head`, the chain hash of the entry that
/// closed its cycle, and the id it is published under (`team:period_start`).
pub(crate) fn row(team: &str, mut invoice: Invoice, head: &Hash) -> Row {
    invoice.ledger.head_hash = hex::encode(head);
    Row {
        key: key(team, invoice.period_start.timestamp()),
        json: invoice.to_json(),
        id: format!("{}:{}", team, invoice.period.start),
    }
}

/// The team's final invoices as JSON, oldest period first.
pub(crate) fn of_team(tree: &sled::Tree, team: &str) -> Result<Vec<String>> {
    texts_under(tree, &KeyKind::Invoice.team_prefix(team))
}

/// Every team's final invoices as JSON, in key order (team, then period).
pub(crate) fn all(tree: &sled::Tree) -> Result<Vec<String>> {
    texts_under(tree, &KeyKind::Invoice.prefix())
}

/// The key and JSON of the team's first final invoice, if it has one.
pub(crate) fn first_of(tree: &sled::Tree, team: &str) -> Result<Option<(sled::IVec, sled::IVec)>> {
    Ok(tree.scan_prefix(KeyKind::Invoice.team_prefix(team)).next().transpose()?)
}

/// Every stored invoice's key.
pub(crate) fn keys(tree: &sled::Tree) -> impl Iterator<Item = Result<sled::IVec>> {
    KeyKind::Invoice.keys(tree)
}

/// The team's final invoice for the period starting at `period_start` seconds.
pub(crate) fn get(tree: &sled::Tree, team: &str, period_start: i64) -> Result<Option<String>> {
    crate::progress::tick();
    match tree.get(key(team, period_start))? {
        Some(v) => Ok(Some(String::from_utf8(v.to_vec()).map_err(|e| crate::Error::Corrupt(e.to_string()))?)),
        None => Ok(None),
    }
}
