//! Wire types generated from proto/ (prost, with pbjson for the proto3 canonical JSON
//! mapping) and the one place they are validated into core types. Kafka and the JSONL
//! file format share these conversions, so both paths accept and refuse the same input.
use chrono::{DateTime, Utc};
use ledger_core::{
    AccountChange, AccountEvent, Api, AppOptions, BillingInterval, ContractTerms, Event, EventId, IdError,
    ImageProcessed, Plan, PlanTerms, TeamId, UpgradePolicy, VolumeTier,
};
use prost::Message as _;
use rust_decimal::Decimal;

pub mod limits;

pub use limits::{Limit, Window};

/// Generated protobuf messages of package `usage_ledger.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/usage_ledger.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/usage_ledger.v1.serde.rs"));
}

pub use pbjson_types::Timestamp;

/// Why an input record was refused at the boundary. `code()` is stable for dead-letter
/// headers and metrics; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("not valid JSON for LedgerInput: {0}")]
    Json(String),
    #[error("not a valid protobuf message: {0}")]
    Protobuf(String),
    #[error("LedgerInput has no event")]
    NoEvent,
    #[error("AccountEvent has no change")]
    NoChange,
    #[error("{0}")]
    Id(#[from] IdError),
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("occurred_at is out of range (years 2000 to 2199)")]
    BadTime,
    #[error("api is unspecified or unknown ({0})")]
    BadApi(i32),
    #[error("images must be >= 1")]
    ZeroImages,
    #[error("unknown plan {0:?}")]
    UnknownPlan(String),
    #[error("bucket_images {images} is invalid for plan {plan}: {why}")]
    BadBucket { plan: &'static str, images: u64, why: &'static str },
    #[error("unknown upgrade_policy {0:?}")]
    BadPolicy(String),
    #[error("amount {0:?} is not a decimal")]
    BadAmount(String),
    #[error("{field} {value:?} is not a decimal")]
    BadDecimal { field: &'static str, value: String },
    #[error("unknown billing_interval {0:?} (weekly, monthly, yearly)")]
    BadInterval(String),
    #[error("billing_interval and seats apply to app plans only, not {0}")]
    NotAnApp(&'static str),
    #[error("{0}")]
    Limit(#[from] Limit),
    #[error("the record's key {key:?} is not its team_id {team:?}: the team's history would split over partitions")]
    KeyMismatch { key: String, team: String },
    #[error("team_id {0:?} is a URL dot segment: clients rewrite /teams/{0}/ paths to another path, so its API and dashboard could never be reached")]
    DotSegmentTeam(String),
}

impl Invalid {
    pub fn code(&self) -> &'static str {
        match self {
            Invalid::Json(_) | Invalid::Protobuf(_) => "undecodable",
            Invalid::Limit(limit) => limit.code(),
            Invalid::KeyMismatch { .. } => "key_mismatch",
            Invalid::DotSegmentTeam(_) => "reserved_team_id",
            _ => "invalid",
        }
    }
}

/// Parses one JSONL line (proto3 canonical JSON of `LedgerInput`) into a validated event.
pub fn parse_json_line(line: &str) -> Result<Event, Invalid> {
    let input: pb::LedgerInput = serde_json::from_str(line).map_err(|e| Invalid::Json(e.to_string()))?;
    Event::try_from_pb(input)
}

/// Decodes a protobuf `LedgerInput`.
pub fn decode_input(bytes: &[u8]) -> Result<Event, Invalid> {
    let input = pb::LedgerInput::decode(bytes).map_err(|e| Invalid::Protobuf(e.to_string()))?;
    Event::try_from_pb(input)
}

/// Decodes a record of topic images.processed.v1.
pub fn decode_image(bytes: &[u8]) -> Result<Event, Invalid> {
    let msg = pb::ImageProcessed::decode(bytes).map_err(|e| Invalid::Protobuf(e.to_string()))?;
    image_from_pb(msg).map(Event::Image)
}

/// Decodes a record of topic billing.accounts.v1.
pub fn decode_account(bytes: &[u8]) -> Result<Event, Invalid> {
    let msg = pb::AccountEvent::decode(bytes).map_err(|e| Invalid::Protobuf(e.to_string()))?;
    account_from_pb(msg).map(Event::Account)
}

/// The record value for an event's own topic: an `ImageProcessed` (images.processed.v1)
/// or an `AccountEvent` (billing.accounts.v1), protobuf-encoded.
pub fn encode_event(event: &Event) -> Vec<u8> {
    match event {
        Event::Image(e) => image_to_pb(e).encode_to_vec(),
        Event::Account(e) => account_to_pb(e).encode_to_vec(),
    }
}

fn json_time(v: &serde_json::Value, field: &'static str) -> Result<Option<Timestamp>, Invalid> {
    let s = v[field].as_str().ok_or(Invalid::Missing(field))?;
    let t: DateTime<Utc> = s.parse().map_err(|_| Invalid::BadTime)?;
    Ok(Some(time_to_pb(t)))
}

fn json_str(v: &serde_json::Value, field: &'static str) -> Result<String, Invalid> {
    v[field].as_str().map(str::to_string).ok_or(Invalid::Missing(field))
}

/// An alert → the `UsageThresholdCrossed` message, encoded: what the outbox of a
/// format-3 store holds, built from the alert's own fields (nothing parsed from text).
pub fn alert_message(a: &ledger_core::Alert) -> Vec<u8> {
    pb::UsageThresholdCrossed {
        alert_id: a.alert_id.clone(),
        team_id: a.team_id.clone(),
        allowance: a.allowance.to_string(),
        cycle_start: Some(time_to_pb(a.cycle_start)),
        cycle_end: Some(time_to_pb(a.cycle_end)),
        threshold_percent: a.threshold_percent,
        consumed: a.consumed.clone(),
        allowance_value: a.allowance_value.clone(),
        triggering_event_id: a.triggering_event_id.clone(),
        occurred_at: Some(time_to_pb(a.occurred_at)),
        bucket_generation: a.bucket_generation,
    }
    .encode_to_vec()
}

/// A final invoice and its JSON document → the `InvoiceFinalized` message, encoded (the
/// outbox of a format-3 store; nothing parsed from text).
pub fn invoice_message(invoice: &ledger_core::Invoice, json: &str, invoice_id: &str) -> Vec<u8> {
    pb::InvoiceFinalized {
        team_id: invoice.team_id.clone(),
        period_start: Some(time_to_pb(invoice.period_start)),
        period_end: Some(time_to_pb(invoice.period_end)),
        total: invoice.total.clone(),
        currency: invoice.currency.to_string(),
        invoice_json: json.to_string(),
        invoice_id: invoice_id.to_string(),
    }
    .encode_to_vec()
}

/// An alert as a format-1 or -2 store's outbox holds it (JSON) → the
/// `UsageThresholdCrossed` message.
pub fn alert_to_pb(json: &str) -> Result<pb::UsageThresholdCrossed, Invalid> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| Invalid::Json(e.to_string()))?;
    Ok(pb::UsageThresholdCrossed {
        alert_id: json_str(&v, "alert_id")?,
        team_id: json_str(&v, "team_id")?,
        allowance: json_str(&v, "allowance")?,
        cycle_start: json_time(&v, "cycle_start")?,
        cycle_end: json_time(&v, "cycle_end")?,
        threshold_percent: v["threshold_percent"].as_u64().ok_or(Invalid::Missing("threshold_percent"))? as u32,
        consumed: json_str(&v, "consumed")?,
        allowance_value: json_str(&v, "allowance_value")?,
        triggering_event_id: json_str(&v, "triggering_event_id")?,
        occurred_at: json_time(&v, "occurred_at")?,
        bucket_generation: v["bucket_generation"].as_u64().unwrap_or(0) as u32,
    })
}

