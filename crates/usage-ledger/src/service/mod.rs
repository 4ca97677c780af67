//! `run`: the service. Consume a batch → decode and validate → one atomic, flushed sled
//! commit holding entries, positions and dead letters → publish the outbox → tell Kafka
//! (advisory). `ownership` holds the partitions' ledgers, `pipeline` applies a batch,
//! `publishing` empties the outboxes.
mod align;
mod live;
mod ownership;
mod pipeline;
mod publishing;
mod standby;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ledger_core::Catalog;
use ledger_kafka::{Consumer, Producer, ACCOUNTS, IMAGES};
use ledger_store::{Ledger, OpenOptions};
use tracing::info;

use ownership::{Owner, Shards, RELEASED_WAIT};

use crate::broker::EmbeddedBroker;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Kafka bootstrap servers; without them an embedded broker is started.
    #[arg(long, env = "USAGE_LEDGER_BROKERS")]
    pub brokers: Option<String>,
    /// Port of the embedded broker.
    #[arg(long, env = "USAGE_LEDGER_BROKER_PORT", default_value_t = 9092)]
    pub broker_port: u16,
    #[arg(long, env = "USAGE_LEDGER_GROUP", default_value = "usage-ledger")]
    pub group: String,
    /// How long the group waits for a silent member before moving its partitions.
    #[arg(long, env = "USAGE_LEDGER_SESSION_TIMEOUT_MS", default_value_t = 45_000)]
    pub session_timeout_ms: u32,
    /// Partitions of the input topics when this service creates them.
    #[arg(long, env = "USAGE_LEDGER_PARTITIONS", default_value_t = 4)]
    pub partitions: i32,
    #[arg(long, env = "USAGE_LEDGER_BATCH_EVENTS_MAX", default_value_t = 5000)]
    pub batch_events_max: usize,
    #[arg(long, env = "USAGE_LEDGER_BATCH_WAIT_MS", default_value_t = 200)]
    pub batch_wait_ms: u64,
    /// Also close cycles by wall-clock time (not only by the teams' event clocks).
    #[arg(long, env = "USAGE_LEDGER_CLOSE_ON_WALL_CLOCK")]
    pub close_on_wall_clock: bool,
    /// Run a pipeline simulator beside the service and print balances and alerts.
    #[arg(long, env = "USAGE_LEDGER_DEMO")]
    pub demo: bool,
    /// Serve Prometheus metrics on `GET /metrics` at this address (e.g. 127.0.0.1:9464).
    #[arg(long, env = "USAGE_LEDGER_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// How long an assigned partition waits for its previous owner to let go of the
    /// partition's ledger before the service stops with an error.
    #[arg(long, env = "USAGE_LEDGER_TAKEOVER_WAIT_MS", default_value_t = 60_000)]
    pub takeover_wait_ms: u64,
    /// sled's page cache of each partition's ledger, in MiB. It must hold the newest
    /// block of every team the partition sees: below that sled thrashes and its memory
    /// grows without bound (see the README's Faults).
    #[arg(long, env = "USAGE_LEDGER_PARTITION_CACHE_MB", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(16..=65_536))]
    pub partition_cache_mb: u64,
    #[command(flatten)]
    pub index: crate::IndexMemory,
    /// Drain and exit once no record arrived for this long (back-fills, tests).
    #[arg(long, env = "USAGE_LEDGER_EXIT_WHEN_IDLE_MS")]
    pub exit_when_idle_ms: Option<u64>,
    /// How long one input stream of a partition waits for the other to deliver records
    /// the broker holds, so both reach the ledger in the order they were produced.
    #[arg(long, env = "USAGE_LEDGER_ALIGN_WAIT_MS", default_value_t = 5000)]
    pub align_wait_ms: u64,
    /// Keep a copy of every partition this member does not own up to date with its
    /// changelog, so a takeover restores only the changelog's tail. Needs a data dir of
    /// this member's own (each copy holds its ledger's lock); costs the disk of every
    /// partition and a changelog read a second each.
    #[arg(long, env = "USAGE_LEDGER_STANDBY")]
    pub standby: bool,
    /// `readyz` answers 503 while the owned partitions lag the broker by more records.
    #[arg(long, env = "USAGE_LEDGER_READY_LAG_MAX", default_value_t = 10_000)]
    pub ready_lag_max: u64,
    #[command(flatten)]
    pub http: crate::http::HttpArgs,
}

