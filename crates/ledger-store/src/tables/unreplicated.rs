//! Table `R`: the operations of batches a replicated ledger committed with no changelog
//! writer attached (an operator's `close`, `serve`'s close), in commit order. The next
//! writer appends them to the changelog before anything else (`Ledger::replicate`), so
//! the changelog misses no write; until then the store is ahead of it by these only.
use super::{decode, encode, number, KeyKind};
use crate::batch::{Batch, Op};
use crate::Result;

fn key(n: u64) -> Vec<u8> {
    KeyKind::Unreplicated.key(&n.to_be_bytes())
}

/// Stages `ops` as the batch after every one waiting.
pub(crate) fn insert(tree: &sled::Tree, batch: &mut Batch, ops: &[Op]) -> Result<()> {
    let next = match tree.scan_prefix(KeyKind::Unreplicated.prefix()).keys().next_back() {
        Some(k) => number(&k?, "unreplicated")? + 1,
        None => 0,
    };
    batch.insert(key(next), encode(&ops));
    Ok(())
}

/// Stages the removal of batch `n`.
pub(crate) fn remove(batch: &mut Batch, n: u64) {
    batch.remove(key(n));
}

/// The waiting batches, oldest first: `(n, ops)`.
pub(crate) fn all(tree: &sled::Tree) -> Result<Vec<(u64, Vec<Op>)>> {
    tree.scan_prefix(KeyKind::Unreplicated.prefix())
        .map(|kv| {
            let (k, v) = kv?;
            Ok((number(&k, "unreplicated")?, decode(&v, "an unreplicated batch")?))
        })
        .collect()
}
