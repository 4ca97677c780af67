//! Standby copies (`run --standby`): a thread keeps a copy of every input partition's
//! ledger this member does not own up to date with its changelog, so a takeover restores
//! only what was appended since the copy last looked (about a second), not the
//! partition's history. The copies are stores in this member's data dir, so each member
//! needs its own (as on Kubernetes): a copy holds its ledger's lock.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{debug, warn};

use super::ownership::{catch_up, Shards};

/// How often the copies look at their changelogs.
const EVERY: Duration = Duration::from_secs(1);

pub(super) fn spawn(shards: Arc<Mutex<Shards>>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("standby".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(EVERY);
                let partitions = shards.lock().expect("not poisoned").input_partitions;
                for partition in 0..partitions {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    follow(&shards, partition);
                }
            }
            shards.lock().expect("not poisoned").standby.clear();
        })
        .expect("a thread starts")
}

/// Brings the partition's standby copy up to its changelog, opening it first; drops it
/// when this member owns the partition (the owner took it) or it cannot follow.
fn follow(shards: &Arc<Mutex<Shards>>, partition: i32) {
    let (store, catching_up, brokers) = {
        let mut shards = shards.lock().expect("not poisoned");
        if shards.holds(partition) {
            shards.standby.remove(&partition);
            return;
        }
        if !shards.standby.contains_key(&partition) {
            match shards.open_standby(partition) {
                Ok(store) => {
                    shards.standby.insert(partition, (store, Arc::new(Mutex::new(false))));
                }
                Err(e) => {
                    debug!(partition, error = %e, "No standby copy of the partition for now.");
                    return;
                }
            }
        }
        let (store, catching_up) = &shards.standby[&partition];
        (store.clone(), Arc::clone(catching_up), shards.brokers().to_string())
    };
    // The owner-to-be takes this lock (holding the shards) and marks the copy taken
    // before it restores it itself: a catch-up never runs beside its restore, and this
    // lock is let go before the shards are locked again.
    let taken = catching_up.lock().expect("not poisoned");
    if *taken {
        return;
    }
    let caught_up = catch_up(&store, &brokers, partition);
    drop(taken);
    match caught_up {
        Ok(Some((report, secs))) => eprintln!(
            "usage-ledger: standby copy of partition {partition} caught up: {} records ({} entries) in {secs:.2} s",
            report.applied, report.entries
        ),
        Ok(None) => {}
        Err(e) => {
            warn!(partition, error = %format!("{e:#}"), "The standby copy cannot follow its changelog; dropped.");
            shards.lock().expect("not poisoned").standby.remove(&partition);
        }
    }
}
