//! The plan families as a type (`Family`), and every decision by family that a plan key
//! (`Plan`) or a catalog rule (`PlanRule`) answers, each an exhaustive match: a new
//! family makes the compiler list them. (What a generation's `Allowance` decides is in
//! `plans/mod.rs`.) The `impl Plan`, `impl PlanRule` and `impl AccountChange` blocks
//! here add methods to types of `event` and `catalog`, so those layers hold no family
//! decision themselves.
use rust_decimal::Decimal;

use crate::catalog::{PlanRule, Version};
use crate::event::{AccountChange, Api, BillingInterval, Plan, PlanTerms};
use crate::plans::bucket;
use crate::timeline::Charge;

/// A plan family: the kind of allowance a plan gives and how its cycles bill. Outside
/// `plans/`, decide by family only through the exhaustive methods on `Family`,
/// `PlanRule` and `Allowance` (never `== Variant`, `matches!`, `if let`/`let … else`,
/// or `_ =>`), so a new variant makes the compiler list every decision to take for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Prepaid buckets (`api_basic`, `api_plus`).
    Bucket,
    /// The free trial (`api_free_trial`).
    Trial,
    /// The partner rate with a commitment (`api_partner`).
    Partner,
    /// Legacy API credits (`api_credits`).
    Credits,
    /// Enterprise contracts (`PlanRule::Enterprise`, `Allowance::Contract`).
    Contract,
    /// App subscriptions (`app_*`).
    App,
}

/// The account events that start a plan of a family, and change to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartedBy {
    /// `PlanStarted` / `PlanChanged` with the plan's terms.
    PlanEvent,
    /// `ContractSigned` with the contract's terms.
    ContractSigned,
    /// `AppPlanStarted` / `AppPlanChanged` with an interval and seats.
    AppPlanEvent,
}

/// How the bucket advisor (`advice::candidates`) tries a plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Advised {
    /// Every bucket size from one step up (`advice::candidates` picks the sizes).
    Buckets { step_images: u64, step_price: Decimal },
    /// The plan as it is, without a bucket.
    AsIs,
    /// Not tried: trials are free, contracts negotiated, credits no longer sold, app
    /// plans price no API usage.
    Not,
}

impl Family {
    /// Plans sold as prepaid buckets: `bucket_images` a positive multiple of the step, 0
    /// for the others.
    pub fn sold_in_buckets(self) -> bool {
        match self {
            Family::Bucket => true,
            Family::Trial | Family::Partner | Family::Credits | Family::Contract | Family::App => false,
        }
    }

    /// Which account event starts (and changes to) a plan of this family.
    pub fn started_by(self) -> StartedBy {
        match self {
            Family::Bucket | Family::Trial | Family::Partner | Family::Credits => StartedBy::PlanEvent,
            Family::Contract => StartedBy::ContractSigned,
            Family::App => StartedBy::AppPlanEvent,
        }
    }

    /// Whether the billing rule sets (`timeline::Rules`) can price a plan of this family
    /// differently: legacy credits (images past them), a weekly app subscription (its
    /// fees after a deferred change). `interval`: the app subscription's, if the event
    /// has one.
    pub fn rules_matter(self, interval: Option<BillingInterval>) -> bool {
        match self {
            Family::Credits => true,
            Family::App => interval == Some(BillingInterval::Weekly),
            Family::Bucket | Family::Trial | Family::Partner | Family::Contract => false,
        }
    }
}

impl Plan {
    /// The family a plan belongs to (its catalog rule is of that family's kind).
    pub fn family(self) -> Family {
        match self {
            Plan::ApiBasic | Plan::ApiPlus => Family::Bucket,
            Plan::ApiFreeTrial => Family::Trial,
            Plan::ApiPartner => Family::Partner,
            Plan::ApiCredits => Family::Credits,
            Plan::ApiEnterprise => Family::Contract,
            Plan::AppFree | Plan::AppPro | Plan::AppMax | Plan::AppUltra | Plan::AppTeams => Family::App,
        }
    }

    /// Plans sold as prepaid buckets in steps of 1,000 images.
    pub fn has_bucket(self) -> bool {
        self.family().sold_in_buckets()
    }

    /// The app track's subscriptions (`app_*`).
    pub fn is_app(self) -> bool {
        match self.family().started_by() {
            StartedBy::AppPlanEvent => true,
            StartedBy::PlanEvent | StartedBy::ContractSigned => false,
        }
    }
}

impl AccountChange {
    /// True for the plans the billing rule sets price differently (`timeline::Rules`,
    /// `Family::rules_matter`): a weekly app subscription, legacy credits.
    pub fn rules_matter(&self) -> bool {
        match self {
            AccountChange::AppPlanStarted(t, o) | AccountChange::AppPlanChanged(t, o) => {
                t.plan.family().rules_matter(Some(o.interval))
            }
            AccountChange::PlanStarted(t) | AccountChange::PlanChanged(t) => t.plan.family().rules_matter(None),
            AccountChange::PlanCancelled
            | AccountChange::ContractSigned(_)
            | AccountChange::QualityRefund { .. }
            | AccountChange::CreditsPurchased { .. } => false,
        }
    }
}

