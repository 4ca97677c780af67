//! Views of the state: a cycle's figures (from its pending usage and what the open
//! cycles before it carried in), its invoice, the open cycle's draft, and the balance.
use chrono::{DateTime, Utc};

use super::close::Carried;
use super::{unplanned_of, Team, UNPLANNED_LISTED};
use crate::catalog::Catalog;
use crate::event::Api;
use crate::figures::{self, CycleFigures, Purchase, UsageRec, Walk};
use crate::money::fmt_exact;
use crate::plans::app::TopUpInput;
use crate::plans::credits::CreditInput;
use crate::plans::Meter;
use crate::report::{
    self, fmt_time, AllowanceBalance, AllowanceForecast, Balance, CycleView, Exceptions, Forecast, Invoice,
    InvoiceInput, MeterSeries, SeriesPoint, Unplanned, UsageSeries,
};
use crate::timeline::CycleSpec;

impl Team {
    /// Figures of cycle `c` from its pending usage, optionally only up to `at`.
    pub(super) fn cycle_figures(&self, catalog: &Catalog, c: usize, at: Option<DateTime<Utc>>) -> CycleFigures {
        let carried = self.carried_into(catalog, c);
        self.figures_with(catalog, c, at, carried)
    }

    /// Credits left when open cycle `c` starts (the open cycles before it drew some).
    pub(super) fn carried_into(&self, catalog: &Catalog, c: usize) -> Carried {
        let carries = |spec: &CycleSpec| spec.gens.iter().any(|g| g.allowance.carries_without_purchases());
        if c == self.closed {
            return self.carried;
        }
        if self.purchases.is_empty() && self.top_ups.is_empty() && !self.schedule[self.closed..c].iter().any(carries) {
            return Carried::default();
        }
        (self.closed..c)
            .fold(self.carried, |carried, k| Carried::out_of(carried, &self.figures_with(catalog, k, None, carried)))
    }

    pub(super) fn figures_with(
        &self,
        catalog: &Catalog,
        c: usize,
        at: Option<DateTime<Utc>>,
        carried: Carried,
    ) -> CycleFigures {
        let spec = &self.schedule[c];
        let version = catalog.version(&spec.version_id).expect("cycle version exists");
        let (credits, top_ups) = self.bought(c, at, carried);
        figures::figures(spec, version, &self.records(c, at), &credits, carried.contract, &top_ups)
    }

    /// Cycle `c`'s usage up to `at`, in draw order: `(at, event_id)`.
    fn records(&self, c: usize, at: Option<DateTime<Utc>>) -> Vec<&UsageRec> {
        let spec = &self.schedule[c];
        let mut records: Vec<&UsageRec> =
            self.pending.iter().filter(|r| spec.contains(r.at) && at.is_none_or(|t| r.at <= t)).collect();
        records.sort_by(|a, b| (a.at, &a.event_id).cmp(&(b.at, &b.event_id)));
        records
    }

    /// The credits and top-ups cycle `c` has up to `at`, beside what was `carried` in.
    fn bought(&self, c: usize, at: Option<DateTime<Utc>>, carried: Carried) -> (CreditInput<'_>, TopUpInput<'_>) {
        let spec = &self.schedule[c];
        let upto = |p: &&Purchase| spec.contains(p.at) && at.is_none_or(|t| p.at <= t);
        let credits = CreditInput {
            carried: carried.credits,
            purchases: self.purchases.iter().filter(upto).collect(),
            expires_at: self.credits_expire_at(),
            expiry_seq: self.credits_expired.map(|(seq, _)| seq),
        };
        let top_ups = TopUpInput { carried: carried.top_ups, purchases: self.top_ups.iter().filter(upto).collect() };
        (credits, top_ups)
    }

    pub(super) fn invoice_for(&self, catalog: &Catalog, c: usize, draft: bool, last_seq: u64) -> Invoice {
        let spec = &self.schedule[c];
        let version = catalog.version(&spec.version_id).expect("cycle version exists");
        let figures = self.cycle_figures(catalog, c, None);
        report::build(InvoiceInput {
            team_id: &self.id,
            spec,
            version,
            figures: &figures,
            carry: &self.carry,
            draft,
            first_seq: self.open_from_seq,
            last_seq,
        })
    }

    /// The open cycle's invoice as it stands (status "draft"), if a cycle is open.
    pub fn draft_invoice(&mut self, catalog: &Catalog) -> Option<Invoice> {
        if let Some(clock) = self.clock {
            self.ensure_horizon(catalog, clock);
        }
        let c = self.clock.and_then(|t| self.cycle_at(t)).filter(|c| *c >= self.closed)?;
        Some(self.invoice_for(catalog, c, true, self.last_seq()))
    }

