//! `advise`: the bucket advisor's command. Reads the team's last closed cycles and its
//! image events from the ledger, replays them under every plan the catalog sells (the
//! core's `advice`, one plan per thread at a time) and prints the ranking.
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::bail;
use chrono::{DateTime, Utc};
use ledger_core::advice::{self, Advice, PlanCost};
use ledger_core::{AccountChange, Catalog, Entry, ImageProcessed, PlanTerms, TeamId};
use rust_decimal::Decimal;

use crate::commands::{open_existing, team_id, team_store};

/// The closed cycles replayed: from `anchor` to `end`, and what they were invoiced.
struct Window {
    anchor: DateTime<Utc>,
    end: DateTime<Utc>,
    cycles: u32,
    invoiced: Decimal,
}

pub fn run(dir: &Path, team: &str, months: u32, json: bool) -> anyhow::Result<ExitCode> {
    if months == 0 {
        bail!("--months must be at least 1");
    }
    let id = team_id(team)?;
    let watch = crate::watchdog::Watchdog::arm("reading the team's ledger", dir);
    let Some(store) = team_store(open_existing(dir)?, &id)? else { bail!("team {team} has no entries in the ledger") };
    let catalog = store.catalog()?;
    let window = window(&store.invoices(team)?, months, team)?;
    let images = unrefunded_images(store.team_entries(&catalog, &id)?);
    drop(watch);
    if !images.iter().any(|i| !i.sandbox && window.anchor <= i.occurred_at && i.occurred_at < window.end) {
        bail!("team {team} used no API images in its last {} closed cycle(s): no plan to compare", window.cycles);
    }
    let busiest = advice::busiest_cycle_value(&catalog, window.anchor, window.cycles, &images);
    let plans = advice::candidates(&catalog, window.anchor, busiest);
    let options = replay_plans(&catalog, &id, &window, &plans, &images);
    let advice = options
        .and_then(|o| advice::rank(&catalog, &id, window.anchor, window.cycles, &images, Some(window.invoiced), o))
        .map_err(|e| anyhow::anyhow!("team {team}: {e}"))?;
    if json {
        crate::emit(&serde_json::to_string_pretty(&advice)?)?;
    } else {
        crate::emit(&render(team, &advice, window.invoiced))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The last `months` final invoices' periods and totals.
fn window(invoices: &[String], months: u32, team: &str) -> anyhow::Result<Window> {
    let invoices: Vec<serde_json::Value> =
        invoices.iter().map(|j| serde_json::from_str(j)).collect::<Result<_, _>>()?;
    if invoices.is_empty() {
        bail!("team {team} has no closed cycle to advise from (its first cycle is still open)");
    }
    let last = &invoices[invoices.len().saturating_sub(months as usize)..];
    let time = |v: &serde_json::Value| v.as_str().unwrap_or_default().parse::<DateTime<Utc>>();
    // A stored invoice without a readable total is an error, never advised as free.
    let total = |i: &serde_json::Value| -> anyhow::Result<Decimal> {
        let text = i["total"].as_str().ok_or_else(|| anyhow::anyhow!("team {team}: an invoice has no total: {i}"))?;
        Ok(text.parse::<Decimal>()?)
    };
    let invoiced = last.iter().map(total).sum::<anyhow::Result<Decimal>>()?;
    Ok(Window {
        anchor: time(&last[0]["period"]["start"])?,
        end: time(&last[last.len() - 1]["period"]["end"])?,
        cycles: last.len() as u32,
        invoiced,
    })
}

/// The team's API image events, without the refunded ones (they cost nothing anywhere).
fn unrefunded_images(entries: Vec<Entry>) -> Vec<ImageProcessed> {
    let refunded: std::collections::HashSet<ledger_core::EventId> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Refund { event, .. } => match &event.change {
                AccountChange::QualityRefund { original_event_id, .. } => Some(original_event_id.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    entries
        .into_iter()
        .filter_map(|e| match e {
            Entry::Image(i) if !i.api.is_app() && !refunded.contains(&i.event_id) => Some(i),
            _ => None,
        })
        .collect()
}

/// Each plan is an independent replay: spread them over the cores, with a progress bar.
fn replay_plans(
    catalog: &Catalog,
    team: &TeamId,
    window: &Window,
    plans: &[PlanTerms],
    images: &[ImageProcessed],
) -> Result<Vec<PlanCost>, String> {
    let bar = indicatif::ProgressBar::new(plans.len() as u64).with_message("plans replayed");
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("valid template"));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(plans.len().max(1));
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, Result<PlanCost, String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(terms) = plans.get(i) else { break done };
                        done.push((i, advice::simulate(catalog, team, window.anchor, window.cycles, terms, images)));
                        bar.inc(1);
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("advice threads do not panic")).collect()
    });
    bar.finish_and_clear();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

fn render(team: &str, advice: &Advice, invoiced: Decimal) -> String {
    let mut out = format!(
        "Team {team}, {} cycle(s) {} -> {} (catalog {}): {} billable images, invoiced {}\n",
        advice.cycles,
        &advice.period.start[..10],
        &advice.period.end[..10],
        advice.price_book_version,
        advice.billable_images,
        advice.invoiced.as_deref().unwrap_or("-")
    );
    out += &format!("{:<22} {:>12} {:>12} {:>12} {:>10}\n", "plan", "total", "forfeited", "overage", "per image");
    for o in &advice.options {
        let per_image = o.effective_cost_per_image.as_deref().unwrap_or("-");
        out += &format!("{:<22} {:>12} {:>12} {:>12} {:>10}\n", o.plan, o.total, o.forfeited, o.overage, per_image);
    }
    if let Some(best) = advice.options.first() {
        let saving = invoiced - best.total_exact;
        out += &format!(
            "Cheapest: {}, {} for these cycles ({} {} than invoiced).",
            best.plan,
            best.total,
            ledger_core::money::fmt_cents(saving.abs()),
            if saving >= Decimal::ZERO { "less" } else { "more" }
        );
    }
    out
}
