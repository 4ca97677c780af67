//! The Prometheus metrics, served as text on `GET /metrics` by the HTTP API and by
//! `run --metrics-addr`.
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Code {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Partition {
    pub topic: String,
    pub partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: String,
}

pub struct Metrics {
    registry: Registry,
    pub records: Counter,
    pub appended: Counter,
    pub duplicates: Counter,
    /// By reason; counted through `dead_lettered`, which keeps the total beside it.
    dead_letters: Family<Reason, Counter>,
    /// Every reason's together, for the closing line.
    dead_letters_all: Counter,
    pub published: Counter,
    /// Published by kind: alert, invoice, dead_letter.
    pub published_kind: Family<Kind, Counter>,
    pub outbox_failed: Counter,
    pub batch_seconds: Histogram,
    /// Apply, atomic sled commit and flush of one partition ledger's records of a batch.
    pub commit_seconds: Histogram,
    pub outbox_depth: Gauge,
    pub store_bytes: Gauge,
    pub consumer_lag: Family<Partition, Gauge>,
    pub http_requests: Family<Code, Counter>,
    /// Owned partitions stopped (their records wait; `readyz` names them).
    pub partitions_stopped: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("usage_ledger");
        let m = Metrics {
            records: Counter::default(),
            appended: Counter::default(),
            duplicates: Counter::default(),
            dead_letters: Family::default(),
            dead_letters_all: Counter::default(),
            published: Counter::default(),
            published_kind: Family::default(),
            outbox_failed: Counter::default(),
            batch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            commit_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            outbox_depth: Gauge::default(),
            store_bytes: Gauge::default(),
            consumer_lag: Family::default(),
            http_requests: Family::default(),
            partitions_stopped: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("records", "Records consumed from the input topics", m.records.clone());
        registry.register("appended", "Events appended to the ledger", m.appended.clone());
        registry.register("duplicates", "Events already in the ledger (no-ops)", m.duplicates.clone());
        registry.register("dead_letters", "Records sent to usage.deadletter.v1, by reason", m.dead_letters.clone());
        registry.register(
            "published",
            "Outbox messages published (alerts, invoices, dead letters)",
            m.published.clone(),
        );
        registry.register(
            "outbox_failed",
            "Outbox messages the broker refused for good, moved to the failed table",
            m.outbox_failed.clone(),
        );
        registry.register(
            "batch_seconds",
            "Decode, append, flush and publish time of one batch",
            m.batch_seconds.clone(),
        );
        registry.register(
            "published_by_kind",
            "Outbox messages published, by kind (alert, invoice, dead_letter)",
            m.published_kind.clone(),
        );
        registry.register(
            "commit_seconds",
            "Apply, atomic commit and flush of one partition ledger's records of a batch",
            m.commit_seconds.clone(),
        );
        registry.register("outbox_depth", "Outbox messages waiting to be published", m.outbox_depth.clone());
        registry.register("store_bytes", "Bytes the held ledgers take on disk", m.store_bytes.clone());
        registry.register(
            "consumer_lag",
            "Records on the broker past the ledger's position, per input partition owned",
            m.consumer_lag.clone(),
        );
        registry.register("http_requests", "HTTP requests answered, by status code", m.http_requests.clone());
        registry.register(
            "partitions_stopped",
            "Owned partitions stopped (a gap in the input, a changelog that does not link, a ledger that does not open)",
            m.partitions_stopped.clone(),
        );
        Metrics { registry, ..m }
    }

    /// A dead letter, counted under its reason code (the contract's `reason.code`).
    pub fn dead_lettered(&self, reason: &str) {
        self.dead_letters.get_or_create(&Reason { reason: reason.to_string() }).inc();
        self.dead_letters_all.inc();
    }

    /// Dead letters of every reason.
    pub fn dead_letters(&self) -> u64 {
        self.dead_letters_all.get()
    }

    /// The gauges read from the stores: outbox depth and bytes on disk.
    pub fn refresh(&self, stores: &[ledger_store::Store]) -> ledger_store::Result<()> {
        let (mut depth, mut bytes) = (0u64, 0u64);
        for store in stores {
            depth += store.outbox_len()?;
            bytes += store.size_on_disk()?;
        }
        self.outbox_depth.set(depth as i64);
        self.store_bytes.set(bytes as i64);
        Ok(())
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("metrics encode");
        out
    }
}
