//! Table `A`: the alerts projection, each team's alerts numbered in the order they
//! were raised (`team 0 n`), as JSON. Written by live staging and rebuilt by `replay`,
//! both through `row`.
use ledger_core::Alert;

use super::{texts_under, KeyKind, Row};
use crate::Result;

/// The team's `n`th alert (from 0) as stored, and the id it is published under.
pub(crate) fn row(team: &str, n: u64, alert: &Alert) -> Row {
    Row {
        key: KeyKind::Alert.team_key(team, n),
        json: serde_json::to_string(alert).expect("alert serializes"),
        id: alert.alert_id.clone(),
    }
}

/// The team's alerts as JSON, in the order they were raised.
pub(crate) fn of_team(tree: &sled::Tree, team: &str) -> Result<Vec<String>> {
    texts_under(tree, &KeyKind::Alert.team_prefix(team))
}

/// Every stored alert's key.
pub(crate) fn keys(tree: &sled::Tree) -> impl Iterator<Item = Result<sled::IVec>> {
    KeyKind::Alert.keys(tree)
}
