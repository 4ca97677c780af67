//! The billing domain of the usage ledger: events, the price catalog, cycles, buckets,
//! alerts and invoices. Pure and deterministic: no I/O, no clock, no floats, no wire or
//! storage types. Adapters feed it validated events and persist what it returns.

pub mod advice;
pub mod catalog;
pub mod cycle;
pub mod entry;
pub mod event;
pub mod ids;
pub mod invoice;
pub mod money;
pub mod schedule;
pub mod team;

pub use catalog::Catalog;
pub use entry::{CycleClosed, Entry, RefundTarget};
pub use event::{
    AccountChange, AccountEvent, Api, AppOptions, BillingInterval, ContractTerms, Event, ImageProcessed, Plan,
    PlanTerms, UpgradePolicy, VolumeTier,
};
pub use ids::{EventId, IdError, TeamId};
pub use invoice::Invoice;
pub use team::{Alert, Balance, Effects, Reject, Team};
