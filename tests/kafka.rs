//! The Kafka service against a real Kafka-protocol broker (tansu, over TCP, durable on
//! SQLite), with the service and the broker as separate processes.
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ledger_kafka::{Outgoing, Producer, DEADLETTER};
use prost::Message as _;

use crate::support::{bin, scenarios_dir, ul, ul_ok};

/// A tansu broker on a free loopback port; killed on drop, restartable on the same data.
pub struct Broker {
    child: Option<Child>,
    pub address: String,
    db: PathBuf,
    /// The cluster id it answers with (tansu's default unless set).
    cluster: Option<String>,
}

fn tansu() -> PathBuf {
    ledger_kafka::tansu_path()
        .expect("tansu is installed (`cargo install tansu --locked --features libsql`; .ci/run does it)")
}

impl Broker {
    pub fn start(dir: &Path) -> Broker {
        Broker::start_in(dir, None)
    }

    /// A broker of the cluster `cluster` (another cluster id than the default's).
    pub fn start_in(dir: &Path, cluster: Option<&str>) -> Broker {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let address = format!("127.0.0.1:{port}");
        let cluster = cluster.map(str::to_string);
        let mut broker = Broker { child: None, address, db: dir.join("broker.sqlite"), cluster };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let url = format!("tcp://{}", self.address);
        let child = Command::new(tansu())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine"])
            // tansu resolves the URL's path against its working directory.
            .arg("sqlite://broker.sqlite")
            .args(self.cluster.iter().flat_map(|id| ["--cluster-id", id.as_str()]))
            .current_dir(self.db.parent().unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&self.address).is_err() {
            assert!(Instant::now() < deadline, "tansu listens within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// kill -9 and start again on the same storage.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn service(dir: &Path, brokers: &str, extra: &[&str]) -> Child {
    bin()
        .arg("--data-dir")
        .arg(dir)
        // A short session so a killed member's partitions move on quickly.
        .args(["run", "--brokers", brokers, "--batch-wait-ms", "100", "--session-timeout-ms", "6000"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs the service until it has been idle for 5 s, and returns its stderr.
pub fn drain(dir: &Path, brokers: &str) -> String {
    let child = service(dir, brokers, &["--exit-when-idle-ms", "5000"]);
    // The service is not idle while it waits for an assignment, and tansu 0.6 can keep
    // a group rebalancing for good after members were killed (it never expires them):
    // past the deadline it is stopped as an operator would (SIGTERM, a clean stop), and
    // `drain_until` runs it again.
    let pid = child.id().to_string();
    let (done, stopped) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if stopped.recv_timeout(Duration::from_secs(240)).is_err() {
            eprintln!("drain: the service still ran after 240 s (no assignment?); stopping it with SIGTERM");
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "service failed: {stderr}");
    stderr
}

/// Drains until the ledger indexes `events` events: a busy broker can pause longer than
/// the idle window, and each further run must resume exactly where the ledger stands.
pub fn drain_until(dir: &Path, brokers: &str, events: usize) -> String {
    let want = format!(" {events} index records");
    for _ in 0..6 {
        drain(dir, brokers);
        let verify = ul_ok(dir, &["verify"]);
        if verify.contains(&want) {
            return verify;
        }
    }
    panic!("the ledger never reached {events} events: {}", ul_ok(dir, &["verify"]));
}

/// Invoices without their `ledger` reference: two ledgers built in different arrival
/// orders are different ledgers, with the same billing.
pub fn billing(dir: &Path, team: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&ul_ok(dir, &["invoices", "--team", team])).unwrap();
    for invoice in v.as_array_mut().unwrap() {
        invoice.as_object_mut().unwrap().remove("ledger");
    }
    serde_json::to_string_pretty(&v).unwrap()
}

/// A broker in `tmp` holding the worked example `name`, produced; and the example's file.
fn produced(tmp: &Path, name: &str) -> (Broker, PathBuf) {
    let broker = Broker::start(tmp);
    let file = scenarios_dir().join(name);
    ul_ok(tmp, &["produce", "--brokers", &broker.address, file.to_str().unwrap()]);
    (broker, file)
}

/// `run` refuses to serve a ledger whose stored invoice is not what its entries fold to:
/// it stops that partition with one line naming the team and period (exiting non-zero
/// once idle), and serves it again once `replay` has rebuilt the projections from the
/// entries.
#[test]
fn run_refuses_a_ledger_whose_stored_invoice_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let (broker, _) = produced(tmp.path(), "E1.jsonl");
    let dir = tmp.path().join("kafka");
    drain_until(&dir, &broker.address, 1001);
    ul_ok(&dir, &["close", "--until", "2026-05-02T00:00:00Z"]);
    ledger_store::tamper_invoice(&dir, "t1").unwrap();
    let out = service(&dir, &broker.address, &["--exit-when-idle-ms", "5000"]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let stopped: Vec<&str> = stderr.lines().filter(|l| l.starts_with("usage-ledger: stopped partition ")).collect();
    assert_eq!(stopped.len(), 1, "{stderr}");
    assert!(
        stopped[0].contains("differ from what the entries fold to or are missing (first: team t1 invoice 2026-04-01"),
        "{stderr}"
    );
    assert!(stderr.lines().last().unwrap().contains("stopped (the line of each says why)"), "{stderr}");
    ul_ok(&dir, &["replay"]);
    drain(&dir, &broker.address);
    assert!(ul_ok(&dir, &["verify"]).starts_with("ok: 1 teams"));
}

#[test]
fn each_partition_ledger_opens_with_the_cache_the_operator_gives() {
    let tmp = tempfile::tempdir().unwrap();
    let (broker, _) = produced(tmp.path(), "E1.jsonl");
    let dir = tmp.path().join("kafka");
    let out = bin()
        .env("USAGE_LEDGER_LOG", "info,sled=off")
        .arg("--data-dir")
        .arg(&dir)
        .args(["run", "--brokers", &broker.address, "--exit-when-idle-ms", "5000", "--partition-cache-mb", "32"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let opened: Vec<&str> = stderr.lines().filter(|l| l.contains("Opened the partition's ledger.")).collect();
    assert!(!opened.is_empty() && opened.iter().all(|l| l.contains("cache_mb=32")), "{stderr}");
    // Below 16 MiB is refused before anything starts.
    let out = service(&dir, &broker.address, &["--partition-cache-mb", "8"]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("error: invalid value '8' for '--partition-cache-mb"), "{stderr}");
}

#[test]
fn a_scenario_through_kafka_bills_like_import() {
    let tmp = tempfile::tempdir().unwrap();
    let (broker, file) = produced(tmp.path(), "E4.jsonl");
    let (via_kafka, via_import) = (tmp.path().join("kafka"), tmp.path().join("import"));
    drain_until(&via_kafka, &broker.address, 10001);
    ul_ok(&via_import, &["import", file.to_str().unwrap()]);
    for dir in [&via_kafka, &via_import] {
        ul_ok(dir, &["close", "--until", "2026-05-02T00:00:00Z"]);
    }
    let kafka = billing(&via_kafka, "t1");
    assert!(kafka.contains(r#""total": "440.00""#), "{kafka}");
    assert_eq!(kafka, billing(&via_import, "t1"));
    assert!(ul_ok(&via_kafka, &["verify"]).starts_with("ok: 1 teams, 10002 entries, 10001 index records"));
}

/// The topics have no order between them: a refund taken before its image waits in the
/// ledger's store (across service processes) and applies once the image is consumed;
/// nothing is dead-lettered.
#[test]
fn a_refund_consumed_before_its_image_waits_for_it() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    let dir = tmp.path().join("data");
    let (first, second) = (tmp.path().join("first.jsonl"), tmp.path().join("second.jsonl"));
    std::fs::write(
        &first,
        [
            r#"{"accountEvent":{"eventId":"a1","teamId":"t1","occurredAt":"2026-04-01T00:00:00Z","planStarted":{"plan":"api_basic","bucketImages":"1000"}}}"#,
            r#"{"accountEvent":{"eventId":"r1","teamId":"t1","occurredAt":"2026-04-03T00:00:00Z","qualityRefund":{"originalEventId":"e1"}}}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    std::fs::write(
        &second,
        r#"{"imageProcessed":{"eventId":"e1","teamId":"t1","occurredAt":"2026-04-02T00:00:00Z","api":"API_REMOVE_BACKGROUND","images":40}}"#,
    )
    .unwrap();
    ul_ok(tmp.path(), &["produce", "--brokers", &broker.address, first.to_str().unwrap()]);
    drain_until(&dir, &broker.address, 1); // the plan; the refund waits
    ul_ok(tmp.path(), &["produce", "--brokers", &broker.address, second.to_str().unwrap()]);
    drain_until(&dir, &broker.address, 3); // the image, then the refund
    let draft: serde_json::Value =
        serde_json::from_str(&ul_ok(&dir, &["invoices", "--team", "t1", "--draft"])).unwrap();
    assert_eq!(draft[0]["usage"]["refunded_images"], 40, "{draft}");
    assert_eq!(draft[0]["bucket"]["consumed"], "0.00", "{draft}");
    let dead = ledger_kafka::read_topic(&broker.address, DEADLETTER, Duration::from_secs(3)).unwrap();
    assert!(dead.is_empty(), "{dead:?}");
}

pub fn raw(topic: &str, key: &str, payload: Vec<u8>) -> Outgoing {
    Outgoing { topic: topic.into(), key: key.as_bytes().to_vec(), payload, headers: Vec::new(), partition: None }
}

pub fn image(id: &str, team: &str, api: i32, images: u32, sandbox: bool) -> Vec<u8> {
    ledger_proto::pb::ImageProcessed {
        event_id: id.into(),
        team_id: team.into(),
        occurred_at: Some(ledger_proto::Timestamp { seconds: 1_775_100_000, nanos: 0 }),
        api,
        images,
        sandbox,
        ..Default::default()
    }
    .encode_to_vec()
}

pub fn account(id: &str, team: &str, seconds: i64, change: ledger_proto::pb::account_event::Change) -> Vec<u8> {
    ledger_proto::pb::AccountEvent {
        event_id: id.into(),
        team_id: team.into(),
        occurred_at: Some(ledger_proto::Timestamp { seconds, nanos: 0 }),
        change: Some(change),
    }
    .encode_to_vec()
}

#[test]
fn every_dead_letter_reason_reaches_the_topic_with_source_and_bytes() {
    use ledger_proto::pb::{self, account_event::Change};
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    ledger_kafka::create_topics(&broker.address, 1).unwrap();
    let (images, accounts) = (ledger_kafka::IMAGES, ledger_kafka::ACCOUNTS);
    let april = 1_775_001_600; // 2026-04-01T00:00:00Z
    let start = |plan: &str, n: u64| {
        Change::PlanStarted(pb::PlanStarted { plan: plan.into(), bucket_images: n, ..Default::default() })
    };
    let refund =
        |id: &str| Change::QualityRefund(pb::QualityRefund { original_event_id: id.into(), reason: "halo".into() });
    let plan_first = [
        raw(accounts, "t1", account("a1", "t1", april, start("api_basic", 1000))),
        raw(accounts, "t2", account("a2", "t2", april, start("api_basic", 1000))),
        raw(accounts, "t3", account("a3", "t3", april, start("api_free_trial", 0))),
    ];
    // (record, expected reason code, or None when it must be appended)
    let rest: [(Outgoing, Option<&str>); 14] = [
        (raw(images, "t1", vec![0xff, 0x01, 0x02]), Some("undecodable")),
        (raw(images, "t1", image("zero", "t1", 1, 0, false)), Some("invalid")),
        (raw(images, "t1", image("e1", "t1", 1, 5, false)), None),
        (raw(images, "t1", image("e1", "t1", 1, 6, false)), Some("conflict")),
        (raw(images, "t1", image("sb", "t1", 1, 5, true)), None),
        (raw(images, "t3", image("free", "t3", 1, 1, false)), None),
        // An app event on an API plan is kept (reported as unplanned), not dead-lettered.
        (raw(images, "t1", image("app", "t1", 4, 1, false)), None),
        (raw(accounts, "t1", account("a4", "t1", april + 10, start("api_plus", 1000))), Some("plan_rule")),
        (raw(accounts, "t1", account("r1", "t1", april + 20, refund("ghost"))), Some("refund_unknown_event")),
        (raw(accounts, "t2", account("r2", "t2", april + 20, refund("e1"))), Some("refund_other_team")),
        (raw(accounts, "t1", account("r3", "t1", april + 20, refund("sb"))), Some("refund_sandbox")),
        (raw(accounts, "t1", account("r4", "t1", april + 20, refund("e1"))), None),
        (raw(accounts, "t1", account("r5", "t1", april + 21, refund("e1"))), Some("refund_repeated")),
        (raw(accounts, "t3", account("r6", "t3", april + 21, refund("free"))), Some("refund_unbilled")),
    ];
    let producer = Producer::new(&broker.address).unwrap();
    let dir = tmp.path().join("data");
    // Plans, then images, then refunds: the topics interleave freely within a batch.
    producer.send_all(&plan_first).unwrap();
    drain_until(&dir, &broker.address, 3);
    let (on_images, on_accounts): (Vec<_>, Vec<_>) =
        rest.iter().map(|(m, _)| m.clone()).partition(|m| m.topic == images);
    producer.send_all(&on_images).unwrap();
    drain_until(&dir, &broker.address, 7); // e1, sb, free and app are appended

    producer.send_all(&on_accounts).unwrap();
    // A cancel dated May 3 moves t2's clock past April's end + grace, closing April; a
    // plan change dated in April then comes too late.
    let may = account("late", "t2", april + 32 * 86_400, Change::PlanCancelled(pb::PlanCancelled {}));
    let late = account("late-change", "t2", april + 86_400, start("api_plus", 1000));
    let late_change = [raw(accounts, "t2", may), raw(accounts, "t2", late.clone())];
    producer.send_all(&late_change).unwrap();
    drain_until(&dir, &broker.address, 9); // r4 and the cancel are appended
    drain(&dir, &broker.address); // and whatever refused record is still in flight

    let dead = ledger_kafka::read_topic(&broker.address, DEADLETTER, Duration::from_secs(3)).unwrap();
    let mut expected: Vec<(&str, Vec<u8>)> =
        rest.iter().filter_map(|(m, code)| code.map(|c| (c, m.payload.clone()))).collect();
    expected.push(("late_account_change", late));
    let mut seen: Vec<(String, Vec<u8>)> =
        dead.iter().map(|r| (r.header("reason.code").unwrap().to_string(), r.payload.clone())).collect();
    seen.sort();
    seen.dedup();
    let mut want: Vec<(String, Vec<u8>)> = expected.iter().map(|(c, p)| (c.to_string(), p.clone())).collect();
    want.sort();
    assert_eq!(seen, want, "every refused record is dead-lettered once, with its original bytes and reason");
    for r in &dead {
        assert!(r.header("source.topic").is_some_and(|t| t == images || t == accounts), "{r:?}");
        assert!(r.header("source.partition").is_some() && r.header("source.offset").is_some(), "{r:?}");
        assert!(!r.header("reason").unwrap_or_default().is_empty(), "{r:?}");
    }
    // A refusal also names its specific rule beside the contract's code.
    let causes: std::collections::BTreeSet<(&str, &str)> =
        dead.iter().filter_map(|r| Some((r.header("reason.code").unwrap(), r.header("reason.cause")?))).collect();
    assert!(causes.contains(&("plan_rule", "plan_already_active")), "{causes:?}");
    assert!(causes.contains(&("refund_sandbox", "refund_sandbox")), "{causes:?}");
    assert!(causes.iter().all(|(code, _)| !["undecodable", "invalid", "conflict"].contains(code)), "{causes:?}");
    // Nothing else was lost: the appended events are all in the ledger.
    assert!(ul_ok(&dir, &["verify"]).starts_with("ok: 3 teams"), "verify");
    let balance: serde_json::Value =
        serde_json::from_str(&ul_ok(&dir, &["balance", "--team", "t1", "--at", "2026-04-02T00:00:00Z"])).unwrap();
    assert_eq!(balance["allowances"][0]["consumed"], "0.00", "e1 was refunded, the sandbox call is free");
}

/// A generated load: its file and lines.
pub(crate) fn load(dir: &Path, teams: u32, events: u32, seed: u32) -> (PathBuf, Vec<String>) {
    let file = dir.join("load.jsonl");
    let (teams, events, seed) = (teams.to_string(), events.to_string(), seed.to_string());
    ul_ok(dir, &["generate", "--teams", &teams, "--events", &events, "--seed", &seed, "--out", file.to_str().unwrap()]);
    let lines = std::fs::read_to_string(&file).unwrap().lines().map(String::from).collect();
    (file, lines)
}

/// The load's two halves, as files.
pub(crate) fn halves(dir: &Path, lines: &[String]) -> (PathBuf, PathBuf) {
    let (first, second) = (dir.join("first.jsonl"), dir.join("second.jsonl"));
    std::fs::write(&first, lines[..lines.len() / 2].join("\n")).unwrap();
    std::fs::write(&second, lines[lines.len() / 2..].join("\n")).unwrap();
    (first, second)
}

/// Every team (`team-0000` …) bills as the same file imported cleanly; with `brokers`,
/// the alert topic also holds exactly the stored alerts, each id once.
pub(crate) fn assert_bills_like_import(dir: &Path, file: &Path, teams: u32, brokers: Option<&str>) {
    let clean = dir.parent().unwrap().join("clean");
    ul_ok(&clean, &["import", file.to_str().unwrap()]);
    let mut stored_alert_ids = Vec::new();
    for t in 0..teams {
        let team = format!("team-{t:04}");
        assert_eq!(billing(dir, &team), billing(&clean, &team), "{team}");
        let alerts: Vec<serde_json::Value> = serde_json::from_str(&ul_ok(dir, &["alerts", "--team", &team])).unwrap();
        stored_alert_ids.extend(alerts.iter().map(|a| a["alert_id"].as_str().unwrap().to_string()));
    }
    let Some(brokers) = brokers else { return };
    let published = ledger_kafka::read_topic(brokers, ledger_kafka::ALERTS, Duration::from_secs(3)).unwrap();
    let mut ids: Vec<String> = published.iter().map(|r| r.header("id").unwrap().to_string()).collect();
    ids.sort();
    ids.dedup();
    stored_alert_ids.sort();
    assert!(!ids.is_empty());
    assert_eq!(ids, stored_alert_ids, "the topic holds every alert, unique by id");
}

#[test]
fn kill_9_of_the_service_loses_nothing_and_alerts_stay_unique() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    let (file, lines) = load(tmp.path(), 30, 30000, 11);
    ul_ok(tmp.path(), &["produce", "--brokers", &broker.address, file.to_str().unwrap()]);
    let dir = tmp.path().join("crashed");
    for i in 0..10u64 {
        let mut child = service(&dir, &broker.address, &["--batch-events-max", "500"]);
        std::thread::sleep(Duration::from_millis(2000 + (i * 397) % 2500));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let verify = drain_until(&dir, &broker.address, lines.len());
    assert!(verify.starts_with("ok: 30 teams"), "every event exactly once, chains intact: {verify}");
    assert_bills_like_import(&dir, &file, 30, Some(&broker.address));
    let _ = ul(&dir, &["replay"]);
}

#[test]
fn a_broker_restart_mid_stream_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(tmp.path());
    let (file, lines) = load(tmp.path(), 20, 20000, 5);
    let (first, second) = halves(tmp.path(), &lines);
    ul_ok(tmp.path(), &["produce", "--brokers", &broker.address, first.to_str().unwrap()]);
    let dir = tmp.path().join("data");
    let svc = service(&dir, &broker.address, &["--exit-when-idle-ms", "10000", "--batch-events-max", "1000"]);
    std::thread::sleep(Duration::from_millis(1500));
    broker.restart();
    ul_ok(tmp.path(), &["produce", "--brokers", &broker.address, second.to_str().unwrap()]);
    let out = svc.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    drain_until(&dir, &broker.address, lines.len());
    assert_bills_like_import(&dir, &file, 20, None);
}

#[test]
fn sigterm_finishes_the_batch_in_hand_and_leaves_a_resumable_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    let (file, lines) = load(tmp.path(), 10, 20000, 3);
    ul_ok(tmp.path(), &["produce", "--brokers", &broker.address, file.to_str().unwrap()]);
    let dir = tmp.path().join("data");
    let svc = service(&dir, &broker.address, &["--batch-events-max", "500"]);
    std::thread::sleep(Duration::from_millis(2500));
    let term = Command::new("kill").args(["-TERM", &svc.id().to_string()]).status().unwrap();
    assert!(term.success());
    let out = svc.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "SIGTERM is a clean stop: {stderr}");
    assert!(stderr.contains("usage-ledger: stopped after"), "{stderr}");
    assert!(ul_ok(&dir, &["verify"]).starts_with("ok: "), "the ledger is consistent after the stop");
    drain_until(&dir, &broker.address, lines.len());
}

pub fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(addr) else { return String::new() };
    conn.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut body = String::new();
    let _ = conn.read_to_string(&mut body);
    body
}

#[test]
fn metrics_count_records_appends_and_dead_letters_by_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    ledger_kafka::create_topics(&broker.address, 1).unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut svc = service(&tmp.path().join("data"), &broker.address, &["--metrics-addr", &addr]);
    let producer = Producer::new(&broker.address).unwrap();
    producer
        .send_all(&[
            raw(ledger_kafka::IMAGES, "t1", image("ok", "t1", 1, 3, false)),
            raw(ledger_kafka::IMAGES, "t1", vec![0xff, 0xfe]),
        ])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = scrape(&addr);
        // Metrics are read without waiting for a batch: records are counted when polled,
        // the outcomes once the batch is committed.
        if text.contains("usage_ledger_records_total 2")
            && text.contains("usage_ledger_appended_total 1")
            && text.contains(r#"usage_ledger_dead_letters_total{reason="undecodable"} 1"#)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    svc.kill().unwrap();
    svc.wait().unwrap();
    assert!(text.contains("usage_ledger_records_total 2"), "{text}");
    assert!(text.contains("usage_ledger_appended_total 1"), "{text}");
    assert!(text.contains(r#"usage_ledger_dead_letters_total{reason="undecodable"} 1"#), "{text}");
    assert!(text.contains("usage_ledger_batch_seconds_count"), "{text}");
}

/// A service process whose stderr lines are collected as they come.
pub(crate) struct Member {
    pub(crate) child: Child,
    pub(crate) lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Member {
    pub(crate) fn start(dir: &Path, brokers: &str, extra: &[&str]) -> Member {
        use std::io::BufRead;
        let mut child = service(dir, brokers, extra);
        let stderr = child.stderr.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Member { child, lines, reader }
    }

    /// The partition numbers it said it owned last.
    pub(crate) fn owns(&self) -> Option<String> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .rev()
            .find_map(|l| l.split("owns ").nth(1).map(|o| o.trim_start_matches("partitions ").to_string()))
    }

    pub(crate) fn wait_until_owns(&self, what: impl Fn(&str) -> bool, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.owns().is_some_and(|o| what(&o)) {
            let seen = self.lines.lock().unwrap().clone();
            assert!(Instant::now() < deadline, "ownership never came; stderr: {seen:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the exit; returns the stderr and how many events this member appended.
    pub(crate) fn finish(mut self) -> (String, u64) {
        let status = self.child.wait().unwrap();
        self.reader.join().unwrap();
        let stderr = self.lines.lock().unwrap().join("\n");
        assert!(status.success(), "member failed: {stderr}");
        let appended = stderr
            .split("records (")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no final count: {stderr}"));
        (stderr, appended)
    }
}

#[test]
fn two_members_share_the_partitions_and_hand_them_over_on_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    let (file, lines) = load(tmp.path(), 40, 40000, 17);
    let (first, second) = halves(tmp.path(), &lines);
    ul_ok(tmp.path(), &["produce", "--brokers", &broker.address, first.to_str().unwrap()]);
    let dir = tmp.path().join("shared");
    let slow = ["--batch-events-max", "300"];
    let a = Member::start(&dir, &broker.address, &slow);
    a.wait_until_owns(|o| o == "[0, 1, 2, 3]", Duration::from_secs(30));
    let b = Member::start(&dir, &broker.address, &[&slow[..], &["--exit-when-idle-ms", "8000"]].concat());
    // Partition N of both input topics goes to one member: two ledgers each.
    let half = |o: &str| o.matches(',').count() == 1;
    b.wait_until_owns(half, Duration::from_secs(60));
    a.wait_until_owns(half, Duration::from_secs(30));
    let (a_owns, b_owns) = (a.owns().unwrap(), b.owns().unwrap());
    let numbers = |o: &str| o.trim_matches(['[', ']']).split(", ").map(String::from).collect::<Vec<_>>();
    let mut all = [numbers(&a_owns), numbers(&b_owns)].concat();
    all.sort();
    assert_eq!(all, ["0", "1", "2", "3"], "each partition has one owner: {a_owns} and {b_owns}");
    ul_ok(tmp.path(), &["produce", "--brokers", &broker.address, second.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(Command::new("kill").args(["-TERM", &a.child.id().to_string()]).status().unwrap().success());
    let (a_log, a_appended) = a.finish();
    assert!(a_log.contains("handed over partitions; owns []"), "{a_log}");
    // The eager rebalance that brought b in took every partition back from a and gave
    // two back: those stayed open, so a folded each ledger once.
    let opened: Vec<&str> = a_log.lines().filter_map(|l| l.split("ledgers of partitions ").nth(1)).collect();
    let opened = opened.iter().flat_map(|o| o.trim_matches(['[', ']']).split(", ")).count();
    assert_eq!(opened, 4, "{a_log}");
    b.wait_until_owns(|o| o == "[0, 1, 2, 3]", Duration::from_secs(60));
    let (_, b_appended) = b.finish();
    assert!(a_appended > 0 && b_appended > 0, "both members appended: {a_appended} and {b_appended}");
    // Exactly once: the whole load, each event in one ledger, no team in two.
    let verify = drain_until(&dir, &broker.address, lines.len());
    assert!(verify.starts_with("ok: 40 teams"), "{verify}");
    assert_bills_like_import(&dir, &file, 40, Some(&broker.address));
    let parts = ledger_store::layout(&dir).unwrap();
    assert!(matches!(parts, ledger_store::Layout::Partitioned(ref p) if p.len() == 4), "{parts:?}");
}

/// A stand-in ledger for the cooperative test: positions shared by both members (the
/// shared storage), and each member's own log of what it was given and lost.
#[derive(Default)]
struct PositionsLog {
    positions: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<i32, i64>>>,
    log: std::sync::Mutex<Vec<String>>,
}

impl ledger_kafka::Partitions for PositionsLog {
    fn assigned(&self, partitions: &[(String, i32)]) -> Vec<Option<i64>> {
        let positions = self.positions.lock().unwrap();
        partitions
            .iter()
            .map(|(_, p)| {
                self.log.lock().unwrap().push(format!("assign {p}"));
                positions.get(p).copied()
            })
            .collect()
    }

    fn revoked(&self, partitions: &[(String, i32)], _eager: bool) {
        self.log.lock().unwrap().extend(partitions.iter().map(|(_, p)| format!("revoke {p}")));
    }
}

#[test]
fn cooperative_rebalancing_moves_only_the_handed_over_partitions_exactly_once() {
    use ledger_kafka::{Assignor, Consumer, IMAGES};
    use std::collections::HashMap;
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    ledger_kafka::create_topics(&broker.address, 4).unwrap();
    let producer = Producer::new(&broker.address).unwrap();
    let produce = |from: usize, to: usize| {
        let records: Vec<Outgoing> = (from..to).map(|i| raw(IMAGES, &format!("key-{}", i % 37), vec![1])).collect();
        producer.send_all(&records).unwrap();
    };
    let shared = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let member = |name: &str| {
        let owner = Arc::new(PositionsLog { positions: Arc::clone(&shared), log: Default::default() });
        let consumer = Consumer::with_assignor(
            &broker.address,
            "coop",
            &[IMAGES],
            6000,
            Arc::clone(&owner) as Arc<dyn ledger_kafka::Partitions>,
            Assignor::CooperativeSticky,
        )
        .unwrap();
        (name.to_string(), consumer, owner)
    };
    let mut seen: HashMap<(i32, i64), u32> = HashMap::new();
    let mut by_member: HashMap<String, usize> = HashMap::new();
    // Consumes a batch as the ledger would: apply, then record the positions.
    let mut step = |(name, consumer, _): &(String, Consumer, Arc<PositionsLog>)| {
        let batch = consumer.poll_batch(50, Duration::from_millis(50)).unwrap();
        let mut positions = shared.lock().unwrap();
        for r in &batch {
            *seen.entry((r.partition, r.offset)).or_default() += 1;
            positions.insert(r.partition, r.offset + 1);
        }
        *by_member.entry(name.clone()).or_default() += batch.len();
        batch.len()
    };
    produce(0, 2000);
    let a = member("a");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut consumed = 0;
    while consumed < 2000 {
        assert!(Instant::now() < deadline, "a consumes the first half");
        consumed += step(&a);
    }
    let b = member("b");
    while a.1.owned().len() != 2 || b.1.owned().len() != 2 {
        assert!(Instant::now() < deadline, "the partitions are shared: a {:?}, b {:?}", a.1.owned(), b.1.owned());
        step(&a);
        step(&b);
    }
    produce(2000, 4000);
    let mut idle = 0;
    while idle < 20 {
        assert!(Instant::now() < deadline, "the second half arrives");
        idle = if step(&a) + step(&b) == 0 { idle + 1 } else { 0 };
    }
    assert_eq!(seen.len(), 4000, "every record consumed");
    assert!(seen.values().all(|n| *n == 1), "none twice");
    assert!(by_member["b"] > 0, "b consumed its partitions: {by_member:?}");
    let a_log = a.2.log.lock().unwrap().clone();
    let kept: Vec<String> = a.1.owned().iter().map(|(_, p)| format!("revoke {p}")).collect();
    assert_eq!(a_log.iter().filter(|l| l.starts_with("assign")).count(), 4, "assigned once: {a_log:?}");
    assert_eq!(a_log.iter().filter(|l| l.starts_with("revoke")).count(), 2, "only the moved ones: {a_log:?}");
    assert!(!a_log.iter().any(|l| kept.contains(l)), "a kept its other partitions throughout: {a_log:?}");
}

/// A partition whose ledger another process holds (a stalled previous owner) is stopped
/// alone: `readyz` names it and why, its records wait, the other partitions are billed;
/// once idle the service exits non-zero saying which partition stopped.
#[test]
fn a_partition_whose_ledger_stays_locked_stops_alone_and_readyz_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    let (file, lines) = load(tmp.path(), 8, 2000, 2);
    ul_ok(tmp.path(), &["produce", "--brokers", &broker.address, file.to_str().unwrap()]);
    let dir = tmp.path().join("data");
    // A stalled previous owner still holds partition 0's ledger.
    let held =
        ledger_store::Store::open(&ledger_store::partition_dir(&dir, 0), &ledger_core::Catalog::builtin()).unwrap();
    let mut cmd = bin();
    cmd.arg("--data-dir").arg(&dir).args(["run", "--brokers", &broker.address, "--batch-wait-ms", "100"]);
    cmd.args(["--takeover-wait-ms", "1500", "--http-addr", "127.0.0.1:0"]);
    let server = crate::http::Server::spawn(&mut cmd, "HTTP API and dashboard on ");
    let deadline = Instant::now() + Duration::from_secs(60);
    let reply = loop {
        let reply = crate::http::get(&format!("{}/readyz", server.base), None);
        if reply.body.contains("partition 0 stopped") || Instant::now() > deadline {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(reply.body.contains("in use by another process"), "{}", reply.body);
    // The other partitions are billed meanwhile.
    let served = |dir: &Path| {
        (1..4)
            .map(|p| {
                let store =
                    ledger_store::Store::open(&ledger_store::partition_dir(dir, p), &ledger_core::Catalog::builtin());
                store.map(|s| s.teams().unwrap().len()).unwrap_or(0)
            })
            .sum::<usize>()
    };
    // Until the other partitions are drained (the appended count stays put for 3 s).
    let appended = || {
        let text = crate::http::get(&format!("{}/metrics", server.base), None).body;
        crate::http::sample_sum(&text, "usage_ledger_appended_total")
    };
    let (mut last, mut since) = (0, Instant::now());
    while since.elapsed() < Duration::from_secs(3) || last == 0 {
        assert!(Instant::now() < deadline + Duration::from_secs(60), "the other partitions are billed");
        std::thread::sleep(Duration::from_millis(200));
        let now = appended();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    let status = server.terminate();
    assert_eq!(status.code(), Some(1), "a stopped partition makes the exit non-zero");
    assert!(served(&dir) > 0, "the other partitions' teams are billed");
    assert!(!held.holds_history().unwrap(), "nothing was applied to the held partition");
    drop(held);
    // Run again with the lock gone: partition 0 is taken over and everything billed.
    let verify = drain_until(&dir, &broker.address, lines.len());
    assert!(verify.starts_with("ok: 8 teams"), "{verify}");
}
