//! Shared helpers: run the binary, drive the ledger in-process from a tiny scenario
//! language, and render outcomes as readable text to compare against.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::{DateTime, Utc};
use ledger_core::TeamId;
use ledger_proto::parse_json_line;
use ledger_store::{Ledger, Outcome, Source, Store, Submission};

pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/scenarios")
}

pub fn slow_tests_enabled() -> bool {
    std::env::var("USAGE_LEDGER_SLOW").is_ok_and(|v| v == "1")
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_usage-ledger"))
}

/// Runs `usage-ledger --data-dir DIR ARGS...` to completion.
pub fn ul(dir: &Path, args: &[&str]) -> Run {
    let out = bin().arg("--data-dir").arg(dir).args(args).stdin(Stdio::null()).output().expect("the binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn ul_ok(dir: &Path, args: &[&str]) -> String {
    let run = ul(dir, args);
    assert_eq!(run.code, 0, "usage-ledger {args:?} failed: {}", run.stderr);
    run.stdout
}

/// Expands a short time: `04-16` = 2026-04-16T00:00:00Z, `04-16T12` adds the hour,
/// `2025-06-01` or a full RFC 3339 instant are taken as they are.
pub fn time(s: &str) -> String {
    if s.ends_with('Z') {
        return s.to_string();
    }
    let (date, hour) = s.split_once('T').unwrap_or((s, "00"));
    let date = if date.len() == 5 { format!("2026-{date}") } else { date.to_string() };
    format!("{date}T{hour:0>2}:00:00Z")
}

/// Turns one scenario line into a JSONL line (or a `close` command).
///
/// ```text
/// [@team] start|change AT PLAN [IMAGES] [POLICY] [#id]
/// [@team] cancel AT [#id]
/// [@team] rb|ie AT IMAGES [sandbox] [#id]          (remove background / image editing)
/// [@team] refund AT ORIGINAL_ID [#id]
/// [@team] buy AT CREDITS AMOUNT [#id]                (legacy credits)
/// [@team] contract AT MONTHS IMAGES_PER_YEAR RB_RATE IE_RATE FEE roll|noroll [FROM:PCT,...] [#id]
/// [@team] app|appchange AT PLAN INTERVAL [SEATS] [#id]  (app subscriptions)
/// [@team] ex|ai AT COUNT [#id]                          (app exports / AI credits)
/// close UNTIL
/// ```
pub enum Step {
    Line(String),
    Close(String),
}

pub fn step(n: usize, line: &str) -> Step {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    let team = match words.first() {
        Some(w) if w.starts_with('@') => words.remove(0).trim_start_matches('@').to_string(),
        _ => "t1".to_string(),
    };
    let id = match words.last() {
        Some(w) if w.starts_with('#') => words.pop().unwrap().trim_start_matches('#').to_string(),
        _ => format!("x{n}"),
    };
    let at = time(words[1]);
    let head = format!(r#""eventId":"{id}","teamId":"{team}","occurredAt":"{at}""#);
    let plan = |w: &[&str]| {
        let images = w.get(3).copied().unwrap_or("0");
        let policy = w.get(4).map(|p| format!(r#","upgradePolicy":"{p}""#)).unwrap_or_default();
        format!(r#"{{"plan":"{}","bucketImages":"{images}"{policy}}}"#, w[2])
    };
    let json = match words[0] {
        "close" => return Step::Close(at),
        "start" => format!(r#"{{"accountEvent":{{{head},"planStarted":{}}}}}"#, plan(&words)),
        "change" => format!(r#"{{"accountEvent":{{{head},"planChanged":{}}}}}"#, plan(&words)),
        "cancel" => format!(r#"{{"accountEvent":{{{head},"planCancelled":{{}}}}}}"#),
        "refund" => format!(
            r#"{{"accountEvent":{{{head},"qualityRefund":{{"originalEventId":"{}","reason":"test"}}}}}}"#,
            words[2]
        ),
        "buy" => format!(
            r#"{{"accountEvent":{{{head},"creditsPurchased":{{"credits":"{}","amount":"{}"}}}}}}"#,
            words[2], words[3]
        ),
        "contract" => {
            let tiers: Vec<String> = words
                .get(8)
                .map(|t| {
                    t.split(',')
                        .map(|tier| {
                            let (from, pct) = tier.split_once(':').expect("tier FROM:PCT");
                            format!(r#"{{"fromImages":"{from}","discountPercent":"{pct}"}}"#)
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                r#"{{"accountEvent":{{{head},"contractSigned":{{"termMonths":{},"committedImagesPerYear":"{}","rateRemoveBackground":"{}","rateImageEditing":"{}","annualFee":"{}","rollover":{},"tiers":[{}]}}}}}}"#,
                words[2],
                words[3],
                words[4],
                words[5],
                words[6],
                words[7] == "roll",
                tiers.join(",")
            )
        }
        kind @ ("app" | "appchange") => {
            let change = if kind == "app" { "planStarted" } else { "planChanged" };
            format!(
                r#"{{"accountEvent":{{{head},"{change}":{{"plan":"{}","billingInterval":"{}","seats":{}}}}}}}"#,
                words[2],
                words[3],
                words.get(4).unwrap_or(&"0")
            )
        }
        api @ ("ex" | "ai") => {
            let api = if api == "ex" { "APP_EXPORT" } else { "APP_AI" };
            format!(r#"{{"imageProcessed":{{{head},"api":"{api}","images":{}}}}}"#, words[2])
        }
        api @ ("rb" | "ie") => {
            let api = if api == "rb" { "API_REMOVE_BACKGROUND" } else { "API_IMAGE_EDITING" };
            let sandbox = words.get(3) == Some(&"sandbox");
            format!(r#"{{"imageProcessed":{{{head},"api":"{api}","images":{},"sandbox":{sandbox}}}}}"#, words[2])
        }
        other => panic!("unknown scenario word {other:?}"),
    };
    Step::Line(json)
}

/// Runs a scenario through the store and through the pure core (`core_path`), asserts
/// both tell the same story, and returns it.
pub fn run_scenario(script: &str) -> String {
    let store = run_scenario_store(script);
    assert_text(&crate::core_path::run_scenario_core(script), &store);
    store
}

/// The unplanned usage a balance lists, a line each, and the total when it lists fewer.
pub fn render_unplanned(out: &mut String, team: &str, exceptions: &ledger_core::report::Exceptions) {
    for u in &exceptions.unplanned {
        writeln!(out, "unplanned {team} {}", u.event_id).unwrap();
    }
    if let Some(total) = exceptions.unplanned_total {
        writeln!(out, "unplanned {team} total={total}").unwrap();
    }
}

/// Runs a scenario through the real import path into a sled store on disk and renders
/// every outcome that is not a plain append, then each team's invoices, alerts and
/// unplanned usage, one line each.
pub fn run_scenario_store(script: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(Store::open(dir.path(), &ledger_core::Catalog::builtin()).unwrap()).unwrap();
    let mut out = String::new();
    let mut teams = std::collections::BTreeSet::new();
    for (n, line) in script.lines().map(str::trim).filter(|l| !l.is_empty()).enumerate() {
        match step(n, line) {
            Step::Close(until) => {
                let report = ledger.close_until(until.parse::<DateTime<Utc>>().unwrap()).unwrap();
                render_settled(&mut out, &report.settled);
            }
            Step::Line(json) => {
                let event = parse_json_line(&json).unwrap_or_else(|e| panic!("{line}: {e}"));
                let id = event.event_id().to_string();
                teams.insert(event.team_id().to_string());
                let sub = Submission { event, source: Source { stream: None, offset: n as u64 } };
                let report = ledger.submit_batch(vec![sub]).unwrap();
                match &report.outcomes[0] {
                    Outcome::Appended { .. } => {}
                    Outcome::Duplicate { .. } => writeln!(out, "duplicate {id}").unwrap(),
                    Outcome::Conflict { .. } => writeln!(out, "conflict {id}").unwrap(),
                    Outcome::Rejected(r) => writeln!(out, "reject {id} {}", r.code).unwrap(),
                    Outcome::Parked => writeln!(out, "parked {id}").unwrap(),
                }
                render_settled(&mut out, &report.settled);
            }
        }
    }
    let store = ledger.store().clone();
    let catalog = store.catalog().unwrap();
    for team in teams {
        for invoice in store.invoices(&team).unwrap() {
            out.push_str(&render_invoice(&invoice));
        }
        for alert in store.alerts(&team).unwrap() {
            let a: serde_json::Value = serde_json::from_str(&alert).unwrap();
            writeln!(
                out,
                "alert {team} {} g{} {}% by {}",
                a["allowance"].as_str().unwrap(),
                a["bucket_generation"],
                a["threshold_percent"],
                a["triggering_event_id"].as_str().unwrap()
            )
            .unwrap();
        }
        let mut state = store.load_team(&catalog, &TeamId::new(team.clone()).unwrap()).unwrap();
        render_unplanned(&mut out, &team, &state.balance(&catalog, None).exceptions);
    }
    out
}

/// Parked refunds a batch settled: `unparked ID` once appended, `reject ID CODE` otherwise.
fn render_settled(out: &mut String, settled: &[(ledger_store::Parked, Outcome)]) {
    for (p, outcome) in settled {
        match outcome {
            Outcome::Rejected(r) => writeln!(out, "reject {} {}", p.event.event_id, r.code).unwrap(),
            _ => writeln!(out, "unparked {}", p.event.event_id).unwrap(),
        }
    }
}

/// `invoice TEAM START total=T v=VERSION | kind amount, ... | forfeited=F` and, when
/// present, the trial allowance and late/refund periods.
pub fn render_invoice(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let lines: Vec<String> = v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let period = l.get("period").map(|p| format!(" ({})", &s(&p["start"])[..10])).unwrap_or_default();
            format!("{} {}x{}={}{period}", s(&l["kind"]), s(&l["quantity"]), s(&l["unit_price"]), s(&l["amount"]))
        })
        .collect();
    let mut out = format!(
        "invoice {} {} total={} v={} | {}",
        s(&v["team_id"]),
        &s(&v["period"]["start"])[..10],
        s(&v["total"]),
        s(&v["price_book_version"]),
        if lines.is_empty() { "-".to_string() } else { lines.join(", ") }
    );
    if let Some(b) = v.get("bucket") {
        write!(out, " | consumed={} forfeited={}", s(&b["consumed"]), s(&b["forfeited"])).unwrap();
    }
    if let Some(a) = v.get("allowances").and_then(|a| a.as_array()) {
        for a in a {
            write!(
                out,
                " | {} {}/{} over={} sandbox={}",
                s(&a["allowance"]),
                s(&a["consumed"]),
                s(&a["value"]),
                s(&a["over_allowance"]),
                a["sandbox_images"]
            )
            .unwrap();
        }
    }
    if let Some(c) = v.get("credits") {
        write!(
            out,
            " | credits in={} bought={} used={} expired={} left={}",
            c["carried_in"], c["purchased"], c["used"], c["expired"], c["balance"]
        )
        .unwrap();
    }
    if let Some(c) = v.get("contract") {
        write!(
            out,
            " | contract m={}/{} allot={} in={} drawn={} over={} out={} forfeited={} ({}) used={}/{}",
            c["month"],
            c["term_months"],
            c["allotment"],
            c["rollover_in"],
            c["drawn"],
            c["overage_images"],
            c["rollover_out"],
            c["forfeited_images"],
            s(&c["forfeited_value"]),
            c["term_used"],
            c["term_commitment"]
        )
        .unwrap();
    }
    if let Some(a) = v.get("app") {
        write!(
            out,
            " | app {} seats={} m={} top-ups in={} bought={} used={} left={}",
            s(&a["billing_interval"]),
            a["seats"],
            a["month"],
            a["top_ups_carried_in"],
            a["top_ups_bought"],
            a["top_ups_used"],
            a["top_ups_left"]
        )
        .unwrap();
    }
    let refunded = &v["usage"]["refunded_images"];
    if refunded.as_u64() != Some(0) {
        write!(out, " | refunded={refunded}").unwrap();
    }
    out.push('\n');
    out
}

/// Asserts `actual` equals `expected` line by line, ignoring indentation.
pub fn assert_text(actual: &str, expected: &str) {
    let norm = |s: &str| s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n");
    let (a, e) = (norm(actual), norm(expected));
    assert!(a == e, "\n--- expected\n{e}\n--- actual\n{a}\n");
}

/// xorshift64*: a deterministic generator for the tests that pick at random (fuzzing,
/// flipped bytes, kill moments), so a failure reproduces from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A working copy of a sled store (opening one writes to it).
pub fn copy_store(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("blobs")).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}
