//! The Kafka adapter (rdkafka). The only crate that names rdkafka; it knows nothing of
//! the store. Positions live outside Kafka: the consumer asks the caller where each
//! partition stands when it is assigned, and Kafka's committed offset is only advisory.
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

pub const IMAGES: &str = "images.processed.v1";
pub const ACCOUNTS: &str = "billing.accounts.v1";
pub const ALERTS: &str = "usage.alerts.v1";
pub const INVOICES: &str = "billing.invoices.v1";
pub const DEADLETTER: &str = "usage.deadletter.v1";
pub const ALL_TOPICS: [&str; 5] = [IMAGES, ACCOUNTS, ALERTS, INVOICES, DEADLETTER];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
    #[error("{failed} of {total} messages were not delivered: {first}")]
    Delivery { failed: usize, total: usize, first: String },
    #[error("kafka properties: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

mod changelog;
mod config;
#[cfg(feature = "mock")]
pub mod mock;
mod partitioner;
mod producer;

pub use changelog::{
    cluster_id, record_at, watermarks, ChangelogWriter, PartitionReader, RecordAt, CHANGELOG, RECORD_BYTES_MAX,
};
pub use config::{configure, from_env, property, Properties};
pub use partitioner::{murmur2, partition_for};
pub use producer::{Delivery, Outgoing, Producer};

/// The tansu binary (the embedded broker of `run`, and the broker of the tests and the
/// bench): the first on `PATH`, else `$CARGO_HOME/bin` (`~/.cargo/bin`), where
/// `cargo install tansu` puts it.
pub fn tansu_path() -> Option<std::path::PathBuf> {
    use std::path::{Path, PathBuf};
    let from_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("tansu")).find(|p| p.is_file()))
        .unwrap_or_default();
    from_path.or_else(|| {
        let home = PathBuf::from(std::env::var_os("CARGO_HOME").unwrap_or_else(|| {
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo").into_os_string()).unwrap_or_default()
        }));
        Some(home.join("bin/tansu")).filter(|p| p.is_file())
    })
}

/// The consumer's owner: told of partitions coming and going, on the polling thread,
/// inside `poll`, before any record of a new assignment is returned and after the last
/// record of a revoked one.
pub trait Partitions: Send + Sync {
    /// Partitions just assigned: the next offset of each, as the ledger recorded it
    /// (`None`: nothing consumed yet, start at the beginning; `Some(END)`: from the end of
    /// the log, for a partition that will not be consumed).
    fn assigned(&self, partitions: &[(String, i32)]) -> Vec<Option<i64>>;
    /// Partitions just revoked or lost. `eager`: an eager rebalance took every partition
    /// back and an assignment follows (some may come back); otherwise (cooperative
    /// revocation, lost partitions) they are gone now.
    fn revoked(&self, _partitions: &[(String, i32)], _eager: bool) {}
}

/// The position `Partitions::assigned` gives a partition it will not consume (stopped):
/// the end of its log, so no fetch starts below a log's start.
pub const END: i64 = -1;

/// An owner that keeps no positions: every partition is read from its beginning
/// (watchers and tools).
pub struct FromBeginning;

impl Partitions for FromBeginning {
    fn assigned(&self, partitions: &[(String, i32)]) -> Vec<Option<i64>> {
        vec![None; partitions.len()]
    }
}

/// One consumed record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The record's Kafka timestamp (ms since the epoch), if it has one.
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    pub(crate) fn from_message(m: &impl Message) -> Record {
        Record {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|Header { key, value }| (key.to_string(), value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The position key (`topic/partition`) the store records offsets under.
    pub fn stream(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }

    /// What identifies the record's content: SHA-256 of its key (absent and empty
    /// differ) and payload. A ledger keeps the fingerprint of the last record it consumed
    /// of each partition, so that a log whose record at that offset is another one (a
    /// recreated topic that grew past the ledger's position) is told from the log it read.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        match &self.key {
            None => hash.update([0]),
            Some(key) => {
                hash.update([1]);
                hash.update((key.len() as u64).to_be_bytes());
                hash.update(key);
            }
        }
        hash.update(&self.payload);
        hash.finalize().into()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// How far librdkafka has got on one partition, as of its last statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub topic: String,
    pub partition: i32,
    /// The high watermark from the last fetch (-1 before the first).
    pub high: i64,
    /// The low watermark (-1 before it is known).
    pub low: i64,
    /// Records on the broker past the application's position (-1 while unknown).
    pub lag: i64,
}

struct GroupContext {
    owner: Arc<dyn Partitions>,
    owned: Mutex<HashSet<(String, i32)>>,
    rebalances: AtomicU64,
    /// Each owned partition's progress, from librdkafka's last statistics.
    lags: Mutex<Vec<Fetched>>,
}

impl ClientContext for GroupContext {
    /// librdkafka's periodic statistics (served by `poll`, no request of its own): the
    /// consumer lag of every partition it fetches, from the high watermark it caches.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let owned = self.owned.lock().expect("not poisoned").clone();
        let mut lags: Vec<Fetched> = statistics
            .topics
            .iter()
            .flat_map(|(topic, t)| {
                t.partitions.iter().map(move |(p, part)| Fetched {
                    topic: topic.clone(),
                    partition: *p,
                    high: part.hi_offset,
                    low: part.lo_offset,
                    lag: part.consumer_lag,
                })
            })
            .filter(|f| f.partition >= 0 && owned.contains(&(f.topic.clone(), f.partition)))
            .collect();
        lags.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        *self.lags.lock().expect("not poisoned") = lags;
    }
}

