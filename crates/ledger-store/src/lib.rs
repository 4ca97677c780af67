//! The immutable ledger on sled (pinned 0.34.7). The only crate that names sled.
//!
//! One tree, one table per key kind (see `tables`): per-team entry blocks chained by
//! SHA-256, a permanent event-id index, projections (alerts, invoices), source offsets,
//! conflicts, parked refunds, metadata and the outbox. Each batch is one atomic
//! `apply_batch` followed by `flush()`: nothing is acknowledged before it is durable.

mod audit;
mod batch;
mod changelog;
mod commit;
mod datadir;
mod fold;
mod fs;
mod index;
mod ledger;
mod parked;
pub mod progress;
mod replay;
mod store;
mod submission;
mod tables;
mod verify;

pub use audit::{tamper_image_rechained, InvoiceCheck};
pub use batch::{Batch, Op};
pub use changelog::{Position, Replica, RestoreReport};
pub use datadir::{layout, open_all, partition_dir, replay_all, replay_all_read_only, Layout};
pub use fold::TeamRead;
pub use ledger::{refund_wait, BatchReport, Ledger, Outcome, Parked, Source, Submission, PARKED_PER_TEAM_MAX};
pub use replay::ReplayReport;
pub use store::{OpenOptions, Store, INDEX_MEMORY_EVENTS};
pub use tables::entries::StoredEntry;
pub use tables::offsets::{InputPosition, LastConsumed};
pub use tables::outbox::{OutboxKind, OutboxMsg, FAILED_REASON};
pub use tables::FORMAT_VERSION;
pub use verify::{tamper_checkpoint, tamper_entry, tamper_invoice, verify_all, CheckpointTamper, VerifyReport};

/// Storage failures. Any of these stops the writer: nothing more is acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("io on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(
        "No space left for a batch on the disk holding {dir}: {free} bytes free, {need} needed with the reserve; nothing of it was written"
    )]
    DiskFull { dir: String, free: u64, need: u64 },
    #[error("corrupt store: {0}")]
    Corrupt(String),
    #[error("ledger fold failed: {0}")]
    Fault(#[from] ledger_core::team::Fault),
    #[error("data dir was written by format version {found}, this build reads formats 1 to {expected}")]
    Format { found: u8, expected: u8 },
    #[error("catalog: {0}")]
    Catalog(#[from] ledger_core::catalog::CatalogError),
    #[error("{0}")]
    CatalogChange(String),
    #[error("changelog {0}")]
    Changelog(String),
    #[error(
        "changelog {changelog}: this ledger's record landed at offset {landed}, not {expected}: another writer appended to the partition since this ledger restored (it is fenced off; nothing of the batch was committed; restart to restore from the changelog)"
    )]
    Fenced { changelog: String, expected: u64, landed: u64 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
