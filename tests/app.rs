//! The app track (billing.md §4, issue 4): subscriptions billed weekly, monthly or
//! yearly, allowances of exports and AI credits that reset monthly, usage past them
//! recorded as over_allowance (never billed) with alerts, AI-credit top-ups that are
//! kept until used, and the 2024 catalogs' seats and Teams tier. Hand-computed figures.
use crate::support::{assert_text, run_scenario};

/// Pro 2026, monthly ($9.99): 500 exports and 125 AI credits a month.
/// March: 550 exports (50 over); AI 110, a 200-credit top-up ($9.98), then 120 more: 125
/// from the allowance, 105 from the top-up, 95 left. April: the allowance resets (the
/// top-ups do not: 95 carried in); 330 AI credits = 125 + 95 + 110 over.
#[test]
fn allowances_reset_monthly_and_top_ups_are_kept_until_used() {
    let out = run_scenario(
        "app 03-01 app_pro monthly
         ex 03-05 450 #ex1
         ex 03-06 100 #ex2
         ai 03-07 110 #ai1
         buy 03-08 200 9.98 #top1
         ai 03-09 100 #ai2
         ai 03-10 20 #ai3
         ai 04-02 130 #ai4
         ai 04-20 200 #ai5
         close 05-02",
    );
    assert_text(
        &out,
        "invoice t1 2026-03-01 total=19.97 v=2026-01-01 | subscription_fee 1x9.99=9.99, credits_purchase 200x0.0499=9.98 | exports 550/500 over=50 sandbox=0 | ai_credits 230/325 over=0 sandbox=0 | app monthly seats=1 m=1 top-ups in=0 bought=200 used=105 left=95
         invoice t1 2026-04-01 total=9.99 v=2026-01-01 | subscription_fee 1x9.99=9.99 | exports 0/500 over=0 sandbox=0 | ai_credits 330/220 over=110 sandbox=0 | app monthly seats=1 m=2 top-ups in=95 bought=0 used=95 left=0
         alert t1 exports g0 80% by ex1
         alert t1 exports g0 100% by ex2
         alert t1 ai_credits g0 80% by ai1
         alert t1 ai_credits g0 80% by ai5
         alert t1 ai_credits g0 100% by ai5",
    );
}

/// Weekly billing counts the weeks (from the subscription's start) that begin in each
/// monthly cycle: Max from Thu 1 Jan 2026 at $6.99 a week: Jan 1, 8, 15, 22, 29 = 5 weeks
/// ($34.95); Feb 5, 12, 19, 26 = 4 ($27.96). Max carries 3 × Pro's AI credits (375).
#[test]
fn weekly_billing_charges_the_weeks_that_start_in_each_cycle() {
    let out = run_scenario(
        "@w app 01-01 app_max weekly
         close 03-02",
    );
    assert_text(
        &out,
        "invoice w 2026-01-01 total=34.95 v=2026-01-01 | subscription_fee 5x6.99=34.95 | exports 0/1500 over=0 sandbox=0 | ai_credits 0/375 over=0 sandbox=0 | app weekly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0
         invoice w 2026-02-01 total=27.96 v=2026-01-01 | subscription_fee 4x6.99=27.96 | exports 0/1500 over=0 sandbox=0 | ai_credits 0/375 over=0 sandbox=0 | app weekly seats=1 m=2 top-ups in=0 bought=0 used=0 left=0",
    );
}

