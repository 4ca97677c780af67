//! Enterprise contracts (billing.md §4): a year with rollover and tier boundaries, a
//! year without rollover, forfeiture at the term's end, changes waiting for the term's
//! end, and the contracts the catalog refuses. Hand-computed figures throughout.
use crate::support::{assert_text, run_scenario};

/// 240,000 images a year = 20,000 a month. Rollover on. Overage past 250,000 images in
/// the term is 10 % off, past 260,000 20 % off.
///
/// Rollover: Jan 20,000 − 15,000 = 5,000 out; Feb 25,000 − 12,000 = 13,000; Mar–Oct add
/// 20,000 each (173,000 out of Oct). Nov: 193,000 available, 200,000 used: 7,000 over
/// at $0.015 = $105.00 (term at 227,000 images). Dec: 20,000 available; editing 30,000
/// draws 20,000 and runs images 247,001–257,000 over: 3,000 × $0.08 = $240.00 and
/// 7,000 × $0.072 (10 % off) = $504.00; removal 10,000 = images 257,001–267,000:
/// 3,000 × $0.0135 = $40.50 and 7,000 × $0.012 (20 % off) = $84.00. Dec total $868.50.
/// The term renews on its terms: a new fee, and the rollover starts again from zero.
#[test]
fn an_enterprise_year_with_rollover_and_tier_boundaries() {
    let out = run_scenario(
        "contract 01-01 12 240000 0.015 0.08 3600.00 roll 250000:10,260000:20 #c1
         rb 01-15 15000 #jan
         rb 02-10 10000 #feb-rb
         ie 02-11 2000 #feb-ie
         rb 11-10 200000 #nov
         ie 12-10 30000 #dec-ie
         rb 12-20 10000 #dec-rb
         rb 2027-01-05 1000 #renewed
         close 2027-02-02",
    );
    let idle = |month: &str, n: u32, rolled_in: u32| {
        format!(
            "invoice t1 2026-{month}-01 total=0.00 v=2026-01-01 | commitment_drawdown 0x0.00=0.00 \
             | contract m={n}/12 allot=20000 in={rolled_in} drawn=0 over=0 out={} forfeited=0 (0.00) used=27000/240000\n",
            rolled_in + 20000
        )
    };
    let mut expected = String::from(
        "invoice t1 2026-01-01 total=3600.00 v=2026-01-01 | contract_fee 1x3600.00=3600.00, commitment_drawdown 15000x0.00=0.00 | contract m=1/12 allot=20000 in=0 drawn=15000 over=0 out=5000 forfeited=0 (0.00) used=15000/240000
         invoice t1 2026-02-01 total=0.00 v=2026-01-01 | commitment_drawdown 12000x0.00=0.00 | contract m=2/12 allot=20000 in=5000 drawn=12000 over=0 out=13000 forfeited=0 (0.00) used=27000/240000\n",
    );
    for (n, month) in (3..=10).zip(["03", "04", "05", "06", "07", "08", "09", "10"]) {
        expected += &idle(month, n, 13000 + (n - 3) * 20000);
    }
    expected += "invoice t1 2026-11-01 total=105.00 v=2026-01-01 | commitment_drawdown 193000x0.00=0.00, overage 7000x0.015=105.00 | contract m=11/12 allot=20000 in=173000 drawn=193000 over=7000 out=0 forfeited=0 (0.00) used=227000/240000
         invoice t1 2026-12-01 total=868.50 v=2026-01-01 | commitment_drawdown 20000x0.00=0.00, overage 3000x0.0135=40.50, overage 7000x0.012=84.00, overage 3000x0.08=240.00, overage 7000x0.072=504.00 | contract m=12/12 allot=20000 in=0 drawn=20000 over=20000 out=0 forfeited=0 (0.00) used=267000/240000
         invoice t1 2027-01-01 total=3600.00 v=2026-01-01 | contract_fee 1x3600.00=3600.00, commitment_drawdown 1000x0.00=0.00 | contract m=1/12 allot=20000 in=0 drawn=1000 over=0 out=19000 forfeited=0 (0.00) used=1000/240000
         alert t1 allotment g0 80% by nov
         alert t1 allotment g0 100% by nov
         alert t1 commitment g0 80% by nov
         alert t1 allotment g0 80% by dec-ie
         alert t1 allotment g0 100% by dec-ie
         alert t1 commitment g0 100% by dec-ie";
    assert_text(&out, &expected);
}

