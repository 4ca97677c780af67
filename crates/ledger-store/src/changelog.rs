//! The changelog: a partition ledger replicated through Kafka (issue 20). Every batch
//! the writer commits is first appended, as the operations it writes (`Batch`), to the
//! ledger's changelog partition; sled commits it only once the broker acknowledged it at
//! the offset the ledger expects, with that position in the same atomic write. So the
//! local store is never ahead of the changelog, and the partition's next owner rebuilds
//! the same bytes (entries, sequence numbers, hash chains, projections, positions,
//! outbox), not a re-derivation.
//!
//! A record is `postcard(version, prev, ops) ‖ digest`, digest = SHA-256 of
//! `"usage-ledger/changelog/v1" ‖ postcard(...)`, and `prev` the digest of the record
//! before it (zeros for the first). The records a ledger holds form one chain.
//!
//! Fencing is the chain itself, with no lock: a writer whose record lands at another
//! offset than it expects (someone else appended since it restored) stops without
//! committing it, and a reader takes a record only if it links to the head it holds; a
//! fenced (zombie) writer's late record links to an older head and is skipped by every
//! reader. Outbox messages published since the last record are removed by the next one
//! (or by a record of their own when the writer is idle or hands the partition over), so
//! a restore publishes only what was never published.
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::warn;

use crate::batch::{Batch, Op};
use crate::store::Store;
use crate::tables::entries::{self, Hash};
use crate::tables::{meta, split_team_key};
use crate::{Error, Result};

/// The encoding of a record's body; a reader refuses any other.
const RECORD_VERSION: u8 = 1;

pub use crate::tables::meta::Position;

/// Where the writer sends each batch's record: an adapter (Kafka) that appends it to the
/// ledger's changelog partition, waits for the acknowledgement and says at which offset
/// it landed.
pub trait Replica: Send + Sync {
    /// Appends `record`; the offset it landed at.
    fn append(&self, record: &[u8]) -> std::result::Result<u64, String>;
    /// `topic/partition`, for messages.
    fn name(&self) -> String;
}

#[derive(Serialize)]
struct BodyRef<'a> {
    version: u8,
    prev: &'a Hash,
    ops: &'a [Op],
}

#[derive(Deserialize)]
struct Body {
    version: u8,
    prev: Hash,
    ops: Vec<Op>,
}

/// A record as read back and checked against its digest.
#[derive(Debug)]
pub struct Record {
    pub prev: Hash,
    pub digest: Hash,
    pub ops: Vec<Op>,
}

fn digest_of(body: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(b"usage-ledger/changelog/v1");
    h.update(body);
    h.finalize().into()
}

/// The record of `ops` following the record whose digest is `prev`, and its digest.
pub fn encode(prev: &Hash, ops: &[Op]) -> (Vec<u8>, Hash) {
    let mut out = postcard::to_allocvec(&BodyRef { version: RECORD_VERSION, prev, ops }).expect("records encode");
    let digest = digest_of(&out);
    out.extend_from_slice(&digest);
    (out, digest)
}