/// 2024 Pro: $89.99 a year per seat; two seats double the fee and the allowances. The
/// year is paid up front, so a move to Free signed in May waits for the year's end; the
/// cycles name the catalog in force at their start (2024-02-01, 2024-10-01, 2025-02-27).
#[test]
fn a_yearly_subscription_bills_the_year_up_front_and_changes_wait_for_its_end() {
    let out = run_scenario(
        "@y app 2024-03-15 app_pro yearly 2
         @y appchange 2024-05-01 app_free monthly
         close 2025-04-16",
    );
    let mut expected = String::from(
        "invoice y 2024-03-15 total=179.98 v=2024-02-01 | subscription_fee 2x89.99=179.98 | exports 0/1000 over=0 sandbox=0 | ai_credits 0/250 over=0 sandbox=0 | app yearly seats=2 m=1 top-ups in=0 bought=0 used=0 left=0\n",
    );
    let months = ["2024-04", "2024-05", "2024-06", "2024-07", "2024-08", "2024-09", "2024-10", "2024-11", "2024-12"];
    let months = months.iter().chain(&["2025-01", "2025-02"]);
    for (m, month) in months.enumerate() {
        let version = if *month >= "2024-10" { "2024-10-01" } else { "2024-02-01" };
        expected += &format!(
            "invoice y {month}-15 total=0.00 v={version} | - | exports 0/1000 over=0 sandbox=0 | ai_credits 0/250 over=0 sandbox=0 | app yearly seats=2 m={} top-ups in=0 bought=0 used=0 left=0\n",
            m + 2
        );
    }
    expected += "invoice y 2025-03-15 total=0.00 v=2025-02-27 | - | exports 0/250 over=0 sandbox=0 | ai_credits 0/25 over=0 sandbox=0 | app monthly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0";
    assert_text(&out, &expected);
}

/// The 2024-10 Teams tier: three seats at least (0 = the minimum); from 2026 it is kept
/// for its subscribers only. Plans and intervals a version does not sell are refused.
#[test]
fn seats_intervals_and_legacy_app_plans_follow_the_catalog() {
    let out = run_scenario(
        "@teams app 2024-11-01 app_teams yearly
         @two app 2024-11-01 app_teams yearly 2 #two-seats
         @late app 01-10 app_teams yearly #teams-2026
         @max app 2025-06-01 app_max monthly #max-2025
         @free app 01-10 app_free yearly #free-yearly
         close 2024-12-02",
    );
    assert_text(
        &out,
        "reject two-seats plan_rule
         reject teams-2026 plan_rule
         reject max-2025 plan_rule
         reject free-yearly plan_rule
         invoice teams 2024-11-01 total=269.97 v=2024-10-01 | subscription_fee 3x89.99=269.97 | exports 0/1500 over=0 sandbox=0 | ai_credits 0/375 over=0 sandbox=0 | app yearly seats=3 m=1 top-ups in=0 bought=0 used=0 left=0",
    );
}

/// App usage needs an app plan and API calls an API plan: the other kind is kept in
/// the ledger and reported as unplanned, never billed. App usage is paid by the
/// subscription, so refunding it is refused; top-ups are sold on app plans only.
#[test]
fn usage_the_plan_does_not_price_is_kept_as_unplanned() {
    let out = run_scenario(
        "@m app 04-01 app_pro monthly
         @m rb 04-02 10 #api-on-app
         @m ai 04-03 5 #ai-ok
         @m refund 04-04 ai-ok #refund-app
         @b start 04-01 api_basic 1000
         @b ex 04-02 3 #app-on-api
         @b buy 04-03 100 4.99 #top-up-on-api
         close 05-02",
    );
    assert_text(
        &out,
        "reject refund-app refund_unbilled
         reject top-up-on-api plan_rule
         invoice b 2026-04-01 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=0.00 forfeited=20.00
         unplanned b app-on-api
         invoice m 2026-04-01 total=9.99 v=2026-01-01 | subscription_fee 1x9.99=9.99 | exports 0/500 over=0 sandbox=0 | ai_credits 5/125 over=0 sandbox=0 | app monthly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0
         unplanned m api-on-app",
    );
}

