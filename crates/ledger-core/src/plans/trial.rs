//! The free trial (`api_free_trial`): a monthly allowance of one API's images valued at
//! its list rate, and a cap on sandbox calls. Usage past it is recorded, never billed.
use rust_decimal::Decimal;

use crate::catalog::Version;
use crate::event::Api;
use crate::figures::CycleFigures;
use crate::plans::{Allowance, Meter, MeterInput, MeterKind};

pub(crate) fn allowance(version: &Version, api: Api, images: u64, sandbox_images: Option<u64>) -> Allowance {
    Allowance::Trial { value: version.rate(api).expect("trial api has a rate") * Decimal::from(images), sandbox_images }
}

pub(crate) fn meters(value: Decimal, sandbox_images: Option<u64>, m: &MeterInput) -> Vec<Meter> {
    let mut meters = vec![Meter::of(MeterKind::Trial, m.value, value)];
    if let Some(cap) = sandbox_images {
        meters.push(Meter::count(MeterKind::Sandbox, m.sandbox_images, cap));
    }
    meters
}

/// A trial generation's allowance on the invoice.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub value: Decimal,
    pub consumed: Decimal,
    pub over_allowance: Decimal,
    pub sandbox_images: u64,
    pub sandbox_cap: Option<u64>,
}

pub fn summaries(figures: &CycleFigures) -> impl Iterator<Item = Summary> + '_ {
    figures.gens.iter().filter_map(|g| match g.allowance {
        Allowance::Trial { value, sandbox_images } => Some(Summary {
            value,
            consumed: g.consumed,
            over_allowance: g.over_by_api.values().sum(),
            sandbox_images: g.sandbox_images,
            sandbox_cap: sandbox_images,
        }),
        _ => None,
    })
}