impl PlanRule {
    /// The family of plans this rule prices.
    pub fn family(&self) -> Family {
        match self {
            PlanRule::Bucket { .. } => Family::Bucket,
            PlanRule::Trial { .. } => Family::Trial,
            PlanRule::Partner { .. } => Family::Partner,
            PlanRule::Credits { .. } => Family::Credits,
            PlanRule::Enterprise { .. } => Family::Contract,
            PlanRule::App { .. } => Family::App,
        }
    }

    /// How the bucket advisor replays this plan.
    pub fn advised(&self) -> Advised {
        match self {
            PlanRule::Bucket { step_images, step_price, .. } => {
                Advised::Buckets { step_images: *step_images, step_price: *step_price }
            }
            PlanRule::Partner { .. } => Advised::AsIs,
            PlanRule::Trial { .. } | PlanRule::Credits { .. } | PlanRule::Enterprise { .. } | PlanRule::App { .. } => {
                Advised::Not
            }
        }
    }

    /// What one cycle of the plan costs up front with `bucket_images`: a bucket's steps;
    /// nothing for the others (an app subscription's fee is `app::fee`, a contract's its
    /// terms). A change to a plan priced above the current one is an upgrade that applies
    /// at once (`bucket::upgrade`, from `timeline::derive`).
    pub fn prepaid_price(&self, bucket_images: u64) -> Decimal {
        match self {
            PlanRule::Bucket { step_images, step_price, .. } => {
                *step_price * Decimal::from(bucket_images / step_images)
            }
            PlanRule::Trial { .. }
            | PlanRule::Partner { .. }
            | PlanRule::Credits { .. }
            | PlanRule::Enterprise { .. }
            | PlanRule::App { .. } => Decimal::ZERO,
        }
    }

    /// The charge a cycle of the plan opens with, at `price` (`Version::price`): a
    /// bucket's fee; nothing for the other families `open_cycle` opens (contracts and app
    /// subscriptions open their own cycles, with their fees).
    pub(crate) fn opening_fee(&self, version: &Version, terms: &PlanTerms, price: Decimal) -> Option<Charge> {
        match self {
            PlanRule::Bucket { .. } => bucket::fee(version, terms, price),
            PlanRule::Trial { .. }
            | PlanRule::Partner { .. }
            | PlanRule::Credits { .. }
            | PlanRule::Enterprise { .. }
            | PlanRule::App { .. } => None,
        }
    }

    /// The rate this plan sets for `api` itself (`None`: the list rate applies): the
    /// partner's background-removal rate, the legacy credit rate for API calls.
    pub fn own_rate(&self, api: Api) -> Option<Decimal> {
        match self {
            PlanRule::Partner { remove_background_rate, .. } => match api {
                Api::RemoveBackground => Some(*remove_background_rate),
                Api::ImageEditing | Api::AppExport | Api::AppAi => None,
            },
            PlanRule::Credits { image_rate, .. } => (!api.is_app()).then_some(*image_rate),
            PlanRule::Bucket { .. } | PlanRule::Trial { .. } | PlanRule::Enterprise { .. } | PlanRule::App { .. } => {
                None
            }
        }
    }

    /// Whether the catalog sells the plan to new subscribers (`false`: kept for existing
    /// holders only).
    pub fn sold(&self) -> bool {
        match self {
            PlanRule::Credits { purchasable, .. } => *purchasable,
            PlanRule::App { sold, .. } => *sold,
            PlanRule::Bucket { .. }
            | PlanRule::Trial { .. }
            | PlanRule::Partner { .. }
            | PlanRule::Enterprise { .. } => true,
        }
    }

    /// Whether this rule may price `plan` (catalog key `name`) in a catalog version; the
    /// reason if not.
    pub(crate) fn check_rule(&self, name: &str, plan: Plan) -> Result<(), String> {
        let of_plan = self.family() == plan.family();
        let check = |ok: bool, reason: &str| if ok { Ok(()) } else { Err(format!("plan {name}: {reason}")) };
        match self {
            PlanRule::Bucket { api, step_images, step_price, .. } => check(
                of_plan && *step_images > 0 && *step_price > Decimal::ZERO && !api.is_app(),
                "bucket needs a bucket plan, an API and positive steps",
            ),
            PlanRule::Trial { api, .. } => check(!api.is_app(), "trial allowance must be an API"),
            PlanRule::Partner { remove_background_rate, .. } => {
                check(*remove_background_rate > Decimal::ZERO, "partner rate must be positive")
            }
            PlanRule::Credits { image_rate, .. } => {
                check(of_plan && *image_rate > Decimal::ZERO, "credits need plan api_credits and a positive rate")
            }
            PlanRule::Enterprise { term_months, .. } => check(
                of_plan && !term_months.is_empty() && !term_months.contains(&0),
                "enterprise needs plan api_enterprise and terms ≥ 1 month",
            ),
            PlanRule::App { prices, min_seats, .. } => {
                let all = [prices.weekly, prices.monthly, prices.yearly];
                check(
                    of_plan
                        && *min_seats > 0
                        && all.iter().any(Option::is_some)
                        && all.iter().flatten().all(|p| *p >= Decimal::ZERO),
                    "app plans need an app_* plan, a price, seats ≥ 1",
                )
            }
        }
    }
}
