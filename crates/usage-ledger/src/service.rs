//! `run`: the service. Consume a batch → decode and validate → one atomic, flushed sled
//! commit holding entries, positions and dead letters → publish the outbox → tell Kafka
//! (advisory). `produce`: a JSONL file onto the input topics as protobuf.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ledger_core::{Catalog, Event};
use ledger_kafka::{Consumer, Outgoing, Partitions, Producer, Record, ACCOUNTS, ALERTS, DEADLETTER, IMAGES, INVOICES};
use ledger_store::{Ledger, OpenOptions, OutboxKind, OutboxMsg, Outcome, Source, Store, Submission};
use tracing::{debug, info, warn};

use crate::broker::EmbeddedBroker;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Kafka bootstrap servers; without them an embedded broker is started.
    #[arg(long, env = "USAGE_LEDGER_BROKERS")]
    pub brokers: Option<String>,
    /// Port of the embedded broker.
    #[arg(long, default_value_t = 9092)]
    pub broker_port: u16,
    #[arg(long, default_value = "usage-ledger")]
    pub group: String,
    /// How long the group waits for a silent member before moving its partitions.
    #[arg(long, default_value_t = 45_000)]
    pub session_timeout_ms: u32,
    /// Partitions of the input topics when this service creates them.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    #[arg(long, default_value_t = 5000)]
    pub batch_events_max: usize,
    #[arg(long, default_value_t = 200)]
    pub batch_wait_ms: u64,
    /// Also close cycles by wall-clock time (not only by the teams' event clocks).
    #[arg(long)]
    pub close_on_wall_clock: bool,
    /// Run a pipeline simulator beside the service and print balances and alerts.
    #[arg(long)]
    pub demo: bool,
    /// Serve Prometheus metrics on `GET /metrics` at this address (e.g. 127.0.0.1:9464).
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// How long an assigned partition waits for its previous owner to let go of the
    /// partition's ledger before the service stops with an error.
    #[arg(long, default_value_t = 60_000)]
    pub takeover_wait_ms: u64,
    /// Drain and exit once no record arrived for this long (back-fills, tests).
    #[arg(long)]
    pub exit_when_idle_ms: Option<u64>,
}

/// Counters the service reports as it goes.
#[derive(Debug, Default)]
struct Stats {
    records: u64,
    appended: u64,
    duplicates: u64,
    dead_letters: u64,
    published: u64,
    /// Time spent applying, committing and publishing batches (not waiting for records).
    batch_secs: f64,
    /// From the first record polled to the last one applied.
    first_to_last_secs: f64,
}

/// The ledgers of the partitions this member owns: one per input partition number, so
/// that partition N of both input topics (range assignment keeps them on one member)
/// lands in one ledger, and a team, keyed to one partition number, in one ledger.
/// Opened when assigned, flushed and closed when revoked; sled's file lock keeps a
/// second process from writing a ledger it was not handed yet. An eager rebalance
/// revokes every partition before it reassigns them: their ledgers wait in `released`
/// until the assignment, so those that come back are not folded again.
struct Shards {
    dir: PathBuf,
    catalog: Catalog,
    open: BTreeMap<i32, Ledger>,
    released: BTreeMap<i32, Ledger>,
    released_at: Option<Instant>,
    owned: BTreeSet<(String, i32)>,
    takeover_wait: Duration,
    /// Why an assigned partition's ledger could not be opened: the service stops on it.
    failure: Option<String>,
}

/// How long ledgers released by an eager revocation wait for the assignment that follows
/// (the next owner waits up to `--takeover-wait-ms` for them).
const RELEASED_WAIT: Duration = Duration::from_secs(5);

impl Shards {
    fn new(dir: &Path, takeover_wait: Duration) -> Shards {
        Shards {
            dir: dir.to_path_buf(),
            catalog: Catalog::builtin(),
            open: BTreeMap::new(),
            released: BTreeMap::new(),
            released_at: None,
            owned: BTreeSet::new(),
            takeover_wait,
            failure: None,
        }
    }

    /// Closes the released ledgers the new assignment did not give back.
    fn hand_over_released(&mut self) {
        self.released_at = None;
        if !self.released.is_empty() {
            self.released.clear();
            eprintln!("usage-ledger: handed over partitions; owns {:?}", self.open.keys().collect::<Vec<_>>());
        }
    }

