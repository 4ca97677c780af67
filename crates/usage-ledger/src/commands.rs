//! The read and maintenance commands: close, invoices, balance, alerts, replay, verify.
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use ledger_core::{Catalog, TeamId};
use ledger_store::{Ledger, OpenOptions, Store};

/// Opens every ledger of an existing data directory: one (`import`) or one per input
/// partition (the service). Read commands never create one.
pub fn open_existing(dir: &Path) -> anyhow::Result<Vec<Store>> {
    let stores = ledger_store::open_all(dir, &Catalog::builtin(), OpenOptions::default())?;
    if stores.is_empty() {
        bail!("no ledger at {} (import something first, or pass --data-dir)", dir.display());
    }
    Ok(stores)
}

/// The ledger that holds the team (teams have one owner), if any does.
pub(crate) fn team_store(stores: Vec<Store>, team: &TeamId) -> anyhow::Result<Option<Store>> {
    for store in stores {
        if store.has_team(team.as_str())? {
            return Ok(Some(store));
        }
    }
    Ok(None)
}

pub(crate) fn team_id(team: &str) -> anyhow::Result<TeamId> {
    TeamId::new(team).with_context(|| format!("--team {team:?}"))
}

pub fn close(dir: &Path, until: DateTime<Utc>) -> anyhow::Result<ExitCode> {
    let (mut invoices, mut entries) = (0, 0);
    for store in open_existing(dir)? {
        let watch = crate::watchdog::Watchdog::arm("opening the ledger", dir);
        let mut ledger = Ledger::open(store)?;
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
    eprintln!("closed {invoices} cycle(s) until {}: {entries} entries appended", until.to_rfc3339());
    Ok(ExitCode::SUCCESS)
}

fn json_array(items: &[String]) -> String {
    if items.is_empty() {
        return "[]".into();
    }
    format!("[\n{}\n]", items.join(",\n"))
}

pub fn invoices(dir: &Path, team: &str, csv: bool, draft: bool) -> anyhow::Result<ExitCode> {
    let id = team_id(team)?;
    let mut items = Vec::new();
    if let Some(store) = team_store(open_existing(dir)?, &id)? {
        items = store.invoices(id.as_str())?;
        if draft {
            let catalog = store.catalog()?;
            if let Some(invoice) = store.load_team(&catalog, &id)?.draft_invoice(&catalog) {
                items.push(invoice.to_json());
            }
        }
    }
    if csv {
        crate::emit(to_csv(&items)?.trim_end())?;
    } else {
        crate::emit(&json_array(&items))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One row per invoice line plus a `total` row per invoice.
fn to_csv(items: &[String]) -> anyhow::Result<String> {
    let mut out = String::from("team_id,period_start,period_end,status,price_book_version,kind,description,quantity,unit_price,amount,line_period_start,line_period_end\n");
    for item in items {
        let v: serde_json::Value = serde_json::from_str(item)?;
        let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let head = [
            s(&v["team_id"]),
            s(&v["period"]["start"]),
            s(&v["period"]["end"]),
            s(&v["status"]),
            s(&v["price_book_version"]),
        ];
        let mut rows: Vec<[String; 7]> = v["lines"]
            .as_array()
            .map(|lines| {
                lines
                    .iter()
                    .map(|l| {
                        [
                            s(&l["kind"]),
                            s(&l["description"]),
                            s(&l["quantity"]),
                            s(&l["unit_price"]),
                            s(&l["amount"]),
                            s(&l["period"]["start"]),
                            s(&l["period"]["end"]),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default();
        rows.push([
            "total".into(),
            String::new(),
            String::new(),
            String::new(),
            s(&v["total"]),
            String::new(),
            String::new(),
        ]);
        for row in rows {
            let fields: Vec<String> = head.iter().chain(row.iter()).map(|f| csv_field(f)).collect();
            out.push_str(&fields.join(","));
            out.push('\n');
        }
    }
    Ok(out)
}

pub fn balance(dir: &Path, team: &str, at: Option<DateTime<Utc>>) -> anyhow::Result<ExitCode> {
    let id = team_id(team)?;
    let Some(store) = team_store(open_existing(dir)?, &id)? else { bail!("team {id} has no ledger entries") };
    let catalog = store.catalog()?;
    let mut state = store.load_team(&catalog, &id)?;
    crate::emit(&serde_json::to_string_pretty(&state.balance(&catalog, at))?)?;
    Ok(ExitCode::SUCCESS)
}

pub fn alerts(dir: &Path, team: &str) -> anyhow::Result<ExitCode> {
    let id = team_id(team)?;
    let alerts = match team_store(open_existing(dir)?, &id)? {
        Some(store) => store.alerts(id.as_str())?,
        None => Vec::new(),
    };
    let alerts: Vec<String> = alerts
        .iter()
        .map(|a| Ok(serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(a)?)?))
        .collect::<anyhow::Result<_>>()?;
    crate::emit(&json_array(&alerts))?;
    Ok(ExitCode::SUCCESS)
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
    let report = ledger_store::replay_all(&stores)?;
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
    crate::emit(&format!("digest: {}", report.digest))?;
    Ok(ExitCode::SUCCESS)
}

/// `verify`: every chain and the index both ways, then every team refolded from its
/// entries alone (each `CycleClosed` and `CreditsExpired` recomputed and compared) with
/// the stored alerts and invoices compared to the fold, and every outbox message read.
pub fn verify(dir: &Path) -> anyhow::Result<ExitCode> {
    let stores = open_existing(dir)?;
    let mut report = ledger_store::verify_all(&stores)?;
    if report.faults.is_empty() {
        match ledger_store::replay_all(&stores) {
            Ok(replay) if replay.mismatched > 0 => report.faults.push(format!(
                "{} stored alert(s) or invoice(s) differ from what the entries fold to",
                replay.mismatched
            )),
            Ok(_) => {}
            Err(e) => report.faults.push(format!("the entries do not refold: {e}")),
        }
        for store in &stores {
            if let Err(e) = store.outbox(usize::MAX).and_then(|_| store.failed_outbox()) {
                report.faults.push(format!("the outbox does not read: {e}"));
            }
        }
    }
    for fault in &report.faults {
        eprintln!("fault: {fault}");
    }
    if report.faults.is_empty() {
        crate::emit(&format!(
            "ok: {} teams, {} entries, {} index records",
            report.teams, report.entries, report.index_records
        ))?;
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: {} fault(s) found; first: {}", report.faults.len(), report.faults[0]);
        Ok(ExitCode::from(1))
    }
}
