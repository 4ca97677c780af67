//! Money is `Decimal`, kept exact; it is rounded to cents once, at the invoice line.
use rust_decimal::{Decimal, RoundingStrategy};

/// Rounds to cents, half away from zero: the one rounding an amount ever gets.
pub fn round_cents(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// An invoice line's amount: rounded to cents, with exactly two decimals.
pub fn cents(d: Decimal) -> Decimal {
    let mut r = round_cents(d);
    r.rescale(2);
    r
}

/// An invoice amount: rounded to cents, always two decimals ("20.00").
pub fn fmt_cents(d: Decimal) -> String {
    cents(d).to_string()
}

/// An exact value (rate, consumed value): no trailing zeros past two decimals, never rounded.
pub fn fmt_exact(d: Decimal) -> String {
    let mut n = d.normalize();
    if n.scale() < 2 {
        n.rescale(2);
    }
    n.to_string()
}

/// A count or fractional quantity: no forced decimals ("1000", "0.5").
pub fn fmt_quantity(d: Decimal) -> String {
    d.normalize().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros_free::dec;

    mod rust_decimal_macros_free {
        macro_rules! dec {
            ($s:literal) => {
                <rust_decimal::Decimal as std::str::FromStr>::from_str($s).unwrap()
            };
        }
        pub(crate) use dec;
    }

    #[test]
    fn cents_round_half_away_from_zero_once() {
        assert_eq!(fmt_cents(dec!("0.005")), "0.01");
        assert_eq!(fmt_cents(dec!("-0.005")), "-0.01");
        assert_eq!(fmt_cents(dec!("0.0049999")), "0.00");
        assert_eq!(fmt_cents(dec!("20")), "20.00");
        assert_eq!(fmt_exact(dec!("0.100")), "0.10");
        assert_eq!(fmt_exact(dec!("0.0333333")), "0.0333333");
        assert_eq!(fmt_quantity(dec!("1000.00")), "1000");
    }
}
