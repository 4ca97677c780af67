//! The team states the API answers balances, usage and drafts from, kept between
//! requests: each team's state folded once, then brought up to date by folding only the
//! entries appended since (one seek tells whether there are any), and the documents
//! rendered from it kept until the team's ledger moves. One path for `run` and `serve`:
//! a store is read the same whoever writes it, and the writer's own states stay the
//! writer's (sharing them would put a lock on the write path).
//!
//! A document is rendered at most once per state of the team's ledger. While one is
//! brought up to date or rendered (a team with a million usage records in its open
//! cycle takes a fraction of a second), other requests for it get the last one if it
//! was found to be of the ledger as it stood at most two seconds ago, and wait for the
//! new one otherwise. The states kept are bounded by the usage
//! records they hold (`--http-cache-records`), the least recently read dropped first.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ledger_core::{Catalog, Team, TeamId};
use ledger_store::{Store, TeamRead};

/// A document rendered from a team's state, with what decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Balance { at: Option<DateTime<Utc>> },
    Usage { at: Option<DateTime<Utc>>, points: u32 },
    Draft,
}

/// About what a usage record of a kept state takes in memory: a 1M-record team's first
/// read grew `serve` by 146 MiB (sled's cache included).
const RECORD_BYTES: usize = 150;

/// Documents kept per team (the dashboard's two, a few instants beside them).
const DOCS_PER_TEAM: usize = 8;

/// How long ago a document served while the state is being brought up to date may
/// last have been found current.
const STALE_MAX: Duration = Duration::from_secs(2);

pub struct Views {
    slots: Mutex<Slots>,
    records_max: usize,
    teams_max: usize,
}

#[derive(Default)]
struct Slots {
    by_team: HashMap<TeamId, (Arc<Slot>, u64)>,
    /// Counts reads: a slot's number is its last read.
    clock: u64,
}

struct Slot {
    /// The data dir of the store holding the team.
    dir: PathBuf,
    /// The folded state, held while it is brought up to date and a document rendered.
    state: Mutex<Option<Folded>>,
    /// Bumped each time the state moves (or is dropped).
    generation: AtomicU64,
    docs: Mutex<Vec<Doc>>,
    /// Its weight against `--http-cache-records` (`weigh`).
    records: AtomicUsize,
}

struct Folded {
    read: TeamRead,
    catalog: Catalog,
}

struct Doc {
    query: Query,
    generation: u64,
    /// When it was last found to be of the ledger as it stood (rendered, or served
    /// after the check).
    confirmed: Instant,
    body: Arc<String>,
}

impl Views {
    pub fn new(records_max: usize, teams_max: usize) -> Views {
        Views { slots: Mutex::default(), records_max, teams_max: teams_max.max(1) }
    }

