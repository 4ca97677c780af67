//! Every billing rule of billing.md as a table of small scenarios with hand-computed
//! figures, run through the real import path into sled. One case = one `check`.
use crate::support::{assert_text, run_scenario};

fn check(script: &str, expected: &str) {
    assert_text(&run_scenario(script), expected);
}

#[test]
fn cycles_clamp_month_ends_from_the_original_anchor() {
    check(
        "start 01-31T10 api_basic 1000
         close 06-02",
        "invoice t1 2026-01-31 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=0.00 forfeited=20.00
         invoice t1 2026-02-28 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=0.00 forfeited=20.00
         invoice t1 2026-03-31 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=0.00 forfeited=20.00
         invoice t1 2026-04-30 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=0.00 forfeited=20.00",
    );
}

#[test]
fn no_rollover_fee_each_cycle_and_overage_at_the_called_rate() {
    check(
        "start 04-01 api_basic 1000
         rb 04-10 100
         rb 05-10 1500
         close 06-02",
        "invoice t1 2026-04-01 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=2.00 forfeited=18.00
         invoice t1 2026-05-01 total=30.00 v=2026-01-01 | bucket_fee 1x20.00=20.00, overage 500x0.02=10.00 | consumed=30.00 forfeited=0.00
         alert t1 bucket g0 80% by x2
         alert t1 bucket g0 100% by x2",
    );
}

#[test]
fn the_meter_follows_the_feature_called_not_the_plan() {
    check(
        "start 04-01 api_plus 1000
         rb 04-02 100
         ie 04-03 10
         close 05-02",
        "invoice t1 2026-04-01 total=100.00 v=2026-01-01 | bucket_fee 1x100.00=100.00 | consumed=3.00 forfeited=97.00",
    );
}

#[test]
fn a_jump_past_both_thresholds_raises_both_in_order() {
    check(
        "start 04-01 api_basic 1000
         rb 04-02 700
         rb 04-03 350
         close 05-02",
        "invoice t1 2026-04-01 total=21.00 v=2026-01-01 | bucket_fee 1x20.00=20.00, overage 50x0.02=1.00 | consumed=21.00 forfeited=0.00
         alert t1 bucket g0 80% by x2
         alert t1 bucket g0 100% by x2",
    );
}

#[test]
fn restart_prorated_upgrade_forfeits_the_old_bucket_and_fires_afresh() {
    check(
        "start 04-01 api_basic 1000
         rb 04-05 900
         change 04-16 api_basic 2000
         rb 04-20 800
         close 05-02",
        "invoice t1 2026-04-01 total=40.00 v=2026-01-01 | bucket_fee 1x20.00=20.00, upgrade_charge 1x20.00=20.00 | consumed=34.00 forfeited=6.00
         alert t1 bucket g0 80% by x1
         alert t1 bucket g1 80% by x3",
    );
}

#[test]
fn difference_prorated_upgrade_grows_the_bucket_for_the_whole_cycle() {
    check(
        "start 04-01 api_basic 1000
         rb 04-05 900
         change 04-16 api_basic 2000 difference_prorated
         rb 04-20 800
         close 05-02",
        "invoice t1 2026-04-01 total=30.00 v=2026-01-01 | bucket_fee 1x20.00=20.00, upgrade_charge 1x10.00=10.00 | consumed=34.00 forfeited=6.00
         alert t1 bucket g0 80% by x1
         alert t1 bucket g1 80% by x3",
    );
}

#[test]
fn a_downgrade_waits_for_the_next_cycle() {
    check(
        "start 04-01 api_basic 3000
         change 04-10 api_basic 1000
         rb 04-20 100
         rb 05-05 100
         close 06-02",
        "invoice t1 2026-04-01 total=60.00 v=2026-01-01 | bucket_fee 1x60.00=60.00 | consumed=2.00 forfeited=58.00
         invoice t1 2026-05-01 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=2.00 forfeited=18.00",
    );
}

