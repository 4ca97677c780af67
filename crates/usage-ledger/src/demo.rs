//! `demo`: sample traffic for a few teams played through the ledger in time order,
//! printing alerts and balances as they happen, then the month's invoices.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;

use chrono::{DateTime, Duration, Utc};
use ledger_core::{Catalog, Event, TeamId};
use ledger_proto::parse_json_line;
use ledger_store::{Ledger, Outcome, Source, Store, Submission};

/// A demo team: how it starts (the account event's body), its uses per day, and the
/// feature it calls, with another one every fifth hour.
struct DemoTeam {
    id: &'static str,
    start: &'static str,
    per_day: u32,
    apis: (&'static str, &'static str),
}

const API: (&str, &str) = ("API_REMOVE_BACKGROUND", "API_IMAGE_EDITING");

const TEAMS: [DemoTeam; 5] = [
    DemoTeam {
        id: "acme-shop",
        start: r#""planStarted":{"plan":"api_basic","bucketImages":"2000"}"#,
        per_day: 70,
        apis: API,
    },
    DemoTeam {
        id: "studio-north",
        start: r#""planStarted":{"plan":"api_plus","bucketImages":"1000"}"#,
        per_day: 12,
        apis: API,
    },
    DemoTeam { id: "hobby-dev", start: r#""planStarted":{"plan":"api_free_trial"}"#, per_day: 1, apis: API },
    // The app track: Pro, monthly: 500 exports and 125 AI credits a month.
    DemoTeam {
        id: "pixel-app",
        start: r#""planStarted":{"plan":"app_pro","billingInterval":"monthly"}"#,
        per_day: 20,
        apis: ("APP_EXPORT", "APP_AI"),
    },
    // An enterprise contract: 240,000 images a year (20,000 a month), rollover on.
    DemoTeam {
        id: "bigco",
        start: r#""contractSigned":{"termMonths":12,"committedImagesPerYear":"240000","rateRemoveBackground":"0.015","rateImageEditing":"0.08","annualFee":"3600.00","rollover":true,"tiers":[{"fromImages":"300000","discountPercent":"10"}]}"#,
        per_day: 700,
        apis: API,
    },
];

/// Allowances counted in images (the rest are dollar values).
fn in_images(allowance: &str) -> bool {
    matches!(allowance, "exports" | "ai_credits" | "allotment" | "commitment" | "sandbox")
}

/// A meter's figure: whole units (images, exports, credits) or dollars.
fn amount(allowance: &str, v: &str) -> String {
    if in_images(allowance) {
        v.split('.').next().unwrap_or(v).to_string()
    } else {
        format!("${v}")
    }
}

/// `consumed $ 1.40 of $100.00 ( 1.40%)`, or in units where the allowance counts them.
fn consumed_of(allowance: &str, consumed: &str, value: &str, percent: &str) -> String {
    let verb = if in_images(allowance) { "used" } else { "consumed" };
    format!("{verb:<8} {:>7} of {:>7} ({percent:>6}%)", amount(allowance, consumed), amount(allowance, value))
}

fn line(kind: &str, id: &str, team: &str, at: DateTime<Utc>, body: &str) -> String {
    let at = at.format("%Y-%m-%dT%H:%M:%SZ");
    format!(r#"{{"{kind}":{{"eventId":"{id}","teamId":"{team}","occurredAt":"{at}",{body}}}}}"#)
}

/// A month of traffic: plan starts, then each team's daily usage, in time order.
fn traffic(start: DateTime<Utc>) -> Vec<String> {
    let mut out = Vec::new();
    for team in &TEAMS {
        out.push(line("accountEvent", &format!("{}-start", team.id), team.id, start, team.start));
    }
    for hour in 1..(32 * 24) {
        let at = start + Duration::hours(hour);
        for (t, team) in TEAMS.iter().enumerate() {
            let n = (hour as u32 * 7 + t as u32 * 13) % 24;
            if n < team.per_day % 24 || (team.per_day / 24 > 0) {
                let api = if (hour + t as i64) % 5 == 0 { team.apis.1 } else { team.apis.0 };
                let images = 1 + team.per_day / 24;
                out.push(line(
                    "imageProcessed",
                    &format!("{}-{hour}", team.id),
                    team.id,
                    at,
                    &format!(r#""api":"{api}","images":{images},"operations":["crop"]"#),
                ));
            }
        }
    }
    out
}

pub fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    if ledger_store::layout(dir)? != ledger_store::Layout::Empty {
        anyhow::bail!("{} already holds a ledger; the demo wants a fresh --data-dir", dir.display());
    }
    let mut ledger = Ledger::open(Store::open(dir, &Catalog::builtin())?)?;
    let start: DateTime<Utc> = "2026-04-01T00:00:00Z".parse()?;
    println!("usage-ledger demo: {} teams, one month of traffic, ledger in {}\n", TEAMS.len(), dir.display());
    let events: Vec<Event> = traffic(start).iter().map(|l| parse_json_line(l)).collect::<Result<_, _>>()?;
    let (mut appended, mut day) = (0usize, 0);
    let mut seen = [0usize; TEAMS.len()];
    for chunk in events.chunks(24) {
        let batch = chunk
            .iter()
            .cloned()
            .map(|event| Submission { event, source: Source { stream: None, offset: 0 } })
            .collect();
        let report = ledger.submit_batch(batch)?;
        appended += report.outcomes.iter().filter(|o| matches!(o, Outcome::Appended { .. })).count();
        let now = chunk.last().expect("non-empty").occurred_at();
        for (t, team) in TEAMS.iter().enumerate() {
            let alerts = ledger.store().alerts(team.id)?;
            for alert in &alerts[seen[t]..] {
                let a: serde_json::Value = serde_json::from_str(alert)?;
                let s = |k: &str| a[k].as_str().unwrap_or("").to_string();
                let allowance = s("allowance");
                println!(
                    "{}  ALERT   {:<13} {allowance} {}% reached: {} of {}",
                    &s("occurred_at")[..16],
                    team.id,
                    a["threshold_percent"],
                    amount(&allowance, &s("consumed")),
                    amount(&allowance, &s("allowance_value"))
                );
            }
            seen[t] = alerts.len();
        }
        let today = (now - start).num_days();
        if today != day && today % 7 == 0 {
            day = today;
            print_balances(&ledger, now)?;
        }
    }
    // The teams' clocks passed May 1 + grace, which closed April; close anything left.
    ledger.close_until(start + Duration::days(31))?;
    println!("\n{appended} events appended.");
    print_invoices(std::slice::from_ref(ledger.store()))?;
    println!("\nTry: usage-ledger --data-dir {} invoices --team acme-shop", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// The final invoices of the demo teams, one line each.
pub fn print_invoices(stores: &[Store]) -> anyhow::Result<()> {
    println!("April 2026 closed; its invoices:");
    for team in TEAMS.iter().map(|t| t.id) {
        for invoice in stores.iter().map(|s| s.invoices(team)).collect::<Result<Vec<_>, _>>()?.concat() {
            let v: serde_json::Value = serde_json::from_str(&invoice)?;
            let lines: Vec<String> = v["lines"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| format!("{} {}", l["kind"].as_str().unwrap_or(""), l["amount"].as_str().unwrap_or("")))
                .collect();
            println!(
                "  {team:<13} total ${:>7}  ({})  effective ${} per image",
                v["total"].as_str().unwrap_or(""),
                lines.join(", "),
                v["effective_cost_per_image"].as_str().unwrap_or("-")
            );
        }
    }
    Ok(())
}

/// The teams (record keys) of each partition's records, for `print_live_balances`.
pub fn teams_by_partition(records: &[ledger_kafka::Record]) -> BTreeMap<i32, BTreeSet<String>> {
    let mut teams: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
    for r in records {
        if let Some(key) = &r.key {
            teams.entry(r.partition).or_default().insert(String::from_utf8_lossy(key).into_owned());
        }
    }
    teams
}

/// `run --demo`: the balance of each team the last batch touched, as of its newest event.
pub fn print_live_balances(ledger: &Ledger, teams: &BTreeSet<String>) -> anyhow::Result<()> {
    let catalog = ledger.catalog();
    for team in teams {
        let Ok(id) = TeamId::new(team.clone()) else { continue };
        let mut state = ledger.store().load_team(catalog, &id)?;
        let balance = state.balance(catalog, None);
        if let (Some(a), Some(at)) = (balance.allowances.last(), balance.at) {
            println!(
                "BALANCE {team:<13} at {}  {:<10} {}",
                &at[..16],
                a.allowance,
                consumed_of(a.allowance, &a.consumed, &a.value, &a.percent)
            );
        }
    }
    Ok(())
}

fn print_balances(ledger: &Ledger, at: DateTime<Utc>) -> anyhow::Result<()> {
    let catalog = ledger.catalog();
    for team in TEAMS.iter().map(|t| t.id) {
        let mut state = ledger.store().load_team(catalog, &TeamId::new(team)?)?;
        let balance = state.balance(catalog, Some(at));
        if let Some(a) = balance.allowances.last() {
            println!(
                "{}  balance {team:<13} {:<10} {}",
                &at.to_rfc3339()[..16],
                a.allowance,
                consumed_of(a.allowance, &a.consumed, &a.value, &a.percent)
            );
        }
    }
    Ok(())
}

/// `run --demo`: a pipeline simulator producing the sample month to the input topics in
/// small bursts, and a watcher printing every alert the service publishes. Stops the
/// service a few seconds after the last burst.
pub fn spawn_live(brokers: String, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<()> {
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        let result = (|| -> anyhow::Result<()> {
            let producer = ledger_kafka::Producer::new(&brokers)?;
            let watcher = ledger_kafka::Consumer::new(
                &brokers,
                &format!("usage-ledger-demo-{}", std::process::id()),
                &[ledger_kafka::ALERTS],
                10_000,
                std::sync::Arc::new(ledger_kafka::FromBeginning),
            )?;
            let lines = traffic("2026-04-01T00:00:00Z".parse()?);
            println!("demo: producing {} events for {} teams in bursts", lines.len(), TEAMS.len());
            let mut produced = 0;
            for chunk in lines.chunks(40) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let mut messages = Vec::with_capacity(chunk.len());
                for line in chunk {
                    let event = parse_json_line(line)?;
                    let topic =
                        if matches!(event, Event::Image(_)) { ledger_kafka::IMAGES } else { ledger_kafka::ACCOUNTS };
                    messages.push(ledger_kafka::Outgoing {
                        topic: topic.into(),
                        key: event.team_id().to_string().into_bytes(),
                        payload: ledger_proto::encode_event(&event),
                        headers: Vec::new(),
                        partition: None,
                    });
                }
                producer.send_all(&messages)?;
                produced += messages.len();
                print_alerts(&watcher, std::time::Duration::from_millis(250))?;
            }
            println!("demo: produced {produced} events; waiting for the last alerts");
            for _ in 0..12 {
                print_alerts(&watcher, std::time::Duration::from_millis(250))?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            eprintln!("demo: {e:#}");
        }
        stop.store(true, Ordering::SeqCst);
    })
}

fn print_alerts(watcher: &ledger_kafka::Consumer, wait: std::time::Duration) -> anyhow::Result<()> {
    for record in watcher.poll_batch(100, wait)? {
        println!("ALERT  {}", ledger_proto::describe_alert(&record.payload)?);
    }
    Ok(())
}
