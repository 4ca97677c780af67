//! The changelog topic's transport: appending a record to one partition and learning the
//! offset it landed at (`ChangelogWriter`), and reading a partition from an offset to its
//! end (`PartitionReader`). What the records hold is the store's business.
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::{config, Result};

/// Each partition ledger's committed batches, one partition per input partition number.
pub const CHANGELOG: &str = "usage-ledger.changelog.v1";

/// The largest record the writer sends and the reader fetches (a batch of 5,000 events
/// is about 0.5 MB; a ledger exported before the changelog goes in records of 4 MiB).
/// Apache Kafka's topic needs `max.message.bytes` at least this (deploy/README.md).
pub const RECORD_BYTES_MAX: usize = 64 << 20;

/// How long an append waits for the broker's acknowledgement.
const APPEND_TIMEOUT: Duration = Duration::from_secs(30);

type Landed = std::result::Result<i64, String>;

struct LandedContext;

impl ClientContext for LandedContext {}

impl ProducerContext for LandedContext {
    type DeliveryOpaque = Box<mpsc::SyncSender<Landed>>;
    fn delivery(&self, result: &DeliveryResult<'_>, tell: Self::DeliveryOpaque) {
        let landed = match result {
            Ok(m) => Ok(m.offset()),
            Err((e, _)) => Err(e.to_string()),
        };
        let _ = tell.send(landed);
    }
}

/// Appends records to partitions of the changelog: idempotent, acknowledged by every
/// in-sync replica, one at a time per caller; shared by the partition ledgers' committer
/// threads.
pub struct ChangelogWriter {
    inner: BaseProducer<LandedContext>,
    brokers: String,
}

impl ChangelogWriter {
    pub fn new(brokers: &str) -> Result<ChangelogWriter> {
        let settings = [
            ("acks", "all".to_string()),
            ("enable.idempotence", "true".into()),
            ("linger.ms", "0".into()),
            ("message.max.bytes", (RECORD_BYTES_MAX + 4096).to_string()),
            ("message.timeout.ms", APPEND_TIMEOUT.as_millis().to_string()),
        ];
        // The operator's producer properties apply (TLS, SASL, timeouts), but not over
        // these: a smaller message limit would refuse every record, and the ledger.
        let mut config = config::client(brokers, &settings, true);
        for (k, v) in &settings {
            config.set(*k, v);
        }
        let inner = config.create_with_context(LandedContext)?;
        Ok(ChangelogWriter { inner, brokers: brokers.to_string() })
    }

