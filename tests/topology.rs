//! The service trusts no topology blindly (issue 20): a record whose key maps to another
//! partition than the one it is in (a producer with another partitioner than Kafka's
//! default murmur2, as the contract asks) is dead-lettered with its own reason code and
//! counted, never billed in the wrong ledger.
use std::net::TcpListener;
use std::time::{Duration, Instant};

use ledger_kafka::{Outgoing, Producer, ACCOUNTS, CHANGELOG, DEADLETTER, IMAGES};
use ledger_proto::pb;
use prost::Message as _;

use crate::kafka::{account, image, raw, scrape, service, Broker};
use crate::support::ul_ok;

/// librdkafka's default partitioner (CRC32) puts many keys elsewhere than murmur2 does:
/// here a team's plan lands where murmur2 says and one of its images in another
/// partition. The image is dead-lettered `wrong_partition` (naming the partition it
/// belongs in) and counted in `dead_letters_total`; the team is billed from its own
/// ledger only.
#[test]
fn a_record_in_another_partition_than_its_keys_is_dead_lettered_never_billed() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    ledger_kafka::create_topics(&broker.address, 4).unwrap();
    let own = ledger_kafka::partition_for(b"t1", 4);
    let other = (own + 1) % 4;
    let april = 1_775_001_600; // 2026-04-01T00:00:00Z
    let start = pb::account_event::Change::PlanStarted(pb::PlanStarted {
        plan: "api_basic".into(),
        bucket_images: 1000,
        ..Default::default()
    });
    let mut misplaced = raw(IMAGES, "t1", image("stray", "t1", 1, 3000, false));
    misplaced.partition = Some(other);
    let records = [
        raw(ACCOUNTS, "t1", account("a1", "t1", april, start)),
        raw(IMAGES, "t1", image("home", "t1", 1, 10, false)),
        misplaced,
    ];
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tmp.path().join("data");
    let mut svc = service(&dir, &broker.address, &["--metrics-addr", &addr]);
    Producer::new(&broker.address).unwrap().send_all(&records).unwrap();
    let counted = r#"usage_ledger_dead_letters_total{reason="wrong_partition"} 1"#;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    while Instant::now() < deadline && !(text.contains(counted) && text.contains("usage_ledger_appended_total 2")) {
        std::thread::sleep(Duration::from_millis(200));
        text = scrape(&addr);
    }
    // Counted when applied, published once committed (metrics are read without waiting
    // for the batch): the message reaches its topic a moment after the count.
    let mut dead = Vec::new();
    while Instant::now() < deadline && dead.is_empty() {
        dead = ledger_kafka::read_topic(&broker.address, DEADLETTER, Duration::from_secs(3)).unwrap();
    }
    svc.kill().unwrap();
    svc.wait().unwrap();
    assert!(text.contains(counted), "{text}");
    assert!(text.contains("usage_ledger_appended_total 2"), "{text}");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let header = |name: &str| dead[0].header(name).unwrap_or_default().to_string();
    assert_eq!(header("reason.code"), "wrong_partition");
    assert_eq!(header("source.partition"), other.to_string());
    assert_eq!((header("team_id"), header("event_id")), ("t1".to_string(), "stray".to_string()));
    assert!(header("reason").contains(&format!("belongs in partition {own} of 4")), "{}", header("reason"));
    // The 3,000 stray images are in no ledger: the team's draft bills its 10 only.
    let draft: serde_json::Value =
        serde_json::from_str(&ul_ok(&dir, &["invoices", "--team", "t1", "--draft"])).unwrap();
    assert_eq!(draft[0]["usage"]["billable_images"], 10, "{draft}");
    assert_eq!(draft[0]["total"], "20.00", "{draft}");
}

/// librdkafka's mock cluster keeps the last 5 MiB of a partition: after ~6 MiB of images
/// the log of `images.processed.v1/0` starts past offset 0. A new ledger needs offset 0:
/// the partition stops with one line naming it and both offsets, and bills nothing
/// (`auto.offset.reset` would have started it mid-history); once idle the service exits
/// non-zero saying which partition stopped.
#[test]
fn a_trimmed_input_stops_its_partition_in_one_line_and_bills_nothing() {
    let mock = ledger_kafka::mock::MockBroker::start().unwrap();
    for topic in ledger_kafka::ALL_TOPICS.iter().chain(&[ledger_kafka::CHANGELOG]) {
        mock.create_topic(topic, 1).unwrap();
    }
    let brokers = mock.address();
    let bulky = |i: usize| {
        pb::ImageProcessed {
            event_id: format!("e{i}"),
            team_id: "t1".into(),
            occurred_at: Some(ledger_proto::Timestamp { seconds: 1_775_100_000, nanos: 0 }),
            api: 1,
            images: 1,
            operations: vec!["x".repeat(250); 32],
            ..Default::default()
        }
        .encode_to_vec()
    };
    let producer = Producer::new(&brokers).unwrap();
    for chunk in (0..800).collect::<Vec<_>>().chunks(100) {
        let records: Vec<_> = chunk.iter().map(|i| raw(IMAGES, "t1", bulky(*i))).collect();
        producer.send_all(&records).unwrap();
    }
    let (low, high) = ledger_kafka::watermarks(&brokers, IMAGES, 0).unwrap();
    assert!(low > 0 && high == 800, "the mock trimmed the log: {low}..{high}");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = crate::kafka::service(&data, &brokers, &["--exit-when-idle-ms", "5000"]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let line = format!("images.processed.v1/0 starts at offset {low} but the ledger needs offset 0");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains(&line)).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].starts_with("usage-ledger: stopped partition 0 "), "{}", errors[0]);
    assert!(stderr.lines().last().unwrap().contains("partition(s) {0} stopped"), "{stderr}");
    // Nothing was billed from the middle of the history.
    let verify = crate::support::ul(&data, &["verify"]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
    assert!(verify.stdout.starts_with("ok: 0 teams, 0 entries, 0 index records"), "{}", verify.stdout);
}