#[test]
fn the_last_change_scheduled_before_a_cycle_wins() {
    check(
        "start 04-01 api_basic 3000
         change 04-10 api_basic 2000
         cancel 04-12
         change 04-14 api_basic 1000
         close 06-02",
        "invoice t1 2026-04-01 total=60.00 v=2026-01-01 | bucket_fee 1x60.00=60.00 | consumed=0.00 forfeited=60.00
         invoice t1 2026-05-01 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=0.00 forfeited=20.00",
    );
}

#[test]
fn cancel_ends_cycles_and_a_new_start_sets_a_new_anchor() {
    check(
        "start 04-01 api_basic 1000
         cancel 04-10
         rb 05-03 5 #gap
         start 05-10 api_basic 1000
         rb 05-12 10
         close 06-12",
        "invoice t1 2026-04-01 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=0.00 forfeited=20.00
         invoice t1 2026-05-10 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=0.20 forfeited=19.80
         unplanned t1 gap",
    );
}

#[test]
fn plan_changes_that_break_the_timeline_are_refused() {
    check(
        "start 04-01 api_basic 1000
         start 04-05 api_plus 1000 #again
         cancel 03-01 #early
         close 05-02",
        "reject again plan_rule
         reject early plan_rule
         invoice t1 2026-04-01 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=0.00 forfeited=20.00",
    );
}

#[test]
fn free_trial_2026_allowance_and_sandbox_cap_are_recorded_never_billed() {
    check(
        "start 04-01 api_free_trial
         ie 04-02 2
         rb 04-03 5
         rb 04-04 1001 sandbox
         close 05-02",
        "invoice t1 2026-04-01 total=0.00 v=2026-01-01 | - | trial 0.30/0.20 over=0.10 sandbox=1001
         alert t1 trial g0 80% by x1
         alert t1 trial g0 100% by x1
         alert t1 sandbox g0 80% by x3
         alert t1 sandbox g0 100% by x3",
    );
}

#[test]
fn free_trial_2025_gives_200_basic_images() {
    check(
        "start 2025-06-01 api_free_trial
         rb 2025-06-02 160
         rb 2025-06-03 50
         close 2025-07-02",
        "invoice t1 2025-06-01 total=0.00 v=2025-02-27 | - | trial 4.20/4.00 over=0.20 sandbox=0
         alert t1 trial g0 80% by x1
         alert t1 trial g0 100% by x2",
    );
}

#[test]
fn partner_pays_its_rate_for_removal_and_plus_rate_for_editing() {
    check(
        "start 04-01 api_partner
         rb 04-02 100000
         ie 04-03 10
         close 05-02",
        "invoice t1 2026-04-01 total=1001.00 v=2026-01-01 | usage 100000x0.01=1000.00, usage 10x0.10=1.00
         alert t1 commitment g0 80% by x1
         alert t1 commitment g0 100% by x1",
    );
}

#[test]
fn refund_in_an_open_cycle_returns_value_to_the_bucket() {
    check(
        "start 04-01 api_basic 1000
         rb 04-02 1000
         ie 04-03 10 #e1
         refund 04-04 e1
         close 05-02",
        "invoice t1 2026-04-01 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=20.00 forfeited=0.00 | refunded=10
         alert t1 bucket g0 80% by x1
         alert t1 bucket g0 100% by x1",
    );
}

#[test]
fn refund_after_close_is_a_credit_on_the_next_invoice() {
    check(
        "start 04-01 api_basic 1000
         rb 04-02 10 #r1
         close 05-02
         refund 05-03 r1
         close 06-02",
        "invoice t1 2026-04-01 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=0.20 forfeited=19.80
         invoice t1 2026-05-01 total=19.80 v=2026-01-01 | bucket_fee 1x20.00=20.00, refund_credit 10x-0.02=-0.20 (2026-04-01) | consumed=0.00 forfeited=20.00",
    );
}

