//! Table `C`: conflicting duplicates (an event id seen again with other content), as
//! JSON records under `team 0 event_id 0 n`, `n` counting conflicts since open.
use super::{texts_under, KeyKind};
use crate::Result;

/// An event whose id was already used, for other content, by entry `existing_seq` of
/// `existing_team`.
pub(crate) struct Conflict<'a> {
    pub team: &'a str,
    pub event_id: &'a str,
    pub existing_team: &'a str,
    pub existing_seq: u64,
}

fn key(team: &str, event_id: &str, n: u64) -> Vec<u8> {
    let mut key = KeyKind::Conflict.team_prefix(team);
    key.extend_from_slice(event_id.as_bytes());
    key.push(0);
    key.extend_from_slice(&n.to_be_bytes());
    key
}

/// Stages conflict number `n`.
pub(crate) fn insert(batch: &mut crate::batch::Batch, n: u64, c: &Conflict) {
    let record = serde_json::json!({
        "event_id": c.event_id,
        "team_id": c.team,
        "existing_team_id": c.existing_team,
        "existing_seq": c.existing_seq,
        "reason": "same event_id with different content",
    });
    batch.insert(key(c.team, c.event_id, n), serde_json::to_vec(&record).expect("json"));
}

/// Conflicts recorded for the team, as JSON.
pub(crate) fn of_team(tree: &sled::Tree, team: &str) -> Result<Vec<String>> {
    texts_under(tree, &KeyKind::Conflict.team_prefix(team))
}
