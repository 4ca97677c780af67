//! The soak: the service against the real broker while a producer sends a known set
//! (with duplicates and refunds), the service SIGKILLed at random moments and the broker
//! killed and restarted now and then. At the end every event is in the ledger exactly
//! once, every alert is on its topic (repeated ids dropped), every invoice is the one a
//! clean `import` of the same set bills, and `verify` is clean.
//!
//! `USAGE_LEDGER_SOAK_CYCLES` sets the cycles (CI, with `USAGE_LEDGER_SLOW=1`: 25).
use std::time::Duration;

use crate::kafka::{drain_until, service, Broker};
use crate::support::{slow_tests_enabled, ul, ul_ok, Rng};

fn cycles() -> usize {
    let default = if slow_tests_enabled() { 25 } else { 3 };
    std::env::var("USAGE_LEDGER_SOAK_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The generated load, with a refund of every 150th billed image and every 97th line
/// sent twice.
fn known_set(dir: &std::path::Path, teams: u32) -> Vec<String> {
    let file = dir.join("generated.jsonl");
    let (teams, f) = (teams.to_string(), file.to_str().unwrap());
    ul_ok(dir, &["generate", "--teams", &teams, "--events", "20000", "--seed", "23", "--out", f]);
    let lines: Vec<String> = std::fs::read_to_string(&file).unwrap().lines().map(String::from).collect();
    let trial: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("api_free_trial"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["accountEvent"]["teamId"].as_str().unwrap().to_string())
        .collect();
    let mut set = Vec::new();
    for (k, line) in lines.iter().enumerate() {
        set.push(line.clone());
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(image) = v.get("imageProcessed") {
            let team = image["teamId"].as_str().unwrap();
            if k % 150 == 0 && image["sandbox"] != true && !trial.iter().any(|t| t == team) {
                set.push(format!(
                    r#"{{"accountEvent":{{"eventId":"soak-refund-{k}","teamId":"{team}","occurredAt":"{}","qualityRefund":{{"originalEventId":"{}","reason":"soak"}}}}}}"#,
                    image["occurredAt"].as_str().unwrap(),
                    image["eventId"].as_str().unwrap()
                ));
            }
        }
        if k % 97 == 0 {
            set.push(line.clone());
        }
    }
    set
}

#[test]
fn soak_kills_the_service_and_the_broker_and_bills_like_a_clean_import() {
    let tmp = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(tmp.path());
    let teams = 20;
    let set = known_set(tmp.path(), teams);
    let file = tmp.path().join("set.jsonl");
    std::fs::write(&file, set.join("\n") + "\n").unwrap();
    // What a clean import of the set holds: the events the soaked ledger must hold.
    let expected = tmp.path().join("expected");
    ul_ok(&expected, &["import", file.to_str().unwrap()]);
    let verify = ul_ok(&expected, &["verify"]);
    let events: usize = verify.split(", ").nth(2).and_then(|s| s.split(' ').next()).unwrap().parse().unwrap();

    let dir = tmp.path().join("soaked");
    let n = cycles();
    let chunk = set.len().div_ceil(n);
    let mut rng = Rng(0x50a6);
    for (i, part) in set.chunks(chunk).enumerate() {
        let part_file = tmp.path().join(format!("part-{i}.jsonl"));
        std::fs::write(&part_file, part.join("\n") + "\n").unwrap();
        ul_ok(tmp.path(), &["produce", "--brokers", &broker.address, part_file.to_str().unwrap()]);
        // Positions live in the ledger, so each run may join a group of its own: the
        // broker never waits out the session of a member killed a moment ago.
        let group = format!("soak-{i}");
        let mut child = service(&dir, &broker.address, &["--batch-events-max", "400", "--group", &group]);
        std::thread::sleep(Duration::from_millis(300 + rng.next() % 2200));
        child.kill().unwrap(); // SIGKILL, at a random moment
        child.wait().unwrap();
        if i % 6 == 5 {
            broker.restart(); // kill -9 of the broker, and back on its data
        }
    }
    let verify = drain_until(&dir, &broker.address, events);
    assert!(verify.starts_with(&format!("ok: {teams} teams")), "every event once, chains intact: {verify}");
    // Invoices as a clean import bills them, alerts on the topic exactly the stored ones.
    let generated = tmp.path().join("set-again.jsonl");
    std::fs::copy(&file, &generated).unwrap();
    crate::kafka::assert_bills_like_import(&dir, &generated, teams, Some(&broker.address));
    let replay = ul(&dir, &["replay"]);
    assert!(replay.stderr.contains(" 0 stored projections differed"), "{}", replay.stderr);
    eprintln!("soak: {n} cycles, {} records sent, {events} events in the ledger", set.len());
}
