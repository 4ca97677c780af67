//! The bucket advisor (`usage-ledger advise`): a team's real usage replayed under every
//! plan it could buy, with hand-computed figures.
use crate::support::{assert_text, step, ul, ul_ok, Step};

/// Writes a scenario as a JSONL file, imports it and closes through `until`.
fn ledger_with(script: &str, until: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let lines: Vec<String> = script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(n, l)| match step(n, l) {
            Step::Line(json) => json,
            Step::Close(_) => panic!("close through `until`"),
        })
        .collect();
    let file = tmp.path().join("in.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let dir = tmp.path().join("data");
    ul_ok(&dir, &["import", file.to_str().unwrap()]);
    ul_ok(&dir, &["close", "--until", until]);
    tmp
}

/// Basic 3,000 ($60) with 500, 1,200 and 4,000 removals ($10, $24, $80 at $0.02).
/// A bucket costs its value and overage is billed at the list rate, so a month costs
/// max(bucket, usage): Basic 1,000 = 20 + 24 + 80 = $124 (forfeits 10, overage 4 + 60);
/// 2,000 = 40 + 40 + 80 = $160; 3,000 = $200 (what was invoiced); 4,000 (covers the
/// busiest month) = $240; Plus 1,000 ($100) = $300; partner = 3 × $1,000 commitment.
/// A refunded image and sandbox calls cost nothing on any plan; the open cycle is left out.
#[test]
fn advise_replays_the_last_closed_cycles_under_every_plan_cheapest_first() {
    let tmp = ledger_with(
        "start 02-01 api_basic 3000
         rb 02-10 500
         rb 03-10 1200
         rb 03-11 7 #refunded
         refund 03-12 refunded
         rb 03-13 300 sandbox
         rb 04-10 4000
         rb 05-10 900",
        "2026-05-02T00:00:00Z",
    );
    let dir = tmp.path().join("data");
    assert_text(
        &ul_ok(&dir, &["advise", "--team", "t1"]),
        "Team t1, 3 cycle(s) 2026-02-01 -> 2026-05-01 (catalog 2026-01-01): 5700 billable images, invoiced 200.00
         plan                          total    forfeited      overage  per image
         api_basic 1000               124.00        10.00        64.00     0.0218
         api_basic 2000               160.00        46.00        40.00     0.0281
         api_basic 3000               200.00        86.00        20.00     0.0351
         api_basic 4000               240.00       126.00         0.00     0.0421
         api_plus 1000                300.00       186.00         0.00     0.0526
         api_partner                 3000.00         0.00         0.00     0.5263
         Cheapest: api_basic 1000, 124.00 for these cycles (76.00 less than invoiced).",
    );
    // The last cycle alone: 4,000 images cost $80 on every Basic size up to 4,000; the
    // smallest is listed first among equals.
    let json: serde_json::Value =
        serde_json::from_str(&ul_ok(&dir, &["advise", "--team", "t1", "--months", "1", "--format", "json"])).unwrap();
    assert_eq!(json["period"]["start"], "2026-04-01T00:00:00Z");
    assert_eq!(json["invoiced"], "80.00");
    assert_eq!(json["cheapest"], "api_basic 1000");
    let totals: Vec<&str> = json["options"].as_array().unwrap().iter().map(|o| o["total"].as_str().unwrap()).collect();
    assert_eq!(totals, ["80.00", "80.00", "80.00", "80.00", "100.00", "1000.00"]);
}

#[test]
fn advise_without_a_closed_cycle_says_why_in_one_line() {
    let tmp = ledger_with("start 04-01 api_basic 1000\nrb 04-10 10", "2026-04-20T00:00:00Z");
    let dir = tmp.path().join("data");
    let run = ul(&dir, &["advise", "--team", "t1"]);
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr.trim(), "error: team t1 has no closed cycle to advise from (its first cycle is still open)");
    let run = ul(&dir, &["advise", "--team", "ghost"]);
    assert_eq!(run.stderr.trim(), "error: team ghost has no entries in the ledger");
    // An app subscriber has no API usage to replay under API plans.
    let tmp = ledger_with("@a app 04-01 app_pro monthly\n@a ai 04-02 10", "2026-05-02T00:00:00Z");
    let run = ul(&tmp.path().join("data"), &["advise", "--team", "a"]);
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr.trim(), "error: team a used no API images in its last 1 closed cycle(s): no plan to compare");
}
