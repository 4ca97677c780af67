//! The index's blocked Bloom filter, and its file beside the runs.
use super::BUCKET_BITS;

/// The first bytes of a saved filter (`index/bloom`).
const MAGIC: &[u8; 8] = b"ULBLOOM1";

/// A blocked Bloom filter over the id hashes' top 48 bits (what the slots keep, so it can
/// be rebuilt from them): each sets 4 bits of one 512-bit block, so a lookup reads one
/// cache line. Built for a capacity of events (8 bits each) and rebuilt twice as large
/// when the index outgrows it.
#[derive(Default)]
pub(super) struct Bloom {
    blocks: Vec<[u64; 8]>,
    pub capacity: u64,
}

impl Bloom {
    pub(super) fn with_capacity(capacity: u64) -> Bloom {
        let blocks = (capacity / 64).max(1) as usize;
        Bloom { blocks: vec![[0; 8]; blocks], capacity }
    }

    /// The block (from the mixed hash's high bits) and its 4 bits (from 9-bit fields of
    /// the low).
    fn positions(&self, hash: u64) -> (usize, [u32; 4]) {
        let mixed = (hash >> (32 - BUCKET_BITS)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let hash = mixed ^ (mixed >> 29);
        let block = ((u128::from(hash) * self.blocks.len() as u128) >> 64) as usize;
        (block, [0, 9, 18, 27].map(|shift| ((hash >> shift) & 511) as u32))
    }

    pub(super) fn insert(&mut self, hash: u64) {
        let (block, bits) = self.positions(hash);
        for bit in bits {
            self.blocks[block][(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    /// The filter as a file bound to `binding` (the runs' manifest digest): a magic, the
    /// binding, the capacity, the blocks, and a CRC-32 of all of it.
    pub(super) fn to_file(&self, binding: &[u8; 32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(56 + self.blocks.len() * 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(binding);
        out.extend_from_slice(&self.capacity.to_le_bytes());
        for word in self.blocks.iter().flatten() {
            out.extend_from_slice(&word.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// The filter a file holds, if it is whole and bound to `binding`.
    pub(super) fn from_file(bytes: &[u8], binding: &[u8; 32]) -> Option<Bloom> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32fast::hash(body).to_le_bytes() != crc || body.get(..8)? != MAGIC || body.get(8..40)? != binding {
            return None;
        }
        let capacity = u64::from_le_bytes(body.get(40..48)?.try_into().ok()?);
        let words = body.get(48..)?;
        if words.len() % 64 != 0 || words.len() as u64 / 64 != (capacity / 64).max(1) {
            return None;
        }
        let blocks = words
            .chunks_exact(64)
            .map(|b| std::array::from_fn(|i| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"))))
            .collect();
        Some(Bloom { blocks, capacity })
    }

    pub(super) fn may_contain(&self, hash: u64) -> bool {
        if self.blocks.is_empty() {
            return false;
        }
        let (block, bits) = self.positions(hash);
        bits.iter().all(|bit| self.blocks[block][(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}