/// 200,000 a year splits into months of 16,666 and 16,667 images (the twelve sum to the
/// commitment). Without rollover a month's unused allotment is forfeited at its end,
/// valued at the fee per committed image: 6,666 × $2,400 / 200,000 = $79.99.
/// April: 20,000 used, 16,667 allotted: 3,333 × $0.015 = $49.995 → $50.00.
#[test]
fn without_rollover_each_months_unused_allotment_is_forfeited() {
    let out = run_scenario(
        "@t2 contract 03-01 12 200000 0.015 0.08 2400.00 noroll
         @t2 rb 03-10 10000 #mar
         @t2 rb 04-10 20000 #apr
         close 05-02",
    );
    assert_text(
        &out,
        "invoice t2 2026-03-01 total=2400.00 v=2026-01-01 | contract_fee 1x2400.00=2400.00, commitment_drawdown 10000x0.00=0.00, commitment_forfeited 6666x0.00=0.00 | contract m=1/12 allot=16666 in=0 drawn=10000 over=0 out=0 forfeited=6666 (79.99) used=10000/200000
         invoice t2 2026-04-01 total=50.00 v=2026-01-01 | commitment_drawdown 16667x0.00=0.00, overage 3333x0.015=50.00 | contract m=2/12 allot=16667 in=0 drawn=16667 over=3333 out=0 forfeited=0 (0.00) used=30000/200000
         alert t2 allotment g0 80% by apr
         alert t2 allotment g0 100% by apr",
    );
}

/// With rollover nothing is lost until the term ends: months 3–12 roll 166,667 images
/// into the last month, forfeited there (× $3,000 / 200,000 = $2,500.005 → $2,500.01).
/// A downgrade signed mid-term waits for the term's end; the 2025 contract runs into
/// 2026 cycles, which name the catalog in force at their start.
#[test]
fn with_rollover_the_rest_is_forfeited_at_the_terms_end_and_changes_wait_for_it() {
    let out = run_scenario(
        "@t4 contract 2025-06-01 12 200000 0.02 0.09 3000.00 roll
         @t4 rb 2025-07-10 50000 #jul
         @t4 change 2025-09-15 api_basic 2000 #down
         close 2026-07-02",
    );
    let allot = [16666, 16667, 16667, 16666, 16667, 16667, 16666, 16667, 16667, 16666, 16667, 16667];
    let months = ["2025-08", "2025-09", "2025-10", "2025-11", "2025-12", "2026-01", "2026-02", "2026-03", "2026-04"];
    let mut expected = String::from(
        "invoice t4 2025-06-01 total=3000.00 v=2025-02-27 | contract_fee 1x3000.00=3000.00, commitment_drawdown 0x0.00=0.00 | contract m=1/12 allot=16666 in=0 drawn=0 over=0 out=16666 forfeited=0 (0.00) used=0/200000
         invoice t4 2025-07-01 total=333.34 v=2025-02-27 | commitment_drawdown 33333x0.00=0.00, overage 16667x0.02=333.34 | contract m=2/12 allot=16667 in=16666 drawn=33333 over=16667 out=0 forfeited=0 (0.00) used=50000/200000\n",
    );
    let mut rolled = 0;
    for (i, month) in months.iter().enumerate() {
        let m = i + 2;
        let version = if month.starts_with("2026") { "2026-01-01" } else { "2025-02-27" };
        expected += &format!(
            "invoice t4 {month}-01 total=0.00 v={version} | commitment_drawdown 0x0.00=0.00 | contract m={}/12 allot={} in={rolled} drawn=0 over=0 out={} forfeited=0 (0.00) used=50000/200000\n",
            m + 1,
            allot[m],
            rolled + allot[m]
        );
        rolled += allot[m];
    }
    assert_eq!(rolled + allot[11], 166_667);
    expected += &format!(
        "invoice t4 2026-05-01 total=0.00 v=2026-01-01 | commitment_drawdown 0x0.00=0.00, commitment_forfeited 166667x0.00=0.00 | contract m=12/12 allot=16667 in={rolled} drawn=0 over=0 out=0 forfeited=166667 (2500.01) used=50000/200000
         invoice t4 2026-06-01 total=40.00 v=2026-01-01 | bucket_fee 1x40.00=40.00 | consumed=0.00 forfeited=40.00
         alert t4 allotment g0 80% by jul
         alert t4 allotment g0 100% by jul"
    );
    assert_text(&out, &expected);
}

