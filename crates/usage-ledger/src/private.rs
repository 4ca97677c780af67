//! The data dir is private, and readable where it cannot be written. Every file this
//! process (and the embedded broker it starts) creates is its owner's only (umask 077:
//! files 0600, directories 0700); an existing data dir open to others (a volume mounted
//! 0755, say) is tightened to 0700 with one line saying so, or only warned about where
//! it cannot be changed. Read commands and `serve` on a data dir they cannot write (a
//! read-only mount, an audit copy) read a private copy of its ledgers: sled 0.34 writes
//! at open, so it cannot open a store in place there.
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context as _;
use ledger_core::Catalog;
use ledger_store::{OpenOptions, Store};

/// Files and directories created from here on are this user's only.
pub fn restrict_new_files() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// An existing data dir readable or writable by others is tightened to 0700 (its files
/// are then out of others' reach whatever their own modes), logged at info; where that
/// fails (not the owner, a read-only mount) a warning says so. A missing one is left to
/// its creator.
pub fn check_mode(dir: &Path) {
    let Ok(meta) = std::fs::metadata(dir) else { return };
    let mode = meta.permissions().mode() & 0o777;
    if !meta.is_dir() || mode & 0o077 == 0 {
        return;
    }
    match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700)) {
        Ok(()) => tracing::info!(
            dir = %dir.display(),
            "Tightened the data dir from {mode:04o} to {:04o}: it holds every team's usage and money.",
            mode & 0o700
        ),
        Err(e) => tracing::warn!(
            dir = %dir.display(),
            error = %e,
            "The data dir is {mode:04o}, open to other users, and could not be tightened."
        ),
    }
}

/// Whether this process may write in `dir` (a read-only mount or missing permission
/// says no).
pub fn writable(dir: &Path) -> bool {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}

/// The private copies made this run, removed at exit (`remove_copies`).
static COPIES: Mutex<Vec<tempfile::TempDir>> = Mutex::new(Vec::new());

/// Opens the ledgers of `dir` to read them: in place where it can be written, else from
/// a private copy (the broker's directory left out), named in one line.
pub fn open_for_reading(dir: &Path) -> anyhow::Result<(Vec<Store>, bool)> {
    let (source, copied) =
        if dir.exists() && !writable(dir) { (copy_of(dir)?, true) } else { (dir.to_path_buf(), false) };
    Ok((ledger_store::open_all(&source, &Catalog::builtin(), OpenOptions::default())?, copied))
}

fn copy_of(dir: &Path) -> anyhow::Result<PathBuf> {
    let copy =
        tempfile::Builder::new().prefix("usage-ledger-read-").tempdir().context("a directory for a private copy")?;
    let bytes = copy_tree(dir, copy.path()).with_context(|| format!("copying {} to read it", dir.display()))?;
    eprintln!(
        "usage-ledger: {} cannot be written here (read-only): reading a private copy of its ledgers ({} MB) in {}",
        dir.display(),
        bytes / 1_000_000,
        copy.path().display()
    );
    let path = copy.path().to_path_buf();
    COPIES.lock().expect("not poisoned").push(copy);
    Ok(path)
}

/// Copies `from` into `to` (which exists), leaving out the embedded broker's data;
/// returns the bytes copied.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<u64> {
    let mut bytes = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if entry.file_name() == "broker" {
                continue;
            }
            std::fs::create_dir(&target)?;
            bytes += copy_tree(&source, &target)?;
        } else if kind.is_file() {
            bytes += std::fs::copy(&source, &target)?;
        }
    }
    Ok(bytes)
}

/// Removes this run's private copies.
pub fn remove_copies() {
    COPIES.lock().expect("not poisoned").clear();
}