    fn open_ledger(&mut self, partition: i32) -> anyhow::Result<&mut Ledger> {
        if !self.open.contains_key(&partition) {
            let dir = ledger_store::partition_dir(&self.dir, partition);
            // The previous owner may still be closing it: wait for its lock.
            let options = OpenOptions { lock_wait: self.takeover_wait, cache_bytes: 64 << 20 };
            let started = Instant::now();
            let ledger = Ledger::open(Store::open_with(&dir, &self.catalog, options)?)?;
            info!(partition, dir = %dir.display(), ms = started.elapsed().as_millis() as u64, "Opened the partition's ledger.");
            self.open.insert(partition, ledger);
        }
        Ok(self.open.get_mut(&partition).expect("inserted above"))
    }
}

struct Owner(Arc<Mutex<Shards>>);

impl Partitions for Owner {
    fn assigned(&self, partitions: &[(String, i32)]) -> Vec<Option<i64>> {
        let mut shards = self.0.lock().expect("not poisoned");
        // Back after an eager revocation: kept open, not folded again.
        for (_, partition) in partitions {
            if let Some(ledger) = shards.released.remove(partition) {
                shards.open.insert(*partition, ledger);
            }
        }
        shards.hand_over_released();
        let was_open: BTreeSet<i32> = shards.open.keys().copied().collect();
        let positions = partitions
            .iter()
            .map(|(topic, partition)| {
                shards.owned.insert((topic.clone(), *partition));
                let position = shards
                    .open_ledger(*partition)
                    .and_then(|ledger| Ok(ledger.store().offset(&format!("{topic}/{partition}"))?.map(|n| n as i64)));
                position.unwrap_or_else(|e| {
                    shards.failure.get_or_insert(format!("partition {partition} of {topic}: {e:#}"));
                    None
                })
            })
            .collect();
        let opened: Vec<&i32> = shards.open.keys().filter(|p| !was_open.contains(p)).collect();
        if !opened.is_empty() {
            eprintln!("usage-ledger: opened and folded the ledgers of partitions {opened:?}");
        }
        eprintln!("usage-ledger: owns partitions {:?}", shards.open.keys().collect::<Vec<_>>());
        positions
    }

    fn revoked(&self, partitions: &[(String, i32)], eager: bool) {
        let mut shards = self.0.lock().expect("not poisoned");
        for p in partitions {
            shards.owned.remove(p);
        }
        let keep: BTreeSet<i32> = shards.owned.iter().map(|(_, p)| *p).collect();
        let gone: Vec<i32> = shards.open.keys().filter(|p| !keep.contains(p)).copied().collect();
        for partition in gone {
            // Every batch was flushed before it was acknowledged; dropping closes sled.
            let ledger = shards.open.remove(&partition).expect("listed");
            shards.released.insert(partition, ledger);
        }
        if eager {
            shards.released_at.get_or_insert_with(Instant::now);
        } else {
            shards.hand_over_released();
        }
    }
}

