//! A threshold crossed, as published on `usage.alerts.v1` and stored with the ledger.
use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use super::fmt_time;

/// A threshold crossed by an allowance; `alert_id` is deterministic so consumers can
/// drop repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub alert_id: String,
    pub team_id: String,
    pub allowance: &'static str,
    #[serde(serialize_with = "instant")]
    pub cycle_start: DateTime<Utc>,
    #[serde(serialize_with = "instant")]
    pub cycle_end: DateTime<Utc>,
    pub bucket_generation: u32,
    pub threshold_percent: u32,
    pub consumed: String,
    pub allowance_value: String,
    pub triggering_event_id: String,
    #[serde(serialize_with = "instant")]
    pub occurred_at: DateTime<Utc>,
}

/// Instants as the documents write them (RFC 3339, UTC, `Z`).
fn instant<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&fmt_time(*t))
}
