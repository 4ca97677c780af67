//! Checkpoints of team state (issue 20, deliverable 4): a writer's open resumes each
//! team at its checkpoint and folds only the entries after it; what it appends next is
//! what a writer that never closed appends; `verify` compares every checkpoint with the
//! fold of the team's entries, `replay` removes one that differs; a checkpoint this build
//! cannot read is passed over.
use std::path::Path;

use ledger_core::{Catalog, TeamId};
use ledger_store::{CheckpointTamper, Store};

use crate::support::{ul, ul_ok};

/// The generated traffic, cut in two at a line.
fn halves(tmp: &Path) -> (String, String, String) {
    let file = tmp.join("all.jsonl");
    let f = file.to_str().unwrap();
    ul_ok(tmp, &["generate", "--profile", "realistic", "--teams", "120", "--events", "40000", "--out", f]);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cut = lines.len() * 3 / 5;
    let write = |name: &str, part: &[&str]| {
        let path = tmp.join(name);
        std::fs::write(&path, part.join("\n") + "\n").unwrap();
        path.to_str().unwrap().to_string()
    };
    (f.to_string(), write("first.jsonl", &lines[..cut]), write("second.jsonl", &lines[cut..]))
}

/// Runs the binary on `dir` with the info log of `target`: the first line logged that
/// contains `marker`.
fn logged(dir: &Path, target: &str, args: &[&str], marker: &str) -> String {
    let out = crate::support::bin()
        .env("USAGE_LEDGER_LOG", format!("{target}=info"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    stderr.lines().find(|l| l.contains(marker)).unwrap_or_else(|| panic!("{marker} in {stderr}")).to_string()
}

/// The number a log line gives as `name=`.
fn field(line: &str, name: &str) -> u64 {
    let at = line.find(&format!(" {name}=")).unwrap_or_else(|| panic!("{name} in {line}")) + name.len() + 2;
    line[at..].split(' ').next().unwrap().parse().unwrap()
}

/// `import` with the writer's log: (entries the open rebuilt, entries it folded).
fn import_counting_the_fold(dir: &Path, file: &str) -> (u64, u64) {
    let line = logged(dir, "ledger_store", &["import", file], "Folded the ledger.");
    (field(&line, "entries"), field(&line, "folded"))
}

/// A team, its entries, alerts and invoices.
type TeamContents = (String, Vec<String>, Vec<String>, Vec<String>);

/// Every team's entries, alerts and invoices, read from the store.
fn contents(dir: &Path) -> Vec<TeamContents> {
    let catalog = Catalog::builtin();
    let store = Store::open(dir, &catalog).unwrap();
    let catalog = store.catalog().unwrap();
    let mut all = Vec::new();
    for team in store.teams().unwrap() {
        let id = TeamId::new(team.clone()).unwrap();
        let entries = store.team_entries(&catalog, &id).unwrap().iter().map(|e| format!("{e:?}")).collect();
        all.push((team.clone(), entries, store.alerts(&team).unwrap(), store.invoices(&team).unwrap()));
    }
    all
}

/// `verify` passes, and how many checkpoints it found equal to the fold (its log).
fn checkpoints_equal(dir: &Path) -> u64 {
    field(&logged(dir, "usage_ledger", &["verify"], "checkpoints="), "checkpoints")
}

/// A writer reopened on its ledger resumes from the checkpoints (it folds a fraction of
/// the entries) and goes on exactly as a writer that took all the traffic in one run:
/// the same entries, hash chains, alerts and invoices for every team, with one team's
/// checkpoint of a state version this build does not have passed over.
#[test]
fn a_reopened_ledger_resumes_from_its_checkpoints_and_goes_on_as_one_that_never_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let (all, first, second) = halves(tmp.path());
    let whole = tmp.path().join("whole");
    ul_ok(&whole, &["import", &all]);

    let resumed = tmp.path().join("resumed");
    ul_ok(&resumed, &["import", &first]);
    let checkpoints = checkpoints_equal(&resumed);
    assert!(checkpoints >= 60, "the busier half of the 120 teams have a checkpoint: {checkpoints}");
    ledger_store::tamper_checkpoint(&resumed, "team-00007", CheckpointTamper::Version).unwrap();
    assert_eq!(checkpoints_equal(&resumed), checkpoints - 1, "a checkpoint of another version is passed over");
    let (entries, folded) = import_counting_the_fold(&resumed, &second);
    assert!(entries > 20_000 && folded * 4 < entries, "the open folded {folded} of {entries} entries");

    assert_eq!(contents(&resumed), contents(&whole));
    let digest = |dir: &Path| ul_ok(dir, &["replay"]);
    assert_eq!(digest(&resumed), digest(&whole));
    assert!(checkpoints_equal(&resumed) >= 60);
}

/// A checkpoint that does not agree with its team's entries (an alert counted twice):
/// `verify` names the team and entry and fails; `replay` removes it, after which the
/// team is folded from its first entry at open and `verify` passes.
#[test]
fn verify_names_a_checkpoint_that_differs_from_the_fold_and_replay_removes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (all, _, _) = halves(tmp.path());
    let dir = tmp.path().join("data");
    ul_ok(&dir, &["import", &all]);
    let before = checkpoints_equal(&dir);
    let (_, folded_before) = import_counting_the_fold(&dir, &all);

    ledger_store::tamper_checkpoint(&dir, "team-00011", CheckpointTamper::Counts).unwrap();
    let run = ul(&dir, &["verify"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("team team-00011 seq "), "{}", run.stderr);
    assert!(run.stderr.contains("the checkpoint differs from the fold of the team's entries"), "{}", run.stderr);

    let replay = ul(&dir, &["replay"]);
    assert_eq!(replay.code, 0, "{}", replay.stderr);
    assert!(replay.stderr.contains("removed a checkpoint: team team-00011 seq "), "{}", replay.stderr);
    assert_eq!(checkpoints_equal(&dir), before - 1);
    let (_, folded_after) = import_counting_the_fold(&dir, &all);
    assert!(folded_after > folded_before, "the team is folded from its first entry: {folded_before} → {folded_after}");
}