pub fn run(dir: &Path, args: RunArgs) -> anyhow::Result<ExitCode> {
    if ledger_store::layout(dir)? == ledger_store::Layout::Single {
        bail!(
            "{} holds a ledger written by `import`; the service keeps one ledger per partition: use another --data-dir",
            dir.display()
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).context("installing the signal handler")?;
    let (brokers, _broker) = connect(dir, &args)?;
    let shards = Arc::new(Mutex::new(Shards::new(dir, Duration::from_millis(args.takeover_wait_ms))));
    let owner = Arc::new(Owner(Arc::clone(&shards)));
    let consumer = Consumer::new(&brokers, &args.group, &[IMAGES, ACCOUNTS], args.session_timeout_ms, owner)?;
    let producer = Producer::new(&brokers)?;
    let mut stats = Stats::default();
    let metrics = Arc::new(crate::metrics::Metrics::new());
    if let Some(addr) = &args.metrics_addr {
        let bound = crate::metrics::serve(addr, Arc::clone(&metrics))?;
        eprintln!("usage-ledger: metrics on http://{bound}/metrics");
    }
    eprintln!(
        "usage-ledger: consuming {IMAGES} and {ACCOUNTS} from {brokers} as group {}; ledgers in {}",
        args.group,
        ledger_store::partition_dir(dir, 0).parent().expect("has a parent").display()
    );
    let demo = args.demo.then(|| crate::demo::spawn_live(brokers.clone(), Arc::clone(&stop)));
    let mut last_report = Instant::now();
    let mut last_record = Instant::now();
    let mut last_balances = Instant::now();
    let mut first_record: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        let records = consumer.poll_batch(args.batch_events_max, Duration::from_millis(args.batch_wait_ms))?;
        let batch_started = Instant::now();
        let next = next_offsets(&records);
        let mut shards = shards.lock().expect("not poisoned");
        if let Some(why) = &shards.failure {
            bail!("cannot take over {why}");
        }
        if shards.released_at.is_some_and(|t| t.elapsed() > RELEASED_WAIT) {
            shards.hand_over_released();
        }
        if !records.is_empty() {
            last_record = Instant::now();
            let show_balances = args.demo && last_balances.elapsed() > Duration::from_secs(1);
            apply(&mut shards, records, show_balances, &mut stats, &metrics)?;
            if show_balances {
                last_balances = Instant::now();
            }
        } else if shards.owned.is_empty() {
            // Not idle while waiting for an assignment (a rebalance after a crash takes
            // up to the session timeout).
            last_record = Instant::now();
        } else if args.exit_when_idle_ms.is_some_and(|ms| last_record.elapsed() > Duration::from_millis(ms)) {
            stop.store(true, Ordering::SeqCst);
        }
        publish(&mut shards, args.close_on_wall_clock, &producer, &mut stats, &metrics)?;
        let owned: Vec<i32> = shards.open.keys().copied().collect();
        drop(shards);
        consumer.commit(&next)?;
        if !next.is_empty() {
            let secs = batch_started.elapsed().as_secs_f64();
            metrics.batch_seconds.observe(secs);
            stats.batch_secs += secs;
            let first = *first_record.get_or_insert(batch_started);
            stats.first_to_last_secs = first.elapsed().as_secs_f64();
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            info!(?stats, partitions = ?owned, "Progress.");
            last_report = Instant::now();
        }
    }
    info!(?stats, "Stopping: the last batch is durable and published.");
    let waiting: usize = shards.lock().expect("not poisoned").open.values().map(Ledger::parked).sum();
    consumer.close();
    shards.lock().expect("not poisoned").hand_over_released();
    if let Some(handle) = demo {
        let _ = handle.join();
        crate::demo::print_invoices(&ledger_store::open_all(dir, &Catalog::builtin(), OpenOptions::default())?)?;
    }
    report_stop(&stats, waiting);
    Ok(ExitCode::SUCCESS)
}

/// The closing line (the bench reads its figures).
fn report_stop(stats: &Stats, waiting: usize) {
    eprintln!(
        "usage-ledger: stopped after {} records ({} appended, {} duplicates, {} dead letters, {waiting} refunds waiting for their image); {:.2} s applying batches, {:.2} s from the first record to the last",
        stats.records, stats.appended, stats.duplicates, stats.dead_letters, stats.batch_secs, stats.first_to_last_secs
    );
}

/// The broker to use (an embedded one, kept alive by the returned handle, when none is
/// configured), with the input topics created and co-partitioned.
fn connect(dir: &Path, args: &RunArgs) -> anyhow::Result<(String, Option<EmbeddedBroker>)> {
    let (brokers, embedded) = match &args.brokers {
        Some(b) => (b.clone(), None),
        None => {
            let broker = EmbeddedBroker::start(&dir.join("broker"), args.broker_port)?;
            eprintln!("usage-ledger: embedded Kafka-protocol broker (tansu) listening on {}", broker.address);
            (broker.address.clone(), Some(broker))
        }
    };
    ledger_kafka::create_topics(&brokers, args.partitions)?;
    let counts = ledger_kafka::partition_counts(&brokers, &[IMAGES, ACCOUNTS])?;
    if counts[0] != counts[1] || counts[0] == 0 {
        bail!(
            "{IMAGES} has {} partitions and {ACCOUNTS} {}: a team's events must meet in one partition number",
            counts[0],
            counts[1]
        );
    }
    Ok((brokers, embedded))
}