#[test]
fn refunds_that_cannot_apply_are_refused_with_a_reason() {
    check(
        "start 04-01 api_basic 1000
         @t2 start 04-01 api_basic 1000
         rb 04-02 10 #mine
         rb 04-02 10 sandbox #sb
         refund 04-03 nope #r-unknown
         @t2 refund 04-03 mine #r-other
         refund 04-03 sb #r-sandbox
         refund 04-04 mine #r-ok
         refund 04-05 mine #r-again
         @t3 start 04-01 api_free_trial
         @t3 rb 04-02 1 #free
         @t3 refund 04-03 free #r-free",
        "parked r-unknown
         reject r-other refund_other_team
         reject r-sandbox refund_sandbox
         reject r-unknown refund_unknown_event
         reject r-again refund_repeated
         reject r-free refund_unbilled",
    );
}

/// The two input topics have no order between them: a refund can arrive before the image
/// it names. It waits (parked, durably) and applies right after the image is appended, or
/// is refused then for any other reason; one naming no event that ever comes is given up
/// once the team's clock passes it by 24 h (here at the 04-05 image), or by `close`.
#[test]
fn a_refund_that_overtakes_its_image_waits_for_it() {
    check(
        "start 04-01 api_basic 1000
         @t2 start 04-01 api_basic 1000
         refund 04-03 early #r-early
         refund 04-03 theirs #r-theirs
         refund 04-03 never #r-never
         @t5 refund 04-20 nothing #r-closed
         rb 04-02 10 #early
         @t2 rb 04-02 10 #theirs
         rb 04-05 100 #later
         close 05-02",
        "parked r-early
         parked r-theirs
         parked r-never
         parked r-closed
         unparked r-early
         reject r-theirs refund_other_team
         reject r-never refund_unknown_event
         reject r-closed refund_unknown_event
         invoice t1 2026-04-01 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=2.00 forfeited=18.00 | refunded=10
         invoice t2 2026-04-01 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=0.20 forfeited=19.80",
    );
}

#[test]
fn late_usage_is_billed_on_the_next_invoice_tagged_with_its_period() {
    check(
        "start 04-01 api_basic 1000
         rb 04-02 10
         close 05-02
         rb 04-20 50 #late
         close 06-02",
        "invoice t1 2026-04-01 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=0.20 forfeited=19.80
         invoice t1 2026-05-01 total=21.00 v=2026-01-01 | bucket_fee 1x20.00=20.00, late_usage 50x0.02=1.00 (2026-04-01) | consumed=0.00 forfeited=20.00",
    );
}

#[test]
fn the_team_clock_closes_cycles_and_freezes_their_plan_history() {
    check(
        "start 04-01 api_basic 1000
         rb 04-10 10
         rb 05-01T02 10
         change 04-20 api_basic 2000 #too-late",
        "reject too-late late_account_change
         invoice t1 2026-04-01 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=0.20 forfeited=19.80",
    );
}

#[test]
fn usage_that_arrives_before_its_plan_event_is_still_billed_by_time() {
    check(
        "rb 04-02 10
         ie 04-03 1
         start 04-01 api_basic 1000
         close 05-02",
        "invoice t1 2026-04-01 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=0.30 forfeited=19.70",
    );
}

#[test]
fn usage_with_no_plan_is_kept_and_reported_as_unplanned() {
    check(
        "rb 03-30 5 #early
         start 04-01 api_basic 1000
         close 05-02",
        "invoice t1 2026-04-01 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=0.00 forfeited=20.00
         unplanned t1 early",
    );
}

/// A balance lists the newest 100 unplanned events (memory stays bounded however many
/// come) and counts them all; every one stays in the ledger.
#[test]
fn a_balance_lists_the_newest_unplanned_usage_and_counts_all_of_it() {
    let early: Vec<String> = (0..130).map(|i| format!("rb 03-{:02} 1 #u{i:03}", 2 + i / 5)).collect();
    let script = format!("{}\nstart 04-01 api_basic 1000\nrb 04-02 1 #late-open\nclose 05-02", early.join("\n"));
    let listed: Vec<String> = (30..130).map(|i| format!("unplanned t1 u{i:03}")).collect();
    check(
        &script,
        &format!(
            "invoice t1 2026-04-01 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=0.02 forfeited=19.98\n{}\nunplanned t1 total=130",
            listed.join("\n")
        ),
    );
}

