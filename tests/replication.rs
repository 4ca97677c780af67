//! The ledger replicated through Kafka (issue 20): every committed batch of a partition
//! ledger goes to `usage-ledger.changelog.v1` first, so a machine with an empty disk
//! rebuilds the same ledger (entries, sequence numbers, hash chains, projections,
//! positions, outbox) and publishes nothing twice; a fenced (zombie) writer's late record
//! is skipped by every reader. Against tansu over TCP, with the service as a process.
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ledger_kafka::{ChangelogWriter, PartitionReader, ALERTS, CHANGELOG, INVOICES};
use ledger_store::{Ledger, Source, Store, Submission};

use crate::kafka::{billing, drain_until, Broker};
use crate::support::{ul, ul_ok};

/// Every team's invoices as the command prints them (ledger references included).
fn invoices(dir: &Path, teams: &[String]) -> String {
    teams.iter().map(|t| ul_ok(dir, &["invoices", "--team", t])).collect()
}

/// The ids of the messages on an output topic; asserts none is there twice.
fn unique_ids(brokers: &str, topic: &str) -> HashSet<String> {
    let records = ledger_kafka::read_topic(brokers, topic, Duration::from_secs(3)).unwrap();
    let mut ids = HashSet::new();
    for r in &records {
        let id = r.header("id").unwrap_or_default().to_string();
        assert!(ids.insert(id.clone()), "{topic}: {id} published twice");
    }
    ids
}

fn digest(dir: &Path) -> String {
    ul_ok(dir, &["replay"]).lines().filter(|l| l.starts_with("digest:")).collect()
}

