//! `generate`: a deterministic synthetic workload in the JSONL format: teams on every
//! API plan, a realistic API mix, sandbox calls, upgrades and a refund now and then,
//! spread over April–May 2026 so the April cycles close during the import.
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

const START: i64 = 1_775_001_600; // 2026-04-01T00:00:00Z
const SPAN_SECS: i64 = 61 * 86_400; // through 2026-05-31

fn ts(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).expect("in range").format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn run(teams: u32, events: u64, seed: u64, out: &Path) -> anyhow::Result<ExitCode> {
    let sink: Box<dyn Write> = if out == Path::new("-") {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(File::create(out).with_context(|| format!("cannot create {}", out.display()))?)
    };
    let mut w = BufWriter::with_capacity(1 << 20, sink);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let teams = teams.max(1);
    let mut billed = vec![true; teams as usize];
    for t in 0..teams {
        let (plan, bucket) = match rng.below(10) {
            0..=4 => ("api_basic", (1 + rng.below(10)) * 1000),
            5..=7 => ("api_plus", (1 + rng.below(3)) * 1000),
            8 => ("api_partner", 0),
            _ => ("api_free_trial", 0),
        };
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
        let at = START + teams as i64 + (n as i64 * (SPAN_SECS - teams as i64)) / events.max(1) as i64;
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
