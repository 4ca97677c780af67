//! Property tests (proptest) over random small workloads, each run through the real
//! import path into sled on disk:
//! (a) shuffling events inside an open cycle changes no invoice byte (the `ledger`
//!     reference aside: it names the ledger prefix, and another order is another ledger).
//!     Image events move freely; account events (plans and refunds) keep their relative
//!     order, as they do on billing.accounts.v1 (keyed by team), so a refund can come
//!     before the image it refunds (it waits for it);
//! (b) an invoice total is the sum of its lines, a bucket's value is the usage it
//!     covered plus its forfeit, and a contract month's allotment is what was drawn,
//!     rolled over or forfeited;
//! (c) `replay` rebuilds the live projections byte for byte;
//! (d) importing the same file twice changes nothing;
//! (e) the usage series, one walk over the cycle, states at each instant what the
//!     balance at that instant states (each folded from scratch).
use std::path::Path;

use chrono::{DateTime, Utc};
use ledger_core::Catalog;
use ledger_proto::parse_json_line;
use ledger_store::{Ledger, Outcome, Source, Store, Submission};
use proptest::prelude::*;
use rust_decimal::Decimal;

use crate::support::{step, Step};

/// An enterprise contract whose allotment (16,666 images in April) and volume tier
/// (10 % off past 30,000 images) the scaled-up usage of a workload can cross.
const CONTRACT: &str = "contract 04-01 12 200000 0.015 0.08 2400.00 roll 30000:10";

/// An app subscription: its usage is exports and AI credits, with a top-up.
const APP: &str = "app 04-01 app_pro monthly";

/// One team's April: a plan, maybe a change, usage, and refunds of some of it.
fn team_script(team: usize) -> impl Strategy<Value = Vec<String>> {
    let plan = prop_oneof![
        (1u64..6).prop_map(|n| format!("api_basic {}", n * 1000)),
        (1u64..3).prop_map(|n| format!("api_plus {}", n * 1000)),
        Just("api_partner".to_string()),
        Just("api_free_trial".to_string()),
        Just(CONTRACT.to_string()),
        Just(APP.to_string()),
    ];
    let change = proptest::option::of((2u32..29, 1u64..8, any::<bool>()));
    let usage = proptest::collection::vec((1u32..30, 0u32..24, any::<bool>(), 1u32..400, 0u8..10), 1..40);
    let refunds = proptest::collection::vec(any::<prop::sample::Index>(), 0..3);
    (plan, change, usage, refunds).prop_map(move |(plan, change, usage, refunds)| {
        let contract = plan == CONTRACT;
        let app = plan == APP;
        let mut lines = if contract || app {
            vec![format!("@t{team} {plan} #t{team}-start")]
        } else {
            vec![format!("@t{team} start 04-01 {plan} #t{team}-start")]
        };
        if let (Some((day, n, diff)), true) = (change, plan.starts_with("api_basic")) {
            let policy = if diff { " difference_prorated" } else { "" };
            lines.push(format!("@t{team} change 04-{day:02}T06 api_basic {}{policy} #t{team}-change", n * 1000));
        }
        let mut billed = Vec::new();
        for (i, (day, hour, edit, images, sandbox)) in usage.into_iter().enumerate() {
            let api = match (app, edit) {
                (true, true) => "ai",
                (true, false) => "ex",
                (false, true) => "ie",
                (false, false) => "rb",
            };
            let sandbox = if sandbox == 0 { " sandbox" } else { "" };
            let images = if contract { images * 100 } else { images };
            lines.push(format!("@t{team} {api} 04-{day:02}T{hour:02} {images}{sandbox} #t{team}-u{i}"));
            if sandbox.is_empty() {
                billed.push(format!("t{team}-u{i}"));
            }
        }
        if app {
            lines.push(format!("@t{team} buy 04-15T12 50 2.50 #t{team}-top-up"));
        }
        if !billed.is_empty() && !plan.starts_with("api_free_trial") && !app {
            let mut refunded: Vec<&String> = refunds.iter().map(|ix| ix.get(&billed)).collect();
            refunded.dedup();
            for (k, id) in refunded.into_iter().enumerate() {
                lines.push(format!("@t{team} refund 04-30T12 {id} #t{team}-refund{k}"));
            }
        }
        lines
    })
}

fn workload() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(any::<u8>(), 1..4).prop_flat_map(|teams| {
        let scripts: Vec<_> = (0..teams.len()).map(team_script).collect();
        scripts.prop_map(|s| s.concat())
    })
}

fn jsonl(script: &[String]) -> Vec<String> {
    script
        .iter()
        .enumerate()
        .map(|(n, l)| match step(n, l) {
            Step::Line(json) => json,
            Step::Close(_) => unreachable!("no closes in workloads"),
        })
        .collect()
}

