//! The Kafka stage: `usage-ledger run` against a real tansu broker (SQLite storage).
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{run, Figures, BIN};

/// tansu (SQLite storage) stalled for more than 20 s between fetches with 1M records in
/// four partitions (seen here); the stage takes the workload's first 200,000 lines.
const LINES: usize = 200_000;

/// Alert samples a run.
const SAMPLES: usize = 100;

/// Alerts timed but not counted first: the service joining the group and tansu starting
/// to serve each partition (it pauses seconds before serving a newly assigned one).
/// 16 teams leave one of the 4 partitions out with a probability under 4 % (4 × (3/4)^16).
const WARMUP: usize = 16;

pub fn stage(tmp: &Path, file: &Path, runs: usize) {
    let Some(tansu) = ledger_kafka::tansu_path() else {
        println!("kafka: skipped (tansu is not installed)");
        return;
    };
    let sample = tmp.join("kafka.jsonl");
    let head: Vec<String> = std::fs::read_to_string(file).unwrap().lines().take(LINES).map(String::from).collect();
    std::fs::write(&sample, head.join("\n")).unwrap();
    let mut figures = Figures::default();
    for r in 0..runs {
        eprintln!("kafka run {} of {runs}", r + 1);
        let broker = Broker::start(&tansu, &tmp.join("broker"));
        drain(tmp, &broker.address, &sample, head.len() as u64, &mut figures);
        drop(broker);
        // A broker of its own for the latency: on the drain's, the service would first
        // consume the drain's records again (a fresh ledger starts at offset 0).
        let broker = Broker::start(&tansu, &tmp.join("broker"));
        let brokers = broker.address.clone();
        let (samples, per_batch) = alert_latency(&brokers, &tmp.join("latency"));
        let alerts = percentiles(samples);
        figures.add("alert latency p50", "ms", alerts.0);
        figures.add("alert latency p99", "ms", alerts.1);
        // The service's own time per batch there (each batch one image and its alert):
        // fold, flushed commit, and publishing the alert until the broker acknowledged it.
        figures.add("alert batch, ledger", "ms", per_batch.0);
        figures.add("alert batch, publish", "ms", per_batch.1);
        // The alert crosses the broker twice (event in, alert out): one hop measured
        // alone (produced, acknowledged, consumed), same clients, no ledger.
        let hop = percentiles(broker_hop(&brokers));
        figures.add("broker hop p50", "ms", hop.0);
        figures.add("broker hop p99", "ms", hop.1);
    }
    println!(
        "\n== kafka: `run` draining {} records from tansu, a member with an empty disk restoring them, then event → alert latency ({} samples a run)",
        head.len(),
        SAMPLES
    );
    figures.print();
}

/// A child process killed when dropped (a failed stage leaves nothing running).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// tansu on a free port with fresh SQLite storage in `dir`.
struct Broker {
    address: String,
    _process: KillOnDrop,
}

impl Broker {
    fn start(tansu: &Path, dir: &Path) -> Broker {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let address = format!("127.0.0.1:{port}");
        let url = format!("tcp://{address}");
        let process = Command::new(tansu)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://broker.sqlite"])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        while std::net::TcpStream::connect(&address).is_err() {
            std::thread::sleep(Duration::from_millis(100));
        }
        Broker { address, _process: KillOnDrop(process) }
    }
}

