//! Refunds that overtake their image: a `QualityRefund` naming an event the ledger has
//! not seen yet waits for it (the adapters park it), for a while measured in the team's
//! own time; past that it is refused.
use chrono::Duration;

use crate::event::{AccountChange, AccountEvent};
use crate::reject::{Reject, RejectCode};

/// How long, in the team's own time (its newest event), a refund waits for the event it
/// names before it is given up as `refund_unknown_event`.
pub fn refund_wait() -> Duration {
    Duration::days(1)
}

/// The refusal of a refund whose event never came within `refund_wait()`.
pub fn unknown_after_wait(refund: &AccountEvent) -> Reject {
    let AccountChange::QualityRefund { original_event_id, .. } = &refund.change else {
        unreachable!("only refunds wait")
    };
    let detail = format!(
        "no image event {original_event_id} arrived within {} h of the team's time after the refund",
        refund_wait().num_hours()
    );
    Reject::new(RejectCode::RefundUnknownEvent, detail)
}
