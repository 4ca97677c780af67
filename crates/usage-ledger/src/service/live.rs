//! The service's ledgers as the HTTP API sees them: the stores of the folded partition
//! ledgers, whether it is ready to serve, and `close` through the ledgers the loop holds
//! (the loop publishes what it appends).
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ledger_store::Store;

use super::ownership::Shards;
use super::pipeline::DeadLetters;

pub(super) struct Live {
    pub shards: Arc<Mutex<Shards>>,
    /// `Shards::readable`: what reads read, without the loop's lock.
    pub readable: Arc<Mutex<Arc<Vec<Store>>>>,
    pub readers: Arc<Readers>,
    /// Records on the broker past the ledgers' positions, over the owned partitions;
    /// negative until first measured.
    pub lag: Arc<AtomicI64>,
    pub lag_max: u64,
    /// The service's counters (an operator's close dead-letters the refunds it gives up).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// HTTP requests waiting for the shards. The loop holds the lock for a whole batch and
/// takes it again at once (a `Mutex` is not fair), so under load a request could wait
/// for the whole backlog; between batches the loop lets waiting requests in first.
#[derive(Debug, Default)]
pub(super) struct Readers(AtomicUsize);

impl Readers {
    /// Bounds the loop's pause for readers between two batches.
    const PAUSE_MAX: Duration = Duration::from_millis(20);

    /// The shards, for a request.
    pub fn lock<'a>(&self, shards: &'a Mutex<Shards>) -> MutexGuard<'a, Shards> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let guard = shards.lock().expect("not poisoned");
        self.0.fetch_sub(1, Ordering::SeqCst);
        guard
    }

    /// The shards if they come free within `wait`: a probe must answer while a rebalance
    /// restores ledgers from the changelog under the lock (seconds), or it would hold
    /// one of the server's threads, and `/healthz` behind it, for as long.
    pub fn try_lock_for<'a>(&self, shards: &'a Mutex<Shards>, wait: Duration) -> Option<MutexGuard<'a, Shards>> {
        let until = Instant::now() + wait;
        loop {
            match shards.try_lock() {
                Ok(guard) => return Some(guard),
                Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() >= until => return None,
                Err(std::sync::TryLockError::WouldBlock) => {
                    self.0.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }

    /// Called by the loop with the lock released: waits (≤ `PAUSE_MAX`) while a request
    /// waits for it.
    pub fn let_in(&self) {
        let until = Instant::now() + Readers::PAUSE_MAX;
        while self.0.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl crate::http::Ledgers for Live {
    fn stores(&self) -> anyhow::Result<Vec<Store>> {
        Ok(self.readable.lock().expect("not poisoned").as_ref().clone())
    }

    fn readiness(&self) -> Result<(), String> {
        let Some(shards) = self.readers.try_lock_for(&self.shards, Duration::from_millis(500)) else {
            return Err("busy: a rebalance is restoring or folding partition ledgers, or a batch is taking long".into());
        };
        if let Some(why) = &shards.failure {
            return Err(format!("cannot take over {why}"));
        }
        if !shards.stopped.is_empty() {
            let each: Vec<String> =
                shards.stopped.iter().map(|(p, why)| format!("partition {p} stopped: {why}")).collect();
            return Err(each.join("; "));
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
        let mut shards = self.readers.lock(&self.shards);
        let (mut invoices, mut entries) = (0, 0);
        for ledger in shards.open.values_mut() {
            let report = ledger.close_until_with(until, |settled| {
                let mut dead = DeadLetters::new(&self.metrics);
                dead.settled(settled);
                dead.into_msgs()
            })?;
            invoices += report.invoices;
            entries += report.entries;
        }
        Ok((invoices, entries))
    }
}
