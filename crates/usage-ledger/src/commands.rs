//! The read and maintenance commands: close, invoices, balance, alerts, replay, verify.
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use ledger_core::TeamId;
use ledger_store::{Ledger, Store};

use crate::documents;

/// Opens every ledger of an existing data directory to read it: one (`import`) or one
/// per input partition (the service). Read commands never create one; on a directory
/// they cannot write they read a private copy (`private`).
pub fn open_existing(dir: &Path) -> anyhow::Result<Vec<Store>> {
    Ok(open_existing_at(dir)?.0)
}

/// `open_existing`, and whether the stores are a private copy of a read-only directory.
pub fn open_existing_at(dir: &Path) -> anyhow::Result<(Vec<Store>, bool)> {
    let (stores, copied) = crate::private::open_for_reading(dir)?;
    if stores.is_empty() {
        bail!("no ledger at {} (import something first, or pass --data-dir)", dir.display());
    }
    Ok((stores, copied))
}

/// Opens every ledger of an existing data directory to append to it (`close`): refused
/// in one line where the directory cannot be written.
fn open_writable(dir: &Path) -> anyhow::Result<Vec<Store>> {
    if dir.exists() && !crate::private::writable(dir) {
        bail!("{} cannot be written here (read-only): close appends to the ledger", dir.display());
    }
    open_existing(dir)
}

/// The ledger that holds the team (teams have one owner), if any does.
pub(crate) fn team_store(stores: Vec<Store>, team: &TeamId) -> anyhow::Result<Option<Store>> {
    Ok(documents::team_store(&stores, team)?.cloned())
}

pub(crate) fn team_id(team: &str) -> anyhow::Result<TeamId> {
    TeamId::new(team).with_context(|| format!("--team {team:?}"))
}

/// Whether an operator may close until `until`: before 2200 (the ledger's range), and
/// not past now + the future skew unless they say they mean it (closing is irreversible).
/// `override_name` is how the caller says it means it (`--allow-future`).
pub fn close_allowed(
    until: DateTime<Utc>,
    future_skew: chrono::Duration,
    allow_future: bool,
    override_name: &str,
) -> anyhow::Result<()> {
    let latest = crate::window(future_skew).latest;
    let range_end: DateTime<Utc> = "2200-01-01T00:00:00Z".parse().expect("valid instant");
    if until >= range_end {
        bail!("until {} is outside the ledger's range (before 2200)", until.to_rfc3339());
    }
    if until > latest && !allow_future {
        bail!(
            "until {} is after now + the future skew ({}); closing is irreversible: pass {override_name} to mean it",
            until.to_rfc3339(),
            latest.to_rfc3339()
        );
    }
    Ok(())
}

pub fn close(dir: &Path, until: DateTime<Utc>) -> anyhow::Result<ExitCode> {
    let (invoices, entries) = close_stores(&open_writable(dir)?, until)?;
    eprintln!("closed {invoices} cycle(s) until {}: {entries} entries appended", until.to_rfc3339());
    Ok(ExitCode::SUCCESS)
}

/// Closes every cycle due by `until` in each store (its ledger folded for it, the
/// watchdog on while it reads), reporting each refund refused on the way; returns the
/// invoices issued and the entries appended. `close` and `serve` share it.
pub fn close_stores(stores: &[Store], until: DateTime<Utc>) -> anyhow::Result<(u64, u64)> {
    let (mut invoices, mut entries) = (0, 0);
    for store in stores {
        let watch = crate::watchdog::Watchdog::arm("opening the ledger", store.dir());
        let mut ledger = Ledger::open(store.clone())?;
        drop(watch);
        let report = ledger.close_until(until)?;
        for (parked, outcome) in &report.settled {
            if let ledger_store::Outcome::Rejected(r) = outcome {
                eprintln!(
                    "team {}, event {} (line or offset {}): {}: {}",
                    parked.event.team_id, parked.event.event_id, parked.offset, r.code, r.detail
                );
            }
        }
        invoices += report.invoices;
        entries += report.entries;
    }
    Ok((invoices, entries))
}

pub fn invoices(dir: &Path, team: &str, csv: bool, draft: bool) -> anyhow::Result<ExitCode> {
    let id = team_id(team)?;
    let stores = open_existing(dir)?;
    let items = documents::team_invoices(documents::team_store(&stores, &id)?, &id, draft)?;
    emit_invoices(&items, csv)
}

/// `invoices --all --period YYYY-MM`: every team's final invoices of the month.
pub fn month_invoices(dir: &Path, month: &str, csv: bool) -> anyhow::Result<ExitCode> {
    let items = documents::month_invoices(&open_existing(dir)?, month)?;
    emit_invoices(&items, csv)
}

