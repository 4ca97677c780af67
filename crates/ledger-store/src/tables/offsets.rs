//! Table `O`: the next offset to consume of each source (`topic/partition`), written in
//! the same atomic batch as the entries it covers.
use super::KeyKind;
use crate::{Error, Result};

fn key(source: &str) -> Vec<u8> {
    KeyKind::Offset.key(source.as_bytes())
}

/// Stages `next` as the source's next offset.
pub(crate) fn insert(batch: &mut crate::batch::Batch, source: &str, next: u64) {
    batch.insert(key(source), next.to_be_bytes().to_vec());
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
