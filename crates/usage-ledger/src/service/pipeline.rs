//! A polled batch through the ledger: cut by partition, each record decoded and
//! validated into a submission (or a dead letter), one flushed commit per partition
//! ledger holding entries, positions and the dead letters of what the rules refused.
use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use ledger_core::{Event, Reject};
use ledger_kafka::{Record, ACCOUNTS, IMAGES};
use ledger_proto::{Invalid, Window};
use ledger_store::{InputPosition, Ledger, OutboxKind, OutboxMsg, Outcome, Source, Submission};
use tracing::{debug, warn};

use super::ownership::Shards;
use crate::metrics::Metrics;

/// Applies a polled batch, one commit per partition ledger; the commits are written and
/// flushed side by side, and all are durable when this returns `Ok`.
pub(super) fn apply(
    shards: &mut Shards,
    records: Vec<Record>,
    window: Window,
    input_partitions: i32,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let parts = by_partition(records);
    let committing = std::time::Instant::now();
    for (partition, records) in &parts {
        let ledger = shards
            .open
            .get_mut(partition)
            .with_context(|| format!("records of partition {partition} arrived, its ledger is not open"))?;
        process(ledger, records, Checks { window, input_partitions }, metrics)?;
    }
    for (partition, records) in &parts {
        let ledger = shards.open.get_mut(partition).expect("applied above");
        ledger.wait_durable()?;
        metrics.commit_seconds.observe(committing.elapsed().as_secs_f64());
        debug!(partition, records = records.len(), first_offset = records[0].offset, "Batch applied.");
    }
    Ok(())
}

/// The batch cut by input partition number, in record order within each.
fn by_partition(records: Vec<Record>) -> BTreeMap<i32, Vec<Record>> {
    let mut parts: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    for r in records {
        parts.entry(r.partition).or_default().push(r);
    }
    parts
}

pub(super) fn next_offsets(records: &[Record]) -> Vec<(String, i32, i64)> {
    let mut next: HashMap<(String, i32), i64> = HashMap::new();
    for r in records {
        let e = next.entry((r.topic.clone(), r.partition)).or_default();
        *e = (*e).max(r.offset + 1);
    }
    next.into_iter().map(|((t, p), n)| (t, p, n)).collect()
}

/// A batch's dead letters, each counted under its reason code as it is made.
pub(super) struct DeadLetters<'m> {
    metrics: &'m Metrics,
    msgs: Vec<OutboxMsg>,
}

