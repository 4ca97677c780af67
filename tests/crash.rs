//! Crash safety with real process kills: `kill -9` the importing process many times
//! mid-import, then prove every acknowledged batch survived, nothing was applied twice,
//! `verify` passes, and the result equals a clean single import byte for byte.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledger_core::{Catalog, EventId};
use ledger_store::{Ledger, Store};

use crate::support::{bin, slow_tests_enabled, ul, ul_ok};

/// Starts an import, kills it with SIGKILL `after` its start (or, with `after_first_ack`,
/// after its first acknowledgement, so a loaded machine still kills mid-import), and
/// returns the last line acknowledged.
fn import_and_kill(dir: &Path, file: &Path, extra: &[&str], after: Duration, after_first_ack: bool) -> Option<u64> {
    let mut child = bin()
        .arg("--data-dir")
        .arg(dir)
        .args(["import", "--batch-events-max", "2000", "--report-acks"])
        .args(extra)
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let acked = Arc::new(Mutex::new(None));
    let stdout = child.stdout.take().unwrap();
    let (first_ack, on_first_ack) = std::sync::mpsc::channel();
    let reader = {
        let acked = Arc::clone(&acked);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("ack ") {
                    *acked.lock().unwrap() = Some(n.parse::<u64>().unwrap());
                    let _ = first_ack.send(());
                }
            }
        })
    };
    if after_first_ack {
        let _ = on_first_ack.recv_timeout(Duration::from_secs(30));
    }
    std::thread::sleep(after);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    let acked = *acked.lock().unwrap();
    acked
}

fn event_id_of(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let inner = v.as_object().unwrap().values().next().unwrap();
    inner["eventId"].as_str().unwrap().to_string()
}

/// Every 37th acknowledged line and the last one are in the ledger.
fn assert_acknowledged_present(dir: &Path, lines: &[String], acked: u64) {
    let ledger = Ledger::open(Store::open(dir, &Catalog::builtin()).unwrap()).unwrap();
    let sample = (1..=acked).filter(|n| n % 37 == 0 || *n == acked);
    for n in sample {
        let id = EventId::new(event_id_of(&lines[(n - 1) as usize])).unwrap();
        assert!(ledger.find(&id).unwrap().is_some(), "line {n} (event {id}) was acknowledged but is missing");
    }
}

fn snapshot(dir: &Path, teams: &[String]) -> String {
    let mut out = ul_ok(dir, &["verify"]);
    for t in teams {
        out.push_str(&ul_ok(dir, &["invoices", "--team", t]));
        out.push_str(&ul_ok(dir, &["alerts", "--team", t]));
    }
    out
}

#[test]
fn kill_9_mid_import_loses_no_acknowledged_batch_and_applies_nothing_twice() {
    kill_mid_import_and_resume(&[]);
}

/// The same with the event-id index moving its older events to runs on disk about
/// every batch, so kills land while runs are written, merged and named in the manifest.
#[test]
fn kill_9_while_the_index_moves_events_to_disk_loses_nothing_and_dedups_everything() {
    let dir = kill_mid_import_and_resume(&["--index-memory-events", "2048"]);
    assert!(dir.path().join("crashed/index/manifest.json").exists(), "the index moved events to disk");
}

/// Kills an import (given `extra` options) many times, resumes it, and compares the
/// result with a clean import of the same file (default options).
fn kill_mid_import_and_resume(extra: &[&str]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("load.jsonl");
    let events = if slow_tests_enabled() { "120000" } else { "40000" };
    ul_ok(
        tmp.path(),
        &["generate", "--teams", "40", "--events", events, "--seed", "7", "--out", file.to_str().unwrap()],
    );
    let lines: Vec<String> = std::fs::read_to_string(&file).unwrap().lines().map(String::from).collect();
    let crashed = tmp.path().join("crashed");
    let kills = if slow_tests_enabled() { 20 } else { 10 };
    let mut acked_max = 0;
    for i in 0..kills {
        let after = Duration::from_millis(40 + (i * 137 % 360) as u64);
        // Every third kill counts from the start (it may come before any batch is durable).
        if let Some(acked) = import_and_kill(&crashed, &file, extra, after, i % 3 != 0) {
            acked_max = acked_max.max(acked);
        }
        if crashed.join("db").exists() {
            assert_acknowledged_present(&crashed, &lines, acked_max);
        }
    }
    assert!(acked_max > 0, "some batch was acknowledged before a kill");
    let finish = ul(&crashed, &[&["import", file.to_str().unwrap()], extra].concat());
    assert_eq!(finish.code, 0, "{}", finish.stderr);

    let clean = tmp.path().join("clean");
    ul_ok(&clean, &["import", file.to_str().unwrap()]);
    let teams: Vec<String> = (0..40).map(|t| format!("team-{t:04}")).collect();
    assert_eq!(snapshot(&crashed, &teams), snapshot(&clean, &teams), "crashed-and-resumed equals a clean import");
    assert_eq!(ul_ok(&crashed, &["replay"]), ul_ok(&clean, &["replay"]));
    let again = ul(&crashed, &[&["import", file.to_str().unwrap()], extra].concat());
    assert!(again.stderr.contains(&format!("imported 0 of {} lines", lines.len())), "{}", again.stderr);
    tmp
}

