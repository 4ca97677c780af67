//! Closing: the `CycleClosed` and `CreditsExpired` entries the clock makes due, and
//! folding them (the figures recomputed and checked against what the entry recorded),
//! then pruning what the closed cycle no longer needs.
use chrono::{DateTime, Duration, Utc};

use super::{Applied, Effects, Team};
use crate::catalog::Catalog;
use crate::entry::{CreditsExpired, CycleClosed, Entry};
use crate::figures::CycleFigures;
use crate::plans::app::AppFigures;
use crate::plans::contract::{ContractCarry, ContractFigures};
use crate::report::fmt_time;
use crate::timeline::{self, RuleBook, Rules};

/// What one cycle hands the next: legacy credits left, the contract term's position and
/// AI-credit top-ups left.
#[derive(PartialEq, Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Carried {
    pub credits: u64,
    pub contract: ContractCarry,
    pub top_ups: u64,
}

impl Carried {
    /// What a cycle that started with `into` and ended with `figures` hands on.
    pub(super) fn out_of(into: Carried, figures: &CycleFigures) -> Carried {
        Carried {
            credits: figures.credits.as_ref().map_or(0, |c| c.balance_end),
            contract: figures.contract.as_ref().map(ContractFigures::carry).unwrap_or_default(),
            // Top-ups wait, unused, through cycles off the app track.
            top_ups: figures.app.as_ref().map_or(into.top_ups, AppFigures::top_ups_left),
        }
    }
}

impl Team {
    pub(super) fn close_due(&mut self, catalog: &Catalog, closed_by: DateTime<Utc>, due: usize) -> Vec<Applied> {
        let mut applied = Vec::new();
        for _ in 0..due {
            // Credits expiring inside this cycle expire before it closes, onto its invoice.
            let end = self.schedule[self.closed].end;
            applied.extend(self.expire_credits(catalog, closed_by, Some(end)));
            let rules = self.close_rules(catalog);
            let spec = &self.schedule[self.closed];
            let invoice = self.invoice_for(catalog, self.closed, false, self.next_seq);
            let close = CycleClosed {
                period_start: spec.start,
                period_end: spec.end,
                closed_by,
                total: invoice.total_exact,
                forfeited: invoice.forfeited_exact,
            };
            let entry = match rules {
                Rules::V1 => Entry::CycleClosed(close),
                rules => Entry::ClosedUnder { close, rules: rules.number() },
            };
            let seq = self.next_seq;
            let effects = self.apply(catalog, seq, &entry).unwrap_or_else(|f| panic!("a close must fold: {f}"));
            applied.push(Applied { seq, entry, effects });
        }
        applied.extend(self.expire_credits(catalog, closed_by, None));
        applied
    }

    /// The rules the next cycle to close is recorded under: rules 1 (`CycleClosed`, as
    /// every earlier build wrote it) where they price it as the current rules do, else
    /// the current rules.
    fn close_rules(&self, catalog: &Catalog) -> Rules {
        if !self.rules_matter() {
            return Rules::V1;
        }
        let spec = &self.schedule[self.closed];
        let mut book = self.older_rules();
        book.push((spec.start, Rules::V1));
        let older = timeline::derive(&self.account, catalog, spec.start, RuleBook { older: &book })
            .expect("an accepted timeline derives");
        match older.get(self.closed) {
            Some(old) if old.same_pricing(spec) => Rules::V1,
            _ => Rules::CURRENT,
        }
    }

    /// When the team's credits expire, if it ever bought any.
    pub(super) fn credits_expire_at(&self) -> Option<DateTime<Utc>> {
        self.purchases.first().map(|p| p.expires_at)
    }

    /// Appends `CreditsExpired` once `until` passes the expiry + grace (and, with
    /// `before_end`, only if the expiry falls before that cycle end).
    pub(super) fn expire_credits(
        &mut self,
        catalog: &Catalog,
        until: DateTime<Utc>,
        before_end: Option<DateTime<Utc>>,
    ) -> Option<Applied> {
        let at = self.credits_expire_at()?;
        let grace = catalog.version_at(at).map_or(3600, |v| v.grace_seconds);
        if self.credits_expired.is_some()
            || until < at + Duration::seconds(i64::from(grace))
            || before_end.is_some_and(|end| end <= at)
        {
            return None;
        }
        let entry = Entry::CreditsExpired(CreditsExpired { at, credits: self.credits_left_at_expiry(catalog) });
        let seq = self.next_seq;
        let effects = self.apply(catalog, seq, &entry).unwrap_or_else(|f| panic!("an expiry must fold: {f}"));
        Some(Applied { seq, entry, effects })
    }

