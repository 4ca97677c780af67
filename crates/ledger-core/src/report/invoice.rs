//! The invoice document of contract.md, rendered from a cycle's figures and lines:
//! here, and only here, exact `Decimal`s become text.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::catalog::Version;
use crate::event::Api;
use crate::figures::{CarryLine, CycleFigures};
use crate::ids::TeamId;
use crate::money::{fmt_cents, fmt_exact, fmt_quantity};
use crate::plans::{app, bucket, trial};
use crate::report::{fmt_time, per_image, Period};
use crate::statement::{self, LineItem, LineKind, UnitPrice};
use crate::timeline::CycleSpec;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    pub kind: &'static str,
    pub description: String,
    pub quantity: String,
    pub unit_price: String,
    pub amount: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiUsage {
    pub images: u64,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageSummary {
    pub billable_images: u64,
    pub sandbox_images: u64,
    pub refunded_images: u64,
    pub by_api: BTreeMap<&'static str, ApiUsage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BucketSummary {
    pub value: String,
    pub consumed: String,
    pub forfeited: String,
    /// The forfeited value in images of the plan's own API, at its rate.
    pub forfeited_images: String,
    pub overage: String,
    pub generations: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllowanceSummary {
    pub allowance: &'static str,
    pub value: String,
    pub consumed: String,
    /// Usage past a free allowance: recorded, never billed.
    pub over_allowance: String,
    pub sandbox_images: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_cap: Option<u64>,
}

/// Legacy credits over the cycle, in credits (one per image of either API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreditSummary {
    pub carried_in: u64,
    pub purchased: u64,
    pub used: u64,
    pub expired: u64,
    pub balance: u64,
    pub expires_at: String,
}

/// A contract month: the term, the allotment and how it was drawn, in images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContractSummary {
    pub term: Period,
    pub month: u32,
    pub term_months: u32,
    pub committed_images_per_year: u64,
    pub rollover: bool,
    pub allotment: u64,
    pub rollover_in: u64,
    pub drawn: u64,
    pub overage_images: u64,
    pub rollover_out: u64,
    pub forfeited_images: u64,
    pub forfeited_value: String,
    /// Images used in the term through this month, and the term's commitment.
    pub term_used: u64,
    pub term_commitment: u64,
}

/// An app subscription's month: its interval, seats and AI-credit top-ups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppSummary {
    pub billing_interval: &'static str,
    pub seats: u32,
    /// 1-based month of the subscription.
    pub month: u32,
    pub top_ups_carried_in: u64,
    pub top_ups_bought: u64,
    pub top_ups_used: u64,
    pub top_ups_left: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerRef {
    pub first_seq: u64,
    pub last_seq: u64,
    pub head_hash: String,
}

/// The invoice in the shape of contract.md; every figure is explainable from the
/// entries between `ledger.first_seq` and `ledger.last_seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invoice {
    pub team_id: String,
    pub period: Period,
    pub status: &'static str,
    pub price_book_version: String,
    pub currency: &'static str,
    pub plan: String,
    pub lines: Vec<Line>,
    pub total: String,
    pub usage: UsageSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<BucketSummary>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowances: Vec<AllowanceSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits: Option<CreditSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contract: Option<ContractSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<AppSummary>,
    pub effective_cost_per_image: Option<String>,
    pub ledger: LedgerRef,
    #[serde(skip)]
    pub period_start: DateTime<Utc>,
    #[serde(skip)]
    pub period_end: DateTime<Utc>,
    #[serde(skip)]
    pub total_exact: Decimal,
    #[serde(skip)]
    pub forfeited_exact: Decimal,
    /// The overage lines' amounts together.
    #[serde(skip)]
    pub overage_exact: Decimal,
}

impl Invoice {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("invoice serializes")
    }
}

pub struct InvoiceInput<'a> {
    pub team_id: &'a TeamId,
    pub spec: &'a CycleSpec,
    pub version: &'a Version,
    pub figures: &'a CycleFigures,
    pub carry: &'a [CarryLine],
    pub draft: bool,
    pub first_seq: u64,
    pub last_seq: u64,
}

