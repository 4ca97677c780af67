//! Deciding: whether an event may be appended, given the team's state. Refusals are
//! values (`Reject`) with their cause; nothing here changes the state.
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::{insert_sorted, RefundLookup, Team};
use crate::catalog::Catalog;
use crate::entry::{Entry, RefundTarget};
use crate::event::{AccountChange, Api, Event};
use crate::ids::EventId;
use crate::plans::{app, credits, Purchasable};
use crate::reject::{Reject, RejectCode};
use crate::report::fmt_time;
use crate::timeline;

impl Team {
    /// The entry `event` appends, or why it may not. `closed_through` is where the
    /// closed cycles end once the event's time has closed what it makes due.
    pub(super) fn admit(
        &self,
        catalog: &Catalog,
        event: Event,
        refund: Option<RefundLookup>,
        closed_through: Option<DateTime<Utc>>,
    ) -> Result<Entry, Reject> {
        let e = match event {
            Event::Image(e) => return Ok(Entry::Image(e)),
            Event::Account(e) => e,
        };
        match &e.change {
            AccountChange::QualityRefund { original_event_id, .. } => {
                let target = self.check_refund(catalog, original_event_id, refund)?;
                Ok(Entry::Refund { event: e, target })
            }
            AccountChange::CreditsPurchased { credits, amount } => {
                self.check_purchase(catalog, e.occurred_at, *credits, *amount, closed_through)?;
                Ok(Entry::Account(e))
            }
            AccountChange::PlanStarted(_)
            | AccountChange::PlanChanged(_)
            | AccountChange::PlanCancelled
            | AccountChange::ContractSigned(_)
            | AccountChange::AppPlanStarted(..)
            | AccountChange::AppPlanChanged(..) => {
                if let Some(through) = closed_through.filter(|b| e.occurred_at < *b) {
                    let detail = format!(
                        "plan change at {} falls in a closed cycle (closed through {})",
                        fmt_time(e.occurred_at),
                        fmt_time(through)
                    );
                    return Err(Reject::new(RejectCode::LateAccountChange, detail));
                }
                let mut account = self.account.clone();
                insert_sorted(&mut account, e.clone());
                let horizon = self.horizon.max(e.occurred_at);
                let book = self.older_rules();
                timeline::derive(&account, catalog, horizon, timeline::RuleBook { older: &book })
                    .map_err(|v| v.reject)?;
                Ok(Entry::Account(e))
            }
        }
    }

    /// Credits are bought in an open cycle (its invoice charges them): AI-credit top-ups
    /// on an app plan that sells them, legacy credits on the `api_credits` plan.
    pub(super) fn check_purchase(
        &self,
        catalog: &Catalog,
        at: DateTime<Utc>,
        credits: u64,
        amount: Decimal,
        closed_through: Option<DateTime<Utc>>,
    ) -> Result<(), Reject> {
        if credits == 0 || amount < Decimal::ZERO {
            let detail = format!("credits {credits} must be ≥ 1 and amount {amount} ≥ 0");
            return Err(Reject::new(RejectCode::PurchaseAmount, detail));
        }
        if closed_through.is_some_and(|b| at < b) {
            let detail = format!("credit purchase at {} falls in a closed cycle", fmt_time(at));
            return Err(Reject::new(RejectCode::LateAccountChange, detail));
        }
        let no_plan = || {
            let detail = format!("no api_credits plan is active at {}", fmt_time(at));
            Reject::new(RejectCode::NoCreditsPlan, detail)
        };
        let Some((c, gen)) = self.in_force(at) else { return Err(no_plan()) };
        match gen.allowance.purchasable() {
            Some(Purchasable::TopUps(month)) => app::check_top_up(month, at),
            Some(Purchasable::Credits) => {
                let version_id = &self.schedule[c].version_id;
                credits::check_purchase(catalog.version(version_id).expect("cycle version exists"), at)
            }
            None => Err(no_plan()),
        }
    }

    pub(super) fn check_refund(
        &self,
        catalog: &Catalog,
        original: &EventId,
        lookup: Option<RefundLookup>,
    ) -> Result<RefundTarget, Reject> {
        let target = match lookup {
            Some(RefundLookup::Found(t)) => t,
            Some(RefundLookup::OtherTeam(team)) => {
                let detail = format!("event {original} belongs to team {team}");
                return Err(Reject::new(RejectCode::RefundOtherTeam, detail));
            }
            Some(RefundLookup::NotFound) | None => {
                let detail = format!("no image event {original} in the ledger");
                return Err(Reject::new(RejectCode::RefundUnknownEvent, detail));
            }
        };
        if target.sandbox {
            let detail = format!("event {original} is a sandbox event and cost nothing");
            return Err(Reject::new(RejectCode::RefundSandbox, detail));
        }
        if self.refunded.contains(original) {
            return Err(Reject::new(RejectCode::RefundRepeated, format!("event {original} was already refunded")));
        }
        if self.charge_of(catalog, &target).is_none_or(|(_, _, rate)| rate.is_zero()) {
            let detail = format!("event {original} was not billed (no plan, or a free allowance)");
            return Err(Reject::new(RejectCode::RefundUnbilled, detail));
        }
        Ok(target)
    }

    /// The cycle, API and rate an image at `target` was billed at, if any plan priced it.
    pub(super) fn charge_of(&self, catalog: &Catalog, target: &RefundTarget) -> Option<(usize, Api, Decimal)> {
        let (c, rate) = self.rate_in_force(catalog, target.occurred_at, target.api)?;
        Some((c, target.api, rate))
    }
}
