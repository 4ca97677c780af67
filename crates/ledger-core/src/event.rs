//! Input events in core form: what the pipeline and the account system tell us,
//! already validated by the adapter that decoded them.
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::{EventId, TeamId};

/// The feature called; the meter follows it, not the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    RemoveBackground,
    ImageEditing,
    AppExport,
    AppAi,
}

impl Api {
    /// The key used in invoices and the catalog.
    pub fn key(self) -> &'static str {
        match self {
            Api::RemoveBackground => "remove_background",
            Api::ImageEditing => "image_editing",
            Api::AppExport => "app_export",
            Api::AppAi => "app_ai",
        }
    }

    pub fn from_key(s: &str) -> Option<Api> {
        [Api::RemoveBackground, Api::ImageEditing, Api::AppExport, Api::AppAi].into_iter().find(|a| a.key() == s)
    }

    pub fn is_app(self) -> bool {
        matches!(self, Api::AppExport | Api::AppAi)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Plan {
    ApiFreeTrial,
    ApiBasic,
    ApiPlus,
    ApiPartner,
    ApiEnterprise,
    ApiCredits,
    AppFree,
    AppPro,
    AppMax,
    AppUltra,
    /// The 2024-10 Teams tier of the app (three seats at least).
    AppTeams,
}

impl Plan {
    /// Every plan, for lookups by key. Not checked by the compiler: a new plan is added
    /// here by hand (left out, `from_key` refuses it). Its family is `Plan::family`.
    pub const ALL: [Plan; 11] = [
        Plan::ApiFreeTrial,
        Plan::ApiBasic,
        Plan::ApiPlus,
        Plan::ApiPartner,
        Plan::ApiEnterprise,
        Plan::ApiCredits,
        Plan::AppFree,
        Plan::AppPro,
        Plan::AppMax,
        Plan::AppUltra,
        Plan::AppTeams,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Plan::ApiFreeTrial => "api_free_trial",
            Plan::ApiBasic => "api_basic",
            Plan::ApiPlus => "api_plus",
            Plan::ApiPartner => "api_partner",
            Plan::ApiEnterprise => "api_enterprise",
            Plan::ApiCredits => "api_credits",
            Plan::AppFree => "app_free",
            Plan::AppPro => "app_pro",
            Plan::AppMax => "app_max",
            Plan::AppUltra => "app_ultra",
            Plan::AppTeams => "app_teams",
        }
    }

    pub fn from_key(s: &str) -> Option<Plan> {
        Plan::ALL.into_iter().find(|p| p.key() == s)
    }
}

/// How often an app subscription's fee is billed; its allowances reset monthly anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BillingInterval {
    Weekly,
    Monthly,
    Yearly,
}

impl BillingInterval {
    pub fn key(self) -> &'static str {
        match self {
            BillingInterval::Weekly => "weekly",
            BillingInterval::Monthly => "monthly",
            BillingInterval::Yearly => "yearly",
        }
    }

    pub fn from_key(s: &str) -> Option<BillingInterval> {
        [BillingInterval::Weekly, BillingInterval::Monthly, BillingInterval::Yearly].into_iter().find(|i| i.key() == s)
    }
}

/// An app subscription's options beyond its plan: the billing interval and the seats
/// (0 = the plan's minimum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppOptions {
    pub interval: BillingInterval,
    pub seats: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpgradePolicy {
    RestartProrated,
    DifferenceProrated,
}

impl UpgradePolicy {
    pub fn from_key(s: &str) -> Option<UpgradePolicy> {
        match s {
            "restart_prorated" => Some(UpgradePolicy::RestartProrated),
            "difference_prorated" => Some(UpgradePolicy::DifferenceProrated),
            _ => None,
        }
    }
}

/// What a team subscribes to. `bucket_images` is a positive multiple of 1,000 for
/// bucket plans and 0 otherwise (checked at the boundary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanTerms {
    pub plan: Plan,
    pub bucket_images: u64,
    pub upgrade_policy: Option<UpgradePolicy>,
}

