//! `generate`: a deterministic synthetic workload in the JSONL format: teams on every
//! API plan, a realistic API mix, sandbox calls, upgrades and a refund now and then,
//! spread over April 2026 onwards (`--months`, default 2: April–May) so every month but
//! the last closes during the import.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

/// xorshift64*: tiny, deterministic, good enough for workloads.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A team's plan and bucket: half on Basic, 30 % on Plus, 10 % partners, 10 % on trial.
fn pick_plan(rng: &mut Rng) -> (&'static str, u64) {
    match rng.below(10) {
        0..=4 => ("api_basic", (1 + rng.below(10)) * 1000),
        5..=7 => ("api_plus", (1 + rng.below(3)) * 1000),
        8 => ("api_partner", 0),
        _ => ("api_free_trial", 0),
    }
}

const START: i64 = 1_775_001_600; // 2026-04-01T00:00:00Z

/// Seconds from April 2026 to the start of the month `months` later (2: 61 days, through
/// 2026-05-31).
fn span_secs(months: u32) -> anyhow::Result<i64> {
    let start = chrono::DateTime::from_timestamp(START, 0).expect("in range");
    let end = start
        .checked_add_months(chrono::Months::new(months.max(1)))
        .with_context(|| format!("{months} months is too far"))?;
    Ok((end - start).num_seconds())
}

