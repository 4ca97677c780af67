//! Folding: one ledger entry into the team's state. The same functions serve live
//! appends and replay; an entry the fold cannot accept is a `Fault` of the ledger.
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::{insert_sorted, Effects, Team};
use crate::catalog::Catalog;
use crate::entry::{Entry, RefundTarget};
use crate::event::{AccountChange, AccountEvent, Api, ImageProcessed};
use crate::figures::{CarryKind, CarryLine, Purchase, UsageRec};
use crate::plans::Purchasable;
use crate::reject::Fault;
use crate::timeline::Rules;

impl Team {
    /// Folds one ledger entry. The same function serves live appends and replay.
    pub fn apply(&mut self, catalog: &Catalog, seq: u64, entry: &Entry) -> Result<Effects, Fault> {
        let team_id = self.id.clone();
        let fault = |reason: String| Fault { team_id: team_id.clone(), seq, reason };
        if seq != self.next_seq {
            return Err(fault(format!("expected seq {}", self.next_seq)));
        }
        let effects = match entry {
            Entry::Image(e) => self.apply_image(catalog, seq, e),
            Entry::Account(e) if matches!(e.change, AccountChange::CreditsPurchased { .. }) => {
                self.apply_purchase(catalog, seq, e).map_err(fault)?
            }
            Entry::Account(e) => self.apply_plan_change(catalog, e).map_err(fault)?,
            Entry::Refund { event, target } => self.apply_refund(catalog, event, target).map_err(fault)?,
            Entry::CycleClosed(m) => self.apply_close(catalog, seq, m, Rules::V1).map_err(fault)?,
            Entry::ClosedUnder { close, rules } => {
                let known = Rules::from_number(*rules).filter(|r| *r <= Rules::CURRENT).ok_or_else(|| {
                    fault(format!(
                        "closed under billing rules {rules}; this build knows rules 1 to {}",
                        Rules::CURRENT.number()
                    ))
                })?;
                self.apply_close(catalog, seq, close, known).map_err(fault)?
            }
            Entry::CreditsExpired(x) => self.apply_expiry(catalog, seq, x).map_err(fault)?,
        };
        self.next_seq += 1;
        Ok(effects)
    }

    pub(super) fn advance_clock(&mut self, t: DateTime<Utc>) {
        self.clock = Some(self.clock.map_or(t, |c| c.max(t)));
    }

    pub(super) fn apply_image(&mut self, catalog: &Catalog, seq: u64, e: &ImageProcessed) -> Effects {
        self.advance_clock(e.occurred_at);
        let rec = UsageRec {
            seq,
            at: e.occurred_at,
            event_id: e.event_id.clone(),
            api: e.api,
            images: e.images,
            sandbox: e.sandbox,
            refunded: false,
        };
        if self.closed_through.is_some_and(|b| e.occurred_at < b) {
            self.apply_late(catalog, rec);
            return Effects::default();
        }
        self.ensure_horizon(catalog, e.occurred_at);
        let slot = self.aggregate(catalog, &rec);
        self.pending.push(rec);
        let mut effects = Effects::default();
        if let Some((c, g)) = slot {
            effects.alerts = self.check_alerts(catalog, c, g, &e.event_id, e.occurred_at);
        }
        effects
    }

    /// Late usage: its cycle is closed, so it becomes a line on the next invoice.
    pub(super) fn apply_late(&mut self, catalog: &Catalog, rec: UsageRec) {
        let target =
            RefundTarget { seq: rec.seq, occurred_at: rec.at, api: rec.api, images: rec.images, sandbox: rec.sandbox };
        match self.charge_of(catalog, &target) {
            Some(_) if rec.sandbox => {}
            Some((c, api, rate)) => self.carry_line(CarryKind::LateUsage, c, api, rate, rec.images),
            None => self.keep_unplanned(&rec),
        }
    }

    pub(super) fn apply_plan_change(&mut self, catalog: &Catalog, e: &AccountEvent) -> Result<Effects, String> {
        self.advance_clock(e.occurred_at);
        if !e.change.is_plan_change() {
            return Err(format!("account change {:?} is not folded by this version", e.change));
        }
        insert_sorted(&mut self.account, e.clone());
        self.horizon = self.horizon.max(e.occurred_at);
        self.rederive(catalog)
            .map_err(|v| format!("plan change {} breaks the timeline: {}", v.event_id, v.reject.detail))?;
        // A change can move usage between generations: rebuild, then fire what is now crossed.
        self.reaggregate(catalog);
        let mut alerts = Vec::new();
        for c in self.closed..self.schedule.len() {
            for g in 0..self.schedule[c].gens.len() {
                alerts.extend(self.check_alerts(catalog, c, g, &e.event_id, e.occurred_at));
            }
        }
        Ok(Effects { alerts, invoice: None })
    }

