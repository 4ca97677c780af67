//! The billing domain of the usage ledger: events, the price catalog, cycles, plan
//! families, alerts and invoices. Pure and deterministic: no I/O, no clock, no floats,
//! no wire or storage types. Adapters feed it validated events and persist what it
//! returns.
//!
//! Layers, inward first: `ids`, `money`, `event`, `entry`, `catalog`, `reject`;
//! `timeline` (cycles and the plan timeline); `plans` (one module per plan family);
//! `figures` (the draw-down) and `statement` (invoice lines, exact); `team` (the fold);
//! `report` (the documents, where amounts become text); `advice`.

pub mod advice;
pub mod catalog;
pub mod entry;
pub mod event;
pub mod figures;
pub mod ids;
pub mod money;
pub mod plans;
pub mod refund;
pub mod reject;
pub mod report;
pub mod statement;
pub mod team;
pub mod timeline;

pub use catalog::Catalog;
pub use entry::{CycleClosed, Entry, RefundTarget};
pub use event::{
    AccountChange, AccountEvent, Api, AppOptions, BillingInterval, ContractTerms, Event, ImageProcessed, Plan,
    PlanTerms, UpgradePolicy, VolumeTier,
};
pub use ids::{EventId, IdError, TeamId};
pub use reject::{Fault, Reject, RejectCode};
pub use report::{Alert, Balance, Invoice};
pub use team::{Effects, Team};