fn open(dir: &Path) -> Ledger {
    Ledger::open(Store::open(dir, &Catalog::builtin()).unwrap()).unwrap()
}

/// Imports the lines one batch each; returns every outcome, parked refunds' settlements
/// in place of their `Parked`.
fn import(ledger: &mut Ledger, lines: &[String]) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for (n, l) in lines.iter().enumerate() {
        let sub = Submission { event: parse_json_line(l).unwrap(), source: Source { stream: None, offset: n as u64 } };
        let report = ledger.submit_batch(vec![sub]).unwrap();
        outcomes.extend(report.outcomes.into_iter().filter(|o| *o != Outcome::Parked));
        outcomes.extend(report.settled.into_iter().map(|(_, o)| o));
    }
    outcomes
}

fn close(ledger: &mut Ledger) {
    ledger.close_until("2026-05-02T00:00:00Z".parse::<DateTime<Utc>>().unwrap()).unwrap();
}

fn projections(store: &Store) -> Vec<String> {
    (0..4)
        .flat_map(|t| [store.invoices(&format!("t{t}")).unwrap(), store.alerts(&format!("t{t}")).unwrap()].concat())
        .collect()
}

fn invoices_without_ledger_ref(store: &Store) -> Vec<serde_json::Value> {
    (0..4)
        .flat_map(|t| store.invoices(&format!("t{t}")).unwrap())
        .map(|json| {
            let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
            v.as_object_mut().unwrap().remove("ledger");
            v
        })
        .collect()
}

fn dec(v: &serde_json::Value) -> Decimal {
    v.as_str().unwrap().parse().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_shuffle_inside_an_open_cycle_changes_no_invoice_figure(script in workload(), seed in any::<u64>()) {
        let lines = jsonl(&script);
        // Shuffle the image events, then deal the account events back in at random places,
        // in their original relative order.
        let (mut shuffled, plan_changes): (Vec<String>, Vec<String>) =
            lines.iter().cloned().partition(|l| l.contains("imageProcessed"));
        let mut state = seed | 1;
        let mut next = move |n: usize| {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            (state % n as u64) as usize
        };
        for i in (1..shuffled.len()).rev() {
            let j = next(i + 1);
            shuffled.swap(i, j);
        }
        let mut at = 0;
        for change in plan_changes {
            at += next(shuffled.len() - at + 1);
            shuffled.insert(at, change);
            at += 1;
        }
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut la, mut lb) = (open(a.path()), open(b.path()));
        let outcomes_a = import(&mut la, &lines);
        let outcomes_b = import(&mut lb, &shuffled);
        prop_assert!(outcomes_a.iter().chain(&outcomes_b).all(|o| matches!(o, Outcome::Appended { .. })), "{outcomes_a:?} {outcomes_b:?}");
        close(&mut la);
        close(&mut lb);
        let (ia, ib) = (invoices_without_ledger_ref(la.store()), invoices_without_ledger_ref(lb.store()));
        prop_assert!(!ia.is_empty());
        prop_assert_eq!(serde_json::to_string_pretty(&ia).unwrap(), serde_json::to_string_pretty(&ib).unwrap());
    }

    #[test]
    fn totals_are_line_sums_and_buckets_balance(script in workload()) {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = open(dir.path());
        import(&mut ledger, &jsonl(&script));
        close(&mut ledger);
        let store = ledger.store();
        for t in 0..4 {
            for json in store.invoices(&format!("t{t}")).unwrap() {
                let v: serde_json::Value = serde_json::from_str(&json).unwrap();
                let sum: Decimal = v["lines"].as_array().unwrap().iter().map(|l| dec(&l["amount"])).sum();
                prop_assert_eq!(sum, dec(&v["total"]));
                if let Some(b) = v.get("bucket") {
                    let covered = dec(&b["consumed"]) - dec(&b["overage"]);
                    prop_assert_eq!(covered + dec(&b["forfeited"]), dec(&b["value"]), "{}", json);
                    prop_assert!(dec(&b["forfeited"]) >= Decimal::ZERO && dec(&b["overage"]) >= Decimal::ZERO);
                }
                if let Some(c) = v.get("contract") {
                    let n = |k: &str| c[k].as_u64().unwrap();
                    prop_assert_eq!(n("drawn") + n("overage_images"), v["usage"]["billable_images"].as_u64().unwrap());
                    prop_assert_eq!(n("allotment") + n("rollover_in"), n("drawn") + n("rollover_out") + n("forfeited_images"));
                }
            }
        }
    }

    #[test]
    fn replay_rebuilds_the_live_projections_byte_for_byte(script in workload()) {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = open(dir.path());
        import(&mut ledger, &jsonl(&script));
        close(&mut ledger);
        let store = ledger.store();
        let live = projections(store);
        prop_assert!(!live.is_empty());
        let report = store.replay(&store.catalog().unwrap()).unwrap();
        prop_assert_eq!(report.mismatched, 0);
        prop_assert_eq!(projections(store), live);
    }

    #[test]
    fn importing_the_same_file_twice_changes_nothing(script in workload()) {
        let dir = tempfile::tempdir().unwrap();
        let lines = jsonl(&script);
        let mut ledger = open(dir.path());
        import(&mut ledger, &lines);
        let before = (projections(ledger.store()), ledger.store().verify().unwrap());
        drop(ledger);
        // A second run of the same file, in a fresh process-like open of the store.
        let mut ledger = open(dir.path());
        let again = import(&mut ledger, &lines);
        prop_assert!(again.iter().all(|o| matches!(o, Outcome::Duplicate { .. })), "{again:?}");
        let after = (projections(ledger.store()), ledger.store().verify().unwrap());
        prop_assert_eq!(before, after);
    }

    #[test]
    fn the_usage_series_says_what_the_balance_at_each_instant_says(script in workload(), points in 2u32..40) {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = open(dir.path());
        import(&mut ledger, &jsonl(&script));
        let store = ledger.store();
        for t in 0..4 {
            let Ok(team) = ledger_core::TeamId::new(format!("t{t}")) else { continue };
            if !store.has_team(team.as_str()).unwrap() {
                continue;
            }
            if let Err(why) = series_agrees(store, &team, None, points) {
                prop_assert!(false, "{}", why);
            }
        }
    }
}

