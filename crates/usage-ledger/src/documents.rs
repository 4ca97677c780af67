//! The documents the command line prints and the HTTP API returns, from one renderer:
//! invoices (JSON or CSV), balance, alerts, ledger pages, invoice verifications and the
//! finance export. Each takes the stores it reads; the callers choose how to open them.
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use ledger_core::{Catalog, Team, TeamId};
use ledger_store::{InvoiceCheck, Store};

/// The ledger that holds the team (teams have one owner), if any does.
pub fn team_store<'a>(stores: &'a [Store], team: &TeamId) -> anyhow::Result<Option<&'a Store>> {
    for store in stores {
        if store.has_team(team.as_str())? {
            return Ok(Some(store));
        }
    }
    Ok(None)
}

/// Items as one JSON array, one item per line group (the CLI's layout).
pub fn json_array(items: &[String]) -> String {
    if items.is_empty() {
        return "[]".into();
    }
    format!("[\n{}\n]", items.join(",\n"))
}

/// The team's final invoices as JSON, oldest first, and the open cycle's draft after
/// them when `draft`.
pub fn team_invoices(store: Option<&Store>, team: &TeamId, draft: bool) -> anyhow::Result<Vec<String>> {
    let Some(store) = store else { return Ok(Vec::new()) };
    let mut items = store.invoices(team.as_str())?;
    if draft {
        let catalog = store.catalog()?;
        items.extend(draft_invoice(&mut store.load_team(&catalog, team)?, &catalog));
    }
    Ok(items)
}

/// The open cycle's invoice as it stands, if a cycle is open.
pub fn draft_invoice(state: &mut Team, catalog: &Catalog) -> Option<String> {
    state.draft_invoice(catalog).map(|invoice| invoice.to_json())
}

/// The balance document (with the forecast when the cycle is open).
pub fn balance(store: &Store, team: &TeamId, at: Option<DateTime<Utc>>) -> anyhow::Result<String> {
    let catalog = store.catalog()?;
    balance_of(&mut store.load_team(&catalog, team)?, &catalog, at)
}

/// The balance document of a folded state.
pub fn balance_of(state: &mut Team, catalog: &Catalog, at: Option<DateTime<Utc>>) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(&state.balance(catalog, at))?)
}

/// The open cycle's consumption per meter at `points` instants up to `at`, of a folded
/// state.
pub fn usage_of(state: &mut Team, catalog: &Catalog, at: Option<DateTime<Utc>>, points: u32) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(&state.usage_series(catalog, at, points))?)
}

/// The team's alerts as one JSON array, oldest first.
pub fn alerts(store: Option<&Store>, team: &TeamId) -> anyhow::Result<String> {
    let stored = match store {
        Some(store) => store.alerts(team.as_str())?,
        None => Vec::new(),
    };
    let alerts: Vec<String> = stored
        .iter()
        .map(|a| Ok(serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(a)?)?))
        .collect::<anyhow::Result<_>>()?;
    Ok(json_array(&alerts))
}

/// The most points a usage document draws (`points=`).
pub const POINTS_MAX: u32 = 500;

/// Entries per page at most.
pub const PAGE_LIMIT_MAX: usize = 1000;

/// A page of the team's ledger: `{"entries": [{"seq", "hash", "kind", "body"}],
/// "next_after_seq"}` (`next_after_seq` is null on the last page).
pub fn entries_page(store: Option<&Store>, team: &TeamId, after_seq: u64, limit: usize) -> anyhow::Result<String> {
    let limit = limit.clamp(1, PAGE_LIMIT_MAX);
    let page = match store {
        Some(store) => store.entries_page(team.as_str(), after_seq, limit + 1)?,
        None => Vec::new(),
    };
    let more = page.len() > limit;
    let entries: Vec<serde_json::Value> = page
        .iter()
        .take(limit)
        .map(|(stored, entry)| {
            let tagged = serde_json::to_value(entry)?;
            let (kind, body) = tagged
                .as_object()
                .and_then(|o| o.iter().next())
                .map(|(k, v)| (snake(k), times_as_text(v.clone())))
                .context("an entry serializes as one tagged object")?;
            Ok(serde_json::json!({"seq": stored.seq, "hash": hex::encode(stored.hash), "kind": kind, "body": body}))
        })
        .collect::<anyhow::Result<_>>()?;
    let next = more.then(|| page[limit - 1].0.seq);
    Ok(serde_json::to_string_pretty(&serde_json::json!({"entries": entries, "next_after_seq": next}))?)
}

/// The entry's instants (stored as Unix nanoseconds) as RFC 3339 text.
fn times_as_text(mut body: serde_json::Value) -> serde_json::Value {
    const INSTANTS: [&str; 5] = ["occurred_at", "at", "period_start", "period_end", "closed_by"];
    if let Some(fields) = body.as_object_mut() {
        for (name, value) in fields.iter_mut() {
            match value.as_i64() {
                Some(nanos) if INSTANTS.contains(&name.as_str()) => {
                    *value = ledger_core::report::fmt_time(DateTime::from_timestamp_nanos(nanos)).into();
                }
                _ => *value = times_as_text(value.take()),
            }
        }
    }
    body
}

