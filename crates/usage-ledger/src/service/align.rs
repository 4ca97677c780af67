//! The two input streams of a partition ledger (`images.processed.v1` N and
//! `billing.accounts.v1` N) merged in the order they were produced, as Kafka Streams
//! merges co-partitioned topics: records go to the ledger in Kafka-timestamp order
//! across the two, and one stream's records wait while the other is known to hold
//! records on the broker not received yet (at most `--align-wait-ms`, then they go on:
//! a stalled stream never stops the other for good).
//!
//! Without it, a stream served late (a broker serves a newly assigned partition after
//! pauses of seconds) lets images run past a cycle's end + grace ahead of a refund or
//! plan change produced before them: the cycle closes without it, and the ledger bills
//! another order than the one events were produced in.
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use ledger_kafka::{Fetched, Record, ACCOUNTS, IMAGES};
use tracing::debug;

/// Records held per stream at most before everything held goes on regardless.
const HELD_MAX: usize = 100_000;

#[derive(Debug, Default)]
struct Stream {
    held: VecDeque<Record>,
    /// The offset after the last record received since the stream was assigned.
    next: Option<i64>,
}

/// The two streams of one partition ledger, and since when one waits for the other.
#[derive(Debug, Default)]
struct Pair {
    images: Stream,
    accounts: Stream,
    waiting: Option<Instant>,
}

pub(super) struct Aligner {
    pairs: BTreeMap<i32, Pair>,
    wait: Duration,
}

impl Aligner {
    pub fn new(wait: Duration) -> Aligner {
        Aligner { pairs: BTreeMap::new(), wait }
    }

    /// Takes the polled records in and gives back, in the order to apply them, those that
    /// may go to the ledgers now. `owned`: the streams this member owns (the others'
    /// records are dropped: a new owner reads them again from its ledger's position);
    /// `fetched`: librdkafka's last word on each stream's high watermark; `position`: the
    /// ledger's recorded position in a stream (the next offset it expects), if any. At
    /// most `max` records go at once (a batch); the rest stay held for the next call.
    pub fn admit(
        &mut self,
        records: Vec<Record>,
        owned: &HashSet<(String, i32)>,
        fetched: &[Fetched],
        position: impl Fn(&str, i32) -> Option<u64>,
        max: usize,
    ) -> Vec<Record> {
        self.pairs.retain(|p, _| owned.iter().any(|(_, owned)| owned == p));
        for r in records {
            let pair = self.pairs.entry(r.partition).or_default();
            let stream = if r.topic == IMAGES { &mut pair.images } else { &mut pair.accounts };
            if stream.next.is_some_and(|next| r.offset < next) {
                continue; // received already (a re-fetch after a rebalance)
            }
            stream.next = Some(r.offset + 1);
            stream.held.push_back(r);
        }
        let mut out = Vec::new();
        for (partition, pair) in &mut self.pairs {
            let pending = |topic: &str, stream: &Stream| pending(fetched, &position, topic, *partition, stream);
            pair.merge(*partition, self.wait, pending, &mut out, max);
        }
        out
    }

    /// Records still held (not yet applied).
    pub fn held(&self) -> usize {
        self.pairs.values().map(|p| p.images.held.len() + p.accounts.held.len()).sum()
    }
}

/// Whether the broker holds records of a stream past what this member received or its
/// ledger recorded. The high watermark is at most a statistics interval old, so it can
/// only say "no" too early, never wait forever.
fn pending(
    fetched: &[Fetched],
    position: &impl Fn(&str, i32) -> Option<u64>,
    topic: &str,
    partition: i32,
    stream: &Stream,
) -> bool {
    let Some(f) = fetched.iter().find(|f| f.topic == topic && f.partition == partition) else { return true };
    if f.high < 0 {
        return true;
    }
    match stream.next.max(position(topic, partition).map(|p| p as i64)) {
        Some(next) => next < f.high,
        None => f.high > f.low.max(0),
    }
}

impl Pair {
    /// Moves the records that may go now into `out`, merged.
    fn merge(
        &mut self,
        partition: i32,
        wait: Duration,
        pending: impl Fn(&str, &Stream) -> bool,
        out: &mut Vec<Record>,
        max: usize,
    ) {
        let overfull = self.images.held.len() >= HELD_MAX || self.accounts.held.len() >= HELD_MAX;
        let go_on = overfull || self.waiting.is_some_and(|since| since.elapsed() >= wait);
        while out.len() < max {
            let (i, a) = (self.images.held.front().map(order), self.accounts.held.front().map(order));
            // Which stream goes next: `None` while the only one with records waits.
            let next = match (i, a) {
                (None, None) => break,
                (Some(i), Some(a)) => Some(i < a),
                (Some(_), None) => (go_on || !pending(ACCOUNTS, &self.accounts)).then_some(true),
                (None, Some(_)) => (go_on || !pending(IMAGES, &self.images)).then_some(false),
            };
            let Some(from_images) = next else {
                let since = *self.waiting.get_or_insert_with(Instant::now);
                let waited_ms = since.elapsed().as_millis() as u64;
                debug!(partition, waited_ms, "Holding records for the other stream.");
                return;
            };
            let stream = if from_images { &mut self.images } else { &mut self.accounts };
            out.push(stream.held.pop_front().expect("a head was seen"));
        }
        self.waiting = None;
    }
}