impl<'m> DeadLetters<'m> {
    /// None yet; each counted in `metrics` as it is added.
    pub fn new(metrics: &'m Metrics) -> DeadLetters<'m> {
        DeadLetters { metrics, msgs: Vec::new() }
    }

    /// The dead letter of `r`, for `code` (the contract's `reason.code`).
    fn add(&mut self, r: &Record, code: &str, reason: &str, who: Option<(&str, &str)>) {
        self.metrics.dead_lettered(code);
        self.msgs.push(dead_letter(r, code, reason, who));
    }

    /// The dead letter of a record the rules refused: `reason.code` as the contract
    /// names it, and `reason.cause`, the specific rule.
    fn rejected(&mut self, r: &Record, reject: &Reject, who: Option<(&str, &str)>) {
        self.add(r, reject.code.code(), &reject.detail, who);
        let msg = self.msgs.last_mut().expect("just added");
        msg.headers.push(("reason.cause".to_string(), reject.code.cause().to_string()));
    }

    /// Dead letters for parked refunds a batch rejected after all (given up, or refused
    /// once their event arrived): the record is rebuilt from the parked event and its
    /// source.
    pub fn settled(&mut self, settled: &[(ledger_store::Parked, Outcome)]) {
        for (p, outcome) in settled {
            let Outcome::Rejected(reject) = outcome else { continue };
            let (topic, partition) = p.stream.as_deref().and_then(|s| s.rsplit_once('/')).unwrap_or((ACCOUNTS, "0"));
            let record = Record {
                topic: topic.to_string(),
                partition: partition.parse().unwrap_or_default(),
                offset: p.offset as i64,
                timestamp: None,
                key: Some(p.event.team_id.as_str().as_bytes().to_vec()),
                payload: ledger_proto::encode_event(&Event::Account(p.event.clone())),
                headers: Vec::new(),
            };
            self.rejected(&record, reject, Some((p.event.team_id.as_str(), p.event.event_id.as_str())));
        }
    }

    /// The dead letters, to stage in the batch's write.
    pub fn into_msgs(self) -> Vec<OutboxMsg> {
        self.msgs
    }
}

/// A dead letter carries a record whole up to this size; past it, a prefix of
/// `DEAD_LETTER_PREFIX` bytes with the record's size and SHA-256, so a dead letter always
/// fits the producer's message limit.
const DEAD_LETTER_PAYLOAD_MAX: usize = 256 << 10;
const DEAD_LETTER_PREFIX: usize = 4 << 10;
/// Longest reason or key a dead letter repeats.
const DEAD_LETTER_TEXT_MAX: usize = 1 << 10;

fn bounded(s: &str) -> String {
    if s.len() <= DEAD_LETTER_TEXT_MAX {
        return s.to_string();
    }
    let cut = (0..=DEAD_LETTER_TEXT_MAX).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
    format!("{}…", &s[..cut])
}

/// A dead letter: the original bytes (bounded), with the source and the reason in headers.
fn dead_letter(r: &Record, code: &str, reason: &str, who: Option<(&str, &str)>) -> OutboxMsg {
    let mut headers = vec![
        ("source.topic".to_string(), r.topic.clone()),
        ("source.partition".to_string(), r.partition.to_string()),
        ("source.offset".to_string(), r.offset.to_string()),
        ("reason.code".to_string(), code.to_string()),
        ("reason".to_string(), bounded(reason)),
    ];
    let mut payload = r.payload.clone();
    if payload.len() > DEAD_LETTER_PAYLOAD_MAX {
        use sha2::Digest as _;
        headers.push(("payload.size".to_string(), payload.len().to_string()));
        headers.push(("payload.sha256".to_string(), hex::encode(sha2::Sha256::digest(&payload))));
        headers.push(("payload.truncated".to_string(), DEAD_LETTER_PREFIX.to_string()));
        payload.truncate(DEAD_LETTER_PREFIX);
    }
    if let Some((team, event)) = who {
        headers.push(("team_id".to_string(), team.to_string()));
        headers.push(("event_id".to_string(), event.to_string()));
    }
    warn!(topic = %r.topic, partition = r.partition, offset = r.offset, team_id = who.map(|w| w.0), event_id = who.map(|w| w.1), code, reason, "Dead-lettered a record.");
    OutboxMsg {
        kind: OutboxKind::DeadLetter,
        key: bounded(&String::from_utf8_lossy(r.key.as_deref().unwrap_or_default())),
        id: format!("{}/{}/{}", r.topic, r.partition, r.offset),
        json: String::new(),
        payload,
        headers,
    }
}

/// A record's event, validated: decoded by its topic, keyed by its team, dated inside
/// the window.
fn decode(r: &Record, window: &Window) -> Result<Event, Invalid> {
    let event = match r.topic.as_str() {
        IMAGES => ledger_proto::decode_image(&r.payload),
        _ => ledger_proto::decode_account(&r.payload),
    }?;
    let key = r.key.as_deref().unwrap_or_default();
    if key != event.team_id().as_str().as_bytes() {
        let shown = String::from_utf8_lossy(&key[..key.len().min(ledger_core::TeamId::MAX_LEN + 1)]).into_owned();
        return Err(Invalid::KeyMismatch { key: shown, team: event.team_id().to_string() });
    }
    window.admit(&event)?;
    Ok(event)
}

/// The ledger's position in each stream of `records`: a record below it was applied
/// already (its partition went to another member and came back), and a position never
/// moves back.
fn recorded_positions(ledger: &Ledger, records: &[Record]) -> anyhow::Result<HashMap<String, u64>> {
    let mut floors: HashMap<String, u64> = HashMap::new();
    for r in records {
        if let std::collections::hash_map::Entry::Vacant(e) = floors.entry(r.stream()) {
            e.insert(ledger.store().offset(&r.stream())?.unwrap_or(0));
        }
    }
    Ok(floors)
}

/// What a record is checked against besides its own content.
#[derive(Clone, Copy)]
struct Checks {
    window: Window,
    /// The input topics' partition count: a record's key must map to its partition.
    input_partitions: i32,
}

/// The partition the contract's partitioner (murmur2, Kafka's default) gives the
/// record's key, when it is not the one the record is in.
fn misplaced(r: &Record, partitions: i32) -> Option<i32> {
    let expected = ledger_kafka::partition_for(r.key.as_deref().unwrap_or_default(), partitions);
    (expected != r.partition).then_some(expected)
}

fn process(ledger: &mut Ledger, records: &[Record], checks: Checks, metrics: &Metrics) -> anyhow::Result<()> {
    metrics.records.inc_by(records.len() as u64);
    let mut dead = DeadLetters::new(metrics);
    let Sorted { submissions, origin, positions } = sort(ledger, records, &checks, &mut dead)?;
    let who: Vec<(String, String)> =
        submissions.iter().map(|s| (s.event.team_id().to_string(), s.event.event_id().to_string())).collect();
    let report = ledger.submit_batch_with_deferred(submissions, &positions, |outcomes, settled| {
        for (k, outcome) in outcomes.iter().enumerate() {
            let r = &records[origin[k]];
            let who = Some((who[k].0.as_str(), who[k].1.as_str()));
            match outcome {
                Outcome::Rejected(reject) => dead.rejected(r, reject, who),
                Outcome::Conflict { team, seq } => {
                    let reason = format!("event id already used by team {team} seq {seq} with other content");
                    dead.add(r, "conflict", &reason, who);
                }
                Outcome::Appended { .. } | Outcome::Duplicate { .. } | Outcome::Parked => {}
            }
        }
        dead.settled(settled);
        dead.into_msgs()
    })?;
    for outcome in report.outcomes.iter().chain(report.settled.iter().map(|(_, o)| o)) {
        match outcome {
            Outcome::Appended { .. } => {
                metrics.appended.inc();
            }
            Outcome::Duplicate { .. } => {
                metrics.duplicates.inc();
            }
            _ => {}
        }
    }
    Ok(())
}

/// A batch's records sorted before the ledger sees them: the events to submit (with the
/// index of the record each came from), the dead letters of those refused at the
/// boundary, and the input positions after the batch.
struct Sorted {
    submissions: Vec<Submission>,
    origin: Vec<usize>,
    positions: Vec<InputPosition>,
}

/// Skips records the ledger holds already, decodes the rest, and dead-letters what does
/// not decode or sits in another partition than its key's.
fn sort(ledger: &Ledger, records: &[Record], checks: &Checks, dead: &mut DeadLetters) -> anyhow::Result<Sorted> {
    let mut submissions = Vec::with_capacity(records.len());
    let mut origin = Vec::with_capacity(records.len());
    // Each stream's last record: the position is past it, and its fingerprint says which
    // log the position is in.
    let mut last: HashMap<String, &Record> = HashMap::new();
    let floors = recorded_positions(ledger, records)?;
    for (i, r) in records.iter().enumerate() {
        let stream = r.stream();
        if (r.offset as u64) < floors[&stream] {
            debug!(%stream, offset = r.offset, "Skipped a record the ledger holds already.");
            continue;
        }
        last.insert(stream.clone(), r);
        match decode(r, &checks.window) {
            Ok(event) if let Some(expected) = misplaced(r, checks.input_partitions) => {
                let reason = format!(
                    "team {} belongs in partition {expected} of {} (murmur2 of its key, Kafka's default partitioner), not {}: billed there it would split the team's history",
                    event.team_id(),
                    checks.input_partitions,
                    r.partition
                );
                dead.add(r, "wrong_partition", &reason, Some((event.team_id().as_str(), event.event_id().as_str())));
            }
            Ok(event) => {
                submissions
                    .push(Submission { event, source: Source { stream: Some(stream), offset: r.offset as u64 } });
                origin.push(i);
            }
            Err(e) => dead.add(r, e.code(), &e.to_string(), None),
        }
    }
    let positions = last
        .into_iter()
        .map(|(source, r)| InputPosition { source, next: r.offset as u64 + 1, last: Some(r.fingerprint()) })
        .collect();
    Ok(Sorted { submissions, origin, positions })
}
