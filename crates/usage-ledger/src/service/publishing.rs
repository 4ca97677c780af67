//! Publishing the outbox: alerts and invoices as protobuf, dead letters as the original
//! bytes, each with its deterministic `id` header; marked sent once the broker has them.
use ledger_kafka::{Outgoing, Producer, ALERTS, DEADLETTER, INVOICES};
use ledger_store::{OutboxKind, Store};

use super::ownership::Shards;
use super::pipeline::settled_dead_letters;
use super::Stats;

/// Closes cycles by wall time if asked, then publishes every open ledger's outbox.
pub(super) fn publish(
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
