//! An invoice's lines before they are rendered: exact `Decimal` amounts (rounded to
//! cents once, here, at the line), typed kinds, and the order in which the families'
//! lines appear. `report` turns them into text.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::catalog::Version;
use crate::event::Api;
use crate::figures::{CarryKind, CarryLine, CycleFigures};
use crate::money::cents;
use crate::plans::{app, bucket, contract, credits, partner};
use crate::timeline::calendar::fmt_time;
use crate::timeline::{Charge, ChargeKind, CycleSpec};

/// What an invoice line is for (its `kind` in the invoice JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LineKind {
    BucketFee,
    UpgradeCharge,
    ContractFee,
    SubscriptionFee,
    CreditsPurchase,
    Overage,
    Usage,
    CommitmentShortfall,
    CommitmentDrawdown,
    CommitmentForfeited,
    CreditsExpired,
    LateUsage,
    RefundCredit,
}

impl LineKind {
    pub fn key(self) -> &'static str {
        match self {
            LineKind::BucketFee => "bucket_fee",
            LineKind::UpgradeCharge => "upgrade_charge",
            LineKind::ContractFee => "contract_fee",
            LineKind::SubscriptionFee => "subscription_fee",
            LineKind::CreditsPurchase => "credits_purchase",
            LineKind::Overage => "overage",
            LineKind::Usage => "usage",
            LineKind::CommitmentShortfall => "commitment_shortfall",
            LineKind::CommitmentDrawdown => "commitment_drawdown",
            LineKind::CommitmentForfeited => "commitment_forfeited",
            LineKind::CreditsExpired => "credits_expired",
            LineKind::LateUsage => "late_usage",
            LineKind::RefundCredit => "refund_credit",
        }
    }
}

/// A unit price: a charge's, shown in cents, or a rate, shown exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitPrice {
    Cents(Decimal),
    Exact(Decimal),
}

/// One invoice line, exact.
#[derive(Debug, Clone, PartialEq)]
pub struct LineItem {
    pub kind: LineKind,
    pub description: String,
    pub quantity: Decimal,
    pub unit_price: UnitPrice,
    /// Rounded to cents (two decimals): what the team pays for the line.
    pub amount: Decimal,
    /// The period a carried line belongs to.
    pub period: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl LineItem {
    pub(crate) fn new(
        kind: LineKind,
        description: impl Into<String>,
        quantity: impl Into<Decimal>,
        unit_price: UnitPrice,
        amount: Decimal,
    ) -> LineItem {
        LineItem {
            kind,
            description: description.into(),
            quantity: quantity.into(),
            unit_price,
            amount: cents(amount),
            period: None,
        }
    }

    /// Usage worth `value` past an allowance, at `rate`.
    pub(crate) fn overage(api: Api, rate: Decimal, value: Decimal, beyond: &str) -> LineItem {
        let description = format!("{} beyond {beyond}", LineItem::api_label(api));
        LineItem::new(LineKind::Overage, description, value / rate, UnitPrice::Exact(rate), value)
    }

    /// Credits bought (`(credits, amount paid)`): prepaid, charged at the amount paid.
    pub(crate) fn purchases(purchases: &[(u64, Decimal)], what: &str) -> Vec<LineItem> {
        purchases
            .iter()
            .map(|(credits, amount)| {
                let unit = UnitPrice::Exact((amount / Decimal::from(*credits)).normalize());
                LineItem::new(LineKind::CreditsPurchase, format!("{credits} {what}"), *credits, unit, *amount)
            })
            .collect()
    }

    fn charge(c: &Charge) -> LineItem {
        let kind = match c.kind {
            ChargeKind::BucketFee => LineKind::BucketFee,
            ChargeKind::UpgradeCharge => LineKind::UpgradeCharge,
            ChargeKind::ContractFee => LineKind::ContractFee,
            ChargeKind::SubscriptionFee => LineKind::SubscriptionFee,
        };
        LineItem::new(kind, c.description.clone(), c.quantity, UnitPrice::Cents(c.unit_price), c.amount)
    }

    pub fn api_label(api: Api) -> &'static str {
        match api {
            Api::RemoveBackground => "Background removal",
            Api::ImageEditing => "Image editing",
            Api::AppExport => "App export",
            Api::AppAi => "App AI",
        }
    }
}

/// Every line of a cycle's invoice, in invoice order: the prepaid charges, credits
/// bought, usage past allowances by family, the contract month, credits expired, then
/// the lines carried from closed cycles.
pub fn lines(spec: &CycleSpec, version: &Version, figures: &CycleFigures, carry: &[CarryLine]) -> Vec<LineItem> {
    let mut lines: Vec<LineItem> = spec.charges.iter().map(LineItem::charge).collect();
    lines.extend(credits::purchase_lines(figures));
    lines.extend(app::top_up_lines(figures));
    lines.extend(bucket::overage_lines(figures, version));
    lines.extend(credits::overage_lines(figures, version));
    lines.extend(partner::lines(figures, version));
    lines.extend(contract::lines(figures));
    lines.extend(credits::expiry_lines(figures));
    lines.extend(carry_lines(carry));
    lines
}

/// The invoice total: the sum of its rounded lines.
pub fn total(lines: &[LineItem]) -> Decimal {
    lines.iter().map(|l| l.amount).sum()
}

/// Carried lines group by kind, period, API and rate.
type CarryKey = (CarryKind, DateTime<Utc>, DateTime<Utc>, Api, Decimal);

fn carry_lines(carry: &[CarryLine]) -> Vec<LineItem> {
    let mut grouped: BTreeMap<CarryKey, u64> = BTreeMap::new();
    for c in carry {
        *grouped.entry((c.kind, c.period_start, c.period_end, c.api, c.rate)).or_default() += c.images;
    }
    grouped
        .into_iter()
        .map(|((kind, start, end, api, rate), images)| {
            let (kind, sign, what) = match kind {
                CarryKind::LateUsage => (LineKind::LateUsage, Decimal::ONE, "late usage"),
                CarryKind::RefundCredit => (LineKind::RefundCredit, Decimal::NEGATIVE_ONE, "money-back refund"),
            };
            let description = format!("{}, {what} of {}", LineItem::api_label(api), &fmt_time(start)[..10]);
            let amount = sign * rate * Decimal::from(images);
            let mut line = LineItem::new(kind, description, images, UnitPrice::Exact(sign * rate), amount);
            line.period = Some((start, end));
            line
        })
        .collect()
}
