//! A liveness signal for reads of the store. Every record a read takes from sled ticks
//! a process-wide counter; a watchdog (the binary's) that sees it stand still while a
//! read is under way says the store is corrupt and stops, instead of waiting on sled,
//! which can spin for minutes over a damaged file rather than return an error.
use std::sync::atomic::{AtomicU64, Ordering};

static READS: AtomicU64 = AtomicU64::new(0);

/// Records read so far by this process.
pub fn reads() -> u64 {
    READS.load(Ordering::Relaxed)
}

/// One more record read.
pub(crate) fn tick() {
    READS.fetch_add(1, Ordering::Relaxed);
}

/// Keys in the order sled must yield them: each after the one before. A damaged tree
/// can yield a key again, or go back, forever; that is corruption, said at once.
#[derive(Debug, Default)]
pub(crate) struct Ascending {
    last: Option<sled::IVec>,
}

impl Ascending {
    pub fn check(&mut self, key: &sled::IVec, what: &str) -> crate::Result<()> {
        tick();
        if self.last.as_ref().is_some_and(|last| key <= last) {
            return Err(crate::Error::Corrupt(format!(
                "{what}: sled yielded key {} after {}: the tree is damaged",
                hex::encode(&key[..key.len().min(40)]),
                hex::encode(
                    &self.last.as_ref().expect("checked")[..self.last.as_ref().expect("checked").len().min(40)]
                )
            )));
        }
        self.last = Some(key.clone());
        Ok(())
    }
}
