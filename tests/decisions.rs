//! The two billing rules settled by issue 19 (billing.md §4), with hand-computed figures:
//! a weekly app subscription is billed one fee per week of service whatever the plan
//! changes (a deferred change's billing takes over at the end of the week paid for),
//! and legacy-credit usage past the credits is billed at the rate of the catalog
//! governing the cycle, refunds after the close giving back what was billed. The
//! fixture test shows a ledger closed under the old rules keeps its invoices.
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Utc};
use ledger_core::timeline::calendar::cycle_start;
use ledger_core::{Catalog, Team, TeamId};

use crate::support::{assert_text, copy_store, run_scenario, step, ul, ul_ok, Rng, Step};

fn check(script: &str, expected: &str) {
    assert_text(&run_scenario(script), expected);
}

/// The issue's case. Max weekly ($6.99) from Wed 14 Jan; a move to Pro weekly ($2.99)
/// on 20 Jan waits for the cycle (a downgrade). The weeks paid in the first cycle are
/// those starting Jan 14, 21, 28, Feb 4 and 11: the last runs to Feb 18, so Pro's fees
/// go on along the same weeks from there: Feb 18 and 25, Mar 4 and 11 in the second
/// cycle, Mar 18 and 25, Apr 1 and 8 in the third. 13 fees for the 13 weeks starting in
/// Jan 14 – Apr 14 (the old rule restarted the weeks at Feb 14: 14 fees, Feb 14–18
/// billed twice).
#[test]
fn a_deferred_weekly_change_bills_from_the_end_of_the_week_paid_for() {
    check(
        "@app1 app 01-14 app_max weekly #a1
         @app1 appchange 01-20 app_pro weekly #a2
         close 04-15",
        "invoice app1 2026-01-14 total=34.95 v=2026-01-01 | subscription_fee 5x6.99=34.95 | exports 0/1500 over=0 sandbox=0 | ai_credits 0/375 over=0 sandbox=0 | app weekly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0
         invoice app1 2026-02-14 total=11.96 v=2026-01-01 | subscription_fee 4x2.99=11.96 | exports 0/500 over=0 sandbox=0 | ai_credits 0/125 over=0 sandbox=0 | app weekly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0
         invoice app1 2026-03-14 total=11.96 v=2026-01-01 | subscription_fee 4x2.99=11.96 | exports 0/500 over=0 sandbox=0 | ai_credits 0/125 over=0 sandbox=0 | app weekly seats=1 m=2 top-ups in=0 bought=0 used=0 left=0",
    );
}

/// A change on the last day of a week (Sat 7 Feb 23:00, the week Feb 1–8), on a
/// subscription whose cycle ends on a week boundary (Feb 1 – Mar 1 is four weeks): the
/// week paid for ends where the cycle does, and Pro bills from Mar 1 on.
#[test]
fn a_change_on_the_last_day_of_a_week_ending_with_the_cycle() {
    check(
        "app 02-01 app_max weekly
         appchange 02-07T23 app_pro weekly
         close 04-02",
        "invoice t1 2026-02-01 total=27.96 v=2026-01-01 | subscription_fee 4x6.99=27.96 | exports 0/1500 over=0 sandbox=0 | ai_credits 0/375 over=0 sandbox=0 | app weekly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0
         invoice t1 2026-03-01 total=14.95 v=2026-01-01 | subscription_fee 5x2.99=14.95 | exports 0/500 over=0 sandbox=0 | ai_credits 0/125 over=0 sandbox=0 | app weekly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0",
    );
}

/// Several changes in one cycle: a downgrade to Pro (scheduled), an upgrade to Ultra on
/// Sun 25 Jan (now: $7.00 more a week for the 3/7 of the week Jan 21–28 left and the
/// weeks of Jan 28, Feb 4 and 11 still to start in the cycle: $24.00; it replaces the
/// scheduled change), then Pro again on Feb 1 (scheduled; the last one wins). Pro bills
/// from Feb 18, where the weeks paid end.
#[test]
fn several_weekly_changes_in_one_cycle_bill_each_week_once() {
    check(
        "app 01-14 app_max weekly
         appchange 01-20 app_pro weekly
         appchange 01-25 app_ultra weekly
         appchange 02-01 app_pro weekly
         close 03-15",
        "invoice t1 2026-01-14 total=58.95 v=2026-01-01 | subscription_fee 5x6.99=34.95, upgrade_charge 1x24.00=24.00 | exports 0/4000 over=0 sandbox=0 | ai_credits 0/1200 over=0 sandbox=0 | app weekly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0
         invoice t1 2026-02-14 total=11.96 v=2026-01-01 | subscription_fee 4x2.99=11.96 | exports 0/500 over=0 sandbox=0 | ai_credits 0/125 over=0 sandbox=0 | app weekly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0",
    );
}

