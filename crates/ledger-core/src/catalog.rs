//! The versioned price catalog: numbers live here as data with effective dates, never
//! in code. Loaded from TOML and validated once; a cycle uses the version in force at
//! its start.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::event::{Api, BillingInterval, Plan, PlanTerms, UpgradePolicy};

/// The catalog shipped with the binary (crates/ledger-core/catalog.toml).
pub const DEFAULT_TOML: &str = include_str!("../catalog.toml");

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog does not parse: {0}")]
    Parse(String),
    #[error("catalog has no versions")]
    Empty,
    #[error("catalog version {id}: {reason}")]
    Invalid { id: String, reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub versions: Vec<Version>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Version {
    pub id: String,
    pub effective_from: DateTime<Utc>,
    pub grace_seconds: u32,
    pub upgrade_policy: UpgradePolicy,
    pub alert_thresholds: Vec<u32>,
    pub rates: Rates,
    pub plans: BTreeMap<String, PlanRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rates {
    pub remove_background: Decimal,
    pub image_editing: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PlanRule {
    /// Prepaid bucket bought in steps of `step_images` images of the plan's own API.
    Bucket { api: Api, label: String, step_images: u64, step_price: Decimal },
    /// A free monthly allowance of `allowance_images` images of `api`, valued at its rate.
    Trial { api: Api, label: String, allowance_images: u64, sandbox_images: Option<u64> },
    /// Background removal at a partner rate with a monthly commitment in images.
    Partner { label: String, remove_background_rate: Decimal, commitment_images: u64 },
    /// Legacy API credits: one credit per image of either API, worth `image_rate`;
    /// usage past the credits billed at `image_rate`; the remainder expires at
    /// `expires_at`. `purchasable = false`: kept for existing holders only (no new
    /// subscriptions or purchases).
    Credits { label: String, image_rate: Decimal, purchasable: bool, expires_at: DateTime<Utc> },
    /// Enterprise contracts: the terms come with each `ContractSigned`; the catalog sets
    /// the floor of the yearly commitment and the terms it sells.
    Enterprise { label: String, min_committed_images_per_year: u64, term_months: Vec<u32> },
    /// An app subscription: per seat, monthly allowances of exports and AI credits (they
    /// reset each cycle), a fee per billing interval sold, and AI-credit top-ups.
    App {
        label: String,
        exports_per_month: u64,
        ai_credits_per_month: u64,
        prices: AppPrices,
        #[serde(default = "one")]
        min_seats: u32,
        /// AI credits can be bought à la carte (`CreditsPurchased` on the plan).
        #[serde(default)]
        top_ups: bool,
        /// `false`: kept for existing subscribers, not sold to new ones.
        #[serde(default = "yes")]
        sold: bool,
    },
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

/// An app plan's fee per seat for each billing interval it is sold with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppPrices {
    pub weekly: Option<Decimal>,
    pub monthly: Option<Decimal>,
    pub yearly: Option<Decimal>,
}

impl AppPrices {
    pub fn get(&self, interval: BillingInterval) -> Option<Decimal> {
        match interval {
            BillingInterval::Weekly => self.weekly,
            BillingInterval::Monthly => self.monthly,
            BillingInterval::Yearly => self.yearly,
        }
    }
}

impl Catalog {
    pub fn from_toml(text: &str) -> Result<Catalog, CatalogError> {
        let catalog: Catalog = toml::from_str(text).map_err(|e| CatalogError::Parse(e.to_string()))?;
        catalog.validate()?;
        Ok(catalog)
    }

    /// A catalog from versions (e.g. recorded ones merged with newly loaded ones).
    pub fn from_versions(versions: Vec<Version>) -> Result<Catalog, CatalogError> {
        let catalog = Catalog { versions };
        catalog.validate()?;
        Ok(catalog)
    }

    pub fn builtin() -> Catalog {
        Catalog::from_toml(DEFAULT_TOML).expect("the built-in catalog is valid")
    }

    fn validate(&self) -> Result<(), CatalogError> {
        if self.versions.is_empty() {
            return Err(CatalogError::Empty);
        }
        for (i, v) in self.versions.iter().enumerate() {
            let bad = |reason: &str| CatalogError::Invalid { id: v.id.clone(), reason: reason.to_string() };
            if i > 0 && self.versions[i - 1].effective_from >= v.effective_from {
                return Err(bad("versions must be in strictly increasing effective_from order"));
            }
            if v.alert_thresholds.is_empty() || v.alert_thresholds.windows(2).any(|w| w[0] >= w[1]) {
                return Err(bad("alert_thresholds must be non-empty and strictly ascending"));
            }
            if v.rates.remove_background <= Decimal::ZERO || v.rates.image_editing <= Decimal::ZERO {
                return Err(bad("rates must be positive"));
            }
            for (name, rule) in &v.plans {
                let plan = Plan::from_key(name).ok_or_else(|| bad(&format!("unknown plan {name}")))?;
                rule.check_rule(name, plan).map_err(|reason| bad(&reason))?;
            }
        }
        Ok(())
    }

    /// The version in force at `t`, if any.
    pub fn version_at(&self, t: DateTime<Utc>) -> Option<&Version> {
        self.versions.iter().rev().find(|v| v.effective_from <= t)
    }

    pub fn version(&self, id: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.id == id)
    }
}

impl Version {
    /// The list rate of an API (§1). App APIs have no API rate.
    pub fn rate(&self, api: Api) -> Option<Decimal> {
        match api {
            Api::RemoveBackground => Some(self.rates.remove_background),
            Api::ImageEditing => Some(self.rates.image_editing),
            Api::AppExport | Api::AppAi => None,
        }
    }

    pub fn plan(&self, plan: Plan) -> Option<&PlanRule> {
        self.plans.get(plan.key())
    }

    /// What a team on `terms` pays per image of `api`: the list rate, except the
    /// partner's own background-removal rate and the legacy credit rate.
    pub fn rate_for(&self, terms: &PlanTerms, api: Api) -> Option<Decimal> {
        self.plan(terms.plan).and_then(|rule| rule.own_rate(api)).or_else(|| self.rate(api))
    }

    /// The same version with at most some plans added: every field and every plan of
    /// `older` is unchanged here.
    pub fn extends(&self, older: &Version) -> bool {
        let Version { id, effective_from, grace_seconds, upgrade_policy, alert_thresholds, rates, plans } = older;
        (id, effective_from, grace_seconds, upgrade_policy, alert_thresholds, rates)
            == (
                &self.id,
                &self.effective_from,
                &self.grace_seconds,
                &self.upgrade_policy,
                &self.alert_thresholds,
                &self.rates,
            )
            && plans.iter().all(|(name, rule)| self.plans.get(name) == Some(rule))
    }

    /// The prepaid price of `terms` for one cycle: what decides upgrade vs downgrade.
    pub fn price(&self, terms: &PlanTerms) -> Decimal {
        self.plan(terms.plan).map_or(Decimal::ZERO, |rule| rule.prepaid_price(terms.bucket_images))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_carries_the_seed_numbers() {
        let c = Catalog::builtin();
        let v = c.version_at("2025-06-01T00:00:00Z".parse().unwrap()).unwrap();
        assert_eq!(v.id, "2025-02-27");
        assert_eq!(v.rate(Api::RemoveBackground).unwrap().to_string(), "0.02");
        let basic = PlanTerms { plan: Plan::ApiBasic, bucket_images: 3000, upgrade_policy: None };
        assert_eq!(v.price(&basic).to_string(), "60.00");
        let v26 = c.version_at("2026-04-01T00:00:00Z".parse().unwrap()).unwrap();
        assert!(matches!(
            v26.plan(Plan::ApiFreeTrial),
            Some(PlanRule::Trial { allowance_images: 10, sandbox_images: Some(1000), .. })
        ));
        assert_eq!(c.version_at("2025-01-01T00:00:00Z".parse().unwrap()).unwrap().id, "2024-10-01");
        assert!(c.version_at("2024-01-31T23:59:59Z".parse().unwrap()).is_none());
        let (rate, purchasable, expires) = c.version("2024-02-01").unwrap().credits().unwrap();
        assert_eq!((rate.to_string().as_str(), purchasable), ("0.10", true));
        assert_eq!(expires, "2025-04-02T00:00:00Z".parse::<DateTime<Utc>>().unwrap());
        assert!(!v26.credits().unwrap().1, "2026: legacy credits kept for holders, not sold");
    }

    #[test]
    fn invalid_catalogs_are_refused_with_a_reason() {
        let broken = DEFAULT_TOML.replace("alert_thresholds = [80, 100]", "alert_thresholds = [100, 80]");
        let err = Catalog::from_toml(&broken).unwrap_err();
        assert!(err.to_string().contains("strictly ascending"), "{err}");
        let unknown = DEFAULT_TOML.replacen("[versions.plans.api_basic]", "[versions.plans.api_gold]", 1);
        assert!(Catalog::from_toml(&unknown).unwrap_err().to_string().contains("unknown plan api_gold"));
    }
}