fn drain(tmp: &Path, brokers: &str, file: &Path, lines: u64, figures: &mut Figures) {
    let (secs, _, _, _) = run(&["produce", "--brokers", brokers, file.to_str().unwrap()]);
    figures.add("produce (broker)", "records/s", lines as f64 / secs);
    // Drain into a fresh ledger; the service reports how many records it took, the time from
    // its first record to its last, and the time it spent on batches (the rest is
    // waiting for the broker). Runs again until every record is in (tansu can pause for
    // seconds at 100 % CPU before serving a partition; a gap longer than the idle window
    // ends a run early).
    let data = tmp.join("service");
    let _ = std::fs::remove_dir_all(&data);
    let idle_ms = 15_000u64;
    let (mut wall, mut busy, mut taken) = (0.0, 0.0, 0u64);
    let (mut ledger, mut publishing) = (0.0, 0.0);
    let (mut appended, mut dead) = (0.0, 0.0);
    let mut waiting = 0u64;
    for _ in 0..5 {
        let (_, _, stderr, _) = run(&[
            "--data-dir",
            data.to_str().unwrap(),
            "run",
            "--brokers",
            brokers,
            "--batch-events-max",
            "20000",
            "--exit-when-idle-ms",
            &idle_ms.to_string(),
        ]);
        // The closing line: "stopped after N records (A appended, D duplicates, L dead
        // letters, W refunds waiting for their image); B s applying batches, W s from the
        // first record to the last; N batches: L s in the ledger, P s publishing, C s
        // committing offsets". The ledger's share is folding and the flushed commit;
        // publishing is waiting for the broker to acknowledge alerts, invoices and dead
        // letters. A refund can arrive before its image (the input
        // topics have no order between them): it waits, and is appended after the image.
        taken += number(&stderr, "stopped after ", true) as u64;
        appended += number(&stderr, " appended", false);
        dead += number(&stderr, " dead letters", false);
        waiting = number(&stderr, " refunds waiting", false) as u64;
        busy += number(&stderr, " s applying", false);
        wall += number(&stderr, " s from the first", false);
        ledger += number(&stderr, " s in the ledger", false);
        publishing += number(&stderr, " s publishing", false);
        if taken >= lines {
            break;
        }
    }
    assert_eq!(taken, lines, "the service took every record");
    // The workload compresses two months into seconds: a refund whose image ran more than
    // 24 h of event time ahead on the other topic (a broker pause past `--align-wait-ms`)
    // is refused `refund_unknown_event` and dead-lettered; counted, not hidden.
    println!("kafka: {appended} appended, {dead} dead letters, {waiting} refunds waiting");
    figures.add("consume (with broker)", "events/s", taken as f64 / wall);
    figures.add("service, batches", "events/s", taken as f64 / busy);
    figures.add("service, ledger side", "events/s", taken as f64 / ledger);
    figures.add("service, publishing", "s", publishing);
    restore(tmp, brokers, figures);
}

/// A member with an empty disk joins the drained group alone: it restores every
/// partition from the changelog, side by side. Each restore prints "restored partition N
/// from T: R records (E entries) in S s (D s reading)".
fn restore(tmp: &Path, brokers: &str, figures: &mut Figures) {
    let data = tmp.join("restored");
    let _ = std::fs::remove_dir_all(&data);
    let args = ["--data-dir", data.to_str().unwrap(), "run", "--brokers", brokers, "--exit-when-idle-ms", "3000"];
    let (_, _, stderr, _) = run(&args);
    let restored: Vec<&str> = stderr.lines().filter(|l| l.starts_with("usage-ledger: restored partition")).collect();
    assert!(!restored.is_empty(), "the new member restored its partitions: {stderr}");
    let entries: f64 = restored.iter().map(|l| number(l, " entries)", false)).sum();
    let slowest = restored.iter().map(|l| number(l, " s (", false)).fold(0.0, f64::max);
    let reading = restored.iter().map(|l| number(l, " s reading", false)).fold(0.0, f64::max);
    figures.add("restore, partitions side by side", "entries/s", entries / slowest);
    figures.add("restore, slowest partition reading from the broker", "s", reading);
    let _ = std::fs::remove_dir_all(&data);
}

/// The number right after (`after = true`) or right before `marker` in `text`.
pub fn number(text: &str, marker: &str, after: bool) -> f64 {
    let (before, rest) = text.split_once(marker).unwrap_or_else(|| panic!("no {marker:?} in: {text}"));
    let word = if after { rest.split(' ').next() } else { before.rsplit(' ').next() };
    word.map(|w| w.trim_matches(|c: char| !c.is_ascii_digit() && c != '.'))
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no number at {marker:?} in: {text}"))
}