/// A `UsageThresholdCrossed` record as one line for people.
pub fn describe_alert(bytes: &[u8]) -> Result<String, Invalid> {
    let a = pb::UsageThresholdCrossed::decode(bytes).map_err(|e| Invalid::Protobuf(e.to_string()))?;
    Ok(format!(
        "{} {} {}% reached: {} of {} (event {}, alert id {})",
        a.team_id, a.allowance, a.threshold_percent, a.consumed, a.allowance_value, a.triggering_event_id, a.alert_id
    ))
}

/// `alert_to_pb`, encoded.
pub fn alert_bytes(json: &str) -> Result<Vec<u8>, Invalid> {
    Ok(alert_to_pb(json)?.encode_to_vec())
}

/// `invoice_to_pb`, encoded.
pub fn invoice_bytes(json: &str, invoice_id: &str) -> Result<Vec<u8>, Invalid> {
    Ok(invoice_to_pb(json, invoice_id)?.encode_to_vec())
}

/// A final invoice (JSON, exactly as `invoices` prints it, as a format-1 or -2 store's
/// outbox holds it) → `InvoiceFinalized`.
pub fn invoice_to_pb(json: &str, invoice_id: &str) -> Result<pb::InvoiceFinalized, Invalid> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| Invalid::Json(e.to_string()))?;
    Ok(pb::InvoiceFinalized {
        team_id: json_str(&v, "team_id")?,
        period_start: json_time(&v["period"], "start")?,
        period_end: json_time(&v["period"], "end")?,
        total: json_str(&v, "total")?,
        currency: json_str(&v, "currency")?,
        invoice_json: json.to_string(),
        invoice_id: invoice_id.to_string(),
    })
}

