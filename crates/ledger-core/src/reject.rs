//! Why an event is refused, as an exhaustive enum: the dead-letter reason codes, the
//! metric labels and the README's table of bad inputs all list this one set. A refusal
//! is a business outcome (a value); a ledger that contradicts itself is a `Fault`.
use std::fmt;

use crate::ids::TeamId;

macro_rules! reject_codes {
    ($($variant:ident => $code:literal, $cause:literal;)*) => {
        /// A refusal's cause. `code()` is the stable dead-letter `reason.code` (several
        /// causes share the contract's older `plan_rule`); `cause()` names each one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum RejectCode {
            $($variant,)*
        }

        impl RejectCode {
            pub const ALL: &'static [RejectCode] = &[$(RejectCode::$variant,)*];

            /// The dead-letter `reason.code` and metric label (part of the contract).
            pub fn code(self) -> &'static str {
                match self {
                    $(RejectCode::$variant => $code,)*
                }
            }

            /// The specific cause (dead-letter `reason.cause`).
            pub fn cause(self) -> &'static str {
                match self {
                    $(RejectCode::$variant => $cause,)*
                }
            }
        }
    };
}

reject_codes! {
    LateAccountChange => "late_account_change", "late_account_change";
    ContractRequired => "plan_rule", "contract_required";
    AppOptionsRequired => "plan_rule", "app_options_required";
    PlanAlreadyActive => "plan_rule", "plan_already_active";
    NoActivePlan => "plan_rule", "no_active_plan";
    NoCatalogVersion => "plan_rule", "no_catalog_version";
    PlanNotOffered => "plan_rule", "plan_not_offered";
    PlanNotSold => "plan_rule", "plan_not_sold";
    BucketSize => "plan_rule", "bucket_size";
    ContractTerms => "plan_rule", "contract_terms";
    AppInterval => "plan_rule", "app_interval";
    AppSeats => "plan_rule", "app_seats";
    PurchaseAmount => "plan_rule", "purchase_amount";
    TopUpsNotSold => "plan_rule", "top_ups_not_sold";
    NoCreditsPlan => "plan_rule", "no_credits_plan";
    CreditsExpired => "plan_rule", "credits_expired";
    CreditsNotSold => "plan_rule", "credits_not_sold";
    RefundOtherTeam => "refund_other_team", "refund_other_team";
    RefundUnknownEvent => "refund_unknown_event", "refund_unknown_event";
    RefundSandbox => "refund_sandbox", "refund_sandbox";
    RefundRepeated => "refund_repeated", "refund_repeated";
    RefundUnbilled => "refund_unbilled", "refund_unbilled";
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Compares with the contract's code string, as dead letters carry it.
impl PartialEq<&str> for RejectCode {
    fn eq(&self, other: &&str) -> bool {
        self.code() == *other
    }
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct Reject {
    pub code: RejectCode,
    pub detail: String,
}

impl Reject {
    pub fn new(code: RejectCode, detail: impl Into<String>) -> Reject {
        Reject { code, detail: detail.into() }
    }
}

/// The ledger contradicts itself: replay found an entry the fold cannot accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("team {team_id} seq {seq}: {reason}")]
pub struct Fault {
    pub team_id: TeamId,
    pub seq: u64,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_has_its_own_name_and_a_contract_code() {
        let mut causes: Vec<&str> = RejectCode::ALL.iter().map(|c| c.cause()).collect();
        causes.sort_unstable();
        causes.dedup();
        assert_eq!(causes.len(), RejectCode::ALL.len(), "causes are distinct");
        assert_eq!(RejectCode::BucketSize.code(), "plan_rule");
        assert!(RejectCode::BucketSize == "plan_rule");
        assert_eq!(Reject::new(RejectCode::RefundSandbox, "x").to_string(), "refund_sandbox: x");
    }
}
