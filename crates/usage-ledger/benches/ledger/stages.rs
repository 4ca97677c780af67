//! The stages of one workload size, each run `runs` times.
use std::path::Path;
use std::time::Instant;

use ledger_core::{Catalog, Event};
use ledger_store::{Ledger, Source, Store, Submission};

use crate::{dir_bytes, pg, run_bin, Figures, BIN};

/// The batch the append stage and `import` write (events per flushed commit).
const BATCH: usize = 65_536;

pub fn size(tmp: &Path, file: &Path, runs: usize, pg: Option<&pg::Target>) -> Figures {
    let mut figures = Figures::default();
    let file_s = file.to_str().unwrap();
    let mut digests = Vec::new();
    for r in 0..runs {
        eprintln!("run {} of {runs}", r + 1);
        let text = std::fs::read_to_string(file).unwrap();
        // One line imported again into the imported ledger: the time of an open (a
        // duplicate appends nothing).
        let one = tmp.join("one.jsonl");
        std::fs::write(&one, text.lines().next().unwrap()).unwrap();
        let started = Instant::now();
        let events: Vec<Event> =
            text.lines().map(|l| ledger_proto::parse_json_line(l).expect("generated lines are valid")).collect();
        let lines = events.len() as f64;
        figures.add("parse", "lines/s", lines / started.elapsed().as_secs_f64());
        drop(text);
        let rows = pg.map(|_| pg::rows(&events));

        let dir = tmp.join("append");
        let _ = std::fs::remove_dir_all(&dir);
        let started = Instant::now();
        append(&dir, events);
        figures.add("append (durable)", "events/s", lines / started.elapsed().as_secs_f64());
        let started = Instant::now();
        let ledger = Ledger::open(Store::open(&dir, &Catalog::builtin()).unwrap()).unwrap();
        figures.add("open", "s", started.elapsed().as_secs_f64());
        drop(ledger);
        let _ = std::fs::remove_dir_all(&dir);

        let data = tmp.join("import");
        let _ = std::fs::remove_dir_all(&data);
        // This build and the baseline take turns going first. This build always went
        // first, right after the append stage, and measured 10-15 % slower than the
        // baseline in sessions 16 and 17 while the same two binaries ran at par when
        // alternated outside the bench.
        let baseline = std::env::var("USAGE_LEDGER_BENCH_BASELINE").ok();
        let mut builds = vec![(BIN, "")];
        builds.extend(baseline.as_deref().map(|bin| (bin, " (baseline)")));
        if r % 2 == 1 {
            builds.reverse();
        }
        for (bin, label) in builds {
            let files = (file_s, one.to_str().unwrap());
            digests.push(import_and_replay(bin, label, &data, files, lines, &mut figures));
        }

        if let (Some(target), Some(rows)) = (pg, rows) {
            let rate = target.load(&rows);
            figures.add("postgres", "events/s", rate);
            let import = figures.0.iter().find(|(s, _, _)| *s == "import").unwrap().2[r];
            figures.add("ratio import/postgres", "×", import / rate);
        }
    }
    digests.dedup();
    assert_eq!(digests.len(), 1, "every replay of the same workload gives the same digest");
    figures
}

/// Appends the events in batches of `BATCH` as `import` does: each batch written and
/// flushed by the committer thread while the next one folds; all durable at the end.
fn append(dir: &Path, events: Vec<Event>) {
    let mut ledger = Ledger::open(Store::open(dir, &Catalog::builtin()).unwrap()).unwrap();
    let mut it = events.into_iter().enumerate().peekable();
    while it.peek().is_some() {
        let batch: Vec<Submission> = it
            .by_ref()
            .take(BATCH)
            .map(|(n, event)| Submission { event, source: Source { stream: None, offset: n as u64 } })
            .collect();
        ledger.submit_batch_deferred(batch).unwrap();
    }
    ledger.wait_durable().unwrap();
}

/// `bin`'s `import` of `file`, its open of the ledger (`import` of `one` line again)
/// and `replay`, their figures named with `label`; the replay's digest.
fn import_and_replay(
    bin: &str,
    label: &str,
    data: &Path,
    (file, one): (&str, &str),
    lines: f64,
    figures: &mut Figures,
) -> String {
    let (data_s, batch) = (data.to_str().unwrap(), BATCH.to_string());
    let (secs, _, _, rss) = run_bin(bin, &["--data-dir", data_s, "import", "--batch-events-max", &batch, file]);
    figures.add(format!("import{label}"), "lines/s", lines / secs);
    figures.add(format!("import peak RSS{label}"), "MiB", rss as f64 / (1 << 20) as f64);
    figures.add(format!("disk{label}"), "bytes/event", dir_bytes(data) as f64 / lines);
    let (secs, _, _, rss) = run_bin(bin, &["--data-dir", data_s, "import", one]);
    figures.add(format!("open (import of 1 line, wall){label}"), "s", secs);
    figures.add(format!("open peak RSS{label}"), "MiB", rss as f64 / (1 << 20) as f64);
    let (secs, digest, stderr, rss) = run_bin(bin, &["--data-dir", data_s, "replay"]);
    let entries: f64 = crate::kafka::number(&stderr, "replayed ", true);
    figures.add(format!("replay{label}"), "entries/s", entries / secs);
    figures.add(format!("replay peak RSS{label}"), "MiB", rss as f64 / (1 << 20) as f64);
    let _ = std::fs::remove_dir_all(data);
    digest
}