/// Weekly to monthly and back. The weeks paid run to Feb 18, so the first month of Pro
/// monthly ($9.99, Feb 14 – Mar 14) is charged for the 24 of its 28 days left from
/// there: $9.99 × 6/7 = $8.5629 → $8.56. The month paid ends with the cycle, so Pro
/// weekly starts its weeks on Mar 14: Mar 14, 21, 28, Apr 4 and 11.
#[test]
fn weekly_to_monthly_charges_the_first_month_from_where_the_weeks_paid_end() {
    check(
        "app 01-14 app_max weekly
         appchange 01-20 app_pro monthly
         appchange 02-20 app_pro weekly
         close 04-15",
        "invoice t1 2026-01-14 total=34.95 v=2026-01-01 | subscription_fee 5x6.99=34.95 | exports 0/1500 over=0 sandbox=0 | ai_credits 0/375 over=0 sandbox=0 | app weekly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0
         invoice t1 2026-02-14 total=8.56 v=2026-01-01 | subscription_fee 1x8.56=8.56 | exports 0/500 over=0 sandbox=0 | ai_credits 0/125 over=0 sandbox=0 | app monthly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0
         invoice t1 2026-03-14 total=14.95 v=2026-01-01 | subscription_fee 5x2.99=14.95 | exports 0/500 over=0 sandbox=0 | ai_credits 0/125 over=0 sandbox=0 | app weekly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0",
    );
}

/// Weekly to yearly: the first year (Feb 14, 2026 – Feb 14, 2027, 365 days) is charged
/// for the 361 days left from Feb 18: $89.99 × 361/365 = $89.0038 → $89.00; the next
/// cycle is inside the year paid for.
#[test]
fn weekly_to_yearly_charges_the_first_year_from_where_the_weeks_paid_end() {
    check(
        "app 01-14 app_max weekly
         appchange 01-20 app_pro yearly
         close 03-15",
        "invoice t1 2026-01-14 total=34.95 v=2026-01-01 | subscription_fee 5x6.99=34.95 | exports 0/1500 over=0 sandbox=0 | ai_credits 0/375 over=0 sandbox=0 | app weekly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0
         invoice t1 2026-02-14 total=89.00 v=2026-01-01 | subscription_fee 1x89.00=89.00 | exports 0/500 over=0 sandbox=0 | ai_credits 0/125 over=0 sandbox=0 | app yearly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0",
    );
}

/// Weekly to yearly and back: the year (from Feb 14, 2026, charged from Feb 18) holds the
/// plan to Feb 14, 2027, where the move back to weekly (signed in March) takes effect;
/// the year paid ends with that cycle, so the weeks start with it: Feb 14, 21, 28 and
/// Mar 7, 2027.
#[test]
fn weekly_to_yearly_and_back_bills_each_period_once() {
    let out = run_scenario(
        "app 01-14 app_max weekly
         appchange 01-20 app_pro yearly
         appchange 03-01 app_pro weekly
         close 2027-03-15",
    );
    let invoices: Vec<&str> = out.lines().filter(|l| l.starts_with("invoice")).collect();
    assert_eq!(invoices.len(), 14, "{out}");
    assert!(invoices[1].contains("subscription_fee 1x89.00=89.00"), "{}", invoices[1]);
    for month in &invoices[2..13] {
        assert!(month.contains(" | - | ") && month.contains("app yearly"), "{month}");
    }
    assert!(invoices[13].starts_with("invoice t1 2027-02-14 total=11.96"), "{}", invoices[13]);
    assert!(
        invoices[13].contains("subscription_fee 4x2.99=11.96") && invoices[13].contains("app weekly"),
        "{}",
        invoices[13]
    );
}

