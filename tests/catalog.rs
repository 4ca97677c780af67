//! The catalog a ledger records: versions are added when a newer build loads them,
//! never changed, and never slipped into history already billed.
use ledger_core::Catalog;
use ledger_store::{Ledger, Store};

use crate::support::{ul, ul_ok};

fn without_2024(c: &Catalog) -> Catalog {
    Catalog::from_versions(c.versions.iter().filter(|v| !v.id.starts_with("2024")).cloned().collect()).unwrap()
}

#[test]
fn a_newer_build_records_new_versions_and_refuses_changed_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let builtin = Catalog::builtin();
    let old = without_2024(&builtin);
    drop(Ledger::open(Store::open(&dir, &old).unwrap()).unwrap());
    let file = tmp.path().join("t.jsonl");
    std::fs::write(
        &file,
        r#"{"accountEvent":{"eventId":"a1","teamId":"t1","occurredAt":"2026-04-01T00:00:00Z","planStarted":{"plan":"api_basic","bucketImages":"1000"}}}"#,
    )
    .unwrap();
    // The binary loads the built-in catalog: the 2024 versions predate the recorded
    // history, so they are recorded.
    ul_ok(&dir, &["import", file.to_str().unwrap()]);
    ul_ok(&dir, &["close", "--until", "2026-05-02T00:00:00Z"]);
    let recorded = Store::open(&dir, &builtin).unwrap().catalog().unwrap();
    assert_eq!(recorded, builtin, "2024-02-01 and 2024-10-01 recorded beside the others");

    let mut changed = builtin.clone();
    let basic = changed.versions.last_mut().unwrap().plans.get_mut("api_basic").unwrap();
    *basic = ledger_core::catalog::PlanRule::Bucket {
        api: ledger_core::Api::RemoveBackground,
        label: "Basic".into(),
        step_images: 1000,
        step_price: "25.00".parse().unwrap(),
    };
    let err = Store::open(&dir, &changed).unwrap_err().to_string();
    assert!(err.contains("catalog version 2026-01-01 differs"), "{err}");

    let mut mid_history = builtin.clone();
    let mut v = builtin.versions.last().unwrap().clone();
    v.id = "2026-03-01".into();
    v.effective_from = "2026-03-01T00:00:00Z".parse().unwrap();
    mid_history.versions.push(v.clone());
    let err = Store::open(&dir, &mid_history).unwrap_err().to_string();
    assert!(err.contains("inside the history this ledger already billed"), "{err}");

    let mut future = builtin.clone();
    v.id = "2099-01-01".into();
    v.effective_from = "2099-01-01T00:00:00Z".parse().unwrap();
    future.versions.push(v);
    let recorded = Store::open(&dir, &future).unwrap().catalog().unwrap();
    assert_eq!(recorded.versions.last().unwrap().id, "2099-01-01", "announced ahead: recorded");
    // And the older build, which lacks it, still reads the ledger with everything recorded.
    assert_eq!(Store::open(&dir, &old).unwrap().catalog().unwrap().versions.len(), 5);
    let replay = ul(&dir, &["replay"]);
    assert!(replay.stderr.contains("0 stored projections differed"), "{}", replay.stderr);
}

/// A plan added to a recorded version (here `api_enterprise`, which older builds lacked)
/// is recorded: nothing in the ledger could have used it. An older build still reads the
/// ledger; the figures billed before stay byte for byte.
#[test]
fn a_plan_added_to_a_recorded_version_is_recorded_and_billed_history_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let builtin = Catalog::builtin();
    let mut old = builtin.clone();
    for v in &mut old.versions {
        v.plans.remove("api_enterprise");
    }
    let file = tmp.path().join("t.jsonl");
    let contract = r#"{"accountEvent":{"eventId":"c1","teamId":"t2","occurredAt":"2026-04-01T00:00:00Z","contractSigned":{"termMonths":12,"committedImagesPerYear":"240000","rateRemoveBackground":"0.015","rateImageEditing":"0.08","annualFee":"3600.00","rollover":true}}}"#;
    std::fs::write(
        &file,
        format!(
            "{}\n{contract}\n",
            r#"{"accountEvent":{"eventId":"a1","teamId":"t1","occurredAt":"2026-04-01T00:00:00Z","planStarted":{"plan":"api_basic","bucketImages":"1000"}}}"#
        ),
    )
    .unwrap();
    {
        let mut ledger = Ledger::open(Store::open(&dir, &old).unwrap()).unwrap();
        let lines: Vec<_> = std::fs::read_to_string(&file).unwrap().lines().map(String::from).collect();
        let subs = lines
            .iter()
            .enumerate()
            .map(|(n, l)| ledger_store::Submission {
                event: ledger_proto::parse_json_line(l).unwrap(),
                source: ledger_store::Source { stream: None, offset: n as u64 },
            })
            .collect();
        let outcomes = ledger.submit_batch(subs).unwrap().outcomes;
        assert!(matches!(&outcomes[1], ledger_store::Outcome::Rejected(r) if r.code == "plan_rule"), "{outcomes:?}");
        ledger.close_until("2026-05-02T00:00:00Z".parse().unwrap()).unwrap();
    }
    let before = ul_ok(&dir, &["invoices", "--team", "t1"]);
    // The newer build records the added plan and takes the contract.
    ul_ok(&dir, &["import", file.to_str().unwrap()]);
    assert_eq!(Store::open(&dir, &old).unwrap().catalog().unwrap(), builtin, "the added plan is recorded");
    ul_ok(&dir, &["close", "--until", "2026-05-02T00:00:00Z"]);
    let contract_invoice = ul_ok(&dir, &["invoices", "--team", "t2"]);
    assert!(contract_invoice.contains(r#""kind": "contract_fee""#), "{contract_invoice}");
    assert_eq!(ul_ok(&dir, &["invoices", "--team", "t1"]), before);
    let replay = ul(&dir, &["replay"]);
    assert!(replay.stderr.contains("0 stored projections differed"), "{}", replay.stderr);
}