/// An upgrade on the same interval applies at once: the cycle's allowances become the
/// new plan's (usage so far counts, thresholds fire afresh as generation 1) and the team
/// pays the fee difference for what is left of the period paid for.
/// Free → Pro on 16 April (monthly): 15 of 30 days left, $9.99 × 0.5 = $4.995 → $5.00.
/// Pro → Max on 2 July (yearly): 183 of 365 days of the year left, $110 × 183/365 =
/// $55.1507 → $55.15. Pro → Max on Sun 18 Jan 12:00 (weekly, weeks from Thu 1 Jan): half
/// of the current week and the weeks of 22 and 29 Jan left, $4.00 × 2.5 = $10.00.
#[test]
fn an_upgrade_applies_now_and_pays_the_difference_for_the_period_left() {
    let out = run_scenario(
        "@m app 04-01 app_free monthly
         @m ai 04-05 20 #m-ai1
         @m appchange 04-16 app_pro monthly #m-up
         @m ai 04-20 100 #m-ai2
         @y app 01-01 app_pro yearly
         @y appchange 07-02 app_max yearly #y-up
         @w app 01-01 app_pro weekly
         @w appchange 01-18T12 app_max weekly #w-up
         close 2026-08-02",
    );
    let idle_pro_year = |month: &str, m: u32| {
        format!(
            "invoice y 2026-{month}-01 total=0.00 v=2026-01-01 | - | exports 0/500 over=0 sandbox=0 | ai_credits 0/125 over=0 sandbox=0 | app yearly seats=1 m={m} top-ups in=0 bought=0 used=0 left=0\n"
        )
    };
    let mut expected = String::from(
        "invoice m 2026-04-01 total=5.00 v=2026-01-01 | upgrade_charge 1x5.00=5.00 | exports 0/500 over=0 sandbox=0 | ai_credits 120/125 over=0 sandbox=0 | app monthly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0
         invoice m 2026-05-01 total=9.99 v=2026-01-01 | subscription_fee 1x9.99=9.99 | exports 0/500 over=0 sandbox=0 | ai_credits 0/125 over=0 sandbox=0 | app monthly seats=1 m=2 top-ups in=0 bought=0 used=0 left=0
         invoice m 2026-06-01 total=9.99 v=2026-01-01 | subscription_fee 1x9.99=9.99 | exports 0/500 over=0 sandbox=0 | ai_credits 0/125 over=0 sandbox=0 | app monthly seats=1 m=3 top-ups in=0 bought=0 used=0 left=0
         invoice m 2026-07-01 total=9.99 v=2026-01-01 | subscription_fee 1x9.99=9.99 | exports 0/500 over=0 sandbox=0 | ai_credits 0/125 over=0 sandbox=0 | app monthly seats=1 m=4 top-ups in=0 bought=0 used=0 left=0
         alert m ai_credits g0 80% by m-ai1
         alert m ai_credits g1 80% by m-ai2
         invoice w 2026-01-01 total=24.95 v=2026-01-01 | subscription_fee 5x2.99=14.95, upgrade_charge 1x10.00=10.00 | exports 0/1500 over=0 sandbox=0 | ai_credits 0/375 over=0 sandbox=0 | app weekly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0\n",
    );
    // Weeks starting in each cycle: Feb 5–26 (4), Mar 5–26 (4), Apr 2–30 (5), May 7–28 (4),
    // Jun 4–25 (4), Jul 2–30 (5), at $6.99.
    let weekly = [("02", 4, "27.96"), ("03", 4, "27.96"), ("04", 5, "34.95"), ("05", 4, "27.96")];
    let weekly = weekly.into_iter().chain([("06", 4, "27.96"), ("07", 5, "34.95")]);
    for (m, (month, weeks, fee)) in (2..).zip(weekly) {
        expected += &format!(
            "invoice w 2026-{month}-01 total={fee} v=2026-01-01 | subscription_fee {weeks}x6.99={fee} | exports 0/1500 over=0 sandbox=0 | ai_credits 0/375 over=0 sandbox=0 | app weekly seats=1 m={m} top-ups in=0 bought=0 used=0 left=0\n"
        );
    }
    expected += "invoice y 2026-01-01 total=89.99 v=2026-01-01 | subscription_fee 1x89.99=89.99 | exports 0/500 over=0 sandbox=0 | ai_credits 0/125 over=0 sandbox=0 | app yearly seats=1 m=1 top-ups in=0 bought=0 used=0 left=0\n";
    for (month, m) in [("02", 2), ("03", 3), ("04", 4), ("05", 5), ("06", 6)] {
        expected += &idle_pro_year(month, m);
    }
    expected += "invoice y 2026-07-01 total=55.15 v=2026-01-01 | upgrade_charge 1x55.15=55.15 | exports 0/1500 over=0 sandbox=0 | ai_credits 0/375 over=0 sandbox=0 | app yearly seats=1 m=7 top-ups in=0 bought=0 used=0 left=0";
    assert_text(&out, &expected);
}