/// An upgrade while the week paid by the plan before is still running (found in review:
/// it charged the difference from the current plan's fee for days paid at the plan
/// before's). Max weekly to Pro weekly (deferred), then Ultra on Feb 15, inside the week
/// Feb 11–18 that Max paid for: $7.00 (Ultra − Max) × 3/7 of that week, and $11.00
/// (Ultra − Pro) for each of the 4 Pro weeks to start in the cycle: $47.00, not $48.71.
/// To monthly then an upgrade before the weeks paid end: the month's part paid at Pro
/// monthly (from Feb 18, 24/28) costs $15.00 × 24/28 = $12.857; Feb 15–18 were paid by
/// Max's week ($2.996), more than Max monthly's share of them ($2.678): nothing more.
#[test]
fn an_upgrade_inside_the_week_paid_by_the_plan_before_charges_from_what_paid_it() {
    check(
        "@w app 01-14 app_max weekly
         @w appchange 01-20 app_pro weekly
         @w appchange 02-15 app_ultra weekly
         @m app 01-14 app_max weekly
         @m appchange 01-20 app_pro monthly
         @m appchange 02-15 app_max monthly
         close 03-15",
        "invoice m 2026-01-14 total=34.95 v=2026-01-01 | subscription_fee 5x6.99=34.95 | exports 0/1500 over=0 sandbox=0 | ai_credits 0/375 over=0 sandbox=0 | app weekly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0
         invoice m 2026-02-14 total=21.42 v=2026-01-01 | subscription_fee 1x8.56=8.56, upgrade_charge 1x12.86=12.86 | exports 0/1500 over=0 sandbox=0 | ai_credits 0/375 over=0 sandbox=0 | app monthly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0
         invoice w 2026-01-14 total=34.95 v=2026-01-01 | subscription_fee 5x6.99=34.95 | exports 0/1500 over=0 sandbox=0 | ai_credits 0/375 over=0 sandbox=0 | app weekly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0
         invoice w 2026-02-14 total=58.96 v=2026-01-01 | subscription_fee 4x2.99=11.96, upgrade_charge 1x47.00=47.00 | exports 0/4000 over=0 sandbox=0 | ai_credits 0/1200 over=0 sandbox=0 | app weekly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0",
    );
}

/// Cancelled, then started again before the weeks paid end (found in review: Feb 15–18
/// were billed twice). The cancel ends the subscription with the cycle (Feb 14); the last
/// week paid runs to Feb 18. Weekly again from Feb 15: its weeks go on from Feb 18 (4 in
/// the cycle Feb 15 – Mar 15); monthly again: the first month is charged from Feb 18,
/// 25/28 of $9.99 = $8.92.
#[test]
fn a_restart_before_the_weeks_paid_end_bills_from_their_end() {
    check(
        "@w app 01-14 app_max weekly
         @w cancel 01-20
         @w app 02-15 app_max weekly
         @m app 01-14 app_max weekly
         @m cancel 01-20
         @m app 02-15 app_pro monthly
         close 03-16",
        "invoice m 2026-01-14 total=34.95 v=2026-01-01 | subscription_fee 5x6.99=34.95 | exports 0/1500 over=0 sandbox=0 | ai_credits 0/375 over=0 sandbox=0 | app weekly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0
         invoice m 2026-02-15 total=8.92 v=2026-01-01 | subscription_fee 1x8.92=8.92 | exports 0/500 over=0 sandbox=0 | ai_credits 0/125 over=0 sandbox=0 | app monthly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0
         invoice w 2026-01-14 total=34.95 v=2026-01-01 | subscription_fee 5x6.99=34.95 | exports 0/1500 over=0 sandbox=0 | ai_credits 0/375 over=0 sandbox=0 | app weekly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0
         invoice w 2026-02-15 total=27.96 v=2026-01-01 | subscription_fee 4x6.99=27.96 | exports 0/1500 over=0 sandbox=0 | ai_credits 0/375 over=0 sandbox=0 | app weekly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0",
    );
}