fn parts_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

impl ConsumerContext for GroupContext {
    /// Assignment: every partition starts at the position the ledger recorded (Kafka's
    /// committed offset is only a hint). Revocation: the partition is forgotten, so
    /// records of it still in the current batch are dropped, never applied.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        self.rebalances.fetch_add(1, Ordering::SeqCst);
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts = parts_of(tpl);
                let positions = self.owner.assigned(&parts);
                for ((topic, partition), next) in parts.iter().zip(positions) {
                    // Nothing recorded: offset 0, the start of the log (the owner checks
                    // the log still holds it; `auto.offset.reset=error` never skips).
                    let next = match next {
                        Some(END) => Offset::End,
                        next => Offset::Offset(next.unwrap_or(0)),
                    };
                    if let Err(e) = tpl.set_partition_offset(topic, *partition, next) {
                        warn!(topic, partition, error = %e, "Could not set the stored position.");
                    }
                    self.owned.lock().expect("not poisoned").insert((topic.clone(), *partition));
                }
                info!(partitions = ?parts, cooperative, "Partitions assigned at the ledger's positions.");
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                let revoked = {
                    let mut owned = self.owned.lock().expect("not poisoned");
                    let mut revoked = parts_of(tpl);
                    if !cooperative {
                        revoked.extend(owned.drain());
                        revoked.sort();
                        revoked.dedup();
                    }
                    for p in &revoked {
                        owned.remove(p);
                    }
                    revoked
                };
                self.owner.revoked(&revoked, !cooperative && !lost);
                info!(partitions = ?revoked, cooperative, lost, "Partitions revoked.");
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                warn!(error = ?other, "Rebalance error; giving up every partition.");
                let revoked: Vec<_> = self.owned.lock().expect("not poisoned").drain().collect();
                self.owner.revoked(&revoked, false);
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            warn!(error = %e, "Applying the rebalance failed.");
        }
    }
}

/// How the group spreads partitions over its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    /// Eager: every rebalance revokes everything, then assigns; co-partitions topics.
    Range,
    /// Incremental: only moved partitions are revoked; topics are not co-partitioned,
    /// so only for a single input topic (or owners that do not need co-partitioning).
    CooperativeSticky,
}

/// A consumer-group member on the input topics.
pub struct Consumer {
    inner: BaseConsumer<GroupContext>,
}

impl Consumer {
    /// `session_timeout_ms`: how long the group waits for a silent member (a crashed
    /// one) before moving its partitions; too short and a busy broker evicts live members.
    /// Partitions are assigned by `range`, which keeps partition N of every subscribed
    /// topic on one member when the topics have the same partition count (a team's
    /// images and account events then meet in one member's ledger).
    pub fn new(
        brokers: &str,
        group: &str,
        topics: &[&str],
        session_timeout_ms: u32,
        owner: Arc<dyn Partitions>,
    ) -> Result<Consumer> {
        Consumer::with_assignor(brokers, group, topics, session_timeout_ms, owner, Assignor::Range)
    }

    pub fn with_assignor(
        brokers: &str,
        group: &str,
        topics: &[&str],
        session_timeout_ms: u32,
        owner: Arc<dyn Partitions>,
        assignor: Assignor,
    ) -> Result<Consumer> {
        let context = GroupContext {
            owner,
            owned: Mutex::new(HashSet::new()),
            rebalances: AtomicU64::new(0),
            lags: Mutex::new(Vec::new()),
        };
        let strategy = match assignor {
            Assignor::Range => "range",
            Assignor::CooperativeSticky => "cooperative-sticky",
        };
        let settings = [
            ("group.id", group.to_string()),
            ("enable.auto.commit", "false".into()),
            ("enable.auto.offset.store", "false".into()),
            // A position outside the log is an error, never a silent jump.
            ("auto.offset.reset", "error".into()),
            ("partition.assignment.strategy", strategy.into()),
            ("session.timeout.ms", session_timeout_ms.to_string()),
            ("heartbeat.interval.ms", (session_timeout_ms / 10).clamp(100, 3000).to_string()),
            // The consumer lag comes with librdkafka's statistics (`Consumer::lag`).
            ("statistics.interval.ms", "1000".into()),
        ];
        let inner: BaseConsumer<GroupContext> =
            config::client(brokers, &settings, false).create_with_context(context)?;
        inner.subscribe(topics)?;
        Ok(Consumer { inner })
    }

