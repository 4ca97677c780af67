//! The embedded default broker: with no brokers configured, `run` starts tansu (an
//! Apache-Kafka-compatible broker in Rust, durable on SQLite) as a child process on
//! 127.0.0.1, keeping its data beside the ledger. Any Kafka client can connect to it.
//! It dies with the service, even a `kill -9`d one (a watcher process ends it), and a
//! later `run` never adopts whatever listens on the port: a broker left by this data
//! dir (its pid file names a tansu whose working directory is this data dir's broker
//! directory) is stopped first, anything else is refused — a copy of a live data dir
//! carries the original's pid file, and must not stop the original's broker.
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub struct EmbeddedBroker {
    child: Child,
    pub address: String,
}

impl EmbeddedBroker {
    /// Starts tansu on `127.0.0.1:port` with its SQLite file in `dir`, and waits until it
    /// accepts connections.
    pub fn start(dir: &Path, port: u16) -> anyhow::Result<EmbeddedBroker> {
        let tansu = ledger_kafka::tansu_path().context(
            "no brokers configured and no embedded broker installed: run `cargo install tansu --locked --features libsql` or pass --brokers",
        )?;
        crate::private_dir(dir)?;
        let address = format!("127.0.0.1:{port}");
        stop_leftover(dir, &address)?;
        let url = format!("tcp://{address}");
        let log = std::fs::File::create(dir.join("broker.log"))?;
        let child = Command::new(tansu)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine"])
            // tansu resolves the URL's path against its working directory.
            .arg("sqlite://broker.sqlite")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting tansu")?;
        std::fs::write(dir.join(PID_FILE), child.id().to_string())?;
        watch(child.id())?;
        let mut broker = EmbeddedBroker { child, address };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&broker.address).is_err() {
            if let Some(status) = broker.child.try_wait()? {
                bail!("the embedded broker exited ({status}); see {}", dir.join("broker.log").display());
            }
            if Instant::now() > deadline {
                bail!("the embedded broker did not listen on {} within 30 s", broker.address);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(broker)
    }
}

const PID_FILE: &str = "tansu.pid";

/// A process that ends the broker once this process is gone, however it ended.
fn watch(broker: u32) -> anyhow::Result<()> {
    let script = format!(
        "while kill -0 {me} 2>/dev/null && kill -0 {broker} 2>/dev/null; do sleep 0.5; done; kill -9 {broker} 2>/dev/null",
        me = std::process::id()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the broker's watcher")?;
    Ok(())
}

/// Makes the port free for this data dir's broker: a tansu this data dir started
/// earlier (its pid file names a live tansu) is stopped; anything else listening is
/// refused with the reason.
fn stop_leftover(dir: &Path, address: &str) -> anyhow::Result<()> {
    if TcpStream::connect(address).is_err() {
        return Ok(());
    }
    let pid = std::fs::read_to_string(dir.join(PID_FILE)).ok().and_then(|p| p.trim().parse::<u32>().ok());
    let ours = pid.filter(|&pid| started_here(pid, dir));
    let Some(pid) = ours else {
        bail!("{address} is in use by another process, not this data dir's broker: pass --brokers to use it, or --broker-port");
    };
    eprintln!("usage-ledger: stopping the embedded broker (pid {pid}) a previous run left on {address}");
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(address).is_ok() {
        if Instant::now() > deadline {
            bail!("{address} is still in use 10 s after stopping pid {pid}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Whether `pid` is a tansu this data dir started: its command line names tansu and its
/// working directory (set at start) is `dir` itself, not a copy's or another data dir's.
fn started_here(pid: u32, dir: &Path) -> bool {
    let tansu =
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains("tansu"));
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
    tansu && cwd.is_some() && cwd == dir.canonicalize().ok()
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