    pub(super) fn apply_purchase(&mut self, catalog: &Catalog, seq: u64, e: &AccountEvent) -> Result<Effects, String> {
        self.advance_clock(e.occurred_at);
        // Replay folds without `submit`, which derived the cycles up to the event's time:
        // derive them here too, or a purchase past the horizon finds no cycle (found by
        // the fold fuzzer: a ledger that would not open again).
        self.ensure_horizon(catalog, e.occurred_at);
        let AccountChange::CreditsPurchased { credits, amount } = e.change else {
            return Err("purchase entry without CreditsPurchased".into());
        };
        let top_up = match self.in_force(e.occurred_at).and_then(|(_, g)| g.allowance.purchasable()) {
            Some(Purchasable::TopUps(_)) => true,
            Some(Purchasable::Credits) | None => false,
        };
        if top_up {
            // An AI-credit top-up: kept until used (no expiry).
            let top_up = Purchase {
                seq,
                at: e.occurred_at,
                event_id: e.event_id.clone(),
                credits,
                amount,
                expires_at: DateTime::<Utc>::MAX_UTC,
            };
            let i = self.top_ups.partition_point(|p| (p.at, &p.event_id) <= (top_up.at, &top_up.event_id));
            self.top_ups.insert(i, top_up);
            return Ok(Effects::default());
        }
        let version = self
            .cycle_at(e.occurred_at)
            .and_then(|c| catalog.version(&self.schedule[c].version_id))
            .ok_or_else(|| format!("credit purchase {} outside any cycle", e.event_id))?;
        let (_, _, expires_at) = version.credits().ok_or_else(|| format!("version {} has no credits", version.id))?;
        let purchase = Purchase { seq, at: e.occurred_at, event_id: e.event_id.clone(), credits, amount, expires_at };
        let i = self.purchases.partition_point(|p| (p.at, &p.event_id) <= (purchase.at, &purchase.event_id));
        self.purchases.insert(i, purchase);
        Ok(Effects::default())
    }

    pub(super) fn apply_refund(
        &mut self,
        catalog: &Catalog,
        event: &AccountEvent,
        target: &RefundTarget,
    ) -> Result<Effects, String> {
        self.advance_clock(event.occurred_at);
        let AccountChange::QualityRefund { original_event_id, .. } = &event.change else {
            return Err("refund entry without a QualityRefund".into());
        };
        if !self.refunded.insert(original_event_id.clone()) {
            return Err(format!("event {original_event_id} refunded twice"));
        }
        if let Some(i) = self.pending.iter().position(|r| r.seq == target.seq) {
            // Open cycle: the value returns to the bucket (or reduces overage).
            let rec = self.pending[i].clone();
            self.unaggregate(catalog, &rec);
            self.pending[i].refunded = true;
            return Ok(Effects::default());
        }
        let (c, api, rate) = self
            .charge_of(catalog, target)
            .ok_or_else(|| format!("refunded event {original_event_id} was never billed"))?;
        // Images that drew legacy credits give back the credit's worth; the rest what
        // they were billed (rules V2 bill images past the credits at the catalog's rate).
        let drawn = self.credit_draws.remove(&target.seq).map_or(0, |d| d.min(target.images));
        if drawn > 0 {
            let version = catalog.version(&self.schedule[c].version_id).expect("cycle version exists");
            let (credit_rate, ..) = version.credits().ok_or("credits drawn under a version without credits")?;
            self.carry_line(CarryKind::RefundCredit, c, api, credit_rate, drawn);
        }
        if target.images > drawn {
            self.carry_line(CarryKind::RefundCredit, c, api, rate, target.images - drawn);
        }
        Ok(Effects::default())
    }

    /// Rebuilds the open cycles' aggregates from their usage (after a new derivation).
    pub(super) fn reaggregate(&mut self, catalog: &Catalog) {
        self.aggs.clear();
        let pending = std::mem::take(&mut self.pending);
        for rec in &pending {
            self.aggregate(catalog, rec);
        }
        self.pending = pending;
    }

    /// Carries a line for closed cycle `c` to the next invoice.
    pub(super) fn carry_line(&mut self, kind: CarryKind, c: usize, api: Api, rate: Decimal, images: u32) {
        let (period_start, period_end) = (self.schedule[c].start, self.schedule[c].end);
        self.carry.push(CarryLine { kind, period_start, period_end, api, rate, images: u64::from(images) });
    }

    /// Adds `rec` to its open cycle's generation totals; returns the slot it landed in.
    pub(super) fn aggregate(&mut self, catalog: &Catalog, rec: &UsageRec) -> Option<(usize, usize)> {
        let c = self.cycle_at(rec.at).filter(|c| *c >= self.closed)?;
        let spec = &self.schedule[c];
        let g = spec.gen_at(rec.at);
        let images = u64::from(rec.images);
        let version = catalog.version(&spec.version_id).expect("cycle version exists");
        let gen = &spec.gens[g];
        // Usage the plan does not price is kept, reported as unplanned, and meters nothing.
        let rate = gen.allowance.rate(version, &gen.terms, rec.api)?;
        let value = if rec.sandbox || rec.refunded { Decimal::ZERO } else { rate * Decimal::from(rec.images) };
        let agg = self.aggs.entry((spec.start, g)).or_default();
        if rec.sandbox {
            agg.sandbox_images += images;
        } else if !rec.refunded {
            agg.value += value;
            agg.images += images;
            match rec.api {
                Api::AppExport => agg.exports += images,
                Api::AppAi => agg.ai += images,
                Api::RemoveBackground | Api::ImageEditing => {}
            }
            if rec.api == Api::RemoveBackground {
                agg.remove_background_images += images;
            }
        }
        Some((c, g))
    }

    pub(super) fn unaggregate(&mut self, catalog: &Catalog, rec: &UsageRec) {
        let Some(c) = self.cycle_at(rec.at).filter(|c| *c >= self.closed) else {
            return;
        };
        let spec = &self.schedule[c];
        let g = spec.gen_at(rec.at);
        let version = catalog.version(&spec.version_id).expect("cycle version exists");
        let gen = &spec.gens[g];
        let Some(rate) = gen.allowance.rate(version, &gen.terms, rec.api) else { return };
        let value = rate * Decimal::from(rec.images);
        if let Some(agg) = self.aggs.get_mut(&(spec.start, g)) {
            agg.value -= value;
            agg.images -= u64::from(rec.images);
            if rec.api == Api::RemoveBackground {
                agg.remove_background_images -= u64::from(rec.images);
            }
        }
    }
}