/// Time from producing an event that crosses a threshold to its alert on the topic, in
/// ms, for `SAMPLES` teams after `WARMUP` ones (each team's plan is produced first, then one image
/// event at a time crossing 80 %, waiting for its alert before the next), and the
/// service's own ms per batch in the ledger and publishing (from its closing line).
fn alert_latency(brokers: &str, data: &Path) -> (Vec<f64>, (f64, f64)) {
    use ledger_kafka::{Consumer, Outgoing, Producer, ACCOUNTS, ALERTS, IMAGES};
    let _ = std::fs::remove_dir_all(data);
    let log = data.with_extension("log");
    let mut service = KillOnDrop(
        Command::new(BIN)
            .args(["--data-dir", data.to_str().unwrap(), "run", "--brokers", brokers, "--group", "latency"])
            .args(["--batch-wait-ms", "20"])
            .env("USAGE_LEDGER_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let producer = Producer::new(brokers).unwrap();
    let watcher =
        Consumer::new(brokers, "latency-watch", &[ALERTS], 10_000, std::sync::Arc::new(ledger_kafka::FromBeginning))
            .unwrap();
    while !watcher.poll_batch(10_000, Duration::from_secs(1)).unwrap().is_empty() {}
    let outgoing = |team: &str, json: String| {
        let event = ledger_proto::parse_json_line(&json).unwrap();
        let topic = if json.contains("accountEvent") { ACCOUNTS } else { IMAGES };
        Outgoing {
            topic: topic.into(),
            key: team.as_bytes().to_vec(),
            payload: ledger_proto::encode_event(&event),
            headers: Vec::new(),
            partition: None,
        }
    };
    let teams: Vec<String> = (0..WARMUP + SAMPLES).map(|i| format!("latency-{i}")).collect();
    let plans: Vec<Outgoing> = teams
        .iter()
        .map(|team| outgoing(team, format!(r#"{{"accountEvent":{{"eventId":"{team}-a","teamId":"{team}","occurredAt":"2026-04-01T00:00:00Z","planStarted":{{"plan":"api_basic","bucketImages":"1000"}}}}}}"#)))
        .collect();
    producer.send_all(&plans).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let mut samples = Vec::new();
    for team in &teams {
        let image = outgoing(
            team,
            format!(
                r#"{{"imageProcessed":{{"eventId":"{team}-e","teamId":"{team}","occurredAt":"2026-04-02T00:00:00Z","api":"API_REMOVE_BACKGROUND","images":900}}}}"#
            ),
        );
        let started = Instant::now();
        producer.send_all(&[image]).unwrap();
        while watcher.poll_batch(10, Duration::from_millis(1)).unwrap().is_empty() {
            if started.elapsed().as_secs() >= 60 {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                panic!(
                    "no alert for {team} within 60 s; the service's log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples.drain(..WARMUP);
    // SIGINT: the service stops cleanly and prints its closing line.
    let _ = Command::new("kill").args(["-INT", &service.0.id().to_string()]).status();
    let _ = service.0.wait();
    let log_text = std::fs::read_to_string(&log).unwrap();
    let stderr = log_text.lines().find(|l| l.contains("stopped after")).expect("the service's closing line");
    let batches = number(stderr, " batches:", false).max(1.0);
    let per_batch = (
        number(stderr, " s in the ledger", false) * 1000.0 / batches,
        number(stderr, " s publishing", false) * 1000.0 / batches,
    );
    (samples, per_batch)
}

/// (p50, p99) of `samples`.
fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(|a, b| a.total_cmp(b));
    (samples[samples.len() / 2], samples[samples.len() * 99 / 100])
}

/// One broker hop alone: a record produced and consumed by the bench's own clients
/// (on the dead-letter topic, which nothing else writes to then), one at a time, in ms.
fn broker_hop(brokers: &str) -> Vec<f64> {
    use ledger_kafka::{Consumer, Outgoing, Producer, DEADLETTER};
    let producer = Producer::new(brokers).unwrap();
    let watcher =
        Consumer::new(brokers, "hop-watch", &[DEADLETTER], 10_000, std::sync::Arc::new(ledger_kafka::FromBeginning))
            .unwrap();
    let record = |i: usize| Outgoing {
        topic: DEADLETTER.into(),
        key: b"hop".to_vec(),
        payload: format!("hop {i}").into_bytes(),
        headers: Vec::new(),
        partition: None,
    };
    // Joins the group and reads whatever is there first.
    producer.send_all(&[record(0)]).unwrap();
    let started = Instant::now();
    while watcher.poll_batch(10_000, Duration::from_millis(200)).unwrap().is_empty() {
        assert!(started.elapsed().as_secs() < 60, "the watcher gets its partition within 60 s");
    }
    while !watcher.poll_batch(10_000, Duration::from_millis(500)).unwrap().is_empty() {}
    let mut samples = Vec::new();
    for i in 1..=SAMPLES {
        let started = Instant::now();
        producer.send_all(&[record(i)]).unwrap();
        while watcher.poll_batch(10, Duration::from_millis(1)).unwrap().is_empty() {
            assert!(started.elapsed().as_secs() < 60, "the record comes back within 60 s");
        }
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples
}