/// The issue's credits case: a credits team (plan 2025-01-10, 100 credits for $10.00)
/// uses 150 removals in the cycle from 2025-03-10, governed by the 2025-02-27 catalog: 100
/// draw the credits, 50 are billed at that catalog's $0.02 (not the credit's $0.10).
/// Refunded after the close, an image past the credits gives back its $0.02, one that
/// drew a credit the credit's $0.10; an event that did both gives back each part (two
/// lines for the period: one rate each, so quantity × unit price is the amount).
#[test]
fn credits_overage_is_billed_at_the_governing_catalogs_rate_and_refunded_as_billed() {
    check(
        "start 2025-01-10 api_credits
         buy 2025-01-11 100 10.00
         rb 2025-03-15 100 #drew
         rb 2025-03-16 50 #past
         refund 2025-04-12 past
         refund 2025-04-13 drew
         close 2025-05-11",
        "invoice t1 2025-01-10 total=10.00 v=2024-10-01 | credits_purchase 100x0.10=10.00 | credits in=0 bought=100 used=0 expired=0 left=100
         invoice t1 2025-02-10 total=0.00 v=2024-10-01 | - | credits in=100 bought=0 used=0 expired=0 left=100
         invoice t1 2025-03-10 total=1.00 v=2025-02-27 | overage 50x0.02=1.00 | credits in=100 bought=0 used=100 expired=0 left=0
         invoice t1 2025-04-10 total=-11.00 v=2025-02-27 | refund_credit 50x-0.02=-1.00 (2025-03-10), refund_credit 100x-0.10=-10.00 (2025-03-10) | credits in=0 bought=0 used=0 expired=0 left=0
         alert t1 credits g0 80% by drew
         alert t1 credits g0 100% by drew",
    );
    check(
        "start 2025-01-10 api_credits
         buy 2025-01-11 100 10.00
         rb 2025-03-15 150 #both
         ie 2025-03-16 10 #edit
         refund 2025-04-12 both
         close 2025-05-11",
        "invoice t1 2025-01-10 total=10.00 v=2024-10-01 | credits_purchase 100x0.10=10.00 | credits in=0 bought=100 used=0 expired=0 left=100
         invoice t1 2025-02-10 total=0.00 v=2024-10-01 | - | credits in=100 bought=0 used=0 expired=0 left=100
         invoice t1 2025-03-10 total=2.00 v=2025-02-27 | overage 50x0.02=1.00, overage 10x0.10=1.00 | credits in=100 bought=0 used=100 expired=0 left=0
         invoice t1 2025-04-10 total=-11.00 v=2025-02-27 | refund_credit 50x-0.02=-1.00 (2025-03-10), refund_credit 100x-0.10=-10.00 (2025-03-10) | credits in=0 bought=0 used=0 expired=0 left=0
         alert t1 credits g0 80% by both
         alert t1 credits g0 100% by both",
    );
}

