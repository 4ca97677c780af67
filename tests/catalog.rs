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