/// A record, checked: its digest matches its body, and its version is known.
pub fn decode(bytes: &[u8]) -> std::result::Result<Record, String> {
    let Some(split) = bytes.len().checked_sub(32) else {
        return Err(format!("a record of {} bytes is shorter than its digest", bytes.len()));
    };
    let (body, digest) = bytes.split_at(split);
    if digest_of(body) != digest {
        return Err("the record's digest does not match its bytes (damaged)".into());
    }
    let body: Body = postcard::from_bytes(body).map_err(|e| format!("the record does not decode: {e}"))?;
    if body.version != RECORD_VERSION {
        return Err(format!("record version {}, this build reads {RECORD_VERSION}", body.version));
    }
    Ok(Record { prev: body.prev, digest: digest.try_into().expect("32 bytes"), ops: body.ops })
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestoreReport {
    /// Records read past the ledger's position.
    pub read: u64,
    /// Records taken (they linked), and the operations they wrote.
    pub applied: u64,
    pub ops: u64,
    /// Records skipped: they did not link to the head held (a fenced writer's).
    pub skipped: u64,
    /// Entries the records appended.
    pub entries: u64,
    pub position: Position,
    /// Seconds spent waiting for the records (the broker), of the whole restore.
    pub read_secs: f64,
}

/// Records applied between two flushes during a restore.
const RESTORE_FLUSH_EVERY: u64 = 256;

impl Store {
    /// The ledger's changelog position, if it ever wrote or restored a record.
    pub fn changelog_position(&self) -> Result<Option<Position>> {
        meta::changelog(&self.tree)
    }

    /// Brings the store up to its changelog: applies, in order, every record past its
    /// position that links to the head it holds, after checking its digest and that the
    /// entries it appends continue each team's hash chain from the team's head. A record
    /// that fails a check is refused with one line naming the changelog partition, the
    /// offset, and the team and sequence number where the chain breaks; nothing of it is
    /// applied. `records` yields `(offset, bytes)` in offset order.
    pub fn restore(
        &self,
        changelog: &str,
        records: &mut dyn Iterator<Item = std::result::Result<(u64, Vec<u8>), String>>,
    ) -> Result<RestoreReport> {
        let mut report = RestoreReport::default();
        let mut position = self.changelog_position()?.unwrap_or_default();
        let mut heads: HashMap<String, (u64, Hash)> = HashMap::new();
        loop {
            let waiting = std::time::Instant::now();
            let item = records.next();
            report.read_secs += waiting.elapsed().as_secs_f64();
            let Some(item) = item else { break };
            let (offset, bytes) = item.map_err(|e| Error::Changelog(format!("{changelog}: {e}")))?;
            if offset < position.next {
                continue;
            }
            report.read += 1;
            let record = decode(&bytes).map_err(|e| Error::Changelog(format!("{changelog} offset {offset}: {e}")))?;
            if record.prev != position.head {
                warn!(
                    changelog,
                    offset, "Skipped a changelog record that does not link to the ledger's head (a fenced writer's)."
                );
                report.skipped += 1;
                continue;
            }
            report.entries += self.check_chains(changelog, offset, &record.ops, &mut heads)?;
            report.applied += 1;
            report.ops += record.ops.len() as u64;
            position = Position { next: offset + 1, head: record.digest };
            let mut batch = Batch::from_ops(record.ops);
            meta::insert_changelog(&mut batch, &position);
            self.tree.apply_batch(batch.to_sled())?;
            if report.applied.is_multiple_of(RESTORE_FLUSH_EVERY) {
                self.db.flush()?;
            }
            crate::progress::tick();
        }
        self.db.flush()?;
        report.position = position;
        Ok(report)
    }

    /// Checks that the entry blocks among `ops` continue their teams' chains; returns
    /// how many entries they hold.
    fn check_chains(
        &self,
        changelog: &str,
        offset: u64,
        ops: &[Op],
        heads: &mut HashMap<String, (u64, Hash)>,
    ) -> Result<u64> {
        let mut count = 0;
        for (key, value) in ops {
            if !entries::is_entry(key) {
                continue;
            }
            let refuse = |team: &str, seq: u64, why: &str| {
                Error::Changelog(format!("{changelog} offset {offset}: team {team} seq {seq}: {why}"))
            };
            let (team, first) =
                split_team_key(key).ok_or_else(|| refuse("?", 0, "an entry key that does not parse"))?;
            let Some(value) = value else { return Err(refuse(team, first, "removes an entry block")) };
            let block = entries::decode_block(value).map_err(|e| refuse(team, first, &e.to_string()))?;
            let (mut seq, mut hash) = match heads.get(team) {
                Some(head) => *head,
                None => entries::head(&self.tree, team)?.unwrap_or((0, [0; 32])),
            };
            for stored in &block {
                if stored.seq != seq + 1 {
                    return Err(refuse(team, stored.seq, &format!("does not follow the team's head, seq {seq}")));
                }
                if entries::chain(&hash, stored.seq, &stored.body) != stored.hash {
                    return Err(refuse(team, stored.seq, "its hash does not chain from the team's head"));
                }
                (seq, hash) = (stored.seq, stored.hash);
                count += 1;
            }
            if block.first().is_some_and(|e| e.seq != first) {
                return Err(refuse(team, first, "the block's key does not name its first entry"));
            }
            heads.insert(team.to_string(), (seq, hash));
        }
        Ok(count)
    }
}

/// Appends the record of `ops` after `position`; the position after it. A record that
/// lands elsewhere than `position.next` means another writer appended: fenced.
pub(crate) fn append(replica: &dyn Replica, position: Position, ops: &[Op]) -> Result<Position> {
    let (record, digest) = encode(&position.head, ops);
    let name = replica.name();
    let landed = replica.append(&record).map_err(|e| Error::Changelog(format!("{name}: {e}")))?;
    if landed != position.next {
        return Err(Error::Fenced { changelog: name, expected: position.next, landed });
    }
    Ok(Position { next: landed + 1, head: digest })
}

/// Bytes of operations per record when a ledger written before the changelog is exported.
const MIGRATION_RECORD_BYTES: usize = 4 << 20;

/// Exports a ledger that has no changelog position (written before the changelog, or
/// new) into its changelog, which must be empty: every key but the store's own metadata,
/// in key order, in records of about 4 MiB; the position is recorded once every record
/// was acknowledged. A new, empty ledger exports nothing.
pub(crate) fn migrate(store: &Store, replica: &dyn Replica) -> Result<Position> {
    let own = meta::own_keys();
    let mut position = Position::default();
    let (mut ops, mut bytes, mut records, mut keys) = (Vec::new(), 0usize, 0u64, 0u64);
    for kv in store.tree.iter() {
        let (k, v) = kv?;
        if own.iter().any(|m| m.as_slice() == k.as_ref()) {
            continue;
        }
        bytes += k.len() + v.len();
        keys += 1;
        ops.push((k.to_vec(), Some(v.to_vec())));
        if bytes >= MIGRATION_RECORD_BYTES {
            position = append(replica, position, &std::mem::take(&mut ops))?;
            (bytes, records) = (0, records + 1);
        }
    }
    if !ops.is_empty() {
        position = append(replica, position, &ops)?;
        records += 1;
    }
    if records > 0 {
        let mut batch = Batch::default();
        meta::insert_changelog(&mut batch, &position);
        store.tree.apply_batch(batch.to_sled())?;
        store.db.flush()?;
        tracing::info!(changelog = %replica.name(), records, keys, "Exported a ledger written before the changelog into it.");
    }
    Ok(position)
}
