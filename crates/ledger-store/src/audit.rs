//! Reads for auditors: one invoice recomputed from its team's entries alone (walking
//! the hash chain from the first entry to the entry that closed the cycle), and the
//! ledger page by page with each entry's chain hash.
use chrono::{DateTime, Utc};
use ledger_core::{Catalog, Entry, Team, TeamId};
use serde::Serialize;

use crate::store::Store;
use crate::tables::entries::{self, Hash, StoredEntry};
use crate::tables::{invoices, split_team_key};
use crate::{Error, Result};

/// An issued invoice checked against its recomputation from the entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoiceCheck {
    /// The chain is intact up to the invoice's entry and the recomputed invoice is the
    /// issued one, byte for byte.
    pub matches: bool,
    pub stored_total: String,
    /// `None` when the entries do not produce this invoice (or the chain broke first).
    pub recomputed_total: Option<String>,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The head hash the issued invoice names.
    pub head_hash: String,
    /// Every entry up to the invoice's hashes to its recorded chain hash, and the last
    /// one's is `head_hash`.
    pub chain_ok: bool,
    /// The entries walked (1 to the invoice's `last_seq`, or to where the chain broke).
    pub entries_checked: u64,
    /// Why it does not match (absent when it does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mismatch: Option<String>,
}

/// What the walk found.
#[derive(Default)]
struct Walk {
    entries: u64,
    head: Hash,
    broken: Option<String>,
    recomputed: Option<String>,
    recomputed_total: Option<String>,
}

impl Store {
    /// The team's final invoice for the period starting at `period_start`, as issued.
    pub fn invoice(&self, team: &str, period_start: DateTime<Utc>) -> Result<Option<String>> {
        invoices::get(&self.tree, team, period_start.timestamp())
    }

    /// Every final invoice here, in key order (team, then period).
    pub fn all_invoices(&self) -> Result<Vec<String>> {
        invoices::all(&self.tree)
    }

    /// Recomputes the team's invoice for the period starting at `period_start` from its
    /// entries alone and compares it with the one issued; `None` if none was issued.
    pub fn verify_invoice(
        &self,
        catalog: &Catalog,
        team: &TeamId,
        period_start: DateTime<Utc>,
    ) -> Result<Option<InvoiceCheck>> {
        let Some(stored) = self.invoice(team.as_str(), period_start)? else { return Ok(None) };
        let issued: serde_json::Value = serde_json::from_str(&stored)
            .map_err(|e| Error::Corrupt(format!("team {team} invoice {period_start}: {e}")))?;
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let first_seq = issued["ledger"]["first_seq"].as_u64().unwrap_or_default();
        let last_seq = issued["ledger"]["last_seq"].as_u64().unwrap_or_default();
        let head_hash = text(&issued["ledger"]["head_hash"]);
        let walk = self.walk_to_invoice(catalog, team, period_start, last_seq)?;
        let chain_ok = walk.broken.is_none() && hex::encode(walk.head) == head_hash && walk.entries == last_seq;
        let mismatch = if let Some(why) = walk.broken {
            Some(why)
        } else if !chain_ok {
            Some(format!("the chain up to seq {last_seq} does not end at the invoice's head_hash"))
        } else if walk.recomputed.is_none() {
            Some("the entries do not close this cycle".to_string())
        } else if walk.recomputed.as_deref() != Some(stored.as_str()) {
            Some("the recomputed invoice differs from the issued one".to_string())
        } else {
            None
        };
        Ok(Some(InvoiceCheck {
            matches: mismatch.is_none(),
            stored_total: text(&issued["total"]),
            recomputed_total: walk.recomputed_total,
            first_seq,
            last_seq,
            head_hash,
            chain_ok,
            entries_checked: walk.entries,
            mismatch,
        }))
    }

    /// Folds the team's entries 1..=`last_seq` through fresh core state, checking the
    /// chain, and keeps the invoice of the period starting at `period_start`.
    fn walk_to_invoice(
        &self,
        catalog: &Catalog,
        team: &TeamId,
        period_start: DateTime<Utc>,
        last_seq: u64,
    ) -> Result<Walk> {
        let mut walk = Walk::default();
        let mut state = Team::new(team.clone());
        for block in entries::blocks(&self.tree, entries::of_team(team.as_str())) {
            let (_, _, run) = block?;
            for stored in run.iter().take_while(|s| s.seq <= last_seq) {
                if let Err(why) = step(catalog, &mut state, &mut walk, stored, team, period_start) {
                    walk.broken = Some(why);
                    return Ok(walk);
                }
            }
            if run.last().is_some_and(|s| s.seq >= last_seq) {
                break;
            }
        }
        Ok(walk)
    }