    /// Appends `record` to `partition` of the changelog; the offset it landed at.
    pub fn append(&self, partition: i32, record: &[u8]) -> std::result::Result<u64, String> {
        let (tell, landed) = mpsc::sync_channel(1);
        let key = partition.to_string();
        let message =
            BaseRecord::with_opaque_to(CHANGELOG, Box::new(tell)).partition(partition).key(&key).payload(record);
        self.inner.send(message).map_err(|(e, _)| e.to_string())?;
        let deadline = Instant::now() + APPEND_TIMEOUT + Duration::from_secs(5);
        loop {
            self.inner.poll(Duration::from_millis(1));
            match landed.try_recv() {
                Ok(Ok(offset)) if offset >= 0 => return Ok(offset as u64),
                // librdkafka's report after a retry the broker had already written (a
                // DuplicateSequence answer, seen across a broker restart): written, at an
                // offset it does not say.
                Ok(Ok(_)) => return self.find(partition, record),
                Ok(Err(e)) => return Err(e),
                Err(mpsc::TryRecvError::Disconnected) => return Err("the delivery report was lost".into()),
                Err(mpsc::TryRecvError::Empty) if Instant::now() > deadline => {
                    return Err(format!("not acknowledged within {APPEND_TIMEOUT:?}"))
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
        }
    }
    /// The offset of `record`, acknowledged without one: among the partition's last
    /// `FIND_BACK` records, the one with exactly these bytes (a record names the digest
    /// of the one before it, so no two are equal).
    fn find(&self, partition: i32, record: &[u8]) -> std::result::Result<u64, String> {
        let (low, high) = watermarks(&self.brokers, CHANGELOG, partition).map_err(|e| e.to_string())?;
        let from = (high - FIND_BACK).max(low).max(0) as u64;
        let reader = PartitionReader::open(&self.brokers, CHANGELOG, partition, from)?;
        for read in reader {
            let (offset, payload) = read?;
            if payload == record {
                return Ok(offset);
            }
        }
        Err(format!("acknowledged without an offset, and not among the last {FIND_BACK} records"))
    }
}

/// How far back from the end an acknowledged record without an offset is looked for.
const FIND_BACK: i64 = 16;

/// Reads one partition of a topic from an offset up to its end as of the start (the high
/// watermark then), in offset order.
pub struct PartitionReader {
    consumer: BaseConsumer,
    next: i64,
    end: i64,
    idle: Duration,
}

/// Where a partition's log starts and ends (the next offset to be written).
pub fn watermarks(brokers: &str, topic: &str, partition: i32) -> Result<(i64, i64)> {
    let consumer: BaseConsumer = config::client(brokers, &[], false).create()?;
    Ok(consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?)
}

/// The id of the cluster the brokers belong to, if they say (Kafka's `ClusterId`).
pub fn cluster_id(brokers: &str) -> Result<Option<String>> {
    let consumer: BaseConsumer = config::client(brokers, &[], false).create()?;
    Ok(consumer.client().fetch_cluster_id(Duration::from_secs(10)))
}

/// What a partition's log holds at one offset.
#[derive(Debug)]
pub enum RecordAt {
    Found(crate::Record),
    /// The log starts past the offset (retention took it): nothing to compare.
    Trimmed,
    /// The log ends at or before the offset, or skips it (compaction).
    Missing,
}

/// The record at `offset` of `topic`/`partition`, whose log the caller found to span
/// `bounds` (`watermarks`).
pub fn record_at(brokers: &str, topic: &str, partition: i32, offset: u64, bounds: (i64, i64)) -> Result<RecordAt> {
    let settings = [
        ("group.id", "usage-ledger-check".to_string()),
        ("enable.auto.commit", "false".into()),
        ("auto.offset.reset", "error".into()),
        // tansu 0.6 sleeps through a fetch's whole wait even with records there.
        ("fetch.wait.max.ms", "10".into()),
    ];
    let (low, high) = bounds;
    let offset = offset as i64;
    if offset < low {
        return Ok(RecordAt::Trimmed);
    }
    if offset >= high {
        return Ok(RecordAt::Missing);
    }
    let consumer: BaseConsumer = config::client(brokers, &settings, false).create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            // A fetch below deleted records repeats the first survivor (tansu).
            Some(Ok(m)) if m.offset() < offset => continue,
            Some(Ok(m)) if m.offset() > offset => return Ok(RecordAt::Missing),
            Some(Ok(m)) => return Ok(RecordAt::Found(crate::Record::from_message(&m))),
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Err(crate::Error::Topic {
        topic: format!("{topic}/{partition}"),
        reason: format!("no record at offset {offset} within 30 s"),
    })
}

impl PartitionReader {
    /// Reads `topic`/`partition` from `from`. A partition whose log starts past `from`
    /// (trimmed) or ends before it (recreated) is an error naming both.
    pub fn open(brokers: &str, topic: &str, partition: i32, from: u64) -> std::result::Result<PartitionReader, String> {
        let settings = [
            ("group.id", "usage-ledger-restore".to_string()),
            ("enable.auto.commit", "false".into()),
            ("auto.offset.reset", "error".into()),
            ("fetch.max.bytes", RECORD_BYTES_MAX.to_string()),
            ("max.partition.fetch.bytes", RECORD_BYTES_MAX.to_string()),
            ("receive.message.max.bytes", (RECORD_BYTES_MAX + (1 << 20)).to_string()),
            // The reader stops at the end it was given, so a fetch never needs to wait
            // for more; tansu 0.6 sleeps through a fetch's whole wait even with records
            // there (the default 500 ms made a 10M-entry restore 64.6 s instead of 49.6).
            ("fetch.wait.max.ms", "10".into()),
        ];
        let consumer: BaseConsumer =
            config::client(brokers, &settings, false).create().map_err(|e| format!("{topic}/{partition}: {e}"))?;
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .map_err(|e| format!("{topic}/{partition}: {e}"))?;
        let from = from as i64;
        if from < low {
            return Err(format!("{topic}/{partition} starts at offset {low}, past {from} where the ledger stands: records it needs were deleted (trimmed)"));
        }
        if from > high {
            return Err(format!("{topic}/{partition} ends at offset {high}, before {from} where the ledger stands: the topic was recreated or trimmed"));
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from)).map_err(|e| e.to_string())?;
        consumer.assign(&tpl).map_err(|e| format!("{topic}/{partition}: {e}"))?;
        Ok(PartitionReader { consumer, next: from, end: high, idle: Duration::from_secs(30) })
    }

    /// The offset the partition ended at when the reader opened.
    pub fn end(&self) -> u64 {
        self.end as u64
    }
}

impl Iterator for PartitionReader {
    type Item = std::result::Result<(u64, Vec<u8>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let deadline = Instant::now() + self.idle;
        loop {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) if m.offset() < self.next => continue,
                Some(Ok(m)) if m.offset() > self.next => {
                    let gap =
                        format!("offset {} came where {} was expected: records are missing", m.offset(), self.next);
                    self.next = self.end;
                    return Some(Err(gap));
                }
                Some(Ok(m)) => {
                    self.next = m.offset() + 1;
                    return Some(Ok((m.offset() as u64, m.payload().unwrap_or_default().to_vec())));
                }
                Some(Err(e)) => {
                    self.next = self.end;
                    return Some(Err(e.to_string()));
                }
                None if Instant::now() > deadline => {
                    let stalled = format!("no record at offset {} within {:?}", self.next, self.idle);
                    self.next = self.end;
                    return Some(Err(stalled));
                }
                None => {}
            }
        }
    }
}
