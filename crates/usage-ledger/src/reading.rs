//! Progress of a long read (`replay`, `verify`): a spinner on stderr counting the records
//! read from the store and their rate, from the store's own read counter (the one the
//! watchdog watches). Drawn only when stderr is a terminal.
use std::sync::mpsc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// The spinner, shown until dropped.
pub struct Reading {
    bar: ProgressBar,
    /// Dropped to stop the ticker at once (a sleeping ticker held every command's exit
    /// up to its 100 ms step).
    stop: Option<mpsc::Sender<()>>,
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
        let (stop, stopped) = mpsc::channel::<()>();
        let (first, shown) = (ledger_store::progress::reads(), bar.clone());
        let ticker = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(Duration::from_millis(100)) {
                shown.set_position(ledger_store::progress::reads().saturating_sub(first));
            }
        });
        Reading { bar, stop: Some(stop), ticker: Some(ticker) }
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}