/// Conversions from wire messages into core events (validation) and back (export).
pub trait WireEvent: Sized {
    fn try_from_pb(input: pb::LedgerInput) -> Result<Self, Invalid>;
    fn to_pb(&self) -> pb::LedgerInput;
    /// One JSONL line, canonical JSON, no trailing newline.
    fn to_json_line(&self) -> String {
        serde_json::to_string(&self.to_pb()).expect("LedgerInput serializes")
    }
}

impl WireEvent for Event {
    fn try_from_pb(input: pb::LedgerInput) -> Result<Event, Invalid> {
        match input.event.ok_or(Invalid::NoEvent)? {
            pb::ledger_input::Event::ImageProcessed(m) => image_from_pb(m).map(Event::Image),
            pb::ledger_input::Event::AccountEvent(m) => account_from_pb(m).map(Event::Account),
        }
    }

    fn to_pb(&self) -> pb::LedgerInput {
        let event = match self {
            Event::Image(e) => pb::ledger_input::Event::ImageProcessed(image_to_pb(e)),
            Event::Account(e) => pb::ledger_input::Event::AccountEvent(account_to_pb(e)),
        };
        pb::LedgerInput { event: Some(event) }
    }
}

fn time_from_pb(ts: Option<Timestamp>) -> Result<DateTime<Utc>, Invalid> {
    let ts = ts.ok_or(Invalid::Missing("occurred_at"))?;
    // The ledger stores instants as i64 nanoseconds; keep well inside that range.
    const MIN: i64 = 946_684_800; // 2000-01-01T00:00:00Z
    const MAX: i64 = 7_258_118_400; // 2200-01-01T00:00:00Z
    let nanos = u32::try_from(ts.nanos).map_err(|_| Invalid::BadTime)?;
    if !(MIN..MAX).contains(&ts.seconds) || nanos >= 1_000_000_000 {
        return Err(Invalid::BadTime);
    }
    DateTime::from_timestamp(ts.seconds, nanos).ok_or(Invalid::BadTime)
}