/// Where the service's batch time went, for the closing line (the counts are the
/// metrics').
#[derive(Debug, Default)]
struct Timings {
    /// Time spent applying, committing and publishing batches (not waiting for records).
    batch_secs: f64,
    /// Of which in the ledger: the fold, the flushed commit (what the bench calls the
    /// ledger side) ...
    ledger_secs: f64,
    /// ... waiting for the broker to acknowledge published messages ...
    publish_secs: f64,
    /// ... and committing consumer offsets to the broker.
    offsets_secs: f64,
    batches: u64,
    /// From the first record polled to the last one applied.
    first_to_last_secs: f64,
}

pub fn run(dir: &Path, args: RunArgs, future_skew: chrono::Duration) -> anyhow::Result<ExitCode> {
    if ledger_store::layout(dir)? == ledger_store::Layout::Single {
        bail!(
            "{} holds a ledger written by `import`; the service keeps one ledger per partition: use another --data-dir",
            dir.display()
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).context("installing the signal handler")?;
    let (brokers, input_partitions, _broker) = connect(dir, &args)?;
    let options = OpenOptions {
        lock_wait: Duration::from_millis(args.takeover_wait_ms),
        cache_bytes: args.partition_cache_mb << 20,
        index_memory_events: args.index.events,
    };
    let changelog = ownership::Changelog {
        brokers: brokers.clone(),
        writer: Arc::new(ledger_kafka::ChangelogWriter::new(&brokers)?),
    };
    let cluster = ledger_kafka::cluster_id(&brokers)?;
    let shards = Arc::new(Mutex::new(Shards::new(dir, options, changelog, input_partitions, cluster)));
    let owner = Arc::new(Owner(Arc::clone(&shards)));
    let consumer = Consumer::new(&brokers, &args.group, &[IMAGES, ACCOUNTS], args.session_timeout_ms, owner)?;
    let producer = Producer::new(&brokers)?;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let lag = Arc::new(AtomicI64::new(-1));
    let readers = Arc::new(live::Readers::default());
    let readable = Arc::clone(&shards.lock().expect("not poisoned").readable);
    let live = live::Live {
        shards: Arc::clone(&shards),
        readable,
        readers: Arc::clone(&readers),
        lag: Arc::clone(&lag),
        lag_max: args.ready_lag_max,
        metrics: Arc::clone(&metrics),
    };
    serve_http(&args, live, &metrics, future_skew)?;
    eprintln!(
        "usage-ledger: consuming {IMAGES} and {ACCOUNTS} from {brokers} as group {}; ledgers in {}",
        args.group,
        ledger_store::partition_dir(dir, 0).parent().expect("has a parent").display()
    );
    let demo = args.demo.then(|| crate::demo::spawn_live(brokers.clone(), Arc::clone(&stop)));
    let standby = args.standby.then(|| standby::spawn(Arc::clone(&shards), Arc::clone(&stop)));
    let aligner = align::Aligner::new(Duration::from_millis(args.align_wait_ms));
    let mut service = Service {
        aligner,
        args,
        backoff: publishing::Backoff::new(),
        future_skew,
        shards,
        readers,
        consumer,
        producer,
        metrics,
        timings: Timings::default(),
        clocks: Clocks::new(),
        lag,
        input_partitions,
    };
    while !stop.load(Ordering::SeqCst) {
        match service.step() {
            Ok(true) => stop.store(true, Ordering::SeqCst),
            Ok(false) => {}
            Err(e) => return Err(e),
        }
    }
    shut_down(dir, service, [standby, demo])
}

/// After the loop: what was published goes to the changelog, the helper threads (the
/// standby copies, the demo) end, the group is left, and the exit says whether a
/// partition stopped.
fn shut_down(
    dir: &Path,
    service: Service,
    [standby, demo]: [Option<std::thread::JoinHandle<()>>; 2],
) -> anyhow::Result<ExitCode> {
    info!(timings = ?service.timings, "Stopping: the last batch is durable and published.");
    let Service { shards, consumer, timings, metrics, .. } = service;
    let waiting: usize = shards.lock().expect("not poisoned").open.values().map(Ledger::parked).sum();
    for ledger in shards.lock().expect("not poisoned").open.values_mut() {
        ledger.flush_replica()?;
    }
    // Only spares the next open some work: a spill that fails is said, not fatal.
    for (partition, ledger) in shards.lock().expect("not poisoned").open.iter_mut() {
        if let Err(e) = ledger.close() {
            tracing::warn!(partition, error = %e, "The index's events in memory stay to be rebuilt at the next open.");
        }
    }
    if let Some(handle) = standby {
        let _ = handle.join();
    }
    consumer.close();
    let stops = {
        let mut shards = shards.lock().expect("not poisoned");
        shards.hand_over_released();
        std::mem::take(&mut shards.stops)
    };
    if let Some(handle) = demo {
        let _ = handle.join();
        crate::demo::print_invoices(&ledger_store::open_all(dir, &Catalog::builtin(), OpenOptions::default())?)?;
    }
    report_stop(&timings, &metrics, waiting);
    if !stops.is_empty() {
        bail!("partition(s) {stops:?} stopped (the line of each says why); the other partitions were served");
    }
    Ok(ExitCode::SUCCESS)
}

/// The metrics listener and the HTTP API over the live ledgers, as configured.
fn serve_http(
    args: &RunArgs,
    live: live::Live,
    metrics: &Arc<crate::metrics::Metrics>,
    future_skew: chrono::Duration,
) -> anyhow::Result<()> {
    let live: Arc<dyn crate::http::Ledgers> = Arc::new(live);
    if let Some(addr) = &args.metrics_addr {
        let bound = crate::http::spawn_metrics(addr, Arc::clone(&live), Arc::clone(metrics))?;
        eprintln!("usage-ledger: metrics on http://{bound}/metrics");
    }
    if args.http.http_addr.is_some() {
        let bound = crate::http::spawn(&args.http, "", live, Arc::clone(metrics), future_skew)?;
        eprintln!("usage-ledger: HTTP API and dashboard on http://{bound}/");
    }
    Ok(())
}

/// The running service's parts.
struct Service {
    aligner: align::Aligner,
    args: RunArgs,
    backoff: publishing::Backoff,
    future_skew: chrono::Duration,
    shards: Arc<Mutex<Shards>>,
    /// HTTP requests waiting for `shards`.
    readers: Arc<live::Readers>,
    consumer: Consumer,
    producer: Producer,
    metrics: Arc<crate::metrics::Metrics>,
    timings: Timings,
    clocks: Clocks,
    /// Total consumer lag, for `readyz` (see `measure_lag`).
    lag: Arc<AtomicI64>,
    /// The input topics' partition count, as the broker reported it at start.
    input_partitions: i32,
}

/// When things last happened, for idleness, progress lines and the demo's balances.
struct Clocks {
    last_report: Instant,
    last_record: Instant,
    last_balances: Instant,
    first_record: Option<Instant>,
}

impl Clocks {
    fn new() -> Clocks {
        let now = Instant::now();
        Clocks { last_report: now, last_record: now, last_balances: now, first_record: None }
    }
}

/// Before a batch: stops on a failure, closes released ledgers not given back, folds
/// newly assigned ones, stops fetching the partitions stopped since the last batch and
/// drops their records; the partitions whose records may be applied.
fn take_stock(
    consumer: &Consumer,
    metrics: &crate::metrics::Metrics,
    shards: &mut Shards,
    polled: &mut Vec<ledger_kafka::Record>,
) -> anyhow::Result<std::collections::HashSet<(String, i32)>> {
    if let Some(why) = &shards.failure {
        bail!("cannot take over {why}");
    }
    if shards.released_at.is_some_and(|t| t.elapsed() > RELEASED_WAIT) {
        shards.hand_over_released();
    }
    shards.fold_assigned();
    if !shards.to_pause.is_empty() {
        let pairs: Vec<(String, i32)> = std::mem::take(&mut shards.to_pause)
            .into_iter()
            .flat_map(|p| [(IMAGES.to_string(), p), (ACCOUNTS.to_string(), p)])
            .collect();
        consumer.pause(&pairs)?;
    }
    metrics.partitions_stopped.set(shards.stopped.len() as i64);
    polled.retain(|r| !shards.stopped.contains_key(&r.partition));
    Ok(consumer.owned().into_iter().filter(|(_, p)| !shards.stopped.contains_key(p)).collect())
}

impl Service {
    /// One batch: poll, apply, publish, commit. Returns true once the service has been
    /// idle for `--exit-when-idle-ms`.
    fn step(&mut self) -> anyhow::Result<bool> {
        let polled = self.poll()?;
        let started = Instant::now();
        let shards = Arc::clone(&self.shards);
        let mut shards = shards.lock().expect("not poisoned");
        let records = self.admit(&mut shards, polled)?;
        let next = pipeline::next_offsets(&records);
        let applied = !records.is_empty();
        let idle = !applied && self.idle(&shards);
        self.apply(&mut shards, records)?;
        if applied {
            // From the poll's return: the lock, newly assigned folds, the alignment too.
            self.timings.ledger_secs += started.elapsed().as_secs_f64();
            self.timings.batches += 1;
        }
        let published = Instant::now();
        self.publish(&mut shards, applied)?;
        let owned: Vec<i32> = shards.open.keys().copied().collect();
        drop(shards);
        self.commit(&next, started, published)?;
        // Outside the batch's timings: requests waiting for the shards go first.
        self.readers.let_in();
        self.measure_lag();
        if self.clocks.last_report.elapsed() > Duration::from_secs(10) {
            info!(timings = ?self.timings, records = self.metrics.records.get(), partitions = ?owned, "Progress.");
            self.clocks.last_report = Instant::now();
        }
        Ok(idle)
    }

    /// Up to a batch of records; without waiting when the aligner holds a batch's worth
    /// already (a stream released after a wait).
    fn poll(&mut self) -> anyhow::Result<Vec<ledger_kafka::Record>> {
        let args = &self.args;
        let wait = if self.aligner.held() >= args.batch_events_max { 1 } else { args.batch_wait_ms };
        Ok(self.consumer.poll_batch(args.batch_events_max, Duration::from_millis(wait))?)
    }

    /// The records to apply: newly assigned ledgers folded, stopped partitions' records
    /// dropped, both streams of each partition aligned.
    fn admit(
        &mut self,
        shards: &mut Shards,
        mut polled: Vec<ledger_kafka::Record>,
    ) -> anyhow::Result<Vec<ledger_kafka::Record>> {
        let owned = take_stock(&self.consumer, &self.metrics, shards, &mut polled)?;
        let position = |topic: &str, partition: i32| {
            let ledger = shards.open.get(&partition)?;
            ledger.store().offset(&format!("{topic}/{partition}")).ok().flatten()
        };
        let max = self.args.batch_events_max;
        Ok(self.aligner.admit(polled, &owned, &self.consumer.lag(), position, max))
    }

    /// Whether a poll that brought nothing to apply makes the service idle long enough
    /// to exit. Waiting for an assignment (a rebalance after a crash takes up to the
    /// session timeout) or for a stream's other half is not idle.
    fn idle(&mut self, shards: &Shards) -> bool {
        if shards.owned.is_empty() {
            self.clocks.last_record = Instant::now();
            return false;
        }
        if self.aligner.held() > 0 {
            return false;
        }
        self.args.exit_when_idle_ms.is_some_and(|ms| self.clocks.last_record.elapsed() > Duration::from_millis(ms))
    }

    /// Applies the records, one flushed commit per partition ledger (the demo prints the
    /// balances of the teams they touched, once a second).
    fn apply(&mut self, shards: &mut Shards, records: Vec<ledger_kafka::Record>) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.clocks.last_record = Instant::now();
        let show = self.args.demo && self.clocks.last_balances.elapsed() > Duration::from_secs(1);
        let touched = show.then(|| crate::demo::teams_by_partition(&records));
        let window = crate::window(self.future_skew);
        pipeline::apply(shards, records, window, self.input_partitions, &self.metrics)?;
        if let Some(touched) = touched {
            for (partition, teams) in touched {
                crate::demo::print_live_balances(&shards.open[&partition], &teams)?;
            }
            self.clocks.last_balances = Instant::now();
        }
        Ok(())
    }

    /// Closes cycles by wall time if asked, publishes the outboxes; after a batch with
    /// nothing applied, tells the changelog how far publishing got (a batch carries it
    /// otherwise), so a next owner publishes none of it again.
    fn publish(&mut self, shards: &mut Shards, applied: bool) -> anyhow::Result<()> {
        let (close, producer) = (self.args.close_on_wall_clock, &self.producer);
        publishing::publish(shards, close, producer, &mut self.backoff, &self.metrics)?;
        if !applied {
            for ledger in shards.open.values_mut() {
                ledger.flush_replica()?;
            }
        }
        Ok(())
    }

    /// Tells Kafka the next offsets (advisory: the ledgers hold the positions), and
    /// times the batch.
    fn commit(&mut self, next: &[(String, i32, i64)], started: Instant, published: Instant) -> anyhow::Result<()> {
        let committing = Instant::now();
        self.consumer.commit(next)?;
        if !next.is_empty() {
            let timings = &mut self.timings;
            timings.publish_secs += (committing - published).as_secs_f64();
            timings.offsets_secs += committing.elapsed().as_secs_f64();
            let secs = started.elapsed().as_secs_f64();
            self.metrics.batch_seconds.observe(secs);
            timings.batch_secs += secs;
            let first = *self.clocks.first_record.get_or_insert(started);
            timings.first_to_last_secs = first.elapsed().as_secs_f64();
        }
        Ok(())
    }
}

