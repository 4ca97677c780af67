//! The benchmark (issue 12): `bash deploy/bench.sh` (which starts a private PostgreSQL)
//! or `cargo bench -p usage-ledger --bench ledger -- [--events 1000000,10000000]
//! [--runs 3] [--teams 10000] [--no-kafka]`.
//!
//! For each size it generates one realistic workload (`generate --profile realistic`:
//! Zipf-skewed teams, 70/30 removal/editing, ~1 % duplicates, ~0.1 % refunds, plan
//! changes, April's cycles closing in May), then runs every stage `--runs` times, the
//! ledger's and PostgreSQL's alternating in each run, and prints min / median / max:
//!  - parse: JSONL line → validated event, one thread, in this process;
//!  - append: validated events → durable ledger (`Ledger::submit_batch_deferred`, 32,768
//!    a batch, each written and flushed while the next one folds, all flushed at the end);
//!  - open: `Ledger::open` of that ledger (what a service start or takeover costs);
//!  - import: the whole `usage-ledger import` command, and its peak RSS;
//!  - replay: `usage-ledger replay` of the imported store, and its peak RSS;
//!  - disk: bytes of the imported store's directory per event;
//!  - postgres: the same events into the PostgreSQL ledger most teams would build
//!    (`pg.rs`), when `USAGE_LEDGER_BENCH_PG` names a server; the ratio import/postgres;
//!  - with `USAGE_LEDGER_BENCH_BASELINE=/path/to/usage-ledger` (another build), its
//!    import and replay too, in the same runs, alternating with this build's;
//!  - kafka (first size only, when tansu is installed): `run` draining the first 200,000
//!    lines from a tansu broker, the ledger's share of the time apart from the broker's,
//!    and event → alert latency through the broker.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod kafka;
mod pg;
mod stages;

const BIN: &str = env!("CARGO_BIN_EXE_usage-ledger");

struct Args {
    sizes: Vec<u64>,
    runs: usize,
    teams: u32,
    kafka: bool,
}

fn args() -> Args {
    let mut a = Args { sizes: vec![1_000_000], runs: 3, teams: 10_000, kafka: true };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--events" => a.sizes = value().split(',').map(|n| n.replace('_', "").parse().expect("a number")).collect(),
            "--runs" => a.runs = value().parse().expect("a number"),
            "--teams" => a.teams = value().parse().expect("a number"),
            "--no-kafka" => a.kafka = false,
            "--bench" => {} // cargo bench adds it
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Figures of one stage over the runs.
#[derive(Default)]
struct Figures(Vec<(String, &'static str, Vec<f64>)>);

impl Figures {
    fn add(&mut self, stage: impl Into<String>, unit: &'static str, value: f64) {
        let stage = stage.into();
        match self.0.iter_mut().find(|(s, _, _)| *s == stage) {
            Some((_, _, values)) => values.push(value),
            None => self.0.push((stage, unit, vec![value])),
        }
    }

    fn print(&self) {
        println!("{:<22} {:>14} {:>14} {:>14}  unit", "stage", "min", "median", "max");
        for (stage, unit, values) in &self.0 {
            let mut v = values.clone();
            v.sort_by(|a, b| a.total_cmp(b));
            let (min, median, max) = (v[0], v[v.len() / 2], v[v.len() - 1]);
            println!("{stage:<22} {:>14} {:>14} {:>14}  {unit} ({} runs)", fmt(min), fmt(median), fmt(max), v.len());
        }
    }
}

fn fmt(x: f64) -> String {
    if x >= 100.0 {
        let n = x.round() as u64;
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        format!("{x:.2}")
    }
}

/// Runs the binary, polling its peak RSS (VmHWM) until it exits: (seconds, stdout,
/// stderr, peak RSS bytes).
fn run(args: &[&str]) -> (f64, String, String, u64) {
    run_bin(BIN, args)
}

/// `run` with another build of the binary (the baseline).
fn run_bin(bin: &str, args: &[&str]) -> (f64, String, String, u64) {
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("binary runs");
    let status = format!("/proc/{}/status", child.id());
    let out_reader = read_all(child.stdout.take().unwrap());
    let err_reader = read_all(child.stderr.take().unwrap());
    let mut peak = 0u64;
    let code = loop {
        if let Ok(text) = std::fs::read_to_string(&status) {
            peak = peak.max(vm_hwm(&text));
        }
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let secs = started.elapsed().as_secs_f64();
    let (stdout, stderr) = (out_reader.join().unwrap(), err_reader.join().unwrap());
    assert!(code.success(), "usage-ledger {args:?}: {stderr}");
    (secs, stdout, stderr, peak)
}

fn read_all(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

fn vm_hwm(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

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

fn main() {
    let args = args();
    // The bench's own Kafka clients (the alert watcher, the producer) take the same
    // librdkafka properties from the environment as the service it starts.
    let all = ledger_kafka::from_env("USAGE_LEDGER_KAFKA_");
    let producer = ledger_kafka::from_env("USAGE_LEDGER_PRODUCER_");
    ledger_kafka::configure(ledger_kafka::Properties { all, producer }).expect("librdkafka properties");
    let tmp = tempfile::tempdir().expect("tempdir");
    let pg = pg::Target::from_env();
    println!("usage-ledger bench: {} run(s) per size, {} teams, {}", args.runs, args.teams, machine());
    match &pg {
        Some(target) => println!("postgres: {}", target.describe()),
        None => println!("postgres: skipped (USAGE_LEDGER_BENCH_PG is not set; deploy/bench.sh sets it)"),
    }
    for (i, &events) in args.sizes.iter().enumerate() {
        let file = tmp.path().join(format!("workload-{events}.jsonl"));
        let file_s = file.to_str().unwrap();
        let teams = args.teams.to_string();
        let events_s = events.to_string();
        run(&["generate", "--profile", "realistic", "--teams", &teams, "--events", &events_s, "--out", file_s]);
        let figures = stages::size(tmp.path(), &file, args.runs, pg.as_ref());
        println!("\n== {events} image events, {} teams: min / median / max over {} runs", args.teams, args.runs);
        figures.print();
        if args.kafka && i == 0 {
            kafka::stage(tmp.path(), &file, args.runs);
        }
    }
}

/// One line about the machine the figures come from.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores ({cpu})")
}