/// A cycle is governed by the catalog in force at its start: crossing 2025-02-27 in the
/// middle of a cycle (from 2025-02-10) leaves it on the 2024-10-01 catalog ($0.10 a
/// removal past the credits); a cycle starting at 2025-02-27T00:00 exactly is on the new
/// one ($0.02). Late usage of such a cycle drew no credit: billed at the catalog's rate.
#[test]
fn credits_teams_crossing_the_2025_02_27_catalog_mid_cycle_and_at_a_cycle_start() {
    check(
        "@mid start 2025-02-10 api_credits
         @mid buy 2025-02-11 10 1.00
         @mid rb 2025-03-01 30
         @edge start 2025-01-27 api_credits
         @edge buy 2025-01-28 10 1.00
         @edge rb 2025-03-01 30
         @edge rb 2025-04-10 1
         @edge rb 2025-03-20 5 #late
         close 2025-04-28",
        "invoice edge 2025-01-27 total=1.00 v=2024-10-01 | credits_purchase 10x0.10=1.00 | credits in=0 bought=10 used=0 expired=0 left=10
         invoice edge 2025-02-27 total=0.40 v=2025-02-27 | overage 20x0.02=0.40 | credits in=10 bought=0 used=10 expired=0 left=0
         invoice edge 2025-03-27 total=0.12 v=2025-02-27 | overage 1x0.02=0.02, late_usage 5x0.02=0.10 (2025-02-27) | credits in=0 bought=0 used=0 expired=0 left=0
         alert edge credits g0 80% by x5
         alert edge credits g0 100% by x5
         invoice mid 2025-02-10 total=3.00 v=2024-10-01 | credits_purchase 10x0.10=1.00, overage 20x0.10=2.00 | credits in=0 bought=10 used=10 expired=0 left=0
         invoice mid 2025-03-10 total=0.00 v=2025-02-27 | - | credits in=0 bought=0 used=0 expired=0 left=0
         alert mid credits g0 80% by x2
         alert mid credits g0 100% by x2",
    );
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/rules-v1")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `tests/fixtures/rules-v1/store` was written by the build before issue 19 (133a28f):
/// the weekly change and the credits overage above, closed under the old rules. A closed
/// invoice is history: it replays to the digest and reads as that build recorded it,
/// byte for byte. The cycles this build closes next are priced under the new rules and
/// say so in their close entry.
#[test]
fn invoices_closed_under_the_old_rules_replay_and_read_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    copy_store(&fixture().join("store"), &dir);
    let digest = |dir: &Path| {
        let out = ul_ok(dir, &["replay"]);
        out.lines().filter(|l| l.starts_with("digest:")).map(|l| format!("{l}\n")).collect::<String>()
    };
    assert_eq!(digest(&dir), read("expected/before.digest"));
    for team in ["app1", "cred"] {
        assert_eq!(ul_ok(&dir, &["invoices", "--team", team]), read(&format!("expected/{team}.json")), "{team}");
    }
    let run = ul(&dir, &["verify"]);
    assert_eq!(run.code, 0, "verify: {}", run.stderr);

    // The open cycle is priced the same under both rules (no change at its start): its
    // close is written as every earlier build wrote it. A move to Pro monthly then waits
    // for the next cycle, which bills from where the weeks paid end (May 16: the old
    // rule's weeks from Feb 14): $9.99 × 29/31 = $9.3455 → $9.35, and its close names
    // rules 2.
    let change = tmp.path().join("change.jsonl");
    std::fs::write(
        &change,
        r#"{"accountEvent":{"eventId":"a3","teamId":"app1","occurredAt":"2026-04-20T00:00:00Z","planChanged":{"plan":"app_pro","billingInterval":"monthly"}}}"#,
    )
    .unwrap();
    ul_ok(&dir, &["import", change.to_str().unwrap()]);
    ul_ok(&dir, &["close", "--until", "2026-06-15T00:00:00Z"]);
    let invoices: serde_json::Value = serde_json::from_str(&ul_ok(&dir, &["invoices", "--team", "app1"])).unwrap();
    let invoices = invoices.as_array().unwrap();
    assert_eq!(invoices[3]["period"]["start"], "2026-04-14T00:00:00Z");
    assert_eq!(invoices[3]["lines"][0]["quantity"], "4", "{}", invoices[3]);
    assert_eq!(invoices[4]["period"]["start"], "2026-05-14T00:00:00Z");
    assert_eq!(invoices[4]["lines"][0]["unit_price"], "9.35", "{}", invoices[4]);
    let store = ledger_store::Store::open(&dir, &ledger_core::Catalog::builtin()).unwrap();
    let team = ledger_core::TeamId::new("app1").unwrap();
    let closes: Vec<Option<u16>> = store
        .team_entries(&ledger_core::Catalog::builtin(), &team)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e {
            ledger_core::Entry::CycleClosed(_) => Some(None),
            ledger_core::Entry::ClosedUnder { rules, .. } => Some(Some(rules)),
            _ => None,
        })
        .collect();
    assert_eq!(closes, [None, None, None, None, Some(2)]);
    drop(store);
    let replayed = ul_ok(&dir, &["replay"]);
    assert!(replayed.contains("digest:"), "{replayed}");
    assert_eq!(ul(&dir, &["verify"]).code, 0);
}