/// Signed while on a bucket, a contract starts with the next cycle (the bucket is paid).
#[test]
fn a_contract_signed_on_a_bucket_starts_with_the_next_cycle() {
    let out = run_scenario(
        "@t6 start 01-01 api_basic 1000
         @t6 rb 01-10 500
         @t6 contract 01-15 12 300000 0.015 0.08 4500.00 roll
         @t6 rb 02-10 500
         close 03-02",
    );
    assert_text(
        &out,
        "invoice t6 2026-01-01 total=20.00 v=2026-01-01 | bucket_fee 1x20.00=20.00 | consumed=10.00 forfeited=10.00
         invoice t6 2026-02-01 total=4500.00 v=2026-01-01 | contract_fee 1x4500.00=4500.00, commitment_drawdown 500x0.00=0.00 | contract m=1/12 allot=25000 in=0 drawn=500 over=0 out=24500 forfeited=0 (0.00) used=500/300000",
    );
}

#[test]
fn contracts_the_catalog_does_not_sell_are_refused() {
    let out = run_scenario(
        "@t3 contract 01-05 12 150000 0.015 0.08 2000.00 roll #below-minimum
         @t3 contract 01-05 18 200000 0.015 0.08 2000.00 roll #odd-term
         @t3 start 01-05 api_enterprise #no-terms
         @t3 contract 2024-12-01 12 200000 0.015 0.08 2000.00 roll #before-2025
         @t3 contract 01-05 12 200000 0.015 0.08 100.005 roll #fee-not-cents
         @t3 contract 01-05 12 200000 0.015 0.08 100.00 roll 5000:10,4000:20 #tiers-descending
         @t3 contract 01-05 12 200000 0.015 0.08 100.00 roll 5000:100 #discount-100",
    );
    assert_text(
        &out,
        "reject below-minimum plan_rule
         reject odd-term plan_rule
         reject no-terms plan_rule
         reject before-2025 plan_rule
         reject fee-not-cents plan_rule
         reject tiers-descending plan_rule
         reject discount-100 plan_rule",
    );
}

/// A refund inside the open month gives the image back to the allotment (it rolls over):
/// January draws 1,000 of 20,000, 19,000 roll out. A two-year term bills its annual fee
/// again on month 13, and rollover runs on across the year boundary: 19,000 + 11 ×
/// 20,000 = 239,000 roll into month 13, 259,000 out of it.
#[test]
fn refunds_return_to_the_allotment_and_a_second_year_bills_its_fee() {
    let out = run_scenario(
        "@t7 contract 01-01 24 240000 0.015 0.08 3600.00 roll
         @t7 rb 01-10 5000 #img
         @t7 refund 01-11 img #r
         @t7 rb 01-12 1000
         close 2027-02-02",
    );
    // The statements of each year's first month.
    let lines: Vec<&str> = out.lines().filter(|l| l.split(' ').nth(2).is_some_and(|d| d.ends_with("-01-01"))).collect();
    assert_text(
        &lines.join("\n"),
        "invoice t7 2026-01-01 total=3600.00 v=2026-01-01 | contract_fee 1x3600.00=3600.00, commitment_drawdown 1000x0.00=0.00 | contract m=1/24 allot=20000 in=0 drawn=1000 over=0 out=19000 forfeited=0 (0.00) used=1000/480000 | refunded=5000
         invoice t7 2027-01-01 total=3600.00 v=2026-01-01 | contract_fee 1x3600.00=3600.00, commitment_drawdown 0x0.00=0.00 | contract m=13/24 allot=20000 in=239000 drawn=0 over=0 out=259000 forfeited=0 (0.00) used=1000/480000",
    );
    assert!(out.contains("contract_fee") && !out.contains("commitment_forfeited"), "{out}");
}
