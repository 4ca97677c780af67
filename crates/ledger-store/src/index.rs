//! The event-id index. On disk: one immutable segment per batch (`I` + batch number),
//! listing every event the batch appended. In memory: a compact map from a 64-bit hash
//! of the id to where the event lives (a u64 key and a 12-byte location per event). A hash hit is confirmed
//! against the entry itself, so a collision can never turn into a wrong dedup.
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};

use ledger_core::{Event, TeamId};
use sha2::{Digest, Sha256};

use crate::store::Store;
use crate::tables;
use crate::{Error, Result};

/// Keys are already hashes: pass them through.
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type FastMap<V> = HashMap<u64, V, BuildHasherDefault<PassThrough>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub team: u32,
    pub seq: u64,
}

#[derive(Default)]
pub(crate) struct Index {
    teams: Vec<TeamId>,
    team_no: HashMap<TeamId, u32>,
    primary: FastMap<Loc>,
    /// Further events whose id hash equals one in `primary` (rare).
    overflow: FastMap<Vec<Loc>>,
    pub next_segment: u64,
    pub len: u64,
}

/// Content fingerprint of an input event: same id + same fingerprint = duplicate.
pub(crate) fn fingerprint(event: &Event) -> [u8; 16] {
    let bytes = postcard::to_allocvec(event).expect("events encode");
    let digest = Sha256::digest(&bytes);
    digest[..16].try_into().expect("16 bytes")
}

pub(crate) fn id_hash(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

impl Index {
    /// Loads every segment.
    pub fn load(store: &Store) -> Result<Index> {
        let mut index = Index::default();
        for segment in tables::index::segments(&store.tree) {
            let segment = segment?;
            let n = segment.number()?;
            for run in segment.runs()? {
                let team = TeamId::new(run.team).map_err(|e| Error::Corrupt(format!("index segment {n}: {e}")))?;
                for (event_id, seq) in run.events {
                    index.insert(id_hash(&event_id), &team, seq);
                }
            }
            index.next_segment = n + 1;
        }
        Ok(index)
    }

    pub fn team(&self, no: u32) -> &TeamId {
        &self.teams[no as usize]
    }

    pub fn insert(&mut self, hash: u64, team: &TeamId, seq: u64) {
        let no = match self.team_no.get(team) {
            Some(no) => *no,
            None => {
                let no = self.teams.len() as u32;
                self.teams.push(team.clone());
                self.team_no.insert(team.clone(), no);
                no
            }
        };
        let loc = Loc { team: no, seq };
        match self.primary.entry(hash) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(loc);
            }
            std::collections::hash_map::Entry::Occupied(_) => self.overflow.entry(hash).or_default().push(loc),
        }
        self.len += 1;
    }

    /// Where events whose id hashes to `hash` live (usually none, at most one).
    pub fn candidates(&self, hash: u64) -> impl Iterator<Item = Loc> + '_ {
        self.primary.get(&hash).copied().into_iter().chain(self.overflow.get(&hash).into_iter().flatten().copied())
    }
}
