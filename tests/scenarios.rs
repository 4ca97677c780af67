//! The worked examples E1–E7 (and E3b) of billing.md, each through the real binary:
//! `import` → `close --until` → `invoices`, checked against finance's expected.json and
//! the effective cost per image of billing.md §7.
use std::path::Path;

use crate::support::{scenarios_dir, ul, ul_ok};

/// (scenario, expected total, effective cost per used image) from billing.md §7.
const CASES: &[(&str, &str, &str)] = &[
    ("E1", "20.00", "0.0200"),
    ("E2", "40.00", "0.0333"),
    ("E3", "70.00", "0.0333"),
    ("E3b", "50.00", "0.0238"),
    ("E4", "440.00", "0.0440"),
    ("E5", "600.00", "0.0600"),
    ("E6", "1000.00", "0.0125"),
    ("E7", "20.00", "2.0000"),
];

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(scenarios_dir().join("expected.json")).unwrap()).unwrap()
}

/// E3b is E3 under the contract policy `difference_prorated`.
fn scenario_file(name: &str, tmp: &Path) -> std::path::PathBuf {
    if name != "E3b" {
        return scenarios_dir().join(format!("{name}.jsonl"));
    }
    let e3 = std::fs::read_to_string(scenarios_dir().join("E3.jsonl")).unwrap();
    let needle = r#""bucketImages":"3000"}"#;
    assert!(e3.contains(needle), "E3 has its upgrade");
    let path = tmp.join("E3b.jsonl");
    std::fs::write(&path, e3.replace(needle, r#""bucketImages":"3000","upgradePolicy":"difference_prorated"}"#))
        .unwrap();
    path
}

fn invoices_of(name: &str) -> Vec<serde_json::Value> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let file = scenario_file(name, tmp.path());
    let run = ul(&dir, &["import", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{name}: import failed: {}", run.stderr);
    let until = expected()["E1"]["close_until"].as_str().unwrap().to_string();
    ul_ok(&dir, &["close", "--until", &until]);
    serde_json::from_str(&ul_ok(&dir, &["invoices", "--team", "t1", "--format", "json"])).unwrap()
}

#[test]
fn worked_examples_give_finance_totals() {
    let expected = expected();
    for &(name, total, effective) in CASES {
        let invoices = invoices_of(name);
        let by_start: serde_json::Map<String, serde_json::Value> = invoices
            .iter()
            .map(|i| (i["period"]["start"].as_str().unwrap()[..10].to_string(), i["total"].clone()))
            .collect();
        if let Some(e) = expected.get(name) {
            assert_eq!(serde_json::Value::Object(by_start), e["invoice_totals_by_period_start"], "{name}");
        }
        assert_eq!(invoices.len(), 1, "{name}");
        let invoice = &invoices[0];
        assert_eq!(invoice["total"], total, "{name}");
        assert_eq!(invoice["effective_cost_per_image"], effective, "{name}");
        assert_eq!(invoice["status"], "final", "{name}");
        assert_eq!(invoice["currency"], "USD", "{name}");
        let lines_sum: rust_decimal::Decimal = invoice["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["amount"].as_str().unwrap().parse::<rust_decimal::Decimal>().unwrap())
            .sum();
        assert_eq!(lines_sum.to_string(), total, "{name}: total is the sum of its lines");
    }
}

#[test]
fn e2_shows_the_forfeit_in_value_and_plan_rate_images() {
    let invoice = &invoices_of("E2")[0];
    assert_eq!(invoice["bucket"]["forfeited"], "16.00");
    assert_eq!(invoice["bucket"]["forfeited_images"], "800");
    assert_eq!(invoice["usage"]["billable_images"], 1200);
}

#[test]
fn e4_overage_is_the_consumed_value_beyond_the_bucket() {
    let invoice = &invoices_of("E4")[0];
    assert_eq!(invoice["bucket"]["consumed"], "440.00");
    assert_eq!(invoice["bucket"]["overage"], "240.00");
    assert_eq!(invoice["usage"]["by_api"]["remove_background"]["images"], 7000);
    assert_eq!(invoice["usage"]["by_api"]["image_editing"]["images"], 3000);
}

#[test]
fn e7_raises_no_alert_at_five_percent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    ul_ok(&dir, &["import", scenarios_dir().join("E7.jsonl").to_str().unwrap()]);
    let balance: serde_json::Value = serde_json::from_str(&ul_ok(&dir, &["balance", "--team", "t1"])).unwrap();
    assert_eq!(balance["allowances"][0]["consumed"], "1.00");
    assert_eq!(balance["allowances"][0]["percent"], "5.00");
    assert_eq!(ul_ok(&dir, &["alerts", "--team", "t1"]).trim(), "[]");
}