    /// Polls up to `max` records, waiting at most `wait` for the first ones. Records of
    /// partitions revoked meanwhile are dropped.
    pub fn poll_batch(&self, max: usize, wait: Duration) -> Result<Vec<Record>> {
        let deadline = Instant::now() + wait;
        let mut batch = Vec::new();
        while batch.len() < max {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = if batch.is_empty() { left.min(Duration::from_millis(100)) } else { Duration::ZERO };
            match self.inner.poll(timeout) {
                Some(Ok(m)) => batch.push(Record::from_message(&m)),
                Some(Err(e)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::OffsetOutOfRange) => {
                    return Err(Error::Topic {
                        topic: "an input partition".into(),
                        reason: format!("the ledger's position fell outside the log ({e}): records were deleted under it or the topic was recreated; stopping rather than skipping"),
                    });
                }
                Some(Err(e)) => warn!(error = %e, "Consumer error; continuing."),
                None if !batch.is_empty() || Instant::now() >= deadline => break,
                None => {}
            }
        }
        let owned = self.inner.context().owned.lock().expect("not poisoned");
        batch.retain(|r| owned.contains(&(r.topic.clone(), r.partition)));
        Ok(batch)
    }

    /// Tells Kafka how far the ledger got (advisory; the ledger's own positions rule).
    pub fn commit(&self, next_offsets: &[(String, i32, i64)]) -> Result<()> {
        if next_offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, next) in next_offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        match self.inner.commit(&tpl, CommitMode::Async) {
            Ok(()) => Ok(()),
            Err(e) => {
                warn!(error = %e, "Advisory offset commit failed; the ledger's positions are authoritative.");
                Ok(())
            }
        }
    }

    /// Records past this member's position on each partition it owns, as of librdkafka's
    /// last statistics (every `statistics.interval.ms`, 1 s unless configured): (topic, partition, lag).
    pub fn lag(&self) -> Vec<Fetched> {
        let owned = self.inner.context().owned.lock().expect("not poisoned").clone();
        let lags = self.inner.context().lags.lock().expect("not poisoned");
        lags.iter().filter(|f| owned.contains(&(f.topic.clone(), f.partition))).cloned().collect()
    }

    /// Partitions this member owns now.
    pub fn owned(&self) -> Vec<(String, i32)> {
        let mut v: Vec<_> = self.inner.context().owned.lock().expect("not poisoned").iter().cloned().collect();
        v.sort();
        v
    }

    /// Stops fetching `partitions` (a stopped partition ledger's): they stay assigned to
    /// this member, so no other bills them either, until the next rebalance.
    pub fn pause(&self, partitions: &[(String, i32)]) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in partitions {
            tpl.add_partition(topic, *partition);
        }
        self.inner.pause(&tpl)?;
        Ok(())
    }

    /// Leaves the group cleanly so partitions move to another member at once.
    pub fn close(self) {
        self.inner.unsubscribe();
        let _ = self.inner.poll(Duration::from_millis(100));
    }
}

/// Creates the topics (input topics with `partitions` partitions); existing ones are fine.
pub fn create_topics(brokers: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = config::client(brokers, &[], false).create()?;
    // The changelog has a partition per input partition number (a ledger each); it is
    // created without a cleanup policy: a broker's default never trims it (tansu), and on
    // Apache Kafka operators create it as deploy/README.md says.
    // Only the missing ones: some brokers (librdkafka's mock cluster) have no admin API.
    let existing = partition_counts(brokers, &ALL_TOPICS)?;
    let changelog = partition_counts(brokers, &[CHANGELOG])?;
    let missing: Vec<&str> = ALL_TOPICS
        .iter()
        .zip(&existing)
        .chain([(&CHANGELOG, &changelog[0])])
        .filter(|(_, n)| **n == 0)
        .map(|(t, _)| *t)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let specs: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|t| {
            let n = if [IMAGES, ACCOUNTS, CHANGELOG].contains(t) { partitions } else { 1 };
            NewTopic::new(t, n, TopicReplication::Fixed(1))
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = futures_executor::block_on(admin.create_topics(specs.iter(), &opts))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(Error::Topic { topic, reason: code.to_string() }),
        }
    }
    Ok(())
}

/// How many partitions each topic has (0: unknown to the broker).
pub fn partition_counts(brokers: &str, topics: &[&str]) -> Result<Vec<usize>> {
    let client: BaseConsumer = config::client(brokers, &[], false).create()?;
    topics
        .iter()
        .map(|topic| {
            let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(10))?;
            Ok(metadata.topics().iter().map(|t| t.partitions().len()).sum())
        })
        .collect()
}

/// Reads every record of `topic` from the beginning until `idle` passes with nothing new
/// (tools and tests: what did the ledger publish?).
pub fn read_topic(brokers: &str, topic: &str, idle: Duration) -> Result<Vec<Record>> {
    let settings = [
        ("group.id", format!("usage-ledger-reader-{}", std::process::id())),
        ("enable.auto.commit", "false".into()),
        ("auto.offset.reset", "earliest".into()),
    ];
    let consumer: BaseConsumer = config::client(brokers, &settings, false).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < idle {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last = Instant::now();
                out.push(Record::from_message(&m));
            }
            Some(Err(e)) => warn!(error = %e, "Reader error; continuing."),
            None => {}
        }
    }
    Ok(out)
}