#[test]
fn a_repeated_event_is_a_no_op_and_a_reused_id_a_recorded_conflict() {
    check(
        "start 04-01 api_basic 1000
         rb 04-02 10 #same
         rb 04-02 10 #same
         rb 04-02 11 #same
         close 05-02",
        "duplicate same
         conflict same
         invoice t1 2026-04-01 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=0.20 forfeited=19.80",
    );
}

#[test]
fn a_plan_that_arrives_after_its_usage_closes_the_cycles_the_clock_passed() {
    check(
        "rb 04-10 10
         rb 05-03 20
         start 04-01 api_basic 1000",
        "invoice t1 2026-04-01 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=0.20 forfeited=19.80",
    );
}

// Legacy credits (billing.md §4): one credit per image of either API at $0.10, usage
// past them billed at $0.10, bought only while the catalog sells them, the remainder
// expiring at 2025-04-02T00:00:00Z onto the invoice of the cycle holding that instant.

#[test]
fn credits_draw_one_per_image_and_carry_over_between_cycles() {
    check(
        "start 2024-12-05 api_credits
         buy 2024-12-05T01 1000 100.00
         rb 2024-12-10 600
         ie 2024-12-20 300 #e1
         rb 2025-01-10 150 #r2
         buy 2025-01-15 500 50.00
         ie 2025-01-20 100
         close 2025-02-06",
        "invoice t1 2024-12-05 total=100.00 v=2024-10-01 | credits_purchase 1000x0.10=100.00 | credits in=0 bought=1000 used=900 expired=0 left=100
         invoice t1 2025-01-05 total=55.00 v=2024-10-01 | credits_purchase 500x0.10=50.00, overage 50x0.10=5.00 | credits in=100 bought=500 used=200 expired=0 left=400
         alert t1 credits g0 80% by e1
         alert t1 credits g0 80% by r2
         alert t1 credits g0 100% by r2",
    );
}

#[test]
fn credits_expire_on_2025_04_02_onto_that_cycles_invoice_and_usage_after_is_billed() {
    check(
        "start 2025-01-05 api_credits
         buy 2025-01-06 300 30.00
         rb 2025-03-10 100
         buy 2025-03-12 100 10.00 #late-buy
         rb 2025-04-03 50
         close 2025-04-06",
        "reject late-buy plan_rule
         invoice t1 2025-01-05 total=30.00 v=2024-10-01 | credits_purchase 300x0.10=30.00 | credits in=0 bought=300 used=0 expired=0 left=300
         invoice t1 2025-02-05 total=0.00 v=2024-10-01 | - | credits in=300 bought=0 used=0 expired=0 left=300
         invoice t1 2025-03-05 total=1.00 v=2025-02-27 | overage 50x0.02=1.00, credits_expired 200x0.00=0.00 | credits in=300 bought=0 used=100 expired=200 left=0",
    );
}

#[test]
fn usage_recorded_after_the_expiry_draws_no_credit_even_if_it_happened_before() {
    // The first event's time passes 04-02 + 1 h of grace: the expiry is recorded with
    // 100 credits left before it; the next event, from 04-01, arrives after that.
    check(
        "start 2025-01-05 api_credits
         buy 2025-01-06 100 10.00
         rb 2025-04-02T02 1
         rb 2025-04-01 10
         close 2025-04-06",
        "invoice t1 2025-01-05 total=10.00 v=2024-10-01 | credits_purchase 100x0.10=10.00 | credits in=0 bought=100 used=0 expired=0 left=100
         invoice t1 2025-02-05 total=0.00 v=2024-10-01 | - | credits in=100 bought=0 used=0 expired=0 left=100
         invoice t1 2025-03-05 total=0.22 v=2025-02-27 | overage 11x0.02=0.22, credits_expired 100x0.00=0.00 | credits in=100 bought=0 used=0 expired=100 left=0",
    );
}