    /// Credits left when they expire: the open cycle holding the expiry says, or the
    /// balance carried past the last cycle before it.
    pub(super) fn credits_left_at_expiry(&self, catalog: &Catalog) -> u64 {
        let Some(at) = self.credits_expire_at() else { return 0 };
        let mut carried = self.carried;
        for c in self.closed..self.schedule.len() {
            if self.schedule[c].start > at {
                break;
            }
            let figures = self.figures_with(catalog, c, None, carried);
            if self.schedule[c].contains(at) {
                return figures.credits.unwrap_or_default().expired;
            }
            carried = Carried::out_of(carried, &figures);
        }
        carried.credits
    }

    pub(super) fn apply_expiry(&mut self, catalog: &Catalog, seq: u64, x: &CreditsExpired) -> Result<Effects, String> {
        if self.credits_expired.is_some() || self.credits_expire_at() != Some(x.at) {
            return Err(format!("CreditsExpired at {} does not match the team's credits", fmt_time(x.at)));
        }
        let left = self.credits_left_at_expiry(catalog);
        if left != x.credits {
            return Err(format!("recomputed {left} credits left at expiry, the ledger says {}", x.credits));
        }
        self.credits_expired = Some((seq, x.credits));
        Ok(Effects::default())
    }

    pub(super) fn apply_close(
        &mut self,
        catalog: &Catalog,
        seq: u64,
        m: &CycleClosed,
        rules: Rules,
    ) -> Result<Effects, String> {
        self.ensure_horizon(catalog, m.closed_by);
        let Some(spec) = self.schedule.get(self.closed) else {
            return Err(format!("CycleClosed for {} but no open cycle", fmt_time(m.period_start)));
        };
        if (spec.start, spec.end) != (m.period_start, m.period_end) || spec.closes_at() > m.closed_by {
            return Err(format!(
                "CycleClosed for {}..{} does not match the next due cycle",
                fmt_time(m.period_start),
                fmt_time(m.period_end)
            ));
        }
        if spec.rules != rules {
            // Closed under older rules (a ledger written before they changed): priced by
            // them, and the cycles after it derived from it.
            self.schedule[self.closed].rules = rules;
            if self.rules_matter() {
                self.rederive(catalog).map_err(|v| format!("rules {} break the timeline: {v:?}", rules.number()))?;
                self.reaggregate(catalog);
            }
        }
        let invoice = self.invoice_for(catalog, self.closed, false, seq);
        if (invoice.total_exact, invoice.forfeited_exact) != (m.total, m.forfeited) {
            return Err(format!(
                "recomputed total {} / forfeit {} differ from the recorded {} / {}",
                invoice.total_exact, invoice.forfeited_exact, m.total, m.forfeited
            ));
        }
        let figures = self.cycle_figures(catalog, self.closed, None);
        self.carried = Carried::out_of(self.carried, &figures);
        let spec = &self.schedule[self.closed];
        if spec.gens.iter().any(|g| g.allowance.keeps_credit_draws()) {
            let draws = figures.credits.as_ref().map(|c| c.draws.as_slice()).unwrap_or_default();
            self.credit_draws.extend(draws.iter().map(|(seq, n)| (*seq, u32::try_from(*n).expect("images are u32"))));
        }
        let (start, end) = (spec.start, spec.end);
        let mut kept = Vec::with_capacity(self.pending.len());
        for rec in std::mem::take(&mut self.pending) {
            if rec.at >= end {
                kept.push(rec);
            } else if rec.at < start || !self.schedule[self.closed].contains(rec.at) || !self.priced(catalog, &rec) {
                self.keep_unplanned(&rec);
            }
        }
        self.pending = kept;
        self.aggs.retain(|(s, _), _| *s != start);
        self.fired.retain(|k| k.span_end > end);
        self.carry.clear();
        let mut rows = super::views::meters(&figures);
        rows.shrink_to_fit();
        self.closed_meters.push(rows);
        self.schedule[self.closed].hollow();
        self.closed += 1;
        self.closed_through = Some(end);
        self.open_from_seq = seq + 1;
        Ok(Effects { alerts: Vec::new(), invoice: Some(invoice) })
    }
}