/// The broker is replaced and the topics recreated, here with 8 partitions instead of 4:
/// the ledgers were built from 4, so the service stops in one line naming the partition
/// and both counts, instead of skipping the new records as held already (what it did
/// before issue 20: all 900, silently) or starting second histories of teams that now
/// map to the new partitions.
#[test]
fn recreated_topics_stop_the_service_in_one_line_and_skip_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, second) = broker_dirs(tmp.path());
    let file = crate::support::scenarios_dir().join("E2.jsonl");
    let data = tmp.path().join("data");
    let before = {
        let broker = Broker::start(&first);
        ul_ok(tmp.path(), &["produce", "--brokers", &broker.address, file.to_str().unwrap()]);
        crate::kafka::drain(&data, &broker.address);
        ul_ok(&data, &["verify"])
    };
    let broker = Broker::start(&second);
    ledger_kafka::create_topics(&broker.address, 8).unwrap();
    ul_ok(tmp.path(), &["produce", "--brokers", &broker.address, file.to_str().unwrap()]);
    let out =
        crate::kafka::service(&data, &broker.address, &["--exit-when-idle-ms", "5000"]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let refused: Vec<&str> =
        stderr.lines().filter(|l| l.contains("built from 4 input partitions and the topics now have 8")).collect();
    assert_eq!(refused.len(), 1, "{stderr}");
    assert!(refused[0].starts_with("error: cannot take over partition "), "{}", refused[0]);
    assert_eq!(ul_ok(&data, &["verify"]), before, "nothing was appended or skipped");
}

/// The ledger moves to another cluster whose changelog was mirrored offset for offset
/// but whose input topics are new (recreated with as many partitions) and already hold
/// more records than the ledger's positions: offsets alone cannot tell the logs apart
/// (the service skipped the first 5 new images as held already and billed the rest,
/// silently). The record before each position is not the one the ledger consumed
/// there, so the partition stops in one line naming it and the offset, and nothing is
/// appended or skipped; the other cluster is named in a warning. Resuming on the log it
/// read passes the same check.
#[test]
fn new_input_topics_with_the_same_count_and_more_records_stop_their_partition() {
    use ledger_proto::pb::account_event::Change;
    let tmp = tempfile::tempdir().unwrap();
    let (first, second) = broker_dirs(tmp.path());
    let data = tmp.path().join("data");
    let april = 1_775_001_600; // 2026-04-01T00:00:00Z
    let start = |bucket| {
        Change::PlanStarted(pb::PlanStarted { plan: "api_basic".into(), bucket_images: bucket, ..Default::default() })
    };
    let traffic = |prefix: &str, images: usize, bucket| {
        let mut records = vec![raw(ACCOUNTS, "t1", account(&format!("{prefix}-plan"), "t1", april, start(bucket)))];
        records.extend((0..images).map(|i| raw(IMAGES, "t1", image(&format!("{prefix}{i}"), "t1", 1, 10, false))));
        records
    };
    let old = Broker::start(&first);
    ledger_kafka::create_topics(&old.address, 4).unwrap();
    Producer::new(&old.address).unwrap().send_all(&traffic("old", 5, 1000)).unwrap();
    crate::kafka::drain(&data, &old.address);
    crate::kafka::drain(&data, &old.address);
    let before = ul_ok(&data, &["verify"]);
    assert!(before.contains(" 6 index records"), "{before}");

    let new = Broker::start_in(&second, Some("replacement"));
    ledger_kafka::create_topics(&new.address, 4).unwrap();
    let changelog = ledger_kafka::read_topic(&old.address, CHANGELOG, Duration::from_secs(3)).unwrap();
    let mirrored: Vec<Outgoing> = changelog
        .iter()
        .map(|r| Outgoing { partition: Some(r.partition), ..raw(CHANGELOG, "", r.payload.clone()) })
        .collect();
    Producer::new(&new.address).unwrap().send_all(&mirrored).unwrap();
    Producer::new(&new.address).unwrap().send_all(&traffic("new", 8, 2000)).unwrap();
    let out = service(&data, &new.address, &["--exit-when-idle-ms", "5000"]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let partition = ledger_kafka::partition_for(b"t1", 4);
    let stops: Vec<&str> = stderr.lines().filter(|l| l.starts_with("usage-ledger: stopped partition")).collect();
    assert_eq!(stops.len(), 1, "{stderr}");
    assert!(stops[0].starts_with(&format!("usage-ledger: stopped partition {partition} ")), "{}", stops[0]);
    assert!(stops[0].contains("is not the one the ledger consumed there"), "{}", stops[0]);
    assert!(stderr.contains("last opened with another Kafka cluster"), "{stderr}");
    assert_eq!(ul_ok(&data, &["verify"]), before, "nothing was appended or skipped");
}

/// The directories of two brokers in `tmp`: the one a ledger was built on, and its
/// replacement.
fn broker_dirs(tmp: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (first, second) = (tmp.join("first"), tmp.join("second"));
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    (first, second)
}