#[test]
fn legacy_credits_are_neither_sold_nor_subscribed_from_2025_02_27() {
    check(
        "start 2025-03-01 api_credits #new
         start 2025-03-01 api_basic 1000
         buy 2025-03-02 100 10.00 #buy
         close 2025-04-02",
        "reject new plan_rule
         reject buy plan_rule
         invoice t1 2025-03-01 total=20.00 v=2025-02-27 | bucket_fee 1x20.00=20.00 | consumed=0.00 forfeited=20.00",
    );
}

#[test]
fn moving_from_credits_to_a_bucket_is_an_upgrade_and_the_credits_still_expire() {
    // r = (04-05 − 03-20) / (04-05 − 03-05) = 16/31; 20.00 × 16/31 = 10.3225… → 10.32.
    check(
        "start 2024-12-05 api_credits
         buy 2024-12-06 300 30.00
         rb 2025-03-10 100
         change 2025-03-20 api_basic 1000
         rb 2025-03-25 100
         close 2025-05-06",
        "invoice t1 2024-12-05 total=30.00 v=2024-10-01 | credits_purchase 300x0.10=30.00 | credits in=0 bought=300 used=0 expired=0 left=300
         invoice t1 2025-01-05 total=0.00 v=2024-10-01 | - | credits in=300 bought=0 used=0 expired=0 left=300
         invoice t1 2025-02-05 total=0.00 v=2024-10-01 | - | credits in=300 bought=0 used=0 expired=0 left=300
         invoice t1 2025-03-05 total=10.32 v=2025-02-27 | upgrade_charge 1x10.32=10.32, credits_expired 200x0.00=0.00 | consumed=2.00 forfeited=8.32 | credits in=300 bought=0 used=100 expired=200 left=0
         invoice t1 2025-04-05 total=20.00 v=2025-02-27 | bucket_fee 1x20.00=20.00 | consumed=0.00 forfeited=20.00 | credits in=0 bought=0 used=0 expired=0 left=0",
    );
}

/// Eighteen months under four catalog versions: credits bought in 2024, the move to a
/// Basic bucket after 2025-02-27 with the credits expiring on 2025-04-02, and a trial
/// that shrinks from 200 images to 10 (+ 1,000 sandbox calls) on 2026-01-01.
pub const HISTORY: &str = "
    @acme start 2024-12-01 api_credits
    @acme buy 2024-12-01T01 2000 200.00
    @acme rb 2024-12-15 800
    @acme ie 2025-01-15 700
    @acme rb 2025-02-10 200
    @acme rb 2025-03-05 100
    @acme change 2025-03-10 api_basic 2000
    @acme rb 2025-03-20 1000
    @acme rb 2026-05-10 2500 #big
    @hobby start 2025-11-01 api_free_trial
    @hobby rb 2025-11-10 250 #h1
    @hobby rb 2025-12-10 150
    @hobby rb 2026-01-10 12 #h3
    @hobby rb 2026-01-11 1100 sandbox #h4
    close 2026-06-02";

