//! Integration tests: one crate, one binary, modules inside. Everything runs against
//! real parts: sled on disk, the real `usage-ledger` binary, real process kills.
//! Slow tests (the million-event run) run when `USAGE_LEDGER_SLOW=1`, which CI sets.

mod advise;
mod app;
mod catalog;
mod checkpoints;
mod cli;
mod compat;
mod core_path;
mod corruption;
mod crash;
mod decisions;
mod enterprise;
mod fuzz;
mod hostile;
mod http;
mod kafka;
mod properties;
mod replication;
mod rules;
mod scenarios;
mod serving;
mod soak;
mod support;
mod topology;
mod transport;
