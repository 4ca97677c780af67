//! `import`: JSONL in, exactly the consumer's path: the same validation, dedup and
//! core fold, in atomic flushed batches. A parsing thread feeds the writer so both
//! cores work; every refused line is reported with its number and reason.
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use ledger_core::{Catalog, Event};
use ledger_proto::{parse_json_line, Invalid};
use ledger_store::{Ledger, Outcome, Source, Store, Submission};
use tracing::info;

type Parsed = Vec<(u64, Result<Event, Invalid>)>;

#[derive(Debug, Default)]
struct Tally {
    lines: u64,
    appended: u64,
    duplicates: u64,
    rejected: u64,
    /// Refunds that waited for their event (some may since have been settled).
    parked: u64,
    alerts: u64,
    invoices: u64,
}

pub fn run(dir: &Path, file: &Path, batch_events_max: usize, report_acks: bool) -> anyhow::Result<ExitCode> {
    let (input, size): (Box<dyn Read + Send>, Option<u64>) = if file == Path::new("-") {
        (Box::new(std::io::stdin()), None)
    } else {
        let f = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        let size = f.metadata().ok().map(|m| m.len());
        (Box::new(f), size)
    };
    if let ledger_store::Layout::Partitioned(_) = ledger_store::layout(dir)? {
        anyhow::bail!(
            "{} holds the service's per-partition ledgers; import would put teams in a second ledger: use `produce`, or another --data-dir",
            dir.display()
        );
    }
    let mut ledger = Ledger::open(Store::open(dir, &Catalog::builtin())?)?;
    let progress = progress_bar(size);
    let started = Instant::now();
    let (tx, rx) = mpsc::sync_channel::<(Parsed, u64)>(4);
    let reader = std::thread::spawn(move || parse_lines(input, batch_events_max.max(1), tx));
    let mut tally = Tally::default();
    for (parsed, bytes) in rx {
        let last_line = parsed.last().map(|(n, _)| *n);
        submit(&mut ledger, parsed, &mut tally)?;
        progress.inc(bytes);
        if let (true, Some(n)) = (report_acks, last_line) {
            println!("ack {n}");
        }
    }
    reader.join().expect("the parsing thread does not panic")?;
    progress.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    info!(lines = tally.lines, appended = tally.appended, secs, "Import finished.");
    eprintln!(
        "imported {} of {} lines in {secs:.2} s ({:.0} lines/s): {} duplicates, {} rejected, {} alerts, {} invoices",
        tally.appended,
        tally.lines,
        tally.lines as f64 / secs.max(1e-9),
        tally.duplicates,
        tally.rejected,
        tally.alerts,
        tally.invoices
    );
    let waiting = ledger.parked();
    if waiting > 0 {
        eprintln!(
            "{waiting} refund(s) wait for the image event they name (kept; given up {} h of the team's time after the refund, or by `close`)",
            ledger_store::refund_wait().num_hours()
        );
    }
    if tally.rejected > 0 {
        eprintln!(
            "error: {} of {} lines were rejected (listed above); the rest were imported",
            tally.rejected, tally.lines
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn progress_bar(size: Option<u64>) -> ProgressBar {
    match size {
        Some(len) if len > 1 << 20 => {
            let bar = ProgressBar::new(len);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} importing [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        }
        _ => ProgressBar::hidden(),
    }
}

fn parse_lines(input: Box<dyn Read + Send>, chunk: usize, tx: mpsc::SyncSender<(Parsed, u64)>) -> anyhow::Result<()> {
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let mut line = String::new();
    let (mut parsed, mut bytes, mut number) = (Vec::with_capacity(chunk), 0u64, 0u64);
    loop {
        line.clear();
        let n = reader.read_line(&mut line).context("reading input")?;
        if n == 0 {
            break;
        }
        number += 1;
        bytes += n as u64;
        let text = line.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        parsed.push((number, parse_json_line(text)));
        if parsed.len() >= chunk {
            if tx.send((std::mem::replace(&mut parsed, Vec::with_capacity(chunk)), bytes)).is_err() {
                return Ok(());
            }
            bytes = 0;
        }
    }
    if !parsed.is_empty() || bytes > 0 {
        let _ = tx.send((parsed, bytes));
    }
    Ok(())
}

fn submit(ledger: &mut Ledger, parsed: Parsed, tally: &mut Tally) -> anyhow::Result<()> {
    let mut lines = Vec::with_capacity(parsed.len());
    let mut batch = Vec::with_capacity(parsed.len());
    for (number, result) in parsed {
        tally.lines += 1;
        match result {
            Ok(event) => {
                lines.push((number, event.team_id().to_string(), event.event_id().to_string()));
                batch.push(Submission { event, source: Source { stream: None, offset: number } });
            }
            Err(e) => {
                tally.rejected += 1;
                eprintln!("line {number}: {}: {e}", e.code());
            }
        }
    }
    let report = ledger.submit_batch(batch).context("appending a batch; nothing of it was acknowledged")?;
    tally.alerts += report.alerts;
    tally.invoices += report.invoices;
    let settled = report
        .settled
        .into_iter()
        .map(|(p, outcome)| ((p.offset, p.event.team_id.to_string(), p.event.event_id.to_string()), outcome));
    for ((number, team, event), outcome) in lines.into_iter().zip(report.outcomes).chain(settled) {
        match outcome {
            Outcome::Parked => tally.parked += 1,
            Outcome::Appended { .. } => tally.appended += 1,
            Outcome::Duplicate { .. } => tally.duplicates += 1,
            Outcome::Conflict { team: other, seq } => {
                tally.rejected += 1;
                eprintln!("line {number} (team {team}, event {event}): conflict: the id is already used by team {other} seq {seq} with other content");
            }
            Outcome::Rejected(r) => {
                tally.rejected += 1;
                eprintln!("line {number} (team {team}, event {event}): {}: {}", r.code, r.detail);
            }
        }
    }
    Ok(())
}