pub fn time_to_pb(t: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

fn api_from_pb(v: i32) -> Result<Api, Invalid> {
    match pb::Api::try_from(v) {
        Ok(pb::Api::RemoveBackground) => Ok(Api::RemoveBackground),
        Ok(pb::Api::ImageEditing) => Ok(Api::ImageEditing),
        Ok(pb::Api::AppExport) => Ok(Api::AppExport),
        Ok(pb::Api::AppAi) => Ok(Api::AppAi),
        Ok(pb::Api::Unspecified) | Err(_) => Err(Invalid::BadApi(v)),
    }
}

fn api_to_pb(api: Api) -> pb::Api {
    match api {
        Api::RemoveBackground => pb::Api::RemoveBackground,
        Api::ImageEditing => pb::Api::ImageEditing,
        Api::AppExport => pb::Api::AppExport,
        Api::AppAi => pb::Api::AppAi,
    }
}

/// A team id entering the ledger: an id, and not `.` or `..`, which URL normalisers
/// (browsers, curl, HTTP libraries) remove from paths (`/v1/teams/../portal-links` is
/// sent as `/v1/portal-links`). Ledgers that already hold such a team still decode it.
pub fn new_team(id: String) -> Result<TeamId, Invalid> {
    if id == "." || id == ".." {
        return Err(Invalid::DotSegmentTeam(id));
    }
    Ok(TeamId::new(id)?)
}

fn image_from_pb(m: pb::ImageProcessed) -> Result<ImageProcessed, Invalid> {
    let event_id = EventId::new(m.event_id)?;
    let team_id = new_team(m.team_id)?;
    let occurred_at = time_from_pb(m.occurred_at)?;
    let api = api_from_pb(m.api)?;
    if m.images == 0 {
        return Err(Invalid::ZeroImages);
    }
    limits::at_most("images", u64::from(m.images), u64::from(limits::IMAGES_MAX))?;
    limits::count("operations", m.operations.len(), limits::OPERATIONS_MAX)?;
    for op in &m.operations {
        limits::text("operation", op, limits::TEXT_MAX_BYTES)?;
    }
    limits::text("request_id", &m.request_id, limits::TEXT_MAX_BYTES)?;
    Ok(ImageProcessed {
        event_id,
        team_id,
        occurred_at,
        api,
        operations: m.operations,
        images: m.images,
        sandbox: m.sandbox,
        request_id: m.request_id,
    })
}

fn image_to_pb(e: &ImageProcessed) -> pb::ImageProcessed {
    pb::ImageProcessed {
        event_id: e.event_id.to_string(),
        team_id: e.team_id.to_string(),
        occurred_at: Some(time_to_pb(e.occurred_at)),
        api: api_to_pb(e.api) as i32,
        operations: e.operations.clone(),
        images: e.images,
        sandbox: e.sandbox,
        request_id: e.request_id.clone(),
    }
}

fn terms_from_pb(plan: &str, bucket_images: u64, policy: &str) -> Result<PlanTerms, Invalid> {
    limits::text("plan", plan, limits::NAME_MAX_BYTES)?;
    limits::text("upgrade_policy", policy, limits::NAME_MAX_BYTES)?;
    let plan = Plan::from_key(plan).ok_or_else(|| Invalid::UnknownPlan(plan.to_string()))?;
    let bad = |why| Invalid::BadBucket { plan: plan.key(), images: bucket_images, why };
    if plan.has_bucket() && (bucket_images == 0 || !bucket_images.is_multiple_of(1000)) {
        return Err(bad("must be a positive multiple of 1,000"));
    }
    if !plan.has_bucket() && bucket_images != 0 {
        return Err(bad("plans without a bucket take 0"));
    }
    let upgrade_policy = match policy {
        "" => None,
        p => Some(UpgradePolicy::from_key(p).ok_or_else(|| Invalid::BadPolicy(p.to_string()))?),
    };
    Ok(PlanTerms { plan, bucket_images, upgrade_policy })
}

/// An app plan's interval and seats; other plans take neither.
fn app_options(terms: &PlanTerms, interval: &str, seats: u32) -> Result<Option<AppOptions>, Invalid> {
    limits::text("billing_interval", interval, limits::NAME_MAX_BYTES)?;
    if !terms.plan.is_app() {
        return if interval.is_empty() && seats == 0 { Ok(None) } else { Err(Invalid::NotAnApp(terms.plan.key())) };
    }
    let interval = match interval {
        "" => BillingInterval::Monthly,
        i => BillingInterval::from_key(i).ok_or_else(|| Invalid::BadInterval(i.to_string()))?,
    };
    Ok(Some(AppOptions { interval, seats }))
}

/// The wire fields of a plan start or change: plan, bucket, policy, interval, seats.
fn plan_fields(t: &PlanTerms, change: &AccountChange) -> (String, u64, String, String, u32) {
    let (interval, seats) = match change {
        AccountChange::AppPlanStarted(_, o) | AccountChange::AppPlanChanged(_, o) => (o.interval.key().into(), o.seats),
        AccountChange::PlanStarted(_)
        | AccountChange::PlanChanged(_)
        | AccountChange::PlanCancelled
        | AccountChange::QualityRefund { .. }
        | AccountChange::CreditsPurchased { .. }
        | AccountChange::ContractSigned(_) => (String::new(), 0),
    };
    (t.plan.key().into(), t.bucket_images, policy_key(t.upgrade_policy), interval, seats)
}

fn policy_key(p: Option<UpgradePolicy>) -> String {
    match p {
        None => String::new(),
        Some(UpgradePolicy::RestartProrated) => "restart_prorated".into(),
        Some(UpgradePolicy::DifferenceProrated) => "difference_prorated".into(),
    }
}

fn account_from_pb(m: pb::AccountEvent) -> Result<AccountEvent, Invalid> {
    use pb::account_event::Change;
    let event_id = EventId::new(m.event_id)?;
    let team_id = new_team(m.team_id)?;
    let occurred_at = time_from_pb(m.occurred_at)?;
    let change = match m.change.ok_or(Invalid::NoChange)? {
        Change::PlanStarted(p) => {
            let terms = terms_from_pb(&p.plan, p.bucket_images, &p.upgrade_policy)?;
            match app_options(&terms, &p.billing_interval, p.seats)? {
                Some(options) => AccountChange::AppPlanStarted(terms, options),
                None => AccountChange::PlanStarted(terms),
            }
        }
        Change::PlanChanged(p) => {
            let terms = terms_from_pb(&p.plan, p.bucket_images, &p.upgrade_policy)?;
            match app_options(&terms, &p.billing_interval, p.seats)? {
                Some(options) => AccountChange::AppPlanChanged(terms, options),
                None => AccountChange::PlanChanged(terms),
            }
        }
        Change::PlanCancelled(_) => AccountChange::PlanCancelled,
        Change::QualityRefund(r) => {
            AccountChange::QualityRefund { original_event_id: EventId::new(r.original_event_id)?, reason: r.reason }
        }
        Change::CreditsPurchased(c) => {
            limits::text("amount", &c.amount, limits::NAME_MAX_BYTES)?;
            AccountChange::CreditsPurchased {
                credits: c.credits,
                amount: c.amount.parse::<Decimal>().map_err(|_| Invalid::BadAmount(c.amount.clone()))?,
            }
        }
        Change::ContractSigned(c) => {
            let decimal = |field: &'static str, value: &str| {
                limits::text(field, value, limits::NAME_MAX_BYTES)?;
                value.parse::<Decimal>().map_err(|_| Invalid::BadDecimal { field, value: value.to_string() })
            };
            let tiers = c
                .tiers
                .iter()
                .map(|t| {
                    Ok(VolumeTier {
                        from_images: t.from_images,
                        discount_percent: decimal("discount_percent", &t.discount_percent)?,
                    })
                })
                .collect::<Result<Vec<_>, Invalid>>()?;
            AccountChange::ContractSigned(ContractTerms {
                term_months: c.term_months,
                committed_images_per_year: c.committed_images_per_year,
                rate_remove_background: decimal("rate_remove_background", &c.rate_remove_background)?,
                rate_image_editing: decimal("rate_image_editing", &c.rate_image_editing)?,
                annual_fee: decimal("annual_fee", &c.annual_fee)?,
                rollover: c.rollover,
                tiers,
            })
        }
    };
    limits::account_change(&change)?;
    Ok(AccountEvent { event_id, team_id, occurred_at, change })
}

