//! A threshold crossed, as published on `usage.alerts.v1` and stored with the ledger.
use serde::Serialize;

/// A threshold crossed by an allowance; `alert_id` is deterministic so consumers can
/// drop repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub alert_id: String,
    pub team_id: String,
    pub allowance: &'static str,
    pub cycle_start: String,
    pub cycle_end: String,
    pub bucket_generation: u32,
    pub threshold_percent: u32,
    pub consumed: String,
    pub allowance_value: String,
    pub triggering_event_id: String,
    pub occurred_at: String,
}