    /// The document `query` asks of `team` in `store`, rendered by `render` from the
    /// team's state when the one kept is not of the ledger as it stands. Folding and
    /// rendering take what `admit` gives (a reader's permit) for as long as they run; a
    /// document already rendered needs none. `None`: there was work to do and `admit`
    /// gave nothing (the caller answers busy).
    pub fn get<P>(
        &self,
        store: &Store,
        team: &TeamId,
        query: Query,
        admit: impl Fn() -> Option<P>,
        render: impl FnOnce(&mut Team, &Catalog) -> anyhow::Result<String>,
    ) -> anyhow::Result<Option<Arc<String>>> {
        let slot = self.slot(store, team);
        let mut permit = None;
        let mut state = match slot.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(e)) => slot.recover(e.into_inner()),
            Err(TryLockError::WouldBlock) => match slot.doc(&query, None) {
                Some(body) => return Ok(Some(body)),
                // Waiting for the state is waiting to work: with a permit, so the
                // waiters are as few as the permits.
                None => {
                    let Some(p) = admit() else { return Ok(None) };
                    permit = Some(p);
                    slot.state.lock().unwrap_or_else(|e| slot.recover(e.into_inner()))
                }
            },
        };
        // What is found current is current as of now, before the check: a document is
        // never confirmed later than the ledger was looked at.
        let checked = Instant::now();
        let current = match state.as_ref() {
            Some(folded) => store.is_current(&folded.read)?,
            None => false,
        };
        if current {
            if let Some(body) = slot.doc(&query, Some((slot.generation.load(Ordering::Relaxed), checked))) {
                return Ok(Some(body));
            }
        }
        let _permit = match permit {
            Some(p) => p,
            None => match admit() {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        let brought = if current { Ok(false) } else { bring_up_to_date(&mut state, store, team) };
        let moved = match brought {
            Ok(moved) => moved,
            Err(e) => {
                // A state a fold failed part way through is not kept.
                *state = None;
                return Err(e);
            }
        };
        if moved {
            slot.generation.fetch_add(1, Ordering::Relaxed);
        }
        let folded = state.as_mut().expect("brought up to date");
        slot.weigh(&folded.read);
        let generation = slot.generation.load(Ordering::Relaxed);
        if let Some(body) = slot.doc(&query, Some((generation, checked))) {
            return Ok(Some(body));
        }
        let body = Arc::new(render(&mut folded.read.state, &folded.catalog)?);
        slot.keep(Doc { query, generation, confirmed: checked, body: Arc::clone(&body) });
        slot.weigh(&folded.read);
        drop(state);
        self.evict(team);
        Ok(Some(body))
    }

    /// The store holding `team` among `stores`, if one does: the one its state was read
    /// from (a team read through `get` before), else found by a seek in each (a seek in a store being written can read a
    /// block from disk: tens of milliseconds under ingest).
    pub fn home<'s>(&self, stores: &'s [Store], team: &TeamId) -> anyhow::Result<Option<&'s Store>> {
        if let Some((slot, _)) = self.lock().by_team.get(team) {
            if let Some(store) = stores.iter().find(|s| s.dir() == slot.dir) {
                return Ok(Some(store));
            }
        }
        crate::documents::team_store(stores, team)
    }

    /// The team's slot in `store`, made if new (or if the team's was of another store),
    /// marked read now.
    fn slot(&self, store: &Store, team: &TeamId) -> Arc<Slot> {
        let mut slots = self.lock();
        slots.clock += 1;
        let now = slots.clock;
        let fresh = || {
            let dir = store.dir().to_path_buf();
            let slot = Slot {
                dir,
                state: Mutex::default(),
                generation: AtomicU64::default(),
                docs: Mutex::default(),
                records: AtomicUsize::default(),
            };
            (Arc::new(slot), now)
        };
        let (slot, used) = slots.by_team.entry(team.clone()).or_insert_with(fresh);
        if slot.dir != store.dir() {
            *slot = fresh().0;
        }
        *used = now;
        Arc::clone(slot)
    }

    /// Drops the least recently read states (never `team`'s) until the rest hold at
    /// most `records_max` usage records and number at most `teams_max`.
    fn evict(&self, team: &TeamId) {
        let mut slots = self.lock();
        let mut records: usize = slots.by_team.values().map(|(s, _)| s.records.load(Ordering::Relaxed)).sum();
        while records > self.records_max || slots.by_team.len() > self.teams_max {
            let oldest = slots
                .by_team
                .iter()
                .filter(|(key, _)| *key != team)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(key, _)| key.clone());
            let Some(oldest) = oldest else { break };
            if let Some((slot, _)) = slots.by_team.remove(&oldest) {
                records -= slot.records.load(Ordering::Relaxed);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Folds the team's state, or what was appended since it was folded; whether it moved.
fn bring_up_to_date(state: &mut Option<Folded>, store: &Store, team: &TeamId) -> anyhow::Result<bool> {
    match state {
        Some(folded) => Ok(store.refresh(&folded.catalog, &mut folded.read)?),
        None => {
            let catalog = store.catalog()?;
            let read = store.read_team(&catalog, team)?;
            *state = Some(Folded { read, catalog });
            Ok(true)
        }
    }
}

impl Slot {
    /// The document kept for `query`: with `Some((generation, checked))`, only one of
    /// that generation, confirmed current as of `checked`; with `None`, the last one
    /// rendered if it was confirmed current at most `STALE_MAX` ago.
    fn doc(&self, query: &Query, current: Option<(u64, Instant)>) -> Option<Arc<String>> {
        let mut docs = self.docs.lock().unwrap_or_else(PoisonError::into_inner);
        let doc = docs.iter_mut().find(|d| {
            d.query == *query
                && match current {
                    Some((g, _)) => d.generation == g,
                    None => d.confirmed.elapsed() <= STALE_MAX,
                }
        })?;
        if let Some((_, checked)) = current {
            doc.confirmed = doc.confirmed.max(checked);
        }
        Some(Arc::clone(&doc.body))
    }

    /// The state of a slot whose holder panicked (in a render, say) is not trusted: it is
    /// dropped, to be folded again, and the documents rendered from it are outdated.
    fn recover<'a>(&self, mut state: MutexGuard<'a, Option<Folded>>) -> MutexGuard<'a, Option<Folded>> {
        *state = None;
        self.state.clear_poison();
        self.generation.fetch_add(1, Ordering::Relaxed);
        state
    }

    /// What the slot weighs against `--http-cache-records`: the state's usage records,
    /// and its documents and last block at `RECORD_BYTES` a record.
    fn weigh(&self, read: &TeamRead) {
        let docs: usize = self.docs.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|d| d.body.len()).sum();
        self.records.store(read.records() + (docs + read.tip_bytes()) / RECORD_BYTES, Ordering::Relaxed);
    }

    /// Keeps `doc` in place of the one for the same query, or of the oldest.
    fn keep(&self, doc: Doc) {
        let mut docs = self.docs.lock().unwrap_or_else(PoisonError::into_inner);
        docs.retain(|d| d.query != doc.query);
        if docs.len() >= DOCS_PER_TEAM {
            docs.remove(0);
        }
        docs.push(doc);
    }
}

