//! The tables against the compatibility fixture (`tests/fixtures/compat-v1/store`, written
//! by an earlier build of format 1): what each table reads from it, it writes back byte
//! for byte, and replay rebuilds every stored projection unchanged.
use std::path::Path;

use ledger_core::Catalog;

use super::conflicts::Conflict;
use super::{
    conflicts, entries, index, meta, outbox, parked, split_team_key, KeyKind, FORMATS_READABLE, FORMAT_VERSION,
};
use crate::store::Store;

/// A working copy of the fixture store (opening a sled store writes to it).
fn fixture_copy(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/compat-v1/store");
    std::fs::create_dir_all(to.join("blobs")).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Every `(key, value)` of one table.
fn rows(tree: &sled::Tree, kind: KeyKind) -> Vec<(Vec<u8>, Vec<u8>)> {
    tree.scan_prefix(kind.prefix()).map(|kv| kv.unwrap()).map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

/// Conflict records as read back from their keys and JSON.
fn rewrite_conflicts(from: &sled::Tree, batch: &mut crate::batch::Batch) {
    for (k, v) in rows(from, KeyKind::Conflict) {
        let (k, n) = k.split_at(k.len() - 8);
        let parts: Vec<&str> = k[1..].split(|b| *b == 0).map(|p| std::str::from_utf8(p).unwrap()).collect();
        let json: serde_json::Value = serde_json::from_slice(&v).unwrap();
        let c = Conflict {
            team: parts[0],
            event_id: parts[1],
            existing_team: json["existing_team_id"].as_str().unwrap(),
            existing_seq: json["existing_seq"].as_u64().unwrap(),
        };
        conflicts::insert(batch, u64::from_be_bytes(n.try_into().unwrap()), &c);
    }
}

#[test]
fn every_table_writes_back_what_it_reads_from_the_fixture_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    fixture_copy(tmp.path());
    let db = sled::Config::new().path(tmp.path()).open().unwrap();
    let from = db.open_tree("ledger").unwrap();
    let mut batch = crate::batch::Batch::default();
    for block in entries::blocks(&from, entries::all()) {
        let (team, first, run) = block.unwrap();
        // The fixture was written in format 1, and a store keeps its format.
        entries::insert(&mut batch, 1, &team, first, &run);
    }
    for segment in index::segments(&from) {
        let segment = segment.unwrap();
        let runs = segment.runs().unwrap();
        let refs: Vec<index::IndexRunRef<'_>> =
            runs.iter().map(|r| index::IndexRunRef { team: &r.team, events: &r.events }).collect();
        index::insert(&mut batch, segment.number().unwrap(), &refs);
    }
    for (n, msg) in outbox::oldest(&from, usize::MAX).unwrap() {
        outbox::insert(&mut batch, n, &msg);
    }
    for p in parked::all(&from).unwrap() {
        parked::insert(&mut batch, &p);
    }
    rewrite_conflicts(&from, &mut batch);
    let to = db.open_tree("rewritten").unwrap();
    to.apply_batch(batch.to_sled()).unwrap();
    for kind in [KeyKind::Entry, KeyKind::Index, KeyKind::Outbox, KeyKind::Parked, KeyKind::Conflict] {
        let stored = rows(&from, kind);
        assert!(!stored.is_empty(), "the fixture has {kind:?} rows");
        assert_eq!(rows(&to, kind), stored, "{kind:?} rows differ");
    }
    assert_eq!(meta::format(&from).unwrap().unwrap().as_ref(), [1]);
    assert!(FORMATS_READABLE.contains(&1) && FORMAT_VERSION == 3);
    meta::catalog(&from).unwrap();
}

#[test]
fn every_key_of_the_fixture_is_of_a_known_kind_and_team_keys_split() {
    let tmp = tempfile::tempdir().unwrap();
    fixture_copy(tmp.path());
    let db = sled::Config::new().path(tmp.path()).open().unwrap();
    let team_kinds = [KeyKind::Entry, KeyKind::Alert, KeyKind::Invoice];
    let kinds = [KeyKind::Index, KeyKind::Outbox, KeyKind::Offset, KeyKind::Conflict, KeyKind::Meta, KeyKind::Parked];
    for kv in db.open_tree("ledger").unwrap().iter() {
        let (k, _) = kv.unwrap();
        if let Some(kind) = team_kinds.into_iter().find(|kind| kind.prefix()[0] == k[0]) {
            let (team, n) = split_team_key(&k).unwrap();
            assert_eq!(kind.team_key(team, n), k.as_ref());
        } else {
            assert!(kinds.iter().any(|kind| kind.prefix()[0] == k[0]), "unknown key kind {:?}", k[0] as char);
        }
    }
}

#[test]
fn replay_rebuilds_every_projection_of_the_fixture_as_stored() {
    let tmp = tempfile::tempdir().unwrap();
    fixture_copy(tmp.path());
    let store = Store::open(tmp.path(), &Catalog::builtin()).unwrap();
    let report = store.replay(&store.catalog().unwrap()).unwrap();
    assert!(report.alerts > 0 && report.invoices > 0, "{report:?}");
    assert_eq!(report.mismatched, 0);
}

#[test]
fn blocks_round_trip_in_both_formats_and_damage_is_refused_not_allocated() {
    let entries: Vec<entries::StoredEntry> = (1..=300u64)
        .map(|seq| entries::StoredEntry {
            seq,
            hash: [seq as u8; 32],
            body: format!("image event e{seq} of team t1").into_bytes(),
        })
        .collect();
    let v1 = entries::encode_block(1, &entries);
    let v2 = entries::encode_block(2, &entries);
    assert_eq!((v1[0], v2[0]), (1, 2));
    assert!(v2.len() * 2 < v1.len(), "format 2 compresses: {} vs {} bytes", v2.len(), v1.len());
    assert_eq!(entries::decode_block(&v1).unwrap(), entries);
    assert_eq!(entries::decode_block(&v2).unwrap(), entries);
    // A size prefix claiming more than LZ4 can expand to: refused before allocating.
    let mut huge = v2.clone();
    huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = entries::decode_block(&huge).unwrap_err().to_string();
    assert!(err.contains("claims 4294967295"), "{err}");
    // Damage inside the compressed bytes is an error or changed bytes, never a panic
    // (the chain, which hashes the bodies, tells changed bytes).
    for at in 5..v2.len() {
        let mut damaged = v2.clone();
        damaged[at] ^= 0x5a;
        let _ = entries::decode_block(&damaged);
    }
    // Format 3 changed the outbox, not the blocks: its stores write format-2 blocks.
    assert_eq!(entries::block_format_of(3), 2);
    let err = entries::decode_block(&[4, 0, 0]).unwrap_err().to_string();
    assert!(err.contains("format version 4"), "{err}");
}

#[test]
fn a_cached_block_is_served_only_while_its_bytes_are_the_stored_ones() {
    let block = |n: u64| {
        let entries: Vec<entries::StoredEntry> = (1..=n)
            .map(|seq| entries::StoredEntry { seq, hash: [seq as u8; 32], body: format!("e{seq}").into_bytes() })
            .collect();
        sled::IVec::from(entries::encode_block(2, &entries))
    };
    let cache = entries::BlockCache::default();
    let first = cache.decoded(&block(300)).unwrap();
    assert_eq!(first.len(), 300);
    let again = cache.decoded(&block(300)).unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &again), "the same bytes (another buffer): decoded once");
    // The team's newest block rewritten with one more entry, under the same key.
    assert_eq!(cache.decoded(&block(301)).unwrap().len(), 301, "other bytes: decoded again");
}