/// `CycleClosed` → `cycle_closed`.
fn snake(variant: &str) -> String {
    let mut out = String::new();
    for (i, c) in variant.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The team's invoice for the period starting on `day`, recomputed from its entries and
/// compared with the one issued; `None` when no invoice starts that day. Rendered with
/// `to_json`.
pub fn verification(
    store: Option<&Store>,
    team: &TeamId,
    day: chrono::NaiveDate,
) -> anyhow::Result<Option<InvoiceCheck>> {
    let Some(store) = store else { return Ok(None) };
    let Some(start) = period_start(store, team, day)? else { return Ok(None) };
    Ok(store.verify_invoice(&Catalog::builtin(), team, start)?)
}

/// A document as the commands print it and the API returns it.
pub fn to_json(doc: &impl serde::Serialize) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(doc)?)
}

/// The team's final invoice whose period starts on `day` (UTC), as issued.
pub fn invoice_on(store: Option<&Store>, team: &TeamId, day: chrono::NaiveDate) -> anyhow::Result<Option<String>> {
    let Some(store) = store else { return Ok(None) };
    let Some(start) = period_start(store, team, day)? else { return Ok(None) };
    Ok(store.invoice(team.as_str(), start)?)
}

/// The exact start instant of the team's invoice period starting on `day` (UTC).
fn period_start(store: &Store, team: &TeamId, day: chrono::NaiveDate) -> anyhow::Result<Option<DateTime<Utc>>> {
    for json in store.invoices(team.as_str())? {
        let v: serde_json::Value = serde_json::from_str(&json)?;
        let start = v["period"]["start"].as_str().and_then(|s| s.parse::<DateTime<Utc>>().ok());
        if let Some(start) = start.filter(|s| s.date_naive() == day) {
            return Ok(Some(start));
        }
    }
    Ok(None)
}

/// Every team's final invoices whose period starts in `month` (`YYYY-MM`), ordered by
/// team then period: the finance export.
pub fn month_invoices(stores: &[Store], month: &str) -> anyhow::Result<Vec<String>> {
    let mut items: Vec<(String, String, String)> = Vec::new();
    for store in stores {
        for json in store.all_invoices()? {
            let v: serde_json::Value = serde_json::from_str(&json)?;
            let start = v["period"]["start"].as_str().unwrap_or_default().to_string();
            if start.starts_with(month) && start.as_bytes().get(month.len()) == Some(&b'-') {
                items.push((v["team_id"].as_str().unwrap_or_default().to_string(), start, json));
            }
        }
    }
    items.sort();
    Ok(items.into_iter().map(|(_, _, json)| json).collect())
}

/// One CSV cell. A cell a spreadsheet would evaluate (starting with `=`, `+`, `-`, `@`,
/// a tab or a carriage return: a team id `-2-3` or `-A1:A99`) is neutralised as OWASP
/// recommends, with a leading `'`, unless it is a plain decimal (an amount such as
/// `-0.10` stays a number); a cell with a separator, quote or line break is quoted.
fn csv_field(s: &str) -> String {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']) && s.parse::<rust_decimal::Decimal>().is_err();
    let s = if formula { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r', '\t']) || formula {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Invoices as CSV: one row per invoice line plus a `total` row per invoice.
pub fn invoices_csv(items: &[String]) -> anyhow::Result<String> {
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
        let line = |l: &serde_json::Value| {
            [
                s(&l["kind"]),
                s(&l["description"]),
                s(&l["quantity"]),
                s(&l["unit_price"]),
                s(&l["amount"]),
                s(&l["period"]["start"]),
                s(&l["period"]["end"]),
            ]
        };
        let mut rows: Vec<[String; 7]> =
            v["lines"].as_array().map(|ls| ls.iter().map(line).collect()).unwrap_or_default();
        let blank = String::new;
        rows.push(["total".into(), blank(), blank(), blank(), s(&v["total"]), blank(), blank()]);
        for row in rows {
            let fields: Vec<String> = head.iter().chain(row.iter()).map(|f| csv_field(f)).collect();
            out.push_str(&fields.join(","));
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn cells_a_spreadsheet_would_evaluate_are_neutralised() {
        assert_eq!(csv_field("-2-3"), "\"'-2-3\"");
        assert_eq!(csv_field("-A1:A99"), "\"'-A1:A99\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(csv_field("\tx"), "\"'\tx\"");
        assert_eq!(csv_field("-0.10"), "-0.10", "an amount stays a number");
        assert_eq!(csv_field("+3"), "+3");
        assert_eq!(csv_field("acme-shop"), "acme-shop");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }
}
