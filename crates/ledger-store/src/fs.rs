//! File-system helpers every module that touches the disk shares: error context for an
//! I/O failure, a directory fsync, and the free-space checks made before a write.
use std::path::Path;

use crate::{Error, Result};

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.display().to_string(), source }
}

pub(crate) fn fsync_dir(path: &Path) -> Result<()> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(io(path))
}

/// Free space kept on the ledger's disk beyond a batch's own: sled writes whole log
/// segments, and a write that fails half-way (ENOSPC) can leave sled waiting forever on
/// its next flush. A batch that would not fit is refused before sled sees it.
const SPACE_RESERVE_BYTES: u64 = 4 << 20;

/// Refuses a batch of about `bytes` unless the disk holding `dir` has room for it three
/// times over (sled logs a value, then rewrites its page: 10M imported events took 2.6 GB,
/// 260 B each, issue 12), and the reserve.
pub(crate) fn ensure_space(dir: &Path, bytes: u64) -> Result<()> {
    ensure_free(dir, bytes.saturating_mul(3))
}

/// Refuses a write of `bytes` written once (the index's runs) unless the disk holding
/// `dir` has room for it and the reserve.
pub(crate) fn ensure_free(dir: &Path, bytes: u64) -> Result<()> {
    let stat = rustix::fs::statvfs(dir).map_err(|e| Error::Io { path: dir.display().to_string(), source: e.into() })?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    let need = bytes.saturating_add(SPACE_RESERVE_BYTES);
    if free < need {
        return Err(Error::DiskFull { dir: dir.display().to_string(), free, need });
    }
    Ok(())
}
