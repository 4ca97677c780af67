//! `produce`: a JSONL file onto the input topics as protobuf, keyed by team (the
//! pipeline simulator and load generator).
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ledger_core::Event;
use ledger_kafka::{Outgoing, Producer, ACCOUNTS, IMAGES};

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
            partition: None,
        });
    }
    for chunk in messages.chunks(10_000) {
        producer.send_all(chunk)?;
    }
    eprintln!("produced {} records to {brokers}", messages.len());
    Ok(ExitCode::SUCCESS)
}
