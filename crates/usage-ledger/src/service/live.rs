//! The service's ledgers as the HTTP API sees them: the stores of the folded partition
//! ledgers, whether it is ready to serve, and `close` through the ledgers the loop holds
//! (the loop publishes what it appends).
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use ledger_store::Store;

use super::ownership::Shards;
use super::pipeline::settled_dead_letters;

pub(super) struct Live {
    pub shards: Arc<Mutex<Shards>>,
    /// Records on the broker past the ledgers' positions, over the owned partitions;
    /// negative until first measured.
    pub lag: Arc<AtomicI64>,
    pub lag_max: u64,
}

impl crate::http::Ledgers for Live {
    fn stores(&self) -> anyhow::Result<Vec<Store>> {
        let shards = self.shards.lock().expect("not poisoned");
        Ok(shards.open.values().map(|ledger| ledger.store().clone()).collect())
    }

    fn readiness(&self) -> Result<(), String> {
        let shards = self.shards.lock().expect("not poisoned");
        if let Some(why) = &shards.failure {
            return Err(format!("cannot take over {why}"));
        }
        if shards.open.is_empty() {
            return Err("no partition assigned yet".into());
        }
        if shards.pending_folds() > 0 {
            return Err(format!("folding {} newly assigned partition ledger(s)", shards.pending_folds()));
        }
        // Until librdkafka reports a lag (a partition it has not fetched from, an empty
        // one) the ledgers are taken as caught up.
        match self.lag.load(Ordering::Relaxed) {
            lag if lag > 0 && lag as u64 > self.lag_max => {
                Err(format!("{lag} records behind the broker (ready at {} or fewer)", self.lag_max))
            }
            _ => Ok(()),
        }
    }

    fn close(&self, until: DateTime<Utc>) -> anyhow::Result<(u64, u64)> {
        let mut shards = self.shards.lock().expect("not poisoned");
        let (mut invoices, mut entries) = (0, 0);
        for ledger in shards.open.values_mut() {
            let report = ledger.close_until_with(until, settled_dead_letters)?;
            invoices += report.invoices;
            entries += report.entries;
        }
        Ok((invoices, entries))
    }
}
