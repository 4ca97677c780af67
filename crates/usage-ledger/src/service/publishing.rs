//! Publishing the outbox: alerts and invoices as protobuf, dead letters as the original
//! bytes, each with its deterministic `id` header; marked sent once the broker has them.
//! The outbox never wedges: a message the broker refuses for good moves to the failed
//! table (logged with its id, counted, listed by `usage-ledger outbox`) and the rest flow
//! on; a transient failure is retried, oldest first, after a growing pause.
use std::time::{Duration, Instant};

use ledger_kafka::{Delivery, Outgoing, Producer, ALERTS, DEADLETTER, INVOICES};
use ledger_store::{OutboxKind, OutboxMsg, Store};
use tracing::{error, warn};

use super::ownership::Shards;
use super::pipeline::DeadLetters;

/// When publishing may next be tried after a transient failure.
#[derive(Debug)]
pub(super) struct Backoff {
    pause: Duration,
    until: Option<Instant>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(30);

    pub fn new() -> Backoff {
        Backoff { pause: Backoff::FIRST, until: None }
    }

    fn ready(&self) -> bool {
        self.until.is_none_or(|t| Instant::now() >= t)
    }

    fn failed(&mut self) {
        self.until = Some(Instant::now() + self.pause);
        self.pause = (self.pause * 2).min(Backoff::MAX);
    }

    fn succeeded(&mut self) {
        *self = Backoff::new();
    }
}

/// Closes cycles by wall time if asked, then publishes every open ledger's outbox.
pub(super) fn publish(
    shards: &mut Shards,
    close_on_wall_clock: bool,
    producer: &Producer,
    backoff: &mut Backoff,
    metrics: &crate::metrics::Metrics,
) -> anyhow::Result<()> {
    for ledger in shards.open.values_mut() {
        if close_on_wall_clock {
            ledger.close_until_with(chrono::Utc::now(), |settled| {
                let mut dead = DeadLetters::new(metrics);
                dead.settled(settled);
                dead.into_msgs()
            })?;
        }
    }
    if !backoff.ready() {
        return Ok(());
    }
    let mut retry = false;
    for ledger in shards.open.values() {
        let round = publish_outbox(ledger.store(), producer)?;
        metrics.published.inc_by(round.sent);
        metrics.outbox_failed.inc_by(round.failed);
        for (kind, n) in &round.by_kind {
            metrics.published_kind.get_or_create(&crate::metrics::Kind { kind: kind.to_string() }).inc_by(*n);
        }
        retry |= round.retry;
    }
    if retry {
        backoff.failed();
    } else {
        backoff.succeeded();
    }
    Ok(())
}

/// What one round of publishing a ledger's outbox did.
#[derive(Debug, Default)]
struct Round {
    sent: u64,
    failed: u64,
    /// A message failed for now: the round stopped there, to be retried.
    retry: bool,
    by_kind: std::collections::BTreeMap<&'static str, u64>,
}

/// Publishes every outbox message (alerts, invoices, dead letters), then marks them sent.
/// After a crash, unsent ones go again with the same ids.
fn publish_outbox(store: &Store, producer: &Producer) -> anyhow::Result<Round> {
    let mut round = Round::default();
    loop {
        let batch = store.outbox(1000)?;
        if batch.is_empty() {
            return Ok(round);
        }
        // A stored projection that no longer converts can never be published: it is set
        // aside like a message the broker refused for good.
        let (mut sent, mut failed, mut ready, mut messages) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (n, msg) in batch {
            match outgoing(&msg) {
                Ok(out) => {
                    ready.push((n, msg));
                    messages.push(out);
                }
                Err(e) => failed.push((n, msg, format!("does not convert to protobuf: {e}"))),
            }
        }
        for ((n, msg), delivery) in ready.into_iter().zip(producer.send_each(&messages)) {
            match delivery {
                Delivery::Sent => {
                    let kind = match msg.kind {
                        OutboxKind::Alert => "alert",
                        OutboxKind::Invoice => "invoice",
                        OutboxKind::DeadLetter => "dead_letter",
                    };
                    *round.by_kind.entry(kind).or_default() += 1;
                    sent.push(n)
                }
                Delivery::Permanent(reason) => failed.push((n, msg, reason)),
                Delivery::Transient(reason) => {
                    warn!(n, id = %msg.id, %reason, "Publishing failed for now; retrying after a pause.");
                    round.retry = true;
                }
            }
        }
        for (n, msg, reason) in &failed {
            error!(n, id = %msg.id, kind = ?msg.kind, %reason, "An outbox message can never be published; kept in the failed table.");
        }
        store.ack_outbox(&sent)?;
        store.fail_outbox(&failed)?;
        round.sent += sent.len() as u64;
        round.failed += failed.len() as u64;
        if round.retry {
            return Ok(round);
        }
    }
}

/// The message as published: its topic, its payload (alerts and invoices as protobuf,
/// dead letters as the record's bytes) and its `id` header. A format-3 store's outbox
/// holds the payload itself; alerts and invoices of the formats before wait as JSON and
/// are converted here.
fn outgoing(m: &OutboxMsg) -> Result<Outgoing, ledger_proto::Invalid> {
    let topic = match m.kind {
        OutboxKind::Alert => ALERTS,
        OutboxKind::Invoice => INVOICES,
        OutboxKind::DeadLetter => DEADLETTER,
    };
    let payload = match m.kind {
        _ if !m.payload.is_empty() => m.payload.clone(),
        OutboxKind::Alert => ledger_proto::alert_bytes(&m.json)?,
        OutboxKind::Invoice => ledger_proto::invoice_bytes(&m.json, &m.id)?,
        // The record dead-lettered was empty.
        OutboxKind::DeadLetter => Vec::new(),
    };
    let mut headers = m.headers.clone();
    headers.push(("id".to_string(), m.id.clone()));
    Ok(Outgoing { topic: topic.to_string(), key: m.key.clone().into_bytes(), payload, headers, partition: None })
}
