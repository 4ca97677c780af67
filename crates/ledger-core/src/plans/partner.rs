//! The partner plan (`api_partner`): usage billed as it comes, background removal at
//! the partner's own rate, and a monthly commitment in background-removal images whose
//! shortfall is billed.
use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::catalog::Version;
use crate::event::Api;
use crate::figures::CycleFigures;
use crate::plans::{Allowance, Meter, MeterInput, MeterKind};
use crate::statement::{LineItem, LineKind, UnitPrice};

pub(crate) fn meters(commitment_images: u64, m: &MeterInput) -> Vec<Meter> {
    vec![Meter::count(MeterKind::Commitment, m.remove_background_images, commitment_images)]
}

/// Usage by API at the partner's rates, then the commitment's shortfall.
pub(crate) fn lines(figures: &CycleFigures, version: &Version) -> Vec<LineItem> {
    let mut usage: BTreeMap<Api, (u64, Decimal)> = BTreeMap::new();
    let mut shortfall: Option<(u64, Decimal)> = None;
    for g in &figures.gens {
        let Allowance::Partner { commitment_images, rate } = g.allowance else { continue };
        for (api, (images, _)) in &figures.by_api {
            let r = g.allowance.rate(version, &g.terms, *api).expect("api has a rate");
            usage.insert(*api, (*images, r));
        }
        let short = commitment_images.saturating_sub(g.remove_background_images);
        if short > 0 {
            shortfall = Some((short, rate));
        }
    }
    let mut lines: Vec<LineItem> = usage
        .into_iter()
        .map(|(api, (images, rate))| {
            let amount = rate * Decimal::from(images);
            LineItem::new(LineKind::Usage, LineItem::api_label(api), images, UnitPrice::Exact(rate), amount)
        })
        .collect();
    if let Some((images, rate)) = shortfall {
        lines.push(LineItem::new(
            LineKind::CommitmentShortfall,
            "Monthly commitment not reached (background removal images)",
            images,
            UnitPrice::Exact(rate),
            rate * Decimal::from(images),
        ));
    }
    lines
}