/// A machine with the ledger of every partition is replaced by one with an empty disk:
/// it restores each partition from the changelog to the same bytes (invoices with their
/// ledger references, the replay digest), re-publishes none of the alerts and invoices
/// already published, then goes on: the second half of the month is billed as a single
/// ledger bills the whole file, and the output topics hold each message once.
#[test]
fn a_replaced_machine_restores_the_same_ledger_and_publishes_nothing_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    ledger_kafka::create_topics(&broker.address, 4).unwrap();
    let all = tmp.path().join("all.jsonl");
    ul_ok(
        tmp.path(),
        &["generate", "--teams", "40", "--events", "4000", "--months", "2", "--out", all.to_str().unwrap()],
    );
    let text = std::fs::read_to_string(&all).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (first, second) = (tmp.path().join("first.jsonl"), tmp.path().join("second.jsonl"));
    std::fs::write(&first, lines[..2600].join("\n") + "\n").unwrap();
    std::fs::write(&second, lines[2600..].join("\n") + "\n").unwrap();
    let teams: Vec<String> = (0..40).map(|i| format!("team-{i:04}")).collect();

    let a = tmp.path().join("a");
    ul_ok(tmp.path(), &["produce", "--brokers", &broker.address, first.to_str().unwrap()]);
    drain_until(&a, &broker.address, 2600);
    let (alerts, sent) = (unique_ids(&broker.address, ALERTS), unique_ids(&broker.address, INVOICES));
    assert!(!alerts.is_empty() && !sent.is_empty(), "the first half raises alerts and closes invoices");
    let before = (invoices(&a, &teams), digest(&a));
    std::fs::remove_dir_all(&a).unwrap();

    // The new machine: the same group, an empty disk.
    let a2 = tmp.path().join("a2");
    let stderr = crate::kafka::drain(&a2, &broker.address);
    for p in 0..4 {
        assert!(stderr.contains(&format!("restored partition {p} from usage-ledger.changelog.v1/{p}: ")), "{stderr}");
    }
    let restored = drain_until(&a2, &broker.address, 2600);
    assert!(restored.starts_with("ok: "), "{restored}");
    assert_eq!((invoices(&a2, &teams), digest(&a2)), before, "the restored ledger is the lost one, byte for byte");
    assert_eq!(unique_ids(&broker.address, ALERTS), alerts, "no alert published again");
    assert_eq!(unique_ids(&broker.address, INVOICES), sent, "no invoice published again");

    ul_ok(tmp.path(), &["produce", "--brokers", &broker.address, second.to_str().unwrap()]);
    drain_until(&a2, &broker.address, lines.len());
    let single = tmp.path().join("single");
    let run = ul(&single, &["import", all.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for team in &teams {
        assert_eq!(billing(&a2, team), billing(&single, team), "{team}");
    }
    let (alerts, sent) = (unique_ids(&broker.address, ALERTS), unique_ids(&broker.address, INVOICES));
    let single_alerts: usize = teams
        .iter()
        .map(|t| serde_json::from_str::<serde_json::Value>(&ul_ok(&single, &["alerts", "--team", t])).unwrap())
        .map(|v| v.as_array().unwrap().len())
        .sum();
    assert_eq!(alerts.len(), single_alerts, "every alert published once");
    assert_eq!(sent.len(), 40, "every invoice published once");
}

/// The changelog partition, as a store's replica, for a ledger driven in-process.
struct Replica {
    writer: Arc<ChangelogWriter>,
}

impl ledger_store::Replica for Replica {
    fn append(&self, record: &[u8]) -> Result<u64, String> {
        self.writer.append(0, record)
    }

    fn name(&self) -> String {
        format!("{CHANGELOG}/0")
    }
}

fn events(lines: &[&str]) -> Vec<Submission> {
    lines
        .iter()
        .map(|l| Submission {
            event: ledger_proto::parse_json_line(l).unwrap(),
            source: Source { stream: None, offset: 0 },
        })
        .collect()
}

/// A store brought up to the changelog, then folded and replicating.
fn restored_ledger(dir: &Path, brokers: &str, writer: &Arc<ChangelogWriter>) -> (Ledger, ledger_store::RestoreReport) {
    let catalog = ledger_core::Catalog::builtin();
    let store = Store::open(dir, &catalog).unwrap();
    let from = store.changelog_position().unwrap().map_or(0, |p| p.next);
    let mut reader = PartitionReader::open(brokers, CHANGELOG, 0, from).unwrap();
    let report = store.restore(&format!("{CHANGELOG}/0"), &mut reader).unwrap();
    let mut ledger = Ledger::open(store).unwrap();
    ledger.replicate(Arc::new(Replica { writer: Arc::clone(writer) })).unwrap();
    (ledger, report)
}

/// X writes, then Y restores and takes over while X still runs (a zombie: its session
/// expired, its process did not). Y's batch lands first; X's next batch lands after it,
/// at an offset X did not expect: X stops, fenced, without committing it, and its record,
/// linked to the head X had, is skipped by every reader: a third machine restores Y's
/// ledger exactly.
#[test]
fn a_zombie_writers_late_record_is_skipped_by_every_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    ledger_kafka::create_topics(&broker.address, 1).unwrap();
    let writer = Arc::new(ChangelogWriter::new(&broker.address).unwrap());
    let plan = r#"{"accountEvent":{"eventId":"a1","teamId":"t1","occurredAt":"2026-04-01T00:00:00Z","planStarted":{"plan":"api_basic","bucketImages":"1000"}}}"#;
    let image = |id: &str, n: u32| {
        format!(
            r#"{{"imageProcessed":{{"eventId":"{id}","teamId":"t1","occurredAt":"2026-04-02T00:00:00Z","api":"API_REMOVE_BACKGROUND","images":{n}}}}}"#
        )
    };
    let (x_dir, y_dir, z_dir) = (tmp.path().join("x"), tmp.path().join("y"), tmp.path().join("z"));
    let (mut x, _) = restored_ledger(&x_dir, &broker.address, &writer);
    x.submit_batch(events(&[plan, &image("e1", 100)])).unwrap();

    let (mut y, report) = restored_ledger(&y_dir, &broker.address, &writer);
    assert_eq!((report.applied, report.entries), (1, 2), "{report:?}");
    y.submit_batch(events(&[&image("y1", 300)])).unwrap();

    let fenced = x.submit_batch(events(&[&image("x1", 700)])).unwrap_err();
    assert!(matches!(fenced, ledger_store::Error::Fenced { expected: 1, landed: 2, .. }), "{fenced}");
    assert!(fenced.to_string().contains("usage-ledger.changelog.v1/0"), "{fenced}");
    assert!(x.store().read_entry("t1", 3).unwrap().is_none(), "the fenced batch was not committed");
    drop(x);

    let (z, report) = restored_ledger(&z_dir, &broker.address, &writer);
    assert_eq!((report.applied, report.skipped), (2, 1), "{report:?}");
    assert_eq!(z.changelog_position(), y.changelog_position());
    let entries = |l: &Ledger| {
        l.store().team_entries(&ledger_core::Catalog::builtin(), &ledger_core::TeamId::new("t1").unwrap()).unwrap()
    };
    assert_eq!(entries(&z), entries(&y));
    assert_eq!(z.store().invoices("t1").unwrap(), y.store().invoices("t1").unwrap());
    let ids: Vec<_> = entries(&z).iter().filter_map(|e| e.event_id().map(|i| i.to_string())).collect();
    assert_eq!(ids, ["a1", "e1", "y1"]);
}

