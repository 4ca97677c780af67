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