/// Whether the team's usage series at `at` states at each of its instants what the
/// balance at that instant states (each folded from scratch): each meter's consumption,
/// and its value at the last instant.
fn series_agrees(
    store: &Store,
    team: &ledger_core::TeamId,
    at: Option<DateTime<Utc>>,
    points: u32,
) -> Result<(), String> {
    let catalog = Catalog::builtin();
    let series =
        serde_json::to_value(store.load_team(&catalog, team).unwrap().usage_series(&catalog, at, points)).unwrap();
    let meters = series["meters"].as_array().unwrap();
    if meters.is_empty() {
        return Err(format!("no meters: {series}"));
    }
    for (i, point) in meters[0]["points"].as_array().unwrap().iter().enumerate() {
        let t: DateTime<Utc> = point["at"].as_str().unwrap().parse().unwrap();
        let balance =
            serde_json::to_value(store.load_team(&catalog, team).unwrap().balance(&catalog, Some(t))).unwrap();
        for meter in meters {
            let row = balance["allowances"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["allowance"] == meter["allowance"] && a["generation"] == meter["generation"])
                .ok_or_else(|| format!("the balance at {t} lists no {meter}"))?;
            if row["consumed"] != meter["points"][i]["consumed"] {
                return Err(format!("{meter} at {t}: the balance says {}", row["consumed"]));
            }
            // A meter's value is the one at the series' last instant.
            if i + 1 == meter["points"].as_array().unwrap().len() && row["value"] != meter["value"] {
                return Err(format!("{meter} at {t}: the balance's value is {}", row["value"]));
            }
        }
    }
    Ok(())
}

/// Legacy credits (the walk starts again at each purchase): two purchases inside one
/// cycle, usage around them, and in a later cycle the credits' expiry (2025-04-02).
#[test]
fn the_usage_series_agrees_with_the_balance_across_credit_purchases_and_their_expiry() {
    let script = [
        "start 2025-01-05 api_credits",
        "rb 2025-01-05T06 30",
        "buy 2025-01-09 200 20.00",
        "ie 2025-01-12 150",
        "rb 2025-01-20 40",
        "buy 2025-01-22T12 100 10.00",
        "rb 2025-01-25 90",
        "ie 2025-02-01 20",
        "rb 2025-03-20 60",
        "ie 2025-04-01 50",
        "rb 2025-04-03 70",
    ];
    let lines = jsonl(&script.map(String::from));
    let team = ledger_core::TeamId::new("t1").unwrap();
    // The series covers an open cycle: January's while February's usage has not closed it
    // (the first 8 lines), then the expiry's cycle (every line).
    for (upto, at, points) in
        [(8, "2025-02-04T23:00:00Z", 41), (8, "2025-02-04T23:00:00Z", 3), (lines.len(), "2025-04-04T12:00:00Z", 29)]
    {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = open(dir.path());
        let outcomes = import(&mut ledger, &lines[..upto]);
        assert!(outcomes.iter().all(|o| matches!(o, Outcome::Appended { .. })), "{outcomes:?}");
        series_agrees(ledger.store(), &team, Some(at.parse().unwrap()), points).unwrap();
    }
}
