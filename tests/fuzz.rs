//! Fuzzing without a nightly toolchain (cargo-fuzz needs one; this machine has stable
//! only): seeded, mutation-based harnesses over the three places input reaches.
//!
//! - `decode`: protobuf records (the corpus's events, encoded, then mutated) through the
//!   three decoders; whatever decodes must encode back to the same event.
//! - `jsonl`: JSONL lines (the corpus, mutated by bytes and by tokens: extreme numbers,
//!   dates, long strings) through the parser; whatever parses must print back to itself.
//! - `fold`: generated event streams of extreme but valid values (every plan family,
//!   amounts and counts up to the boundary's limits, duplicates ids, refunds, late
//!   events) through the boundary and a team's fold; every stream must refold from its
//!   entries to the same effects.
//!
//! A panic fails the test and prints the input. `USAGE_LEDGER_FUZZ_EXECS` sets the
//! executions per target (CI: the default, a short run; the 10M runs are in the README).
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use ledger_core::team::{Applied, RefundLookup};
use ledger_core::{AccountChange, Catalog, Event, EventId, RefundTarget, Team, TeamId};
use ledger_proto::{decode_account, decode_image, decode_input, parse_json_line, Window, WireEvent};
use prost::Message as _;

use crate::support::Rng;

fn execs() -> u64 {
    std::env::var("USAGE_LEDGER_FUZZ_EXECS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

fn corpus() -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fuzz/corpus.jsonl");
    std::fs::read_to_string(path).unwrap().lines().map(String::from).collect()
}

fn report(target: &str, n: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    eprintln!("fuzz {target}: {n} executions in {secs:.1} s ({:.0}/s), no panic", n as f64 / secs.max(1e-9));
}

/// One random byte-level change.
fn mutate_bytes(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    let at = rng.below(input.len() + 1);
    let last = at.min(input.len().saturating_sub(1));
    match rng.below(7) {
        0 if !input.is_empty() => input[last] ^= 1 << rng.below(8),
        1 if !input.is_empty() => input[last] = *rng.pick(&[0, 0x7f, 0x80, 0xff, b'"', b'9']),
        2 => input.splice(at..at, (0..rng.below(8)).map(|_| rng.next() as u8)).for_each(drop),
        3 => input.truncate(at),
        4 => {
            let end = (at + rng.below(16)).min(input.len());
            input.drain(at..end);
        }
        5 => {
            let end = (at + rng.below(32)).min(input.len());
            let copy = input[at..end].to_vec();
            input.splice(at..at, copy).for_each(drop);
        }
        _ => {
            let from = rng.below(other.len() + 1);
            input.truncate(at);
            input.extend_from_slice(&other[from..]);
        }
    }
}

const TOKENS: [&str; 14] = [
    "18446744073709551615",
    "4294967296",
    "-1",
    "1e30",
    "0.0000000000000000000000000001",
    "79228162514264337593543950335",
    "2199-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z",
    "null",
    "[]",
    "{}",
    "\"\"",
    "true",
];

/// A token-level change to a JSON line: a value swapped for an extreme one.
fn mutate_json(rng: &mut Rng, line: &str) -> String {
    let cut: Vec<usize> = line.match_indices([':', ',']).map(|(i, _)| i + 1).collect();
    if cut.is_empty() {
        return line.to_string();
    }
    let start = *rng.pick(&cut);
    let end = line[start..].find([',', '}']).map_or(line.len(), |i| start + i);
    let token =
        if rng.below(4) == 0 { format!("\"{}\"", "x".repeat(rng.below(400))) } else { rng.pick(&TOKENS).to_string() };
    let quoted = if rng.below(2) == 0 && !token.starts_with('"') { format!("\"{token}\"") } else { token };
    format!("{}{}{}", &line[..start], quoted, &line[end..])
}

#[test]
fn fuzz_protobuf_decode_and_validation() {
    let mut rng = Rng(0x5eed_0001);
    let seeds: Vec<Vec<u8>> =
        corpus().iter().filter_map(|l| parse_json_line(l).ok()).map(|e| e.to_pb().encode_to_vec()).collect();
    let inner: Vec<Vec<u8>> =
        corpus().iter().filter_map(|l| parse_json_line(l).ok()).map(|e| ledger_proto::encode_event(&e)).collect();
    let (started, mut valid) = (Instant::now(), 0);
    let n = execs();
    for i in 0..n {
        let pool = if i % 2 == 0 { &seeds } else { &inner };
        let mut input = rng.pick(pool).clone();
        for _ in 0..=rng.below(4) {
            let other = rng.pick(pool).clone();
            mutate_bytes(&mut rng, &mut input, &other);
        }
        for event in [decode_input(&input), decode_image(&input), decode_account(&input)].into_iter().flatten() {
            valid += 1;
            let again = decode_input(&event.to_pb().encode_to_vec());
            assert_eq!(again.as_ref(), Ok(&event), "round trip of {input:?}");
        }
    }
    report("decode", n, started);
    eprintln!("fuzz decode: {valid} inputs decoded to a valid event");
}

#[test]
fn fuzz_jsonl_parser() {
    let mut rng = Rng(0x5eed_0002);
    let seeds = corpus();
    let (started, mut valid) = (Instant::now(), 0);
    let n = execs();
    for _ in 0..n {
        let seed = rng.pick(&seeds).clone();
        let line = if rng.below(2) == 0 {
            mutate_json(&mut rng, &seed)
        } else {
            let mut bytes = seed.into_bytes();
            let other = rng.pick(&seeds).clone().into_bytes();
            mutate_bytes(&mut rng, &mut bytes, &other);
            String::from_utf8_lossy(&bytes).into_owned()
        };
        if let Ok(event) = parse_json_line(&line) {
            valid += 1;
            assert_eq!(parse_json_line(&event.to_json_line()).as_ref(), Ok(&event), "round trip of {line}");
        }
    }
    report("jsonl", n, started);
    eprintln!("fuzz jsonl: {valid} lines parsed to a valid event");
}

/// A random event of extreme but valid values, as a JSON line.
fn event_line(rng: &mut Rng, k: u64) -> String {
    let team = format!("f{}", rng.below(3));
    let id = format!("e{}", if rng.below(10) == 0 { rng.below(50) as u64 } else { k });
    let day = 1 + rng.below(28);
    let month = 2 + rng.below(5);
    let at = format!("2026-{month:02}-{day:02}T{:02}:00:00Z", rng.below(24));
    let head = format!(r#""eventId":"{id}","teamId":"{team}","occurredAt":"{at}""#);
    let big = |rng: &mut Rng, max: u64| match rng.below(3) {
        0 => max,
        1 => 1 + rng.next() % max,
        _ => 1 + rng.next() % 1000,
    };
    let change = match rng.below(12) {
        0..=4 => {
            let api = rng.pick(&["API_REMOVE_BACKGROUND", "API_IMAGE_EDITING", "APP_EXPORT", "APP_AI"]);
            let images = big(rng, 1_000_000);
            let sandbox = rng.below(8) == 0;
            return format!(r#"{{"imageProcessed":{{{head},"api":"{api}","images":{images},"sandbox":{sandbox}}}}}"#);
        }
        5 => format!(
            r#""planStarted":{{"plan":"{}","bucketImages":"{}"}}"#,
            rng.pick(&["api_basic", "api_plus", "api_partner", "api_free_trial", "api_credits"]),
            1000 * big(rng, 100_000)
        ),
        6 => format!(
            r#""planChanged":{{"plan":"{}","bucketImages":"{}","upgradePolicy":"{}"}}"#,
            rng.pick(&["api_basic", "api_plus"]),
            1000 * big(rng, 100_000),
            rng.pick(&["restart_prorated", "difference_prorated", ""])
        ),
        7 => format!(
            r#""planStarted":{{"plan":"{}","billingInterval":"{}","seats":{}}}"#,
            rng.pick(&["app_free", "app_pro", "app_max", "app_ultra", "app_teams"]),
            rng.pick(&["weekly", "monthly", "yearly"]),
            big(rng, 100_000)
        ),
        8 => format!(
            r#""contractSigned":{{"termMonths":{},"committedImagesPerYear":"{}","rateRemoveBackground":"{}","rateImageEditing":"0.08","annualFee":"{}","rollover":{},"tiers":[{{"fromImages":"{}","discountPercent":"12.5"}}]}}"#,
            rng.pick(&[12, 24, 36]),
            big(rng, 1_000_000_000_000),
            rng.pick(&["1000", "0.000001", "0.015"]),
            rng.pick(&["1000000000", "0", "3600.00"]),
            rng.below(2) == 0,
            big(rng, 1_000_000_000_000)
        ),
        9 => format!(
            r#""creditsPurchased":{{"credits":"{}","amount":"{}"}}"#,
            big(rng, 1_000_000_000),
            rng.pick(&["1000000000", "0.01", "9.99"])
        ),
        10 => format!(
            r#""qualityRefund":{{"originalEventId":"e{}","reason":"fuzz"}}"#,
            k.saturating_sub(1 + rng.below(20) as u64)
        ),
        _ => r#""planCancelled":{}"#.to_string(),
    };
    format!(r#"{{"accountEvent":{{{head},{change}}}}}"#)
}

/// A few teams' streams through the boundary and the fold, as the store drives it.
struct Streams {
    catalog: Catalog,
    window: Window,
    teams: HashMap<TeamId, Team>,
    /// Every appended event's id: its team and, for images, what a refund needs.
    known: HashMap<EventId, (TeamId, Option<RefundTarget>)>,
    applied: HashMap<TeamId, Vec<Applied>>,
    /// Events appended, and entries refolded.
    appended: u64,
    refolded: u64,
}

impl Streams {
    fn submit(&mut self, line: &str) {
        let Ok(event) = parse_json_line(line) else { return };
        if self.window.admit(&event).is_err() || self.known.contains_key(event.event_id()) {
            return;
        }
        let lookup = match &event {
            Event::Account(a) => match &a.change {
                AccountChange::QualityRefund { original_event_id, .. } => match self.known.get(original_event_id) {
                    Some((t, _)) if *t != a.team_id => Some(RefundLookup::OtherTeam(t.clone())),
                    Some((_, Some(target))) => Some(RefundLookup::Found(target.clone())),
                    _ => Some(RefundLookup::NotFound),
                },
                _ => None,
            },
            Event::Image(_) => None,
        };
        let team_id = event.team_id().clone();
        let team = self.teams.entry(team_id.clone()).or_insert_with(|| Team::new(team_id.clone()));
        if let Ok(applied) = team.submit(&self.catalog, event.clone(), lookup) {
            let seq = applied.last().expect("an event appends").seq;
            let target = match &event {
                Event::Image(e) => Some(RefundTarget {
                    seq,
                    occurred_at: e.occurred_at,
                    api: e.api,
                    images: e.images,
                    sandbox: e.sandbox,
                }),
                Event::Account(_) => None,
            };
            self.known.insert(event.event_id().clone(), (team_id.clone(), target));
            self.appended += 1;
            self.applied.entry(team_id).or_default().extend(applied);
        }
    }

    /// Closes what is due, then refolds every team's entries into a fresh team: the
    /// same effects, entry by entry.
    fn check(&mut self) {
        for (id, team) in &mut self.teams {
            let closed = team.close_until(&self.catalog, "2026-09-01T00:00:00Z".parse().unwrap());
            self.applied.entry(id.clone()).or_default().extend(closed);
        }
        for (id, applied) in std::mem::take(&mut self.applied) {
            let mut fresh = Team::new(id.clone());
            for a in &applied {
                let effects = fresh.apply(&self.catalog, a.seq, &a.entry).expect("the ledger refolds");
                assert_eq!(effects, a.effects, "team {id} seq {} refolds to the same effects", a.seq);
            }
            self.refolded += applied.len() as u64;
        }
        self.teams.clear();
        self.known.clear();
    }
}

#[test]
fn fuzz_team_fold_over_event_streams() {
    let mut rng = Rng(0x5eed_0003);
    let now = "2026-11-26T00:00:00Z".parse().unwrap();
    let first = Catalog::builtin().versions[0].effective_from;
    let mut streams = Streams {
        catalog: Catalog::builtin(),
        window: Window::new(first, now, chrono::Duration::hours(24)),
        teams: HashMap::new(),
        known: HashMap::new(),
        applied: HashMap::new(),
        appended: 0,
        refolded: 0,
    };
    let started = Instant::now();
    let n = execs();
    for k in 0..n {
        let line = event_line(&mut rng, k);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| streams.submit(&line)));
        assert!(result.is_ok(), "the fold panicked on {line}");
        if k % 64 == 63 {
            streams.check();
        }
    }
    report("fold", n, started);
    eprintln!("fuzz fold: {} events appended, {} entries refolded", streams.appended, streams.refolded);
}

/// Found by `fuzz_team_fold_over_event_streams`: a top-up dated past the first cycle's
/// end (inside its grace, so nothing closed before it) was accepted live but faulted on
/// replay ("outside any cycle"): the ledger would not have opened again.
#[test]
fn a_purchase_past_the_cycles_derived_so_far_replays() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let file = tmp.path().join("late-top-up.jsonl");
    let lines = [
        r#"{"accountEvent":{"eventId":"a1","teamId":"t1","occurredAt":"2026-02-01T00:00:00Z","planStarted":{"plan":"app_pro","billingInterval":"monthly"}}}"#,
        r#"{"accountEvent":{"eventId":"b1","teamId":"t1","occurredAt":"2026-03-01T00:30:00Z","creditsPurchased":{"credits":"100","amount":"4.99"}}}"#,
    ];
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    crate::support::ul_ok(&dir, &["import", file.to_str().unwrap()]);
    let replay = crate::support::ul_ok(&dir, &["replay"]);
    assert!(replay.starts_with("digest:"), "{replay}");
    // And the ledger opens again for the next import.
    crate::support::ul_ok(&dir, &["import", file.to_str().unwrap()]);
}
