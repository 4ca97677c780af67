//! Throughput benchmark on the workload: 1,000,000 generated events for 1,000
//! teams (`USAGE_LEDGER_BENCH_EVENTS` to change). Prints, per stage:
//!  - parse: JSONL → validated core events (one thread);
//!  - append: validated events → durable ledger (`Ledger::submit_batch`, flushed per batch);
//!  - import: the whole `usage-ledger import` command (parse thread + writer);
//!  - open: folding the ledger back into memory (what a restart costs);
//!  - replay: `usage-ledger replay`, twice, digests compared;
//!  - bytes on disk per event.
//!
//! Run: `cargo bench -p usage-ledger --bench ledger`.
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use ledger_core::{Catalog, Event};
use ledger_store::{Ledger, Source, Store, Submission};

const BIN: &str = env!("CARGO_BIN_EXE_usage-ledger");

fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn run(args: &[&str]) -> (f64, String, String) {
    let started = Instant::now();
    let out = Command::new(BIN).args(args).output().expect("binary runs");
    let secs = started.elapsed().as_secs_f64();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "usage-ledger {args:?}: {stderr}");
    (secs, stdout, stderr)
}

fn report(stage: &str, n: u64, secs: f64, unit: &str) {
    println!("{stage:<8} {n:>9} {unit:<8} {secs:>8.2} s {:>12.0} {unit}/s", n as f64 / secs);
}

fn main() {
    let events: u64 = std::env::var("USAGE_LEDGER_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("workload.jsonl");
    let file_s = file.to_str().unwrap();
    run(&["generate", "--teams", "1000", "--events", &events.to_string(), "--out", file_s]);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines = text.lines().count() as u64;
    println!("workload: {lines} lines ({events} image events, 1000 teams), {} bytes of JSONL", text.len());

    let started = Instant::now();
    let parsed: Vec<Event> =
        text.lines().map(|l| ledger_proto::parse_json_line(l).expect("generated lines are valid")).collect();
    report("parse", lines, started.elapsed().as_secs_f64(), "events");
    drop(text);

    let append_dir = tmp.path().join("append");
    let mut ledger = Ledger::open(Store::open(&append_dir, &Catalog::builtin()).unwrap()).unwrap();
    let started = Instant::now();
    let mut it = parsed.into_iter().enumerate().peekable();
    while it.peek().is_some() {
        let batch: Vec<Submission> = it
            .by_ref()
            .take(32_768)
            .map(|(n, event)| Submission { event, source: Source { stream: None, offset: n as u64 } })
            .collect();
        ledger.submit_batch(batch).unwrap();
    }
    report("append", lines, started.elapsed().as_secs_f64(), "events");
    drop(ledger);

    let started = Instant::now();
    let ledger = Ledger::open(Store::open(&append_dir, &Catalog::builtin()).unwrap()).unwrap();
    report("open", lines, started.elapsed().as_secs_f64(), "entries");
    drop(ledger);

    let data = tmp.path().join("import");
    let data_s = data.to_str().unwrap();
    let (secs, _, _) = run(&["--data-dir", data_s, "import", "--batch-events-max", "32768", file_s]);
    report("import", lines, secs, "lines");
    let bytes = dir_bytes(&data);

    let (secs1, digest1, _) = run(&["--data-dir", data_s, "replay"]);
    let (secs2, digest2, _) = run(&["--data-dir", data_s, "replay"]);
    report("replay", lines, secs1.min(secs2), "entries");
    assert_eq!(digest1, digest2, "replay is deterministic");
    println!("disk     {bytes} bytes, {:.1} bytes/event; {}", bytes as f64 / lines as f64, digest1.trim());
}
