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
use ledger_proto::{parse_json_line, Invalid, Window};
use ledger_store::{Ledger, OpenOptions, Outcome, Source, Store, Submission};
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

pub fn run(
    dir: &Path,
    file: &Path,
    batch_events_max: usize,
    report_acks: bool,
    future_skew: chrono::Duration,
    index_memory_events: u64,
) -> anyhow::Result<ExitCode> {
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
    let watch = crate::watchdog::Watchdog::arm("opening the ledger", dir);
    let options = OpenOptions { index_memory_events, ..OpenOptions::default() };
    let mut ledger = Ledger::open(Store::open_with(dir, &Catalog::builtin(), options)?)?;
    drop(watch);
    let progress = progress_bar(size);
    let started = Instant::now();
    let (tx, rx) = mpsc::sync_channel::<(Parsed, u64)>(4);
    let window = crate::window(future_skew);
    let reader = std::thread::spawn(move || parse_lines(input, batch_events_max.max(1), window, tx));
    let mut tally = Tally::default();
    // Each batch is written and flushed by a committer thread while the next one folds:
    // a batch is acknowledged once the submission after it (or the final wait) returns.
    let mut unacknowledged: Option<u64> = None;
    for (parsed, bytes) in rx {
        let last_line = parsed.last().map(|(n, _)| *n);
        submit(&mut ledger, parsed, &mut tally)?;
        progress.inc(bytes);
        if let (true, Some(n)) = (report_acks, unacknowledged) {
            println!("ack {n}");
        }
        unacknowledged = last_line;
    }
    ledger.wait_durable().context("writing the last batch; nothing of it was acknowledged")?;
    if let (true, Some(n)) = (report_acks, unacknowledged) {
        println!("ack {n}");
    }
    reader.join().expect("the parsing thread does not panic")?;
    // Every batch is durable: a spill that fails only leaves the next open more to do.
    if let Err(e) = ledger.close() {
        tracing::warn!(error = %e, "The index's events in memory stay to be rebuilt at the next open.");
    }
    progress.finish_and_clear();
    Ok(report(&tally, started.elapsed().as_secs_f64(), ledger.parked()))
}

/// The closing lines, and the exit code: 2 when some line was refused.
fn report(tally: &Tally, secs: f64, waiting: usize) -> ExitCode {
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
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
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

fn parse_lines(
    input: Box<dyn Read + Send>,
    chunk: usize,
    window: Window,
    tx: mpsc::SyncSender<(Parsed, u64)>,
) -> anyhow::Result<()> {
    let mut reader = BufReader::with_capacity(1 << 20, input);
    skip_bom(&mut reader).context("reading input")?;
    let mut line = Vec::new();
    let (mut parsed, mut bytes, mut number) = (Vec::with_capacity(chunk), 0u64, 0u64);
    loop {
        line.clear();
        let (n, fits) = read_line(&mut reader, &mut line).context("reading input")?;
        if n == 0 {
            break;
        }
        number += 1;
        bytes += n as u64;
        if fits && line.trim_ascii().is_empty() {
            continue;
        }
        parsed.push((number, if fits { parse_line(&line, &window) } else { Err(too_long(n)) }));
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

/// A UTF-8 byte-order mark at the start of the input (editors on Windows write one) is
/// not part of the first line.
fn skip_bom(reader: &mut impl BufRead) -> std::io::Result<()> {
    if reader.fill_buf()?.starts_with(b"\xEF\xBB\xBF") {
        reader.consume(3);
    }
    Ok(())
}

/// One line's event, validated and dated inside the window.
fn parse_line(line: &[u8], window: &Window) -> Result<Event, Invalid> {
    let text = std::str::from_utf8(line).map_err(|e| Invalid::Json(format!("the line is not UTF-8: {e}")))?;
    let event = parse_json_line(text.trim_end_matches(['\n', '\r']))?;
    window.admit(&event)?;
    Ok(event)
}

fn too_long(n: usize) -> Invalid {
    Invalid::Limit(ledger_proto::Limit::TextTooLong { field: "line", len: n, max: LINE_MAX_BYTES })
}

/// The longest line `import` reads; a longer one is refused and skipped to its end.
const LINE_MAX_BYTES: usize = 1 << 20;

/// Reads one line into `line` (at most `LINE_MAX_BYTES` of it). Returns the bytes it
/// consumed (0 at the end) and whether the line fit.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<(usize, bool)> {
    let n = reader.by_ref().take(LINE_MAX_BYTES as u64 + 1).read_until(b'\n', line)?;
    if n <= LINE_MAX_BYTES || line.ends_with(b"\n") {
        return Ok((n, true));
    }
    let mut skipped = n;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok((skipped, false));
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        reader.consume(take);
        skipped += take;
        if done {
            return Ok((skipped, false));
        }
    }
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
    let report = ledger.submit_batch_deferred(batch).context("appending a batch; nothing of it was acknowledged")?;
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