/// A batch handed to the committer thread stays readable while the next one folds: a
/// repeat of one of its events is a duplicate, a refund of one finds it, and a conflicting
/// reuse of its id is a conflict. Each batch is durable once the next submission (or
/// `wait_durable`) returns, and a writer dropped with a batch in flight finishes it.
#[test]
fn deferred_batches_read_the_batch_in_flight_and_finish_it_on_drop() {
    use ledger_store::{Outcome, Source, Submission};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let line = |json: &str, n: u64| Submission {
        event: ledger_proto::parse_json_line(json).unwrap(),
        source: Source { stream: None, offset: n },
    };
    let plan = r#"{"accountEvent":{"eventId":"a1","teamId":"t1","occurredAt":"2026-04-01T00:00:00Z","planStarted":{"plan":"api_basic","bucketImages":"1000"}}}"#;
    let image = r#"{"imageProcessed":{"eventId":"e1","teamId":"t1","occurredAt":"2026-04-02T00:00:00Z","api":"API_REMOVE_BACKGROUND","images":3}}"#;
    let other = r#"{"imageProcessed":{"eventId":"e1","teamId":"t1","occurredAt":"2026-04-02T00:00:00Z","api":"API_IMAGE_EDITING","images":3}}"#;
    let refund = r#"{"accountEvent":{"eventId":"r1","teamId":"t1","occurredAt":"2026-04-03T00:00:00Z","qualityRefund":{"originalEventId":"e1","reason":"halo"}}}"#;
    let last = r#"{"imageProcessed":{"eventId":"e2","teamId":"t1","occurredAt":"2026-04-04T00:00:00Z","api":"API_REMOVE_BACKGROUND","images":1}}"#;
    {
        let mut ledger = Ledger::open(Store::open(&dir, &Catalog::builtin()).unwrap()).unwrap();
        let first = ledger.submit_batch_deferred(vec![line(plan, 1), line(image, 2)]).unwrap();
        assert_eq!(first.outcomes, vec![Outcome::Appended { seq: 1 }, Outcome::Appended { seq: 2 }]);
        // e1 is in the batch in flight (or just written): found either way.
        let second = ledger.submit_batch_deferred(vec![line(image, 3), line(other, 4), line(refund, 5)]).unwrap();
        assert_eq!(second.outcomes[0], Outcome::Duplicate { seq: 2 });
        assert_eq!(second.outcomes[1], Outcome::Conflict { team: "t1".into(), seq: 2 });
        assert_eq!(second.outcomes[2], Outcome::Appended { seq: 3 });
        ledger.submit_batch_deferred(vec![line(last, 6)]).unwrap();
        // Dropped with the third batch in flight: the drop finishes it.
    }
    let ledger = Ledger::open(Store::open(&dir, &Catalog::builtin()).unwrap()).unwrap();
    for id in ["a1", "e1", "r1", "e2"] {
        assert!(ledger.find(&EventId::new(id).unwrap()).unwrap().is_some(), "{id} is in the ledger");
    }
    drop(ledger);
    let verify = ul(&dir, &["verify"]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
}

/// A clean close moves the index's events in memory to a run on disk, so the next open
/// rebuilds none of them from the segments: after `import` of 10,001 events under a
/// 16,384-event bound (nothing spilled while importing), the index directory holds a
/// run and its manifest; the reopened ledger still finds every event (a second import
/// of the file appends nothing) and `verify` passes.
#[test]
fn a_clean_close_moves_the_index_in_memory_to_disk_and_the_reopened_ledger_finds_every_event() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let file = crate::support::scenarios_dir().join("E4.jsonl");
    let file = file.to_str().unwrap();
    ul_ok(&dir, &["import", "--index-memory-events", "16384", file]);
    let runs: Vec<String> = std::fs::read_dir(dir.join("index"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("run-"))
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let again = crate::support::ul(&dir, &["import", "--index-memory-events", "16384", file]);
    assert!(again.stderr.contains("10001 duplicates"), "{}", again.stderr);
    assert!(ul_ok(&dir, &["verify"]).starts_with("ok:"));
}