impl PlanTerms {
    /// How invoices name the plan: `api_basic 2000`, or the key alone without a bucket.
    pub fn name(&self) -> String {
        match self.bucket_images {
            0 => self.plan.key().to_string(),
            n => format!("{} {n}", self.plan.key()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageProcessed {
    pub event_id: EventId,
    pub team_id: TeamId,
    #[serde(with = "chrono::serde::ts_nanoseconds")]
    pub occurred_at: DateTime<Utc>,
    pub api: Api,
    pub operations: Vec<String>,
    pub images: u32,
    pub sandbox: bool,
    pub request_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountChange {
    PlanStarted(PlanTerms),
    PlanChanged(PlanTerms),
    PlanCancelled,
    QualityRefund {
        original_event_id: EventId,
        reason: String,
    },
    CreditsPurchased {
        credits: u64,
        amount: Decimal,
    },
    ContractSigned(ContractTerms),
    /// `PlanStarted` / `PlanChanged` of an app plan, with its interval and seats. (New
    /// variants go last: ledgers written before them decode unchanged.)
    AppPlanStarted(PlanTerms, AppOptions),
    AppPlanChanged(PlanTerms, AppOptions),
}

impl AccountChange {
    /// True for the changes that shape the plan timeline (start, change, cancel, contract).
    /// (The family's own decisions on them, `rules_matter` among them, are in `plans`.)
    pub fn is_plan_change(&self) -> bool {
        match self {
            AccountChange::PlanStarted(_)
            | AccountChange::PlanChanged(_)
            | AccountChange::PlanCancelled
            | AccountChange::ContractSigned(_)
            | AccountChange::AppPlanStarted(..)
            | AccountChange::AppPlanChanged(..) => true,
            AccountChange::QualityRefund { .. } | AccountChange::CreditsPurchased { .. } => false,
        }
    }
}

/// An enterprise contract (`api_enterprise`, billing.md §4), checked against the catalog
/// when it is signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractTerms {
    /// Whole months; the term starts at a cycle start and spans this many cycles.
    pub term_months: u32,
    /// Images of either API the team commits to per contract year; a twelfth of it (split
    /// exactly) is each month's allotment.
    pub committed_images_per_year: u64,
    pub rate_remove_background: Decimal,
    pub rate_image_editing: Decimal,
    /// Invoiced up front on the first statement of each contract year.
    pub annual_fee: Decimal,
    /// Unused monthly allotment carries to the next month inside the term.
    pub rollover: bool,
    /// Graduated discounts on overage, by images used in the term; ascending.
    pub tiers: Vec<VolumeTier>,
}

/// Overage images past `from_images` images used in the term are billed
/// `discount_percent` below the contract rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeTier {
    pub from_images: u64,
    pub discount_percent: Decimal,
}

impl ContractTerms {
    /// The contract rate of an API, before volume discounts. App events have none.
    pub fn rate(&self, api: Api) -> Option<Decimal> {
        match api {
            Api::RemoveBackground => Some(self.rate_remove_background),
            Api::ImageEditing => Some(self.rate_image_editing),
            Api::AppExport | Api::AppAi => None,
        }
    }

    /// The discount (percent) of the image that is the `n`-th used in the term (1-based).
    pub fn discount_at(&self, n: u64) -> Decimal {
        self.tiers.iter().rev().find(|t| n > t.from_images).map_or(Decimal::ZERO, |t| t.discount_percent)
    }

    /// Images `(after, after + count]` of the term, split where the tier changes:
    /// `(discount, images)` in order.
    pub fn split_by_tier(&self, after: u64, count: u64) -> Vec<(Decimal, u64)> {
        let mut out: Vec<(Decimal, u64)> = Vec::new();
        let mut n = after;
        let end = after + count;
        while n < end {
            let discount = self.discount_at(n + 1);
            let next_bound = self.tiers.iter().map(|t| t.from_images).find(|b| *b > n).unwrap_or(u64::MAX);
            let take = end.min(next_bound) - n;
            match out.last_mut() {
                Some((d, k)) if *d == discount => *k += take,
                _ => out.push((discount, take)),
            }
            n += take;
        }
        out
    }

    /// Images allotted to month `m` of the term (0-based): the yearly commitment split so
    /// each contract year's twelve months sum to it exactly.
    pub fn allotment(&self, m: u32) -> u64 {
        let c = u128::from(self.committed_images_per_year);
        let at = |k: u32| c * u128::from(k) / 12;
        (at(m % 12 + 1) - at(m % 12)) as u64
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEvent {
    pub event_id: EventId,
    pub team_id: TeamId,
    #[serde(with = "chrono::serde::ts_nanoseconds")]
    pub occurred_at: DateTime<Utc>,
    pub change: AccountChange,
}

/// One input event, of either topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    Image(ImageProcessed),
    Account(AccountEvent),
}

impl Event {
    pub fn event_id(&self) -> &EventId {
        match self {
            Event::Image(e) => &e.event_id,
            Event::Account(e) => &e.event_id,
        }
    }

    pub fn team_id(&self) -> &TeamId {
        match self {
            Event::Image(e) => &e.team_id,
            Event::Account(e) => &e.team_id,
        }
    }

    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            Event::Image(e) => e.occurred_at,
            Event::Account(e) => e.occurred_at,
        }
    }
}