fn ts(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).expect("in range").format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn run(teams: u32, events: u64, seed: u64, months: u32, out: &Path) -> anyhow::Result<ExitCode> {
    let span = span_secs(months)?;
    let mut w = sink(out)?;
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let teams = teams.max(1);
    let mut billed = vec![true; teams as usize];
    for t in 0..teams {
        let (plan, bucket) = pick_plan(&mut rng);
        billed[t as usize] = plan != "api_free_trial";
        writeln!(
            w,
            r#"{{"accountEvent":{{"eventId":"g{t}-start","teamId":"team-{t:04}","occurredAt":"{}","planStarted":{{"plan":"{plan}","bucketImages":"{bucket}"}}}}}}"#,
            ts(START + t as i64)
        )?;
    }
    // Events in time order: event n of the whole stream happens at START + n * span / events.
    for n in 0..events {
        let t = rng.below(teams as u64);
        let at = START + teams as i64 + (n as i64 * (span - teams as i64)) / events.max(1) as i64;
        let api = if rng.below(10) < 7 { "API_REMOVE_BACKGROUND" } else { "API_IMAGE_EDITING" };
        let images = 1 + rng.below(4) * rng.below(2);
        let sandbox = rng.below(50) == 0;
        writeln!(
            w,
            r#"{{"imageProcessed":{{"eventId":"e{n}","teamId":"team-{t:04}","occurredAt":"{}","api":"{api}","operations":["crop"],"images":{images},"sandbox":{sandbox},"requestId":"r{n}"}}}}"#,
            ts(at)
        )?;
        // Now and then a money-back refund of a billed event.
        if n % 50_000 == 49_999 && billed[t as usize] && !sandbox {
            writeln!(
                w,
                r#"{{"accountEvent":{{"eventId":"g-refund-{n}","teamId":"team-{t:04}","occurredAt":"{}","qualityRefund":{{"originalEventId":"e{n}","reason":"halo around hair"}}}}}}"#,
                ts(at)
            )?;
        }
    }
    w.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The benchmark's workload (`--profile realistic`): team volume Zipf-skewed (s = 1: the
/// busiest team sends about 1/H(teams) of all images), 70/30 background removal / image
/// editing, ~1 % exact duplicates (a recent line sent again), ~0.1 % refunds, plan
/// changes (every 20th team is scheduled one, sent when it is on Basic or Plus; upgrades
/// apply at once, downgrades at the next cycle), `months` from April 2026 so all but the
/// last month's cycles close during the run.
pub fn realistic(teams: u32, events: u64, seed: u64, months: u32, out: &Path) -> anyhow::Result<ExitCode> {
    let span = span_secs(months)?;
    let mut w = sink(out)?;
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let teams = teams.max(1);
    let plans = start_plans(&mut w, &mut rng, teams)?;
    // Cumulative Zipf weights: rank r (0-based) weighs 1 / (r + 1).
    let mut cumulative = Vec::with_capacity(teams as usize);
    let mut total = 0.0f64;
    for r in 0..teams {
        total += 1.0 / f64::from(r + 1);
        cumulative.push(total);
    }
    let pick = |rng: &mut Rng| {
        let x = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * total;
        cumulative.partition_point(|c| *c < x).min(teams as usize - 1)
    };
    let changes_at: Vec<u64> =
        (0..teams / 20).map(|i| events / 4 + i as u64 * (events / 2) / (teams / 20).max(1) as u64).collect();
    let mut next_change = 0usize;
    let mut recent: Vec<String> = Vec::with_capacity(64);
    for n in 0..events {
        let t = pick(&mut rng);
        let at = START + teams as i64 + (n as i64 * (span - teams as i64)) / events.max(1) as i64;
        let api = if rng.below(10) < 7 { "API_REMOVE_BACKGROUND" } else { "API_IMAGE_EDITING" };
        let images = if rng.below(10) == 0 { 2 + rng.below(9) } else { 1 };
        let line = format!(
            r#"{{"imageProcessed":{{"eventId":"e{n}","teamId":"team-{t:05}","occurredAt":"{}","api":"{api}","operations":["ai_background"],"images":{images},"requestId":"r{n}"}}}}"#,
            ts(at)
        );
        writeln!(w, "{line}")?;
        if rng.below(100) == 0 && !recent.is_empty() {
            // An exact duplicate: the pipeline sent a recent event again.
            writeln!(w, "{}", recent[rng.below(recent.len() as u64) as usize])?;
        }
        if recent.len() < 64 {
            recent.push(line);
        } else {
            recent[(n % 64) as usize] = line;
        }
        if rng.below(1000) == 0 && plans[t].1 {
            writeln!(
                w,
                r#"{{"accountEvent":{{"eventId":"refund-{n}","teamId":"team-{t:05}","occurredAt":"{}","qualityRefund":{{"originalEventId":"e{n}","reason":"halo around hair"}}}}}}"#,
                ts(at)
            )?;
        }
        while changes_at.get(next_change).is_some_and(|c| *c == n) {
            let c = next_change as u64 * 20 % teams as u64;
            let (plan, bucket) = if next_change.is_multiple_of(2) { ("api_plus", 3000) } else { ("api_basic", 1000) };
            if plans[c as usize].1 {
                writeln!(
                    w,
                    r#"{{"accountEvent":{{"eventId":"change-{n}-{c}","teamId":"team-{c:05}","occurredAt":"{}","planChanged":{{"plan":"{plan}","bucketImages":"{bucket}"}}}}}}"#,
                    ts(at)
                )?;
            }
            next_change += 1;
        }
    }
    w.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// One plan start per team (`team-NNNNN`): its plan and whether it is billed.
fn start_plans(w: &mut impl Write, rng: &mut Rng, teams: u32) -> anyhow::Result<Vec<(&'static str, bool)>> {
    let mut plans = Vec::with_capacity(teams as usize);
    for t in 0..teams {
        let (plan, bucket) = pick_plan(rng);
        writeln!(
            w,
            r#"{{"accountEvent":{{"eventId":"start-{t}","teamId":"team-{t:05}","occurredAt":"{}","planStarted":{{"plan":"{plan}","bucketImages":"{bucket}"}}}}}}"#,
            ts(START + t as i64)
        )?;
        // Partners change plan by contract, trials by upgrading: only basic/plus change here.
        plans.push((plan, matches!(plan, "api_basic" | "api_plus")));
    }
    Ok(plans)
}

fn sink(out: &Path) -> anyhow::Result<BufWriter<Box<dyn Write>>> {
    let sink: Box<dyn Write> = if out == Path::new("-") {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(File::create(out).with_context(|| format!("cannot create {}", out.display()))?)
    };
    Ok(BufWriter::with_capacity(1 << 20, sink))
}
