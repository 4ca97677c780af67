//! Table `M`: the store's metadata by name: `format` (the encoding version, one byte),
//! `catalog` (the catalog the store recorded, as postcard-framed JSON) and `changelog`
//! (the ledger's position in its changelog: next offset u64 BE ‖ head digest, 40 bytes;
//! only ledgers of the replicated service have one) and `inputs` (the input topics'
//! partition count the service built the ledger from, u32 BE) and `cluster` (the id of
//! the Kafka cluster the service last opened it with, UTF-8); `inputs` and `cluster`
//! are not replicated (nor exported): each copy records what it was opened with.
use ledger_core::Catalog;

use super::entries::Hash;
use super::{decode, encode, KeyKind, FORMAT_VERSION};
use crate::{Error, Result};

fn format_key() -> Vec<u8> {
    KeyKind::Meta.key(b"format")
}

fn catalog_key() -> Vec<u8> {
    KeyKind::Meta.key(b"catalog")
}

fn catalog_value(catalog: &Catalog) -> Vec<u8> {
    encode(&serde_json::to_string(catalog).expect("catalog serializes"))
}

/// The keys of the store's own metadata, which a changelog export leaves out (each
/// copy records its own).
pub(crate) fn own_keys() -> [Vec<u8>; 5] {
    [format_key(), catalog_key(), changelog_key(), inputs_key(), cluster_key()]
}

/// Whether `key` is one of this table's.
pub(crate) fn is_meta(key: &[u8]) -> bool {
    key.first() == Some(&(KeyKind::Meta as u8))
}

/// The recorded format value, if the store has one (a new store has not).
pub(crate) fn format(tree: &sled::Tree) -> Result<Option<sled::IVec>> {
    Ok(tree.get(format_key())?)
}

/// Stages what a new store records: this build's format and `catalog`.
pub(crate) fn insert_new(batch: &mut crate::batch::Batch, catalog: &Catalog) {
    batch.insert(format_key(), vec![FORMAT_VERSION]);
    batch.insert(catalog_key(), catalog_value(catalog));
}

fn changelog_key() -> Vec<u8> {
    KeyKind::Meta.key(b"changelog")
}

/// The ledger's position in its changelog, if it has one.
pub(crate) fn changelog(tree: &sled::Tree) -> Result<Option<Position>> {
    tree.get(changelog_key())?.map(|v| Position::decode(&v)).transpose()
}

/// Stages the ledger's position in its changelog (in the batch the record carries).
pub(crate) fn insert_changelog(batch: &mut crate::batch::Batch, position: &Position) {
    batch.insert(changelog_key(), position.encode());
}

/// Replaces the recorded catalog.
pub(crate) fn set_catalog(tree: &sled::Tree, catalog: &Catalog) -> Result<()> {
    tree.insert(catalog_key(), catalog_value(catalog))?;
    Ok(())
}

/// The recorded catalog.
pub(crate) fn catalog(tree: &sled::Tree) -> Result<Catalog> {
    let raw = tree.get(catalog_key())?.ok_or_else(|| Error::Corrupt("no catalog recorded".into()))?;
    let json: String = decode(&raw, "catalog")?;
    serde_json::from_str(&json).map_err(|e| Error::Corrupt(format!("recorded catalog: {e}")))
}

fn inputs_key() -> Vec<u8> {
    KeyKind::Meta.key(b"inputs")
}

/// The input partition count the ledger was built from, if recorded.
pub(crate) fn inputs(tree: &sled::Tree) -> Result<Option<u32>> {
    match tree.get(inputs_key())? {
        Some(v) => Ok(Some(u32::from_be_bytes(v.as_ref().try_into().map_err(|_| Error::Corrupt("Minputs".into()))?))),
        None => Ok(None),
    }
}

pub(crate) fn set_inputs(tree: &sled::Tree, partitions: u32) -> Result<()> {
    tree.insert(inputs_key(), &partitions.to_be_bytes())?;
    Ok(())
}

fn cluster_key() -> Vec<u8> {
    KeyKind::Meta.key(b"cluster")
}

/// The id of the Kafka cluster the ledger was last opened with, if recorded.
pub(crate) fn cluster(tree: &sled::Tree) -> Result<Option<String>> {
    match tree.get(cluster_key())? {
        Some(v) => Ok(Some(String::from_utf8(v.to_vec()).map_err(|_| Error::Corrupt("Mcluster".into()))?)),
        None => Ok(None),
    }
}

/// Records the Kafka cluster the ledger is opened with.
pub(crate) fn set_cluster(tree: &sled::Tree, id: &str) -> Result<()> {
    tree.insert(cluster_key(), id.as_bytes())?;
    Ok(())
}

/// Where a ledger stands in its changelog: the offset its next record must land at, and
/// the digest of the last record it holds (the one the next must link to).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub next: u64,
    pub head: Hash,
}

impl Position {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = self.next.to_be_bytes().to_vec();
        out.extend_from_slice(&self.head);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Position> {
        if bytes.len() != 40 {
            return Err(Error::Corrupt(format!("the changelog position is {} bytes, not 40", bytes.len())));
        }
        let next = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        Ok(Position { next, head: bytes[8..].try_into().expect("32 bytes") })
    }
}