/// The operator's scenario, each machine with its own disk, against tansu: A alone takes
/// the first third; B joins with an empty disk (scale-out) and restores the two partitions
/// it is given; when B leaves, A takes them back onto its stale copies (scale-in) and
/// catches up from the changelog; A's disk is then lost and A2 starts empty (a replaced
/// machine) for the last third. Every event is in one ledger once, every team bills as
/// the whole file imported into one ledger, and the output topics hold each alert and
/// invoice once.
#[test]
fn machines_with_their_own_disks_scale_out_in_and_get_replaced_exactly_once() {
    use crate::kafka::{assert_bills_like_import, drain, load, Member};
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    ledger_kafka::create_topics(&broker.address, 4).unwrap();
    let (file, lines) = load(tmp.path(), 40, 9000, 11);
    let thirds: Vec<std::path::PathBuf> = (0..3)
        .map(|i| {
            let part = tmp.path().join(format!("third{i}.jsonl"));
            let (from, to) = (lines.len() * i / 3, lines.len() * (i + 1) / 3);
            std::fs::write(&part, lines[from..to].join("\n")).unwrap();
            part
        })
        .collect();
    let produce = |part: &Path| ul_ok(tmp.path(), &["produce", "--brokers", &broker.address, part.to_str().unwrap()]);
    let (a_dir, b_dir, a2_dir) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("a2"));

    produce(&thirds[0]);
    drain_until(&a_dir, &broker.address, lines.len() / 3);

    let slow = ["--batch-events-max", "300"];
    let a = Member::start(&a_dir, &broker.address, &slow);
    a.wait_until_owns(|o| o == "[0, 1, 2, 3]", Duration::from_secs(60));
    let b = Member::start(&b_dir, &broker.address, &[&slow[..], &["--exit-when-idle-ms", "6000"]].concat());
    let half = |o: &str| o.matches(',').count() == 1;
    b.wait_until_owns(half, Duration::from_secs(60));
    a.wait_until_owns(half, Duration::from_secs(60));
    // The second third goes to both: B writes its partitions' ledgers, A's copies of them
    // go stale.
    produce(&thirds[1]);
    let (b_log, _) = b.finish();
    assert_eq!(b_log.matches("usage-ledger: restored partition").count(), 2, "{b_log}");
    a.wait_until_owns(|o| o == "[0, 1, 2, 3]", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    assert!(std::process::Command::new("kill").args(["-TERM", &a.child.id().to_string()]).status().unwrap().success());
    let (a_log, _) = a.finish();
    assert_eq!(a_log.matches("usage-ledger: restored partition").count(), 2, "stale copies caught up: {a_log}");
    assert!(drain(&a_dir, &broker.address).contains("stopped after"), "A resumes where it stopped");
    std::fs::remove_dir_all(&a_dir).unwrap();

    produce(&thirds[2]);
    let verify = drain_until(&a2_dir, &broker.address, lines.len());
    assert!(verify.starts_with("ok: 40 teams"), "{verify}");
    assert_bills_like_import(&a2_dir, &file, 40, Some(&broker.address));
    assert_eq!(unique_ids(&broker.address, INVOICES).len(), 40, "each invoice published once");
    assert!(!unique_ids(&broker.address, ALERTS).is_empty(), "each alert published once");
}

