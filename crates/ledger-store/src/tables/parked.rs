//! Table `P`: refunds waiting for the image event they name (`crate::parked::Parked`,
//! postcard) under `team 0 refund event_id`; a repeat of a parked refund has its key.
use super::{decode, encode, KeyKind};
use crate::parked::Parked;
use crate::Result;

fn key(p: &Parked) -> Vec<u8> {
    let mut k = KeyKind::Parked.team_prefix(p.event.team_id.as_str());
    k.extend_from_slice(p.event.event_id.as_str().as_bytes());
    k
}

pub(crate) fn insert(batch: &mut crate::batch::Batch, p: &Parked) {
    batch.insert(key(p), encode(p));
}

pub(crate) fn remove(batch: &mut crate::batch::Batch, p: &Parked) {
    batch.remove(key(p));
}

/// Every parked refund.
pub(crate) fn all(tree: &sled::Tree) -> Result<Vec<Parked>> {
    tree.scan_prefix(KeyKind::Parked.prefix())
        .values()
        .inspect(|_| crate::progress::tick())
        .map(|raw| decode(&raw?, "parked refund"))
        .collect()
}