    /// Up to `limit` of the team's entries after `after_seq`, in ledger order.
    pub fn entries_page(&self, team: &str, after_seq: u64, limit: usize) -> Result<Vec<(StoredEntry, Entry)>> {
        let (lower, upper) = entries::of_team(team);
        // The block holding `after_seq + 1` starts at or before its key.
        let start = self
            .tree
            .range(lower.clone()..=entries::key(team, after_seq.saturating_add(1)))
            .next_back()
            .transpose()?
            .map_or(lower, |(k, _)| k.to_vec());
        let mut page = Vec::new();
        for block in entries::blocks(&self.tree, (start, upper)) {
            let (_, _, run) = block?;
            for stored in run.into_iter().filter(|s| s.seq > after_seq) {
                if page.len() == limit {
                    return Ok(page);
                }
                let entry = entries::decode_entry(&stored.body)
                    .map_err(|e| Error::Corrupt(format!("team {team} seq {}: {e}", stored.seq)))?;
                page.push((stored, entry));
            }
        }
        Ok(page)
    }
}

/// One entry of the walk: its chain link, then its fold.
fn step(
    catalog: &Catalog,
    state: &mut Team,
    walk: &mut Walk,
    stored: &StoredEntry,
    team: &TeamId,
    period_start: DateTime<Utc>,
) -> std::result::Result<(), String> {
    let seq = stored.seq;
    if seq != walk.entries + 1 || entries::chain(&walk.head, seq, &stored.body) != stored.hash {
        return Err(format!("the hash chain breaks at seq {seq}"));
    }
    let entry = entries::decode_entry(&stored.body).map_err(|e| format!("entry {seq} does not decode: {e}"))?;
    let effects = state.apply(catalog, seq, &entry).map_err(|e| format!("entry {seq} does not fold: {e}"))?;
    walk.entries = seq;
    walk.head = stored.hash;
    if let Some(invoice) = effects.invoice.filter(|i| i.period_start == period_start) {
        let row = invoices::row(team.as_str(), invoice, &stored.hash);
        let value: serde_json::Value = serde_json::from_str(&row.json).unwrap_or_default();
        walk.recomputed_total = value["total"].as_str().map(str::to_string);
        walk.recomputed = Some(row.json);
    }
    Ok(())
}

/// Flips `images` of image entry `seq` of `team` to another count and re-chains every
/// entry after it, so the chain itself is consistent: only recomputing the invoice
/// from the entries shows the change. For tests and drills only.
pub fn tamper_image_rechained(dir: &std::path::Path, team: &str, seq: u64) -> Result<()> {
    let store = Store::open(dir, &Catalog::builtin())?;
    let mut head: Hash = [0; 32];
    let mut changed = false;
    let blocks: Vec<_> = entries::team_blocks(&store.tree, team).collect::<Result<_>>()?;
    for (k, v) in blocks {
        let mut run = entries::decode_block(&v)?;
        for e in &mut run {
            if e.seq == seq {
                let mut entry = entries::decode_entry(&e.body).map_err(|e| Error::Corrupt(e.to_string()))?;
                let Entry::Image(image) = &mut entry else {
                    return Err(Error::Corrupt(format!("team {team} entry {seq} is not an image")));
                };
                image.images += 1;
                e.body = entries::encode_entry(&entry);
                changed = true;
            }
            e.hash = entries::chain(&head, e.seq, &e.body);
            head = e.hash;
        }
        let (_, first) = split_team_key(&k).ok_or_else(|| Error::Corrupt("entry key".into()))?;
        store.tree.insert(entries::key(team, first), entries::encode_block(entries::block_format(&v), &run))?;
    }
    store.db.flush()?;
    if changed {
        Ok(())
    } else {
        Err(Error::Corrupt(format!("team {team} has no entry {seq}")))
    }
}
