//! Monthly cycles, always computed from the original anchor with the day clamped to
//! the month's length: Jan 31 10:00 → Feb 28 (29) 10:00 → Mar 31 10:00 → Apr 30 10:00.
use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Utc};
use rust_decimal::Decimal;

/// An instant as invoices, alerts and messages show it (RFC 3339, `Z`).
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (ny, nm) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    let first_next = NaiveDate::from_ymd_opt(ny, nm, 1).expect("valid month");
    first_next.pred_opt().expect("has a previous day").day()
}

/// Start of cycle `k` (0 = the anchor itself).
pub fn cycle_start(anchor: DateTime<Utc>, k: u32) -> DateTime<Utc> {
    let months0 = anchor.month0() as i64 + k as i64;
    let year = anchor.year() + (months0 / 12) as i32;
    let month = (months0 % 12) as u32 + 1;
    let day = anchor.day().min(days_in_month(year, month));
    NaiveDate::from_ymd_opt(year, month, day).expect("clamped day is valid").and_time(anchor.time()).and_utc()
}

/// The index of the cycle containing `t` (`t >= anchor`).
pub fn cycle_index_at(anchor: DateTime<Utc>, t: DateTime<Utc>) -> u32 {
    debug_assert!(t >= anchor);
    let months = (t.year() - anchor.year()) as i64 * 12 + t.month0() as i64 - anchor.month0() as i64;
    let mut k = months.max(0) as u32;
    while k > 0 && cycle_start(anchor, k) > t {
        k -= 1;
    }
    while cycle_start(anchor, k + 1) <= t {
        k += 1;
    }
    k
}

/// Share of `[start, end)` left at `t`, exact: (end − t) ÷ (end − start) in nanoseconds.
pub fn fraction_left(start: DateTime<Utc>, end: DateTime<Utc>, t: DateTime<Utc>) -> Decimal {
    let nanos = |a: DateTime<Utc>, b: DateTime<Utc>| {
        let d = b - a;
        Decimal::from(d.num_seconds()) * Decimal::from(1_000_000_000u64) + Decimal::from(d.subsec_nanos())
    };
    let total = nanos(start, end);
    if total.is_zero() {
        return Decimal::ZERO;
    }
    (nanos(t, end) / total).clamp(Decimal::ZERO, Decimal::ONE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn month_end_anchor_clamps_each_month_from_the_original_anchor() {
        let a = t("2026-01-31T10:00:00Z");
        let starts: Vec<String> = (0..5).map(|k| cycle_start(a, k).to_rfc3339()).collect();
        assert_eq!(
            starts,
            [
                "2026-01-31T10:00:00+00:00",
                "2026-02-28T10:00:00+00:00",
                "2026-03-31T10:00:00+00:00",
                "2026-04-30T10:00:00+00:00",
                "2026-05-31T10:00:00+00:00"
            ]
        );
        assert_eq!(cycle_start(t("2028-01-31T10:00:00Z"), 1), t("2028-02-29T10:00:00Z"));
        assert_eq!(cycle_start(a, 12), t("2027-01-31T10:00:00Z"));
    }

    #[test]
    fn index_at_finds_the_containing_cycle_at_the_edges() {
        let a = t("2026-01-31T10:00:00Z");
        assert_eq!(cycle_index_at(a, a), 0);
        assert_eq!(cycle_index_at(a, t("2026-02-28T09:59:59Z")), 0);
        assert_eq!(cycle_index_at(a, t("2026-02-28T10:00:00Z")), 1);
        assert_eq!(cycle_index_at(a, t("2026-03-31T09:00:00Z")), 1);
        assert_eq!(cycle_index_at(a, t("2027-02-01T00:00:00Z")), 12);
    }

    #[test]
    fn fraction_left_is_exact() {
        let r = fraction_left(t("2026-04-01T00:00:00Z"), t("2026-05-01T00:00:00Z"), t("2026-04-16T00:00:00Z"));
        assert_eq!(r.normalize().to_string(), "0.5");
    }
}