    /// Allowances, consumed and remaining in the cycle containing `at` (default: the team's clock).
    pub fn balance(&mut self, catalog: &Catalog, at: Option<DateTime<Utc>>) -> Balance {
        let at = at.or(self.clock);
        if let Some(t) = at {
            self.ensure_horizon(catalog, t);
        }
        let cycle = at.and_then(|t| self.cycle_at(t));
        let (cycle_view, allowances, forecast) = match cycle {
            Some(c) => {
                let spec = &self.schedule[c];
                let closed = c < self.closed;
                let view = CycleView {
                    start: fmt_time(spec.start),
                    end: fmt_time(spec.end),
                    status: if closed { "closed" } else { "open" },
                    price_book_version: spec.version_id.clone(),
                };
                let (rows, forecast) = if closed {
                    (self.closed_meters[c].clone(), None)
                } else {
                    let rows = meters(&self.cycle_figures(catalog, c, at));
                    let forecast = at.map(|at| forecast(&rows, (spec.start, spec.end), at));
                    (rows, forecast)
                };
                (
                    Some(view),
                    rows.iter().map(|(m, generation)| AllowanceBalance::of(m, *generation)).collect(),
                    forecast,
                )
            }
            None => (None, Vec::new(), None),
        };
        let open: Vec<&UsageRec> = self.pending.iter().filter(|r| !self.priced(catalog, r)).collect();
        let listed_open = open.len().min(UNPLANNED_LISTED);
        let listed_closed = UNPLANNED_LISTED - listed_open;
        let mut unplanned: Vec<Unplanned> =
            self.unplanned.iter().skip(self.unplanned.len().saturating_sub(listed_closed)).map(unplanned_of).collect();
        unplanned.extend(open[open.len() - listed_open..].iter().map(|r| unplanned_of(r)));
        let total = self.unplanned_total + open.len() as u64;
        let unplanned_total = (total > unplanned.len() as u64).then_some(total);
        Balance {
            team_id: self.id.to_string(),
            at: at.map(fmt_time),
            cycle: cycle_view,
            allowances,
            exceptions: Exceptions { unplanned, unplanned_total, pending_lines: self.carry.len() },
            forecast,
        }
    }
}

impl Team {
    /// The open cycle containing `at` (default: the team's clock) sampled at `points`
    /// instants from its start to `at`: each meter's consumption at each.
    pub fn usage_series(&mut self, catalog: &Catalog, at: Option<DateTime<Utc>>, points: u32) -> UsageSeries {
        let at = at.or(self.clock);
        if let Some(t) = at {
            self.ensure_horizon(catalog, t);
        }
        let mut series =
            UsageSeries { team_id: self.id.to_string(), cycle: None, rates: Default::default(), meters: Vec::new() };
        let (Some(at), points) = (at, points.max(2)) else { return series };
        let Some(c) = self.cycle_at(at).filter(|c| *c >= self.closed) else { return series };
        let spec = &self.schedule[c];
        let (start, end) = (spec.start, at.min(spec.end));
        let version = catalog.version(&spec.version_id).expect("cycle version exists");
        for (api, key) in [(Api::RemoveBackground, "remove_background"), (Api::ImageEditing, "image_editing")] {
            if let Some(rate) = version.rate(api) {
                series.rates.insert(key, fmt_exact(rate));
            }
        }
        series.cycle = Some(CycleView {
            start: fmt_time(spec.start),
            end: fmt_time(spec.end),
            status: "open",
            price_book_version: spec.version_id.clone(),
        });
        let instant = |i: u32| start + (end - start) * i as i32 / (points - 1) as i32;
        let (records, carried) = (self.records(c, Some(end)), self.carried_into(catalog, c));
        let bought = |t| {
            let (credits, top_ups) = self.bought(c, Some(t), carried);
            (credits.purchases.len(), top_ups.purchases.len())
        };
        // One walk over the cycle's records, its figures taken at each instant; a
        // purchase between two instants changes the inputs, and the walk starts again.
        let mut i = 0;
        while i < points {
            let (credits, top_ups) = self.bought(c, Some(instant(i)), carried);
            let inputs = (credits.purchases.len(), top_ups.purchases.len());
            let mut walk = Walk::new(spec, version, &credits, carried.contract, &top_ups);
            let mut next = 0;
            while i < points && bought(instant(i)) == inputs {
                let t = instant(i);
                while let Some(rec) = records.get(next).filter(|r| r.at <= t) {
                    walk.draw(rec);
                    next += 1;
                }
                series.add(t, meters(&walk.clone().finish()));
                i += 1;
            }
        }
        series
    }
}

impl UsageSeries {
    /// Each meter's consumption at `t`.
    fn add(&mut self, t: DateTime<Utc>, rows: Vec<(Meter, u32)>) {
        for (meter, generation) in rows {
            let key = (meter.kind.key(), generation);
            let n = match self.meters.iter().position(|m| (m.allowance, m.generation) == key) {
                Some(n) => n,
                None => {
                    let (allowance, value, points) = (key.0, String::new(), Vec::new());
                    self.meters.push(MeterSeries { allowance, generation, value, points });
                    self.meters.len() - 1
                }
            };
            let row = &mut self.meters[n];
            row.value = fmt_exact(meter.limit);
            row.points.push(SeriesPoint { at: fmt_time(t), consumed: fmt_exact(meter.consumed) });
        }
    }
}

/// Each generation's meters with its number, in meter order.
pub(super) fn meters(figures: &CycleFigures) -> Vec<(Meter, u32)> {
    let mut rows = Vec::new();
    for g in &figures.gens {
        let mut meters = g.allowance.meters(&g.meter_input(figures));
        meters.sort_by_key(|m| m.kind);
        rows.extend(meters.into_iter().map(|m| (m, g.number)));
    }
    rows
}

/// Each meter projected to the end of its span at the pace so far.
fn forecast(rows: &[(Meter, u32)], cycle: (DateTime<Utc>, DateTime<Utc>), at: DateTime<Utc>) -> Forecast {
    Forecast {
        basis: "linear: consumption so far over the time elapsed since the span started",
        allowances: rows.iter().filter_map(|(m, g)| AllowanceForecast::of(m, *g, cycle, at)).collect(),
    }
}
