//! The embedded default broker: with no brokers configured, `run` starts tansu (an
//! Apache-Kafka-compatible broker in Rust, durable on SQLite) as a child process on
//! 127.0.0.1, keeping its data beside the ledger. Any Kafka client can connect to it.
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub struct EmbeddedBroker {
    child: Child,
    pub address: String,
}

fn find_tansu() -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("tansu")).find(|p| p.is_file()))
        .unwrap_or_default();
    from_path.or_else(|| {
        let home = PathBuf::from(std::env::var_os("CARGO_HOME").unwrap_or_else(|| {
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo").into_os_string()).unwrap_or_default()
        }));
        Some(home.join("bin/tansu")).filter(|p| p.is_file())
    })
}

impl EmbeddedBroker {
    /// Starts tansu on `127.0.0.1:port` with its SQLite file in `dir`, and waits until it
    /// accepts connections.
    pub fn start(dir: &Path, port: u16) -> anyhow::Result<EmbeddedBroker> {
        let tansu = find_tansu().context(
            "no brokers configured and no embedded broker installed: run `cargo install tansu --locked --features libsql` or pass --brokers",
        )?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let address = format!("127.0.0.1:{port}");
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

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