#[cfg(test)]
mod tests {
    use ledger_proto::parse_json_line;
    use ledger_store::{Ledger, Source, Submission};

    use super::*;
    use crate::documents;

    fn at(s: &str) -> Option<DateTime<Utc>> {
        Some(s.parse().unwrap())
    }

    /// The documents a state kept and brought up to date batch by batch renders are the
    /// ones a fresh fold of the store renders, across plan changes, refunds, closes, a
    /// horizon pushed out by a late `at`, and states dropped and folded again.
    #[test]
    fn a_state_kept_between_reads_renders_what_a_fresh_fold_renders() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("load.jsonl");
        crate::generate::realistic(40, 30_000, 3, 3, &file).unwrap();
        let lines: Vec<String> = std::fs::read_to_string(&file).unwrap().lines().map(String::from).collect();
        let catalog = Catalog::builtin();
        let mut ledger = Ledger::open(Store::open(&tmp.path().join("data"), &catalog).unwrap()).unwrap();
        // One with room for every state (each brought up to date batch by batch), one
        // with room for two of the three (each dropped and folded again in turn).
        let (views, cramped) = (Views::new(usize::MAX, 100), Views::new(usize::MAX, 2));
        let teams: Vec<TeamId> = ["team-00000", "team-00001", "team-00007"].map(|t| TeamId::new(t).unwrap()).into();
        let (mut renders, mut checks) = (0, 0);
        for (n, chunk) in lines.chunks(997).enumerate() {
            let offset = (n * 997) as u64;
            let batch = chunk
                .iter()
                .enumerate()
                .map(|(i, l)| Submission {
                    event: parse_json_line(l).unwrap(),
                    source: Source { stream: None, offset: offset + i as u64 },
                })
                .collect();
            ledger.submit_batch(batch).unwrap();
            if n == 20 {
                ledger.close_until("2026-05-02T00:00:00Z".parse().unwrap()).unwrap();
            }
            let store = ledger.store().clone();
            for team in &teams {
                let late = at("2026-09-30T00:00:00Z");
                for query in [
                    Query::Balance { at: None },
                    Query::Usage { at: None, points: 24 },
                    Query::Draft,
                    Query::Balance { at: if n % 5 == 0 { late } else { at("2026-04-20T00:00:00Z") } },
                ] {
                    let kept = views
                        .get(&store, team, query.clone(), admit, |state, catalog| {
                            renders += 1;
                            render(state, catalog, &query)
                        })
                        .unwrap()
                        .unwrap();
                    let fresh = render(&mut store.load_team(&catalog, team).unwrap(), &catalog, &query).unwrap();
                    assert_eq!(*kept, fresh, "{team} {query:?} after batch {n}");
                    let refolded =
                        cramped.get(&store, team, query.clone(), admit, |s, c| render(s, c, &query)).unwrap().unwrap();
                    assert_eq!(*refolded, fresh, "{team} {query:?} after batch {n}, folded again");
                    checks += 1;
                }
                // Asked again with nothing appended: the document kept, no render, no
                // permit needed.
                let before = renders;
                let again = views
                    .get(
                        &store,
                        team,
                        Query::Draft,
                        || None::<()>,
                        |_, _| {
                            renders += 1;
                            Ok(String::new())
                        },
                    )
                    .unwrap();
                assert!(again.is_some() && renders == before, "{team}: rendered again with nothing appended");
            }
        }
        assert!(checks > 300, "{checks} checks");
        assert_eq!((views.lock().by_team.len(), cramped.lock().by_team.len()), (3, 2));
    }

    fn admit() -> Option<()> {
        Some(())
    }

    fn render(state: &mut Team, catalog: &Catalog, query: &Query) -> anyhow::Result<String> {
        match query {
            Query::Balance { at } => documents::balance_of(state, catalog, *at),
            Query::Usage { at, points } => documents::usage_of(state, catalog, *at, *points),
            Query::Draft => Ok(documents::draft_invoice(state, catalog).unwrap_or_default()),
        }
    }
}