fn emit_invoices(items: &[String], csv: bool) -> anyhow::Result<ExitCode> {
    if csv {
        crate::emit(documents::invoices_csv(items)?.trim_end())?;
    } else {
        crate::emit(&documents::json_array(items))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn balance(dir: &Path, team: &str, at: Option<DateTime<Utc>>) -> anyhow::Result<ExitCode> {
    let id = team_id(team)?;
    let stores = open_existing(dir)?;
    let Some(store) = documents::team_store(&stores, &id)? else { bail!("team {id} has no ledger entries") };
    crate::emit(&documents::balance(store, &id, at)?)?;
    Ok(ExitCode::SUCCESS)
}

pub fn alerts(dir: &Path, team: &str) -> anyhow::Result<ExitCode> {
    let id = team_id(team)?;
    let stores = open_existing(dir)?;
    crate::emit(&documents::alerts(documents::team_store(&stores, &id)?, &id)?)?;
    Ok(ExitCode::SUCCESS)
}

/// `verify-invoice`: the invoice recomputed from the team's entries alone, compared with
/// the one issued; exit 1 when they differ.
pub fn verify_invoice(dir: &Path, team: &str, day: chrono::NaiveDate) -> anyhow::Result<ExitCode> {
    let id = team_id(team)?;
    let stores = open_existing(dir)?;
    let Some(check) = documents::verification(documents::team_store(&stores, &id)?, &id, day)? else {
        bail!("team {id} has no final invoice for a period starting {day}")
    };
    crate::emit(&documents::to_json(&check)?)?;
    match &check.mismatch {
        None => Ok(ExitCode::SUCCESS),
        Some(why) => {
            eprintln!("error: team {id} invoice {day}: {why}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `outbox`: how many messages wait to be published, then each one the broker refused
/// for good (JSON lines: its number, kind, id, size and the refusal).
pub fn outbox(dir: &Path) -> anyhow::Result<ExitCode> {
    let (mut waiting, mut failed) = (0, Vec::new());
    for store in open_existing(dir)? {
        waiting += store.outbox(usize::MAX)?.len();
        failed.extend(store.failed_outbox()?);
    }
    for (n, m) in &failed {
        let reason = m.headers.iter().find(|(k, _)| k == ledger_store::FAILED_REASON).map_or("", |(_, v)| v.as_str());
        let line = serde_json::json!({
            "n": n, "kind": format!("{:?}", m.kind), "id": m.id, "key": m.key,
            "bytes": m.json.len() + m.payload.len(), "reason": reason,
        });
        crate::emit(&line.to_string())?;
    }
    eprintln!("{waiting} message(s) waiting to be published, {} refused for good", failed.len());
    Ok(ExitCode::SUCCESS)
}

pub fn replay(dir: &Path) -> anyhow::Result<ExitCode> {
    let stores = open_existing(dir)?;
    let started = Instant::now();
    let reading = crate::reading::Reading::start("replay");
    let report = ledger_store::replay_all(&stores)?;
    drop(reading);
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "replayed {} entries of {} teams in {secs:.2} s ({:.0} entries/s): {} invoices, {} alerts, {} stored projections differed",
        report.entries,
        report.teams,
        report.entries as f64 / secs.max(1e-9),
        report.invoices,
        report.alerts,
        report.mismatched
    );
    for fault in &report.checkpoint_faults {
        eprintln!("removed a checkpoint: {fault}");
    }
    crate::emit(&format!("digest: {}", report.digest))?;
    Ok(ExitCode::SUCCESS)
}

/// `verify`: every chain and the index both ways, then every team refolded from its
/// entries alone (each `CycleClosed` and `CreditsExpired` recomputed and compared) with
/// the stored alerts and invoices compared to the fold, each checkpoint compared to the
/// fold at its entry, and every outbox message read.
pub fn verify(dir: &Path) -> anyhow::Result<ExitCode> {
    let stores = open_existing(dir)?;
    let reading = crate::reading::Reading::start("verify");
    let mut report = ledger_store::verify_all(&stores)?;
    if report.faults.is_empty() {
        match ledger_store::replay_all_read_only(&stores) {
            Ok(replay) => {
                if replay.mismatched > 0 {
                    report.faults.push(format!(
                        "{} stored alert(s) or invoice(s) differ from what the entries fold to",
                        replay.mismatched
                    ));
                }
                report.faults.extend(replay.checkpoint_faults);
                report.checkpoints = replay.checkpoints;
            }
            Err(e) => report.faults.push(format!("the entries do not refold: {e}")),
        }
        for store in &stores {
            if let Err(e) = store.outbox(usize::MAX).and_then(|_| store.failed_outbox()) {
                report.faults.push(format!("the outbox does not read: {e}"));
            }
        }
    }
    drop(reading);
    for fault in &report.faults {
        eprintln!("fault: {fault}");
    }
    if report.faults.is_empty() {
        crate::emit(&format!(
            "ok: {} teams, {} entries, {} index records",
            report.teams, report.entries, report.index_records
        ))?;
        tracing::info!(checkpoints = report.checkpoints, "Every checkpoint equals the fold of its team's entries.");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: {} fault(s) found; first: {}", report.faults.len(), report.faults[0]);
        Ok(ExitCode::from(1))
    }
}
