//! The data directory's two layouts. `import` keeps one ledger in the directory itself.
//! The service keeps one ledger per input partition number under `partitions/NNNN`:
//! the input topics are keyed by team, so a partition number holds whole teams, and a
//! consumer-group member that owns a partition owns its ledger (sled's file lock makes
//! that ownership exclusive across processes). Read commands see either layout as one
//! ledger.
use std::path::{Path, PathBuf};

use ledger_core::Catalog;

use crate::replay::ReplayReport;
use crate::store::{OpenOptions, Store};
use crate::{Error, Result};

const PARTITIONS: &str = "partitions";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Nothing written yet.
    Empty,
    /// One ledger in the directory itself (`import`, `demo`).
    Single,
    /// One ledger per input partition number (the service), in partition order.
    Partitioned(Vec<(i32, PathBuf)>),
}

pub fn layout(dir: &Path) -> Result<Layout> {
    let single = dir.join("db").exists();
    let parts_dir = dir.join(PARTITIONS);
    let mut parts = Vec::new();
    if parts_dir.is_dir() {
        for entry in std::fs::read_dir(&parts_dir).map_err(|source| io(&parts_dir, source))? {
            let path = entry.map_err(|source| io(&parts_dir, source))?.path();
            let number = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<i32>().ok());
            if let (Some(number), true) = (number, path.join("db").exists()) {
                parts.push((number, path));
            }
        }
    }
    parts.sort();
    match (single, parts.is_empty()) {
        (false, true) => Ok(Layout::Empty),
        (true, true) => Ok(Layout::Single),
        (false, false) => Ok(Layout::Partitioned(parts)),
        (true, false) => Err(Error::Corrupt(format!(
            "{} holds both a single ledger and per-partition ledgers; a team could be in both",
            dir.display()
        ))),
    }
}

/// Where the ledger of input partition `partition` lives.
pub fn partition_dir(dir: &Path, partition: i32) -> PathBuf {
    dir.join(PARTITIONS).join(format!("{partition:04}"))
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source }
}

/// Every ledger of an existing data directory (empty if there is none).
pub fn open_all(dir: &Path, catalog: &Catalog, options: OpenOptions) -> Result<Vec<Store>> {
    match layout(dir)? {
        Layout::Empty => Ok(Vec::new()),
        Layout::Single => Ok(vec![Store::open_with(dir, catalog, options)?]),
        Layout::Partitioned(parts) => parts.iter().map(|(_, p)| Store::open_with(p, catalog, options)).collect(),
    }
}

/// `replay` over every ledger of the directory, as one.
pub fn replay_all(stores: &[Store]) -> Result<ReplayReport> {
    let reports = stores.iter().map(|s| s.replay(&s.catalog()?)).collect::<Result<Vec<_>>>()?;
    Ok(ReplayReport::merge(reports))
}

/// `replay_all` that writes nothing (`verify`: a check never repairs what it checks).
pub fn replay_all_read_only(stores: &[Store]) -> Result<ReplayReport> {
    let reports = stores.iter().map(|s| s.replay_read_only(&s.catalog()?)).collect::<Result<Vec<_>>>()?;
    Ok(ReplayReport::merge(reports))
}