/// The merge order of a record: its timestamp (records without one go first).
fn order(r: &Record) -> i64 {
    r.timestamp.unwrap_or(i64::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(topic: &str, offset: i64, ts: i64) -> Record {
        Record {
            topic: topic.into(),
            partition: 0,
            offset,
            timestamp: Some(ts),
            key: None,
            payload: Vec::new(),
            headers: Vec::new(),
        }
    }

    fn none(_: &str, _: i32) -> Option<u64> {
        None
    }

    fn owned() -> HashSet<(String, i32)> {
        [(IMAGES.to_string(), 0), (ACCOUNTS.to_string(), 0)].into()
    }

    fn fetched(images_high: i64, accounts_high: i64) -> Vec<Fetched> {
        vec![
            Fetched { topic: IMAGES.into(), partition: 0, high: images_high, low: 0, lag: -1 },
            Fetched { topic: ACCOUNTS.into(), partition: 0, high: accounts_high, low: 0, lag: -1 },
        ]
    }

    fn ids(records: &[Record]) -> Vec<(char, i64)> {
        records.iter().map(|r| (r.topic.chars().next().unwrap(), r.offset)).collect()
    }

    #[test]
    fn the_streams_merge_in_timestamp_order() {
        let mut a = Aligner::new(Duration::from_secs(60));
        let polled = vec![rec(IMAGES, 0, 10), rec(IMAGES, 1, 30), rec(ACCOUNTS, 0, 20)];
        let out = a.admit(polled, &owned(), &fetched(2, 1), none, usize::MAX);
        assert_eq!(ids(&out), [('i', 0), ('b', 0), ('i', 1)]);
        assert_eq!(a.held(), 0);
    }

    #[test]
    fn images_wait_while_the_accounts_stream_holds_records_not_received() {
        let mut a = Aligner::new(Duration::from_secs(60));
        // The broker holds accounts 0..1 but none has arrived: images wait.
        assert!(a
            .admit(vec![rec(IMAGES, 0, 10), rec(IMAGES, 1, 30)], &owned(), &fetched(2, 1), none, usize::MAX)
            .is_empty());
        assert_eq!(a.held(), 2);
        // The refund arrives: everything goes, in production order.
        let out = a.admit(vec![rec(ACCOUNTS, 0, 20)], &owned(), &fetched(2, 1), none, usize::MAX);
        assert_eq!(ids(&out), [('i', 0), ('b', 0), ('i', 1)]);
        // Caught up on accounts: images go on alone, and a re-fetched record is dropped.
        let out = a.admit(vec![rec(IMAGES, 2, 40), rec(IMAGES, 1, 30)], &owned(), &fetched(3, 1), none, usize::MAX);
        assert_eq!(ids(&out), [('i', 2)]);
    }

    #[test]
    fn a_stalled_stream_holds_the_other_only_for_the_wait() {
        let mut a = Aligner::new(Duration::from_millis(30));
        assert!(a.admit(vec![rec(IMAGES, 0, 10)], &owned(), &fetched(1, 5), none, usize::MAX).is_empty());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(ids(&a.admit(Vec::new(), &owned(), &fetched(1, 5), none, usize::MAX)), [('i', 0)]);
    }

    #[test]
    fn an_empty_stream_holds_nothing_back() {
        let mut a = Aligner::new(Duration::from_secs(60));
        let out = a.admit(vec![rec(IMAGES, 0, 10)], &owned(), &fetched(1, 0), none, usize::MAX);
        assert_eq!(ids(&out), [('i', 0)], "nothing on the accounts partition");
        // Everything on it was recorded by the ledger before (a restart): nothing to wait for.
        let out = a.admit(
            vec![rec(IMAGES, 1, 20)],
            &owned(),
            &fetched(2, 7),
            |t, _| (t == ACCOUNTS).then_some(7),
            usize::MAX,
        );
        assert_eq!(ids(&out), [('i', 1)]);
    }

    #[test]
    fn at_most_a_batch_goes_at_once_and_the_rest_stays_held_in_order() {
        let mut a = Aligner::new(Duration::from_secs(60));
        let polled = vec![rec(IMAGES, 0, 10), rec(IMAGES, 1, 30), rec(ACCOUNTS, 0, 20)];
        let out = a.admit(polled, &owned(), &fetched(2, 1), none, 2);
        assert_eq!(ids(&out), [('i', 0), ('b', 0)]);
        assert_eq!(a.held(), 1);
        assert_eq!(ids(&a.admit(Vec::new(), &owned(), &fetched(2, 1), none, 2)), [('i', 1)]);
    }

    #[test]
    fn a_revoked_stream_is_forgotten() {
        let mut a = Aligner::new(Duration::from_secs(60));
        assert!(a.admit(vec![rec(IMAGES, 0, 10)], &owned(), &fetched(1, 5), none, usize::MAX).is_empty());
        assert!(a.admit(Vec::new(), &HashSet::new(), &[], none, usize::MAX).is_empty());
        assert_eq!(a.held(), 0);
    }
}
