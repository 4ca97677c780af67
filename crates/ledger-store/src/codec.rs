//! Versioned canonical encoding of entries and blocks, and the per-team hash chain.
//! Entries are postcard-encoded core `Entry` values; the chain hashes exactly those
//! bytes, so a changed byte anywhere breaks it at that entry.
use ledger_core::{Entry, Event};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Bump on any change to the encoding; older data dirs are refused, never misread.
pub const FORMAT_VERSION: u8 = 1;

pub type Hash = [u8; 32];

/// One entry as stored: its sequence number, its chain hash and its canonical bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    pub seq: u64,
    pub hash: Hash,
    pub body: Vec<u8>,
}

pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    postcard::to_allocvec(entry).expect("entries encode")
}

pub fn decode_entry(body: &[u8]) -> std::result::Result<Entry, postcard::Error> {
    postcard::from_bytes(body)
}

/// hash(n) = SHA-256("usage-ledger/entry/v1" ‖ hash(n−1) ‖ seq BE ‖ body); hash(0) = zeros.
pub fn chain(prev: &Hash, seq: u64, body: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(b"usage-ledger/entry/v1");
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(body);
    h.finalize().into()
}

pub fn encode_block(entries: &[StoredEntry]) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    out.extend(postcard::to_allocvec(entries).expect("blocks encode"));
    out
}

pub fn decode_block(bytes: &[u8]) -> Result<Vec<StoredEntry>> {
    match bytes.first() {
        Some(&FORMAT_VERSION) => {
            postcard::from_bytes(&bytes[1..]).map_err(|e| Error::Corrupt(format!("block does not decode: {e}")))
        }
        Some(&found) => Err(Error::Format { found, expected: FORMAT_VERSION }),
        None => Err(Error::Corrupt("empty block".into())),
    }
}

/// Content fingerprint of an input event: same id + same fingerprint = duplicate.
pub fn fingerprint(event: &Event) -> [u8; 16] {
    let bytes = postcard::to_allocvec(event).expect("events encode");
    let digest = Sha256::digest(&bytes);
    digest[..16].try_into().expect("16 bytes")
}

/// One team's part of an index segment: the events a batch appended to its ledger,
/// with their sequence numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRun {
    pub team: String,
    pub events: Vec<(String, u64)>,
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("values encode")
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Corrupt(format!("{what} does not decode: {e}")))
}
