//! Alerts: after each fold, every meter of the generation the entry touched is checked
//! against the catalog's thresholds; a threshold fires once per meter, span and
//! generation. The meters are the allowance's own list (`plans`), the one the balance
//! shows too.
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::Team;
use crate::catalog::Catalog;
use crate::ids::EventId;
use crate::money::fmt_exact;
use crate::plans::{MeterInput, MeterKind};
use crate::report::{fmt_time, Alert};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub(super) struct AlertKey {
    meter: MeterKind,
    cycle_start: DateTime<Utc>,
    /// The end of the span the meter covers: the cycle's, or a contract term's.
    pub span_end: DateTime<Utc>,
    generation: u32,
    threshold: u32,
}

impl Team {
    /// Fires each threshold of generation `g` of cycle `c` that is reached for the first time.
    pub(super) fn check_alerts(
        &mut self,
        catalog: &Catalog,
        c: usize,
        g: usize,
        trigger: &EventId,
        at: DateTime<Utc>,
    ) -> Vec<Alert> {
        let spec = &self.schedule[c];
        let Some(used) = self.aggs.get(&(spec.start, g)) else {
            return Vec::new();
        };
        let input = self.available(catalog, c, g, *used, at);
        let spec = &self.schedule[c];
        let gen = &spec.gens[g];
        let version = catalog.version(&spec.version_id).expect("cycle version exists");
        let mut alerts = Vec::new();
        for meter in gen.allowance.meters(&input) {
            if meter.limit <= Decimal::ZERO {
                continue;
            }
            let (start, end) = meter.term.unwrap_or((spec.start, spec.end));
            let allowance = meter.kind.key();
            for &threshold in &version.alert_thresholds {
                let key = AlertKey {
                    meter: meter.kind,
                    cycle_start: start,
                    span_end: end,
                    generation: gen.number,
                    threshold,
                };
                if meter.consumed * Decimal::ONE_HUNDRED < Decimal::from(threshold) * meter.limit
                    || self.fired.contains(&key)
                {
                    continue;
                }
                self.fired.insert(key);
                alerts.push(Alert {
                    alert_id: format!("{}:{allowance}:{}:g{}:{threshold}", self.id, fmt_time(start), gen.number),
                    team_id: self.id.to_string(),
                    allowance,
                    cycle_start: start,
                    cycle_end: end,
                    bucket_generation: gen.number,
                    threshold_percent: threshold,
                    consumed: fmt_exact(meter.consumed),
                    allowance_value: fmt_exact(meter.limit),
                    triggering_event_id: trigger.to_string(),
                    occurred_at: at,
                });
            }
        }
        alerts
    }

    /// What generation `g` of open cycle `c` had available at `at` beside its own
    /// allowance: legacy credits carried in and bought in the cycle, AI credits with
    /// the top-ups carried in and bought so far, the contract month's allotment.
    pub(super) fn available(
        &self,
        catalog: &Catalog,
        c: usize,
        g: usize,
        used: MeterInput,
        at: DateTime<Utc>,
    ) -> MeterInput {
        let spec = &self.schedule[c];
        let allowance = &spec.gens[g].allowance;
        if !allowance.carries_over() {
            return used;
        }
        let carried = self.carried_into(catalog, c);
        let bought = |purchases: &[crate::figures::Purchase], upto: DateTime<Utc>| -> u64 {
            purchases.iter().filter(|p| spec.contains(p.at) && p.at <= upto).map(|p| p.credits).sum()
        };
        allowance.available(
            used,
            carried.credits + bought(&self.purchases, DateTime::<Utc>::MAX_UTC),
            carried.top_ups + bought(&self.top_ups, at),
            carried.contract,
        )
    }
}
