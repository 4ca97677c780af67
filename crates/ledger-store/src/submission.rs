//! What the write path takes and reports: a submission with its source, and what
//! became of each.
use ledger_core::team::Reject;
use ledger_core::Event;

use crate::parked::Parked;

/// Where an event came from, for reports and dead letters (a file line, a Kafka offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Offset key (`topic/partition`) whose position this batch records, if any.
    pub stream: Option<String>,
    pub offset: u64,
}

#[derive(Debug, Clone)]
pub struct Submission {
    pub event: Event,
    pub source: Source,
}

/// What happened to one submitted event. A duplicate is an outcome, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Appended {
        seq: u64,
    },
    /// Same id, same content: already in the ledger; a no-op.
    Duplicate {
        seq: u64,
    },
    /// Same id, other content: recorded as a conflict, changes nothing.
    Conflict {
        team: String,
        seq: u64,
    },
    Rejected(Reject),
    /// A refund of an event not (yet) in the ledger: the two input topics have no order
    /// between them, so it waits, durably, for that event (see `Parked`).
    Parked,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    pub outcomes: Vec<Outcome>,
    /// Parked refunds this batch settled: submitted after their event arrived (appended,
    /// or rejected for another reason), or given up (`refund_unknown_event`).
    pub settled: Vec<(Parked, Outcome)>,
    pub entries: u64,
    pub alerts: u64,
    pub invoices: u64,
}
