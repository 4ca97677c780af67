//! A ledger replicated through its changelog (see `changelog`): attaching the writer,
//! and the writes that wait for the next record.
use tracing::info;

use super::Ledger;
use crate::commit::{self, Staged};
use crate::tables;
use crate::Result;

impl Ledger {
    /// Replicates every batch from now on through `replica` (see `changelog`): the store
    /// must be up to date with it (`Store::restore`). A ledger with history but no
    /// changelog position (written before the changelog) is first exported into the
    /// changelog, which must be empty. Returns the position.
    pub fn replicate(&mut self, replica: std::sync::Arc<dyn crate::changelog::Replica>) -> Result<crate::Position> {
        self.wait_durable()?;
        let mut position = match self.store.changelog_position()? {
            Some(p) => p,
            None => crate::changelog::migrate(&self.store, replica.as_ref())?,
        };
        // Batches committed without the changelog (an operator's close) go first.
        for (n, ops) in tables::unreplicated::all(&self.store.tree)? {
            position = crate::changelog::append(replica.as_ref(), position, &ops)?;
            let mut batch = crate::batch::Batch::default();
            tables::unreplicated::remove(&mut batch, n);
            tables::meta::insert_changelog(&mut batch, &position);
            self.store.tree.apply_batch(batch.to_sled())?;
            self.store.db.flush()?;
            info!(changelog = %replica.name(), batch = n, ops = ops.len(), "Appended a batch written without the changelog.");
        }
        *self.store.unreplicated.lock().expect("not poisoned") = Some(Vec::new());
        let position_cell = std::sync::Arc::new(std::sync::Mutex::new(position));
        self.changelog = commit::Changelog::Attached(commit::Replication { replica, position: position_cell });
        Ok(position)
    }

    /// The changelog position, once replicated.
    pub fn changelog_position(&self) -> Option<crate::Position> {
        match &self.changelog {
            commit::Changelog::Attached(r) => Some(*r.position.lock().expect("not poisoned")),
            _ => None,
        }
    }

    /// Appends the writes waiting for the changelog (outbox acknowledgements) as a record
    /// of their own: when the writer is idle or hands its partition over, so the next
    /// owner does not publish again what was published. Whether one was written.
    pub fn flush_replica(&mut self) -> Result<bool> {
        if self.changelog_position().is_none() || !self.store.has_unreplicated() {
            return Ok(false);
        }
        self.commit(Staged::default())?;
        Ok(true)
    }
}