fn account_to_pb(e: &AccountEvent) -> pb::AccountEvent {
    use pb::account_event::Change;
    let change = match &e.change {
        AccountChange::PlanStarted(t) | AccountChange::AppPlanStarted(t, _) => {
            let (plan, bucket_images, upgrade_policy, billing_interval, seats) = plan_fields(t, &e.change);
            Change::PlanStarted(pb::PlanStarted { plan, bucket_images, upgrade_policy, billing_interval, seats })
        }
        AccountChange::PlanChanged(t) | AccountChange::AppPlanChanged(t, _) => {
            let (plan, bucket_images, upgrade_policy, billing_interval, seats) = plan_fields(t, &e.change);
            Change::PlanChanged(pb::PlanChanged { plan, bucket_images, upgrade_policy, billing_interval, seats })
        }
        AccountChange::PlanCancelled => Change::PlanCancelled(pb::PlanCancelled {}),
        AccountChange::QualityRefund { original_event_id, reason } => Change::QualityRefund(pb::QualityRefund {
            original_event_id: original_event_id.to_string(),
            reason: reason.clone(),
        }),
        AccountChange::CreditsPurchased { credits, amount } => {
            Change::CreditsPurchased(pb::CreditsPurchased { credits: *credits, amount: amount.to_string() })
        }
        AccountChange::ContractSigned(c) => Change::ContractSigned(pb::ContractSigned {
            term_months: c.term_months,
            committed_images_per_year: c.committed_images_per_year,
            rate_remove_background: c.rate_remove_background.to_string(),
            rate_image_editing: c.rate_image_editing.to_string(),
            annual_fee: c.annual_fee.to_string(),
            rollover: c.rollover,
            tiers: c
                .tiers
                .iter()
                .map(|t| pb::VolumeTier {
                    from_images: t.from_images,
                    discount_percent: t.discount_percent.to_string(),
                })
                .collect(),
        }),
    };
    pb::AccountEvent {
        event_id: e.event_id.to_string(),
        team_id: e.team_id.to_string(),
        occurred_at: Some(time_to_pb(e.occurred_at)),
        change: Some(change),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_examples_parse_and_round_trip() {
        let lines = [
            r#"{"imageProcessed":{"eventId":"e1","teamId":"t1","occurredAt":"2026-04-01T00:00:01Z","api":"API_REMOVE_BACKGROUND","images":1}}"#,
            r#"{"accountEvent":{"eventId":"a1","teamId":"t1","occurredAt":"2026-04-01T00:00:00Z","planStarted":{"plan":"api_basic","bucketImages":"2000"}}}"#,
            r#"{"accountEvent":{"eventId":"c1","teamId":"t2","occurredAt":"2026-04-01T00:00:00Z","contractSigned":{"termMonths":12,"committedImagesPerYear":"240000","rateRemoveBackground":"0.015","rateImageEditing":"0.08","annualFee":"3600.00","rollover":true,"tiers":[{"fromImages":"250000","discountPercent":"10"}]}}}"#,
            r#"{"accountEvent":{"eventId":"p1","teamId":"t3","occurredAt":"2026-04-01T00:00:00Z","planStarted":{"plan":"app_pro","billingInterval":"weekly","seats":2}}}"#,
            r#"{"imageProcessed":{"eventId":"x1","teamId":"t3","occurredAt":"2026-04-01T00:00:01Z","api":"APP_AI","images":3}}"#,
        ];
        for line in lines {
            let event = parse_json_line(line).unwrap();
            assert_eq!(parse_json_line(&event.to_json_line()).unwrap(), event);
            assert_eq!(decode_input(&event.to_pb().encode_to_vec()).unwrap(), event);
        }
    }

    #[test]
    fn malformed_lines_are_refused_with_a_reason() {
        let cases = [
            ("{not json", "not valid JSON"),
            (
                r#"{"imageProcessed":{"eventId":"e1","teamId":"t1","occurredAt":"2026-04-01T00:00:01Z","api":"API_TELEPORT","images":1}}"#,
                "not valid JSON",
            ),
            (
                r#"{"imageProcessed":{"eventId":"e1","teamId":"t1","occurredAt":"2026-04-01T00:00:01Z","api":"API_REMOVE_BACKGROUND","images":0}}"#,
                "images must be >= 1",
            ),
            (
                r#"{"imageProcessed":{"eventId":"e1","teamId":"t1","api":"API_REMOVE_BACKGROUND","images":1}}"#,
                "occurred_at is missing",
            ),
            (
                r#"{"imageProcessed":{"eventId":"e1","teamId":"t1","occurredAt":"2026-04-01T00:00:01Z","images":1}}"#,
                "api is unspecified",
            ),
            (
                r#"{"accountEvent":{"eventId":"a1","teamId":"t1","occurredAt":"2026-04-01T00:00:00Z","planStarted":{"plan":"api_basic","bucketImages":"1500"}}}"#,
                "multiple of 1,000",
            ),
            (
                r#"{"accountEvent":{"eventId":"a1","teamId":"t1","occurredAt":"2026-04-01T00:00:00Z","planStarted":{"plan":"api_gold"}}}"#,
                "unknown plan",
            ),
            ("{}", "LedgerInput has no event"),
            (
                r#"{"imageProcessed":{"eventId":"e1","teamId":"t1","occurredAt":"1970-01-01T00:00:01Z","api":"API_REMOVE_BACKGROUND","images":1}}"#,
                "out of range",
            ),
            (
                r#"{"accountEvent":{"eventId":"a1","teamId":"t1","occurredAt":"2026-04-01T00:00:00Z","planStarted":{"plan":"app_pro","billingInterval":"daily"}}}"#,
                "unknown billing_interval \"daily\"",
            ),
            (
                r#"{"accountEvent":{"eventId":"a1","teamId":"t1","occurredAt":"2026-04-01T00:00:00Z","planStarted":{"plan":"api_basic","bucketImages":"1000","seats":3}}}"#,
                "app plans only, not api_basic",
            ),
            (
                r#"{"accountEvent":{"eventId":"c1","teamId":"t1","occurredAt":"2026-04-01T00:00:00Z","contractSigned":{"termMonths":12,"committedImagesPerYear":"240000","rateRemoveBackground":"cheap","rateImageEditing":"0.08","annualFee":"3600.00"}}}"#,
                "rate_remove_background \"cheap\" is not a decimal",
            ),
        ];
        for (line, want) in cases {
            let err = parse_json_line(line).unwrap_err().to_string();
            assert!(err.contains(want), "{line}: {err}");
        }
        let long = format!(
            r#"{{"imageProcessed":{{"eventId":"{}","teamId":"t1","occurredAt":"2026-04-01T00:00:01Z","api":"API_REMOVE_BACKGROUND","images":1}}}}"#,
            "e".repeat(129)
        );
        assert!(parse_json_line(&long).unwrap_err().to_string().contains("more than 128"));
    }
}