impl Service {
    /// The lag of every owned partition (as of librdkafka's last statistics) into the
    /// metrics, and its total for `readyz`.
    fn measure_lag(&mut self) {
        let lags: Vec<_> = self.consumer.lag().into_iter().filter(|f| f.lag >= 0).collect();
        let mut total = 0i64;
        self.metrics.consumer_lag.clear();
        for f in &lags {
            let label = crate::metrics::Partition { topic: f.topic.clone(), partition: f.partition.to_string() };
            self.metrics.consumer_lag.get_or_create(&label).set(f.lag);
            total += f.lag;
        }
        if !lags.is_empty() {
            self.lag.store(total, Ordering::Relaxed);
        }
    }
}

/// The closing line (the bench reads its figures).
fn report_stop(timings: &Timings, metrics: &crate::metrics::Metrics, waiting: usize) {
    eprintln!(
        "usage-ledger: stopped after {} records ({} appended, {} duplicates, {} dead letters, {waiting} refunds waiting for their image); {:.2} s applying batches, {:.2} s from the first record to the last; {} batches: {:.2} s in the ledger, {:.2} s publishing, {:.2} s committing offsets",
        metrics.records.get(),
        metrics.appended.get(),
        metrics.duplicates.get(),
        metrics.dead_letters(),
        timings.batch_secs,
        timings.first_to_last_secs,
        timings.batches,
        timings.ledger_secs,
        timings.publish_secs,
        timings.offsets_secs
    );
}