#[test]
fn eighteen_months_across_credits_buckets_and_the_2026_trial() {
    let mut expected = vec![
        "invoice acme 2024-12-01 total=200.00 v=2024-10-01 | credits_purchase 2000x0.10=200.00 | credits in=0 bought=2000 used=800 expired=0 left=1200".to_string(),
        "invoice acme 2025-01-01 total=0.00 v=2024-10-01 | - | credits in=1200 bought=0 used=700 expired=0 left=500".into(),
        "invoice acme 2025-02-01 total=0.00 v=2024-10-01 | - | credits in=500 bought=0 used=200 expired=0 left=300".into(),
        // r = 22/31 of March left: 40.00 × 22/31 = 28.387… → 28.39; 1,000 removals = 20.00.
        "invoice acme 2025-03-01 total=28.39 v=2025-02-27 | upgrade_charge 1x28.39=28.39 | consumed=20.00 forfeited=8.39 | credits in=300 bought=0 used=100 expired=0 left=200".into(),
        "invoice acme 2025-04-01 total=40.00 v=2025-02-27 | bucket_fee 1x40.00=40.00, credits_expired 200x0.00=0.00 | consumed=0.00 forfeited=40.00 | credits in=200 bought=0 used=0 expired=200 left=0".into(),
    ];
    let idle = " bought=0 used=0 expired=0 left=0";
    for month in ["2025-05", "2025-06", "2025-07", "2025-08", "2025-09", "2025-10", "2025-11", "2025-12"] {
        expected.push(format!("invoice acme {month}-01 total=40.00 v=2025-02-27 | bucket_fee 1x40.00=40.00 | consumed=0.00 forfeited=40.00 | credits in=0{idle}"));
    }
    for month in ["2026-01", "2026-02", "2026-03", "2026-04"] {
        expected.push(format!("invoice acme {month}-01 total=40.00 v=2026-01-01 | bucket_fee 1x40.00=40.00 | consumed=0.00 forfeited=40.00 | credits in=0{idle}"));
    }
    expected.push(format!("invoice acme 2026-05-01 total=50.00 v=2026-01-01 | bucket_fee 1x40.00=40.00, overage 500x0.02=10.00 | consumed=50.00 forfeited=0.00 | credits in=0{idle}"));
    expected.push("alert acme bucket g0 80% by big".into());
    expected.push("alert acme bucket g0 100% by big".into());
    expected.push("invoice hobby 2025-11-01 total=0.00 v=2025-02-27 | - | trial 5.00/4.00 over=1.00 sandbox=0".into());
    expected.push("invoice hobby 2025-12-01 total=0.00 v=2025-02-27 | - | trial 3.00/4.00 over=0.00 sandbox=0".into());
    expected
        .push("invoice hobby 2026-01-01 total=0.00 v=2026-01-01 | - | trial 0.24/0.20 over=0.04 sandbox=1100".into());
    for month in ["2026-02", "2026-03", "2026-04", "2026-05"] {
        expected.push(format!(
            "invoice hobby {month}-01 total=0.00 v=2026-01-01 | - | trial 0.00/0.20 over=0.00 sandbox=0"
        ));
    }
    for line in [
        "trial g0 80% by h1",
        "trial g0 100% by h1",
        "trial g0 80% by h3",
        "trial g0 100% by h3",
        "sandbox g0 80% by h4",
        "sandbox g0 100% by h4",
    ] {
        expected.push(format!("alert hobby {line}"));
    }
    check(HISTORY, &expected.join("\n"));
}

#[test]
fn a_refund_gives_the_credit_back_in_an_open_cycle_and_money_after_it_closed() {
    check(
        "start 2024-12-05 api_credits
         buy 2024-12-06 100 10.00
         rb 2024-12-10 80 #a
         rb 2024-12-11 30 #b
         refund 2024-12-12 a
         rb 2025-01-10 5 #c
         close 2025-02-06
         refund 2025-02-10 c
         close 2025-03-06",
        "invoice t1 2024-12-05 total=10.00 v=2024-10-01 | credits_purchase 100x0.10=10.00 | credits in=0 bought=100 used=30 expired=0 left=70 | refunded=80
         invoice t1 2025-01-05 total=0.00 v=2024-10-01 | - | credits in=70 bought=0 used=5 expired=0 left=65
         invoice t1 2025-02-05 total=-0.50 v=2024-10-01 | refund_credit 5x-0.10=-0.50 (2025-01-05) | credits in=65 bought=0 used=0 expired=0 left=65
         alert t1 credits g0 80% by a
         alert t1 credits g0 100% by b",
    );
}