/// One case of the weekly property: a weekly subscription started at a random instant
/// (often on the 29th–31st, where the monthly cycles clamp), then changes to random weekly
/// plans and seats at random instants (some on a week's boundary or in its last hour, some
/// at a cycle's start), closed up to a random horizon. Returns the script and the start.
fn weekly_case(rng: &mut Rng) -> (String, DateTime<Utc>) {
    let plans = ["app_pro", "app_max", "app_ultra"];
    let seats = |rng: &mut Rng| match rng.below(4) {
        0 => String::new(),
        n => format!(" {n}"),
    };
    let month = 1 + rng.below(12) as u32;
    let day = if rng.below(2) == 0 { 29 + rng.below(3) as u32 } else { 1 + rng.below(28) as u32 };
    let day = (1..=day).rev().find(|d| NaiveDate::from_ymd_opt(2026, month, *d).is_some()).expect("a valid day");
    let hour = rng.below(24) as u32;
    let start = NaiveDate::from_ymd_opt(2026, month, day).unwrap().and_hms_opt(hour, 0, 0).unwrap().and_utc();
    let months = 2 + rng.below(7) as u32;
    let until = cycle_start(start, months) + Duration::hours(rng.below(24 * 20) as i64);
    let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut script = format!("@w app {} {} weekly{} #start\n", fmt(start), rng.pick(&plans), seats(rng));
    let mut changes: Vec<DateTime<Utc>> = (0..rng.below(7))
        .map(|_| {
            let week = Duration::days(7 * (1 + rng.below(4 * months as usize)) as i64);
            match rng.below(5) {
                0 => start + week,
                1 => start + week - Duration::hours(1),
                2 => cycle_start(start, 1 + rng.below(months as usize) as u32),
                _ => start + Duration::hours(1 + rng.below((until - start).num_hours() as usize - 1) as i64),
            }
        })
        .filter(|t| *t < until)
        .collect();
    changes.sort();
    for (i, at) in changes.into_iter().enumerate() {
        script += &format!("@w appchange {} {} weekly{} #c{i}\n", fmt(at), rng.pick(&plans), seats(rng));
    }
    script += &format!("close {}\n", fmt(until));
    (script, start)
}

/// The script's invoices as the pure core publishes them (JSON), in order.
fn core_invoices(script: &str) -> Vec<serde_json::Value> {
    let catalog = Catalog::builtin();
    let mut team = Team::new(TeamId::new("w").unwrap());
    let mut invoices = Vec::new();
    for (n, line) in script.lines().map(str::trim).filter(|l| !l.is_empty()).enumerate() {
        let applied = match step(n, line) {
            Step::Close(until) => team.close_until(&catalog, until.parse().unwrap()),
            Step::Line(json) => {
                let event = ledger_proto::parse_json_line(&json).unwrap();
                team.submit(&catalog, event, None).unwrap_or_else(|r| panic!("{line}: {r:?}"))
            }
        };
        let published = applied.into_iter().filter_map(|a| a.effects.invoice);
        invoices.extend(published.map(|i| serde_json::from_str(&i.to_json()).unwrap()));
    }
    invoices
}

/// Billing.md §4 (issue 19) as a property: however a weekly subscription changes plan
/// and seats, the weekly fees of its closed invoices (quantity ÷ seats; upgrade charges
/// aside) count exactly the weeks of the grid from its start that start before the end
/// of the last closed cycle. 200 seeded cases, each run through the store and the core.
#[test]
fn weekly_fees_count_each_week_of_service_once_whatever_the_changes() {
    let mut rng = Rng(0x5eed_0019);
    for case in 0..200 {
        let (script, start) = weekly_case(&mut rng);
        let rendered = run_scenario(&script);
        let context = format!("case {case}:\n{script}\n{rendered}");
        let invoices = core_invoices(&script);
        let mut fees = 0;
        for line in invoices.iter().flat_map(|i| i["lines"].as_array().unwrap()) {
            if line["kind"] != "subscription_fee" {
                continue;
            }
            // "App Max, weekly billing: 5 week(s), 2 seat(s)"
            let description = line["description"].as_str().unwrap();
            let count = |unit: &str| -> u64 {
                let before = description.split(&format!(" {unit}(s)")).next().unwrap();
                before.rsplit(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("{description}\n{context}"))
            };
            let quantity: u64 = line["quantity"].as_str().unwrap().parse().unwrap();
            let (weeks, seats) = (count("week"), count("seat"));
            assert_eq!(quantity, weeks * seats, "{description}\n{context}");
            fees += quantity / seats;
        }
        let end = invoices.last().map(|i| i["period"]["end"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap());
        let end = end.unwrap_or_else(|| panic!("nothing closed\n{context}"));
        let week = Duration::days(7).num_seconds();
        let expected = ((end - start).num_seconds() + week - 1) / week;
        assert_eq!(fees, expected as u64, "{context}");
    }
}
