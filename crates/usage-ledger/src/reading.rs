//! Progress of a long read (`replay`, `verify`): a spinner on stderr counting the records
//! read from the store and their rate, from the store's own read counter (the one the
//! watchdog watches). Drawn only when stderr is a terminal.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// The spinner, shown until dropped.
pub struct Reading {
    bar: ProgressBar,
    done: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Reading {
    pub fn start(what: &'static str) -> Reading {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}: {pos} records read ({per_sec}) {elapsed}")
                .expect("valid template"),
        );
        bar.set_message(what);
        let done = Arc::new(AtomicBool::new(false));
        let (first, shown, stop) = (ledger_store::progress::reads(), bar.clone(), Arc::clone(&done));
        let ticker = std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                shown.set_position(ledger_store::progress::reads().saturating_sub(first));
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Reading { bar, done, ticker: Some(ticker) }
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}
