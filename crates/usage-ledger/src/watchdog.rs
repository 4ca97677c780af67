//! Stops a command whose reads of the store stand still. sled 0.34 can spin for minutes
//! over a damaged file, memory growing, instead of returning an error; every record the
//! store reads ticks `ledger_store::progress`, so a read that makes no progress for the
//! stall limit is a corrupt store, said in one line, with a non-zero exit.
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How long reads may stand still (env `USAGE_LEDGER_STALL_SECS`, default 20 s: far
/// above the slowest healthy step, opening sled on a large store).
fn stall_limit() -> Duration {
    let secs = std::env::var("USAGE_LEDGER_STALL_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    Duration::from_secs(secs)
}

/// Armed while it lives.
pub struct Watchdog {
    armed: Arc<AtomicBool>,
}

impl Watchdog {
    pub fn arm(what: &'static str, dir: &Path) -> Watchdog {
        let armed = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&armed);
        let (dir, stall) = (dir.display().to_string(), stall_limit());
        thread::spawn(move || {
            let (mut seen, mut since) = (ledger_store::progress::reads(), Instant::now());
            while flag.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(200));
                let reads = ledger_store::progress::reads();
                if reads != seen {
                    (seen, since) = (reads, Instant::now());
                } else if since.elapsed() > stall && flag.load(Ordering::SeqCst) {
                    eprintln!(
                        "error: the store in {dir} looks corrupt: {what} read nothing for {} s (sled spins on damaged files instead of failing); restore it from a copy",
                        stall.as_secs()
                    );
                    std::process::exit(3);
                }
            }
        });
        Watchdog { armed }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.armed.store(false, Ordering::SeqCst);
    }
}