/// A member killed with `kill -9` loses its partitions to the survivor after the session
/// timeout, and the survivor restores them from the changelog. tansu 0.6 never expires a
/// dead member (its coordinator drops it but keeps the old assignment: README), so this
/// runs on librdkafka's mock cluster, whose coordinator does.
#[test]
fn a_killed_members_partitions_move_to_the_survivor_after_the_session_timeout() {
    use crate::kafka::{assert_bills_like_import, halves, load, Member};
    let mock = ledger_kafka::mock::MockBroker::start().unwrap();
    for topic in ledger_kafka::ALL_TOPICS {
        let n = if topic == ledger_kafka::IMAGES || topic == ledger_kafka::ACCOUNTS { 4 } else { 1 };
        mock.create_topic(topic, n).unwrap();
    }
    mock.create_topic(CHANGELOG, 4).unwrap();
    let brokers = mock.address();
    let tmp = tempfile::tempdir().unwrap();
    let (file, lines) = load(tmp.path(), 40, 4000, 5);
    let (first, second) = halves(tmp.path(), &lines);
    ul_ok(tmp.path(), &["produce", "--brokers", &brokers, first.to_str().unwrap()]);
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut a = Member::start(&a_dir, &brokers, &[]);
    a.wait_until_owns(|o| o == "[0, 1, 2, 3]", Duration::from_secs(60));
    let b = Member::start(&b_dir, &brokers, &["--exit-when-idle-ms", "15000"]);
    let half = |o: &str| o.matches(',').count() == 1;
    b.wait_until_owns(half, Duration::from_secs(60));
    a.wait_until_owns(half, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed = std::time::Instant::now();
    b.wait_until_owns(|o| o == "[0, 1, 2, 3]", Duration::from_secs(60));
    let moved = killed.elapsed();
    ul_ok(tmp.path(), &["produce", "--brokers", &brokers, second.to_str().unwrap()]);
    let (b_log, _) = b.finish();
    assert!(b_log.matches("usage-ledger: restored partition").count() >= 2, "{b_log}");
    assert!(moved < Duration::from_secs(40), "the partitions moved {moved:?} after the kill");
    let verify = drain_until(&b_dir, &brokers, lines.len());
    assert!(verify.starts_with("ok: 40 teams"), "{verify}");
    // At least once at the crash: a message the killed member published after its last
    // changelog record may come again; a consumer that drops repeats by id sees each once.
    assert_bills_like_import(&b_dir, &file, 40, None);
    let stored: HashSet<String> = (0..40)
        .flat_map(|t| {
            let alerts: serde_json::Value =
                serde_json::from_str(&ul_ok(&b_dir, &["alerts", "--team", &format!("team-{t:04}")])).unwrap();
            alerts.as_array().unwrap().iter().map(|a| a["alert_id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
        })
        .collect();
    let published: HashSet<String> = ledger_kafka::read_topic(&brokers, ALERTS, Duration::from_secs(3))
        .unwrap()
        .iter()
        .map(|r| r.header("id").unwrap_or_default().to_string())
        .collect();
    assert_eq!(published, stored, "every alert published, none that is not stored");
}

/// An operator's `close` on a replicated ledger (no changelog writer attached) keeps its
/// batch aside, and the next `run` appends it to the changelog before anything else: a
/// machine restoring afterwards has the closed invoice too, byte for byte.
#[test]
fn an_operators_close_reaches_the_changelog_before_anything_else() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    let file = crate::support::scenarios_dir().join("E2.jsonl");
    ul_ok(tmp.path(), &["produce", "--brokers", &broker.address, file.to_str().unwrap()]);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    drain_until(&a, &broker.address, 1201);
    ul_ok(&a, &["close", "--until", "2026-05-02T00:00:00Z"]);
    let closed = ul_ok(&a, &["invoices", "--team", "t1"]);
    assert!(closed.contains(r#""status": "final""#), "{closed}");
    crate::kafka::drain(&a, &broker.address);
    let stderr = crate::kafka::drain(&b, &broker.address);
    assert!(stderr.contains("usage-ledger: restored partition"), "{stderr}");
    assert_eq!(ul_ok(&b, &["invoices", "--team", "t1"]), closed);
    assert_eq!(digest(&b), digest(&a));
    assert_eq!(unique_ids(&broker.address, INVOICES).len(), 1, "the closed invoice is published once");
}

/// `--standby`: a member keeps copies of the partitions it does not own up to their
/// changelog, so when their owner leaves it restores only what was appended since its
/// copy last looked (a record or two), not the partitions' history, and everything bills
/// as one ledger would, each invoice published once.
#[test]
fn a_standby_member_takes_over_restoring_only_the_changelogs_tail() {
    use crate::kafka::{assert_bills_like_import, halves, load, Member};
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    ledger_kafka::create_topics(&broker.address, 4).unwrap();
    let (file, lines) = load(tmp.path(), 40, 8000, 13);
    let (first, second) = halves(tmp.path(), &lines);
    let produce = |part: &Path| ul_ok(tmp.path(), &["produce", "--brokers", &broker.address, part.to_str().unwrap()]);
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    // Small batches: many changelog records, of which a takeover restores a few at most.
    let slow = ["--batch-events-max", "150"];
    let a = Member::start(&a_dir, &broker.address, &slow);
    a.wait_until_owns(|o| o == "[0, 1, 2, 3]", Duration::from_secs(60));
    produce(&first);
    let b =
        Member::start(&b_dir, &broker.address, &[&slow[..], &["--standby", "--exit-when-idle-ms", "8000"]].concat());
    let half = |o: &str| o.matches(',').count() == 1;
    b.wait_until_owns(half, Duration::from_secs(60));
    a.wait_until_owns(half, Duration::from_secs(60));
    let b_owned: Vec<i32> = {
        let o = b.owns().unwrap();
        o.trim_matches(|c| c == '[' || c == ']').split(", ").map(|p| p.parse().unwrap()).collect()
    };
    produce(&second);
    // A drains its half of the second half, then leaves: B takes its partitions over.
    std::thread::sleep(Duration::from_secs(10));
    assert!(std::process::Command::new("kill").args(["-TERM", &a.child.id().to_string()]).status().unwrap().success());
    a.finish();
    let (b_log, _) = b.finish();

    let records = |line: &str| -> u64 { line.split(": ").last().unwrap().split(' ').next().unwrap().parse().unwrap() };
    for p in (0..4).filter(|p| !b_owned.contains(p)) {
        let copies: Vec<&str> =
            b_log.lines().filter(|l| l.starts_with(&format!("usage-ledger: standby copy of partition {p} "))).collect();
        assert!(!copies.is_empty(), "B kept a copy of partition {p}: {b_log}");
        let (_, high) = ledger_kafka::watermarks(&broker.address, ledger_kafka::CHANGELOG, p).unwrap();
        let restored: u64 = b_log
            .lines()
            .filter(|l| l.starts_with(&format!("usage-ledger: restored partition {p} from ")))
            .map(|l| records(l.split(" records").next().unwrap()))
            .sum();
        assert!(
            high >= 10 && restored <= 3,
            "partition {p}: {restored} of {high} records restored at the takeover: {b_log}"
        );
    }
    let verify = crate::kafka::drain_until(&b_dir, &broker.address, lines.len());
    assert!(verify.starts_with("ok: 40 teams"), "{verify}");
    assert_bills_like_import(&b_dir, &file, 40, Some(&broker.address));
    assert_eq!(unique_ids(&broker.address, INVOICES).len(), 40, "each invoice published once");
}