pub fn build(input: InvoiceInput<'_>) -> Invoice {
    let InvoiceInput { team_id, spec, version, figures, carry, draft, first_seq, last_seq } = input;
    let items = statement::lines(spec, version, figures, carry);
    let total = statement::total(&items);
    let overage = items.iter().filter(|l| l.kind == LineKind::Overage).map(|l| l.amount).sum();
    Invoice {
        team_id: team_id.to_string(),
        period: Period::new(spec.start, spec.end),
        status: if draft { "draft" } else { "final" },
        price_book_version: spec.version_id.clone(),
        currency: "USD",
        plan: plan_name(spec),
        lines: items.iter().map(render_line).collect(),
        total: fmt_cents(total),
        usage: usage_summary(figures),
        bucket: bucket::summary(figures, version).map(|b| BucketSummary {
            value: fmt_exact(b.value),
            consumed: fmt_exact(b.consumed),
            forfeited: fmt_exact(b.forfeited),
            forfeited_images: fmt_quantity(b.forfeited_images),
            overage: fmt_exact(b.overage),
            generations: b.generations,
        }),
        allowances: allowance_summaries(figures),
        credits: figures.credits.as_ref().map(|c| CreditSummary {
            carried_in: c.carried,
            purchased: c.purchased,
            used: c.used,
            expired: c.expired,
            balance: c.balance_end,
            expires_at: c.expires_at.map(fmt_time).unwrap_or_default(),
        }),
        contract: contract_summary(figures),
        app: figures.app.as_ref().map(|a| AppSummary {
            billing_interval: a.month.options.interval.key(),
            seats: a.month.options.seats,
            month: a.month.month + 1,
            top_ups_carried_in: a.top_ups_in,
            top_ups_bought: a.top_ups_bought,
            top_ups_used: a.ai_from_top_ups,
            top_ups_left: a.top_ups_left(),
        }),
        effective_cost_per_image: per_image(total, figures.billable_images),
        ledger: LedgerRef { first_seq, last_seq, head_hash: String::new() },
        period_start: spec.start,
        period_end: spec.end,
        total_exact: total,
        forfeited_exact: figures.forfeited(),
        overage_exact: overage,
    }
}

fn render_line(l: &LineItem) -> Line {
    Line {
        kind: l.kind.key(),
        description: l.description.clone(),
        quantity: fmt_quantity(l.quantity),
        unit_price: match l.unit_price {
            UnitPrice::Cents(d) => fmt_cents(d),
            UnitPrice::Exact(d) => fmt_exact(d),
        },
        amount: fmt_cents(l.amount),
        period: l.period.map(|(start, end)| Period::new(start, end)),
    }
}

fn plan_name(spec: &CycleSpec) -> String {
    let names: Vec<String> = spec.gens.iter().map(|g| g.terms.name()).collect();
    names.join(" -> ")
}

fn usage_summary(figures: &CycleFigures) -> UsageSummary {
    UsageSummary {
        billable_images: figures.billable_images,
        sandbox_images: figures.sandbox_images,
        refunded_images: figures.refunded_images,
        by_api: [Api::RemoveBackground, Api::ImageEditing, Api::AppExport, Api::AppAi]
            .into_iter()
            .filter(|api| !api.is_app() || figures.app.is_some())
            .map(|api| {
                let (images, value) = figures.by_api.get(&api).copied().unwrap_or_default();
                (api.key(), ApiUsage { images, value: fmt_exact(value) })
            })
            .collect(),
    }
}

fn contract_summary(figures: &CycleFigures) -> Option<ContractSummary> {
    let c = figures.contract.as_ref()?;
    Some(ContractSummary {
        term: Period::new(c.month.term_start, c.month.term_end),
        month: c.month.month + 1,
        term_months: c.month.terms.term_months,
        committed_images_per_year: c.month.terms.committed_images_per_year,
        rollover: c.month.terms.rollover,
        allotment: c.allotment,
        rollover_in: c.rollover_in,
        drawn: c.drawn,
        overage_images: c.over_images(),
        rollover_out: c.rollover_out,
        forfeited_images: c.forfeited,
        forfeited_value: fmt_cents(c.forfeited_value()),
        term_used: c.used_end,
        term_commitment: c.month.term_commitment(),
    })
}

/// Free allowances: a trial's value, and an app month's exports and AI credits.
fn allowance_summaries(figures: &CycleFigures) -> Vec<AllowanceSummary> {
    let trials = trial::summaries(figures).map(|t| AllowanceSummary {
        allowance: crate::plans::MeterKind::Trial.key(),
        value: fmt_exact(t.value),
        consumed: fmt_exact(t.consumed),
        over_allowance: fmt_exact(t.over_allowance),
        sandbox_images: t.sandbox_images,
        sandbox_cap: t.sandbox_cap,
    });
    let apps = app::summaries(figures).into_iter().map(|a| AllowanceSummary {
        allowance: a.meter.key(),
        value: a.value.to_string(),
        consumed: a.consumed.to_string(),
        over_allowance: a.over_allowance.to_string(),
        sandbox_images: 0,
        sandbox_cap: None,
    });
    trials.chain(apps).collect()
}