/// The broker to use (an embedded one, kept alive by the returned handle, when none is
/// configured), with the input topics created and co-partitioned, and their partition
/// count.
fn connect(dir: &Path, args: &RunArgs) -> anyhow::Result<(String, i32, Option<EmbeddedBroker>)> {
    let (brokers, embedded) = match &args.brokers {
        Some(b) => (b.clone(), None),
        None => {
            let broker = EmbeddedBroker::start(&dir.join("broker"), args.broker_port)?;
            eprintln!("usage-ledger: embedded Kafka-protocol broker (tansu) listening on {}", broker.address);
            (broker.address.clone(), Some(broker))
        }
    };
    ledger_kafka::create_topics(&brokers, args.partitions)?;
    let changelog = ledger_kafka::CHANGELOG;
    let counts = ledger_kafka::partition_counts(&brokers, &[IMAGES, ACCOUNTS, changelog])?;
    if counts[0] != counts[1] || counts[0] == 0 {
        bail!(
            "{IMAGES} has {} partitions and {ACCOUNTS} {}: a team's events must meet in one partition number",
            counts[0],
            counts[1]
        );
    }
    if counts[2] != counts[0] {
        bail!(
            "the input topics have {} partitions and {changelog} {}: each partition ledger is replicated to the changelog partition of its number, so a changed partition count would move teams between ledgers (recreate the topics together, or keep the count)",
            counts[0],
            counts[2]
        );
    }
    Ok((brokers, counts[0] as i32, embedded))
}