/// Applies a polled batch, one commit per partition ledger.
fn apply(
    shards: &mut Shards,
    records: Vec<Record>,
    show_balances: bool,
    stats: &mut Stats,
    metrics: &crate::metrics::Metrics,
) -> anyhow::Result<()> {
    for (partition, records) in by_partition(records) {
        let ledger = shards
            .open
            .get_mut(&partition)
            .with_context(|| format!("records of partition {partition} arrived, its ledger is not open"))?;
        process(ledger, &records, stats, metrics)?;
        debug!(partition, records = records.len(), first_offset = records[0].offset, "Batch applied.");
        if show_balances {
            crate::demo::print_live_balances(ledger, &records)?;
        }
    }
    Ok(())
}

/// Closes cycles by wall time if asked, then publishes every open ledger's outbox.
fn publish(
    shards: &mut Shards,
    close_on_wall_clock: bool,
    producer: &Producer,
    stats: &mut Stats,
    metrics: &crate::metrics::Metrics,
) -> anyhow::Result<()> {
    for ledger in shards.open.values_mut() {
        if close_on_wall_clock {
            let report = ledger.close_until_with(chrono::Utc::now(), settled_dead_letters)?;
            stats.dead_letters += report.settled.len() as u64;
        }
        let published = publish_outbox(ledger.store(), producer)?;
        stats.published += published;
        metrics.published.inc_by(published);
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

fn next_offsets(records: &[Record]) -> Vec<(String, i32, i64)> {
    let mut next: HashMap<(String, i32), i64> = HashMap::new();
    for r in records {
        let e = next.entry((r.topic.clone(), r.partition)).or_default();
        *e = (*e).max(r.offset + 1);
    }
    next.into_iter().map(|((t, p), n)| (t, p, n)).collect()
}

/// A dead letter: the original bytes, with the source and the reason in headers.
fn dead_letter(r: &Record, code: &str, reason: &str, who: Option<(&str, &str)>) -> OutboxMsg {
    let mut headers = vec![
        ("source.topic".to_string(), r.topic.clone()),
        ("source.partition".to_string(), r.partition.to_string()),
        ("source.offset".to_string(), r.offset.to_string()),
        ("reason.code".to_string(), code.to_string()),
        ("reason".to_string(), reason.to_string()),
    ];
    if let Some((team, event)) = who {
        headers.push(("team_id".to_string(), team.to_string()));
        headers.push(("event_id".to_string(), event.to_string()));
    }
    warn!(topic = %r.topic, partition = r.partition, offset = r.offset, team_id = who.map(|w| w.0), event_id = who.map(|w| w.1), code, reason, "Dead-lettered a record.");
    OutboxMsg {
        kind: OutboxKind::DeadLetter,
        key: String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
        id: format!("{}/{}/{}", r.topic, r.partition, r.offset),
        json: String::new(),
        payload: r.payload.clone(),
        headers,
    }
}

/// Dead letters for parked refunds a batch rejected after all (given up, or refused once
/// their event arrived): the record is rebuilt from the parked event and its source.
fn settled_dead_letters(settled: &[(ledger_store::Parked, Outcome)]) -> Vec<OutboxMsg> {
    settled
        .iter()
        .filter_map(|(p, outcome)| {
            let Outcome::Rejected(reject) = outcome else { return None };
            let (topic, partition) = p.stream.as_deref().and_then(|s| s.rsplit_once('/')).unwrap_or((ACCOUNTS, "0"));
            let record = Record {
                topic: topic.to_string(),
                partition: partition.parse().unwrap_or_default(),
                offset: p.offset as i64,
                key: Some(p.event.team_id.as_str().as_bytes().to_vec()),
                payload: ledger_proto::encode_event(&Event::Account(p.event.clone())),
                headers: Vec::new(),
            };
            let who = Some((p.event.team_id.as_str(), p.event.event_id.as_str()));
            Some(dead_letter(&record, reject.code, &reject.detail, who))
        })
        .collect()
}

fn decode(r: &Record) -> Result<Event, ledger_proto::Invalid> {
    match r.topic.as_str() {
        IMAGES => ledger_proto::decode_image(&r.payload),
        _ => ledger_proto::decode_account(&r.payload),
    }
}

fn process(
    ledger: &mut Ledger,
    records: &[Record],
    stats: &mut Stats,
    metrics: &crate::metrics::Metrics,
) -> anyhow::Result<()> {
    stats.records += records.len() as u64;
    metrics.records.inc_by(records.len() as u64);
    let mut submissions = Vec::with_capacity(records.len());
    let mut origin = Vec::with_capacity(records.len());
    let mut dead = Vec::new();
    let mut positions: HashMap<String, u64> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        positions.insert(r.stream(), r.offset as u64 + 1);
        match decode(r) {
            Ok(event) => {
                submissions
                    .push(Submission { event, source: Source { stream: Some(r.stream()), offset: r.offset as u64 } });
                origin.push(i);
            }
            Err(e) => dead.push(dead_letter(r, e.code(), &e.to_string(), None)),
        }
    }
    let who: Vec<(String, String)> =
        submissions.iter().map(|s| (s.event.team_id().to_string(), s.event.event_id().to_string())).collect();
    let positions: Vec<(String, u64)> = positions.into_iter().collect();
    let report = ledger.submit_batch_with(submissions, &positions, |outcomes, settled| {
        for (k, outcome) in outcomes.iter().enumerate() {
            let r = &records[origin[k]];
            let who = Some((who[k].0.as_str(), who[k].1.as_str()));
            match outcome {
                Outcome::Rejected(reject) => dead.push(dead_letter(r, reject.code, &reject.detail, who)),
                Outcome::Conflict { team, seq } => {
                    let reason = format!("event id already used by team {team} seq {seq} with other content");
                    dead.push(dead_letter(r, "conflict", &reason, who));
                }
                Outcome::Appended { .. } | Outcome::Duplicate { .. } | Outcome::Parked => {}
            }
        }
        dead.extend(settled_dead_letters(settled));
        for msg in &dead {
            let reason = msg.headers.iter().find(|(k, _)| k == "reason.code").map_or("", |(_, v)| v.as_str());
            metrics.dead_letters.get_or_create(&crate::metrics::Reason { reason: reason.to_string() }).inc();
        }
        stats.dead_letters += dead.len() as u64;
        dead
    })?;
    for outcome in report.outcomes.iter().chain(report.settled.iter().map(|(_, o)| o)) {
        match outcome {
            Outcome::Appended { .. } => {
                stats.appended += 1;
                metrics.appended.inc();
            }
            Outcome::Duplicate { .. } => {
                stats.duplicates += 1;
                metrics.duplicates.inc();
            }
            _ => {}
        }
    }
    Ok(())
}

/// Publishes every outbox message (alerts, invoices, dead letters), then marks them sent.
/// After a crash, unsent ones go again with the same ids.
fn publish_outbox(store: &Store, producer: &Producer) -> anyhow::Result<u64> {
    let mut sent = 0;
    loop {
        let batch = store.outbox(1000)?;
        if batch.is_empty() {
            return Ok(sent);
        }
        let messages = batch
            .iter()
            .map(|(_, m)| {
                let (topic, payload) = match m.kind {
                    OutboxKind::Alert => (ALERTS, ledger_proto::alert_bytes(&m.json)?),
                    OutboxKind::Invoice => (INVOICES, ledger_proto::invoice_bytes(&m.json, &m.id)?),
                    OutboxKind::DeadLetter => (DEADLETTER, m.payload.clone()),
                };
                let mut headers = m.headers.clone();
                headers.push(("id".to_string(), m.id.clone()));
                Ok(Outgoing { topic: topic.to_string(), key: m.key.clone().into_bytes(), payload, headers })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        producer.send_all(&messages)?;
        store.ack_outbox(&batch.iter().map(|(n, _)| *n).collect::<Vec<_>>())?;
        sent += messages.len() as u64;
    }
}

/// `produce`: each JSONL line to its topic as protobuf, keyed by team.
pub fn produce(brokers: &str, file: &PathBuf) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    ledger_kafka::create_topics(brokers, 4)?;
    let producer = Producer::new(brokers)?;
    let mut messages = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let event = ledger_proto::parse_json_line(line).with_context(|| format!("line {}", n + 1))?;
        let topic = match event {
            Event::Image(_) => IMAGES,
            Event::Account(_) => ACCOUNTS,
        };
        let payload = ledger_proto::encode_event(&event);
        messages.push(Outgoing {
            topic: topic.into(),
            key: event.team_id().to_string().into_bytes(),
            payload,
            headers: Vec::new(),
        });
    }
    for chunk in messages.chunks(10_000) {
        producer.send_all(chunk)?;
    }
    eprintln!("produced {} records to {brokers}", messages.len());
    Ok(ExitCode::SUCCESS)
}
