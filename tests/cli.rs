//! The command line as an operator meets it: bad input refused line by line with the
//! rest imported, tampering caught by `verify`, replay digests stable across runs and
//! stores, and one-line errors with a non-zero exit.
use std::io::Write;
use std::process::Stdio;

use crate::support::{bin, scenarios_dir, slow_tests_enabled, ul, ul_ok};

const GOOD_START: &str = r#"{"accountEvent":{"eventId":"a1","teamId":"t1","occurredAt":"2026-04-01T00:00:00Z","planStarted":{"plan":"api_basic","bucketImages":"1000"}}}"#;

fn image(id: &str, extra: &str) -> String {
    format!(
        r#"{{"imageProcessed":{{"eventId":"{id}","teamId":"t1","occurredAt":"2026-04-02T00:00:00Z","api":"API_REMOVE_BACKGROUND","images":1{extra}}}}}"#
    )
}

#[test]
fn malformed_lines_are_refused_with_a_reason_and_the_rest_imported() {
    let tmp = tempfile::tempdir().unwrap();
    let long_id = "x".repeat(129);
    let lines = [
        GOOD_START.to_string(),
        image("ok-1", ""),
        "{this is not json".to_string(),
        image("bad-api", "").replace("API_REMOVE_BACKGROUND", "API_TELEPORT"),
        image("zero", "").replace(r#""images":1"#, r#""images":0"#),
        image("no-time", "").replace(r#""occurredAt":"2026-04-02T00:00:00Z","#, ""),
        image(&long_id, ""),
        image("ok-2", ""),
    ];
    let file = tmp.path().join("mixed.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let dir = tmp.path().join("data");
    let run = ul(&dir, &["import", file.to_str().unwrap()]);
    assert_eq!(run.code, 2, "partial import exits 2: {}", run.stderr);
    for (line, reason) in [
        (3, "not valid JSON"),
        (4, "unknown variant `API_TELEPORT`"),
        (5, "images must be >= 1"),
        (6, "occurred_at is missing"),
        (7, "event_id is 129 bytes, more than 128"),
    ] {
        assert!(
            run.stderr.contains(&format!("line {line}: ")) && run.stderr.contains(reason),
            "line {line} ({reason}) in:\n{}",
            run.stderr
        );
    }
    assert!(run.stderr.lines().last().unwrap().starts_with("error: 5 of 8 lines were rejected"), "{}", run.stderr);
    let balance: serde_json::Value = serde_json::from_str(&ul_ok(&dir, &["balance", "--team", "t1"])).unwrap();
    assert_eq!(balance["allowances"][0]["consumed"], "0.04", "the two good image lines were imported");
}

#[test]
fn rule_refusals_name_the_line_team_and_event() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let refund = r#"{"accountEvent":{"eventId":"r1","teamId":"t1","occurredAt":"2026-04-03T00:00:00Z","qualityRefund":{"originalEventId":"ghost"}}}"#;
    let again = r#"{"accountEvent":{"eventId":"a2","teamId":"t1","occurredAt":"2026-04-04T00:00:00Z","planStarted":{"plan":"api_plus","bucketImages":"1000"}}}"#;
    let file = tmp.path().join("refund.jsonl");
    std::fs::write(&file, format!("{GOOD_START}\n{refund}\n{again}\n")).unwrap();
    let run = ul(&dir, &["import", file.to_str().unwrap()]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("line 3 (team t1, event a2): plan_rule: PlanStarted while a plan is active"),
        "{}",
        run.stderr
    );
    // The refund of an event not in the ledger waits for it; `close` gives it up, naming it.
    assert!(run.stderr.contains("1 refund(s) wait for the image event they name"), "{}", run.stderr);
    let close = ul(&dir, &["close", "--until", "2026-04-05T00:00:00Z"]);
    assert_eq!(close.code, 0, "{}", close.stderr);
    assert!(
        close.stderr.contains(
            "team t1, event r1 (line or offset 2): refund_unknown_event: no image event ghost arrived within 24 h"
        ),
        "{}",
        close.stderr
    );
}

/// A refund imported before its image waits in the store, across processes, and applies
/// when a later import brings the image.
#[test]
fn a_parked_refund_survives_the_process_and_applies_when_its_image_comes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let refund = r#"{"accountEvent":{"eventId":"r1","teamId":"t1","occurredAt":"2026-04-03T00:00:00Z","qualityRefund":{"originalEventId":"e9"}}}"#;
    let (first, second) = (tmp.path().join("first.jsonl"), tmp.path().join("second.jsonl"));
    std::fs::write(&first, format!("{GOOD_START}\n{refund}\n")).unwrap();
    std::fs::write(&second, image("e9", "")).unwrap();
    let run = ul(&dir, &["import", first.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("1 refund(s) wait"), "{}", run.stderr);
    let run = ul(&dir, &["import", second.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("wait"), "{}", run.stderr);
    let draft: serde_json::Value =
        serde_json::from_str(&ul_ok(&dir, &["invoices", "--team", "t1", "--draft"])).unwrap();
    assert_eq!(draft[0]["usage"]["refunded_images"], 1, "{draft}");
    assert_eq!(draft[0]["bucket"]["consumed"], "0.00", "{draft}");
    assert!(ul_ok(&dir, &["verify"]).starts_with("ok: 1 teams, 3 entries"));
}

#[test]
fn import_reads_stdin_and_prints_csv_invoices() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut child = bin()
        .arg("--data-dir")
        .arg(&dir)
        .args(["import", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(std::fs::read(scenarios_dir().join("E2.jsonl")).unwrap().as_slice()).unwrap();
    assert!(child.wait().unwrap().success());
    ul_ok(&dir, &["close", "--until", "2026-05-02T00:00:00Z"]);
    let csv = ul_ok(&dir, &["invoices", "--team", "t1", "--format", "csv"]);
    let rows: Vec<&str> = csv.lines().collect();
    assert!(rows[0].starts_with("team_id,period_start,period_end,status,price_book_version,kind,"));
    assert_eq!(
        rows[1],
        r#"t1,2026-04-01T00:00:00Z,2026-05-01T00:00:00Z,final,2026-01-01,bucket_fee,"Basic bucket, 2000 images",1,40.00,40.00,,"#
    );
    assert_eq!(rows[2], "t1,2026-04-01T00:00:00Z,2026-05-01T00:00:00Z,final,2026-01-01,total,,,,40.00,,");
}

#[test]
fn verify_names_the_team_and_sequence_of_a_flipped_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    ul_ok(&dir, &["import", scenarios_dir().join("E1.jsonl").to_str().unwrap()]);
    assert!(ul_ok(&dir, &["verify"]).starts_with("ok: 1 teams, 1001 entries, 1001 index records"));
    ledger_store::tamper_entry(&dir, "t1", 417).unwrap();
    let run = ul(&dir, &["verify"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("team t1 seq 417: hash chain broken"), "{}", run.stderr);
    assert!(run.stderr.lines().last().unwrap().starts_with("error: "), "{}", run.stderr);
    // `replay` folds every entry from the first and refuses the broken chain. (A writer
    // opens from the team's checkpoint at seq 1001 and reads no entry before it: its open
    // is bounded by state, and `verify`, like every restore, checks the history.)
    let again = ul(&dir, &["replay"]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("team t1 seq 417: hash chain broken"), "{}", again.stderr);
}

/// A stored invoice that is not what the entries fold to: `verify` says so, a writer
/// refuses to build on the ledger (one line naming the team and period), and `replay`
/// rebuilds the projections from the entries, after which the ledger is served again.
#[test]
fn a_writer_refuses_a_ledger_whose_stored_invoice_differs_until_replay_rebuilds_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let file = scenarios_dir().join("E1.jsonl");
    ul_ok(&dir, &["import", file.to_str().unwrap()]);
    ul_ok(&dir, &["close", "--until", "2026-05-02T00:00:00Z"]);
    ledger_store::tamper_invoice(&dir, "t1").unwrap();
    let verify = ul(&dir, &["verify"]);
    assert_eq!(verify.code, 1, "{}", verify.stderr);
    assert!(verify.stderr.contains("1 stored alert(s) or invoice(s) differ"), "{}", verify.stderr);
    let again = ul(&dir, &["import", file.to_str().unwrap()]);
    assert_eq!(again.code, 1, "{}", again.stderr);
    let line = again.stderr.lines().last().unwrap();
    assert!(line.starts_with("error: ") && line.contains("(first: team t1 invoice 2026-04-01"), "{}", again.stderr);
    let replay = ul(&dir, &["replay"]);
    assert!(replay.stderr.contains(" 1 stored projections differed"), "{}", replay.stderr);
    assert!(ul_ok(&dir, &["verify"]).starts_with("ok: 1 teams"));
    ul_ok(&dir, &["import", file.to_str().unwrap()]);
}

#[test]
fn errors_are_one_line_and_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere");
    for args in [vec!["invoices", "--team", "t1"], vec!["verify"], vec!["replay"]] {
        let run = ul(&missing, &args);
        assert_eq!(run.code, 1, "{args:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(run.stderr.starts_with("error: no ledger at"), "{}", run.stderr);
    }
    let run = ul(&missing, &["import", "/no/such/file.jsonl"]);
    assert_eq!((run.code, run.stderr.lines().count()), (1, 1), "{}", run.stderr);
    let dir = tmp.path().join("data");
    ul_ok(&dir, &["import", scenarios_dir().join("E7.jsonl").to_str().unwrap()]);
    let run = ul(&dir, &["balance", "--team", "bad/team"]);
    assert_eq!((run.code, run.stderr.lines().count()), (1, 1), "{}", run.stderr);
    assert!(run.stderr.contains("character outside"), "{}", run.stderr);
    assert_ne!(ul(&dir, &["close", "--until", "yesterday"]).code, 0);
}

#[test]
fn replay_digest_is_stable_across_runs_and_stores() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("load.jsonl");
    let (teams, events) = if slow_tests_enabled() { ("1000", "1000000") } else { ("100", "50000") };
    ul_ok(tmp.path(), &["generate", "--teams", teams, "--events", events, "--out", file.to_str().unwrap()]);
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    ul_ok(&one, &["import", file.to_str().unwrap()]);
    ul_ok(&two, &["import", "--batch-events-max", "5000", file.to_str().unwrap()]);
    let first = ul_ok(&one, &["replay"]);
    assert!(first.starts_with("digest: ") && first.trim().len() == "digest: ".len() + 64, "{first}");
    assert_eq!(ul_ok(&one, &["replay"]), first, "same digest twice");
    assert_eq!(ul_ok(&two, &["replay"]), first, "same digest on a second store built from the same file");
    let invoices = ul_ok(&one, &["invoices", "--team", "team-0001"]);
    assert!(invoices.contains(r#""status": "final""#), "the generated May traffic closed April: {invoices}");
}

#[test]
fn a_partitioned_data_dir_reads_as_one_ledger_and_keeps_one_owner_per_team() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let other = r#"{"accountEvent":{"eventId":"b1","teamId":"t2","occurredAt":"2026-04-01T00:00:00Z","planStarted":{"plan":"api_plus","bucketImages":"1000"}}}"#;
    let (f1, f2) = (tmp.path().join("t1.jsonl"), tmp.path().join("t2.jsonl"));
    std::fs::write(&f1, format!("{GOOD_START}\n{}\n", image("i1", ""))).unwrap();
    std::fs::write(&f2, format!("{other}\n")).unwrap();
    // The service's layout: one ledger per input partition number.
    ul_ok(&dir.join("partitions/0000"), &["import", f1.to_str().unwrap()]);
    ul_ok(&dir.join("partitions/0003"), &["import", f2.to_str().unwrap()]);
    assert!(ul_ok(&dir, &["verify"]).starts_with("ok: 2 teams, 3 entries, 3 index records"));
    let balance: serde_json::Value = serde_json::from_str(&ul_ok(&dir, &["balance", "--team", "t2"])).unwrap();
    assert_eq!(balance["allowances"][0]["value"], "100.00", "Plus: 1,000 images at $0.10");
    ul_ok(&dir, &["close", "--until", "2026-05-02T00:00:00Z"]);
    let invoices: serde_json::Value = serde_json::from_str(&ul_ok(&dir, &["invoices", "--team", "t1"])).unwrap();
    assert_eq!(invoices.as_array().unwrap().len(), 1);
    assert!(ul_ok(&dir, &["replay"]).starts_with("digest: "));

    let refused = ul(&dir, &["import", f1.to_str().unwrap()]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("per-partition ledgers"), "{}", refused.stderr);
    let single = tmp.path().join("single");
    ul_ok(&single, &["import", f1.to_str().unwrap()]);
    let refused = ul(&single, &["run", "--brokers", "127.0.0.1:1"]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("holds a ledger written by `import`"), "{}", refused.stderr);

    // A team in two partitions' ledgers is a fault: each team has one owner.
    ul_ok(&dir.join("partitions/0001"), &["import", f2.to_str().unwrap()]);
    let verify = ul(&dir, &["verify"]);
    assert_eq!(verify.code, 1);
    assert!(verify.stderr.contains("team t2: entries in two ledgers"), "{}", verify.stderr);
}

/// `generate --months N` spreads the events from April 2026 over N months (both
/// profiles), so every month but the last closes on import; without it, April–May.
#[test]
fn generate_spreads_events_over_the_months_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let span = |args: &[&str]| {
        let file = tmp.path().join("months.jsonl");
        let mut all = vec!["generate", "--teams", "20", "--events", "5000", "--out", file.to_str().unwrap()];
        all.extend_from_slice(args);
        ul_ok(tmp.path(), &all);
        let months: std::collections::BTreeSet<String> = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .map(|l| l.split(r#""occurredAt":""#).nth(1).unwrap()[..7].to_string())
            .collect();
        months.into_iter().collect::<Vec<_>>().join(",")
    };
    assert_eq!(span(&[]), "2026-04,2026-05");
    assert_eq!(span(&["--months", "4"]), "2026-04,2026-05,2026-06,2026-07");
    assert_eq!(span(&["--months", "3", "--profile", "realistic"]), "2026-04,2026-05,2026-06");
    let run = ul(tmp.path(), &["generate", "--months", "0"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[test]
fn replay_digest_does_not_depend_on_how_teams_are_spread_over_ledgers() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("load.jsonl");
    ul_ok(tmp.path(), &["generate", "--teams", "12", "--events", "3000", "--out", file.to_str().unwrap()]);
    let text = std::fs::read_to_string(&file).unwrap();
    let (one, spread) = (tmp.path().join("one"), tmp.path().join("spread"));
    ul_ok(&one, &["import", file.to_str().unwrap()]);
    // Each team into its own partition's ledger, by a hash of the team id.
    let mut parts: std::collections::BTreeMap<usize, String> = Default::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let body = v.as_object().unwrap().values().next().unwrap();
        let team = body["teamId"].as_str().unwrap();
        let p = team.bytes().map(usize::from).sum::<usize>() % 4;
        parts.entry(p).or_default().push_str(&format!("{line}\n"));
    }
    for (p, lines) in &parts {
        let f = tmp.path().join(format!("p{p}.jsonl"));
        std::fs::write(&f, lines).unwrap();
        ul_ok(&spread.join(format!("partitions/{p:04}")), &["import", f.to_str().unwrap()]);
    }
    for dir in [&one, &spread] {
        ul_ok(dir, &["close", "--until", "2030-01-01T00:00:00Z", "--allow-future"]);
    }
    assert_eq!(parts.len(), 4);
    let digest = ul_ok(&one, &["replay"]);
    assert_eq!(digest, ul_ok(&spread, &["replay"]));
    assert!(ul(&one, &["replay"]).stderr.contains("12 teams"));
}

#[test]
fn the_eighteen_month_history_replays_byte_for_byte() {
    use crate::support::{step, Step};
    let tmp = tempfile::tempdir().unwrap();
    let (mut lines, mut until) = (Vec::new(), String::new());
    for (n, l) in crate::rules::HISTORY.lines().map(str::trim).filter(|l| !l.is_empty()).enumerate() {
        match step(n, l) {
            Step::Line(json) => lines.push(json),
            Step::Close(at) => until = at,
        }
    }
    let file = tmp.path().join("history.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let dir = tmp.path().join("data");
    ul_ok(&dir, &["import", file.to_str().unwrap()]);
    ul_ok(&dir, &["close", "--until", &until]);
    let before: Vec<String> = ["acme", "hobby"].iter().map(|t| ul_ok(&dir, &["invoices", "--team", t])).collect();
    assert!(
        before[0].contains(r#""kind": "credits_expired""#)
            && before[0].contains(r#""price_book_version": "2024-10-01""#)
    );
    let replay = ul(&dir, &["replay"]);
    assert!(replay.stderr.contains("0 stored projections differed"), "{}", replay.stderr);
    let after: Vec<String> = ["acme", "hobby"].iter().map(|t| ul_ok(&dir, &["invoices", "--team", t])).collect();
    assert_eq!(before, after, "replay rebuilds the same bytes");
    assert_eq!(replay.stdout, ul(&dir, &["replay"]).stdout, "and the same digest every time");
    assert!(ul_ok(&dir, &["verify"]).starts_with("ok: 2 teams"));
}

/// The README's sample traffic (`demo`, the in-process form of `run --demo`): every team
/// ends with an April invoice, the figures it prints are the stored invoices', and the
/// ledger it leaves verifies and replays to the same projections.
#[test]
fn the_demo_bills_every_team_and_leaves_a_ledger_that_replays() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = ul_ok(&dir, &["demo"]);
    for team in ["acme-shop", "studio-north", "hobby-dev", "pixel-app", "bigco"] {
        let invoices: serde_json::Value = serde_json::from_str(&ul_ok(&dir, &["invoices", "--team", team])).unwrap();
        let total = invoices[0]["total"].as_str().unwrap_or_else(|| panic!("{team} has an invoice"));
        let printed = out.lines().find(|l| l.trim_start().starts_with(&format!("{team} "))).unwrap();
        assert!(printed.contains(&format!("total ${total:>7}")), "{printed} vs {total}");
    }
    assert!(out.contains("ALERT   bigco         allotment 100% reached"), "{out}");
    assert!(out.contains("ALERT   pixel-app     exports 80% reached"), "{out}");
    assert!(ul_ok(&dir, &["verify"]).starts_with("ok: 5 teams"));
    let replay = ul(&dir, &["replay"]);
    assert!(replay.stderr.contains("0 stored projections differed"), "{}", replay.stderr);
}

#[test]
fn a_byte_order_mark_at_the_start_of_a_file_is_not_part_of_its_first_line() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("bom.jsonl");
    std::fs::write(&file, format!("\u{feff}{GOOD_START}\n{}\n", image("ok-1", ""))).unwrap();
    let dir = tmp.path().join("data");
    ul_ok(&dir, &["import", file.to_str().unwrap()]);
    let balance: serde_json::Value = serde_json::from_str(&ul_ok(&dir, &["balance", "--team", "t1"])).unwrap();
    assert_eq!(balance["allowances"][0]["consumed"], "0.02", "the plan (first line) and the image: {balance}");
    // Anywhere else the mark is the line's own bytes, refused as before.
    let later = tmp.path().join("later.jsonl");
    std::fs::write(&later, format!("\n\u{feff}{}\n", image("ok-2", ""))).unwrap();
    let run = ul(&dir, &["import", later.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("line 2: undecodable"), "{}", run.stderr);
}
