//! The service's edges as an operator meets them: the embedded broker dies with the
//! service (even a `kill -9`ed one), a later `run` never adopts a stranger on its port,
//! and a new data directory is readable by its owner only.
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{bin, ul, ul_ok};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `run` on its embedded broker; returns once it consumes, with its stderr lines so far.
fn run_embedded(dir: &Path, port: u16) -> (Child, Vec<String>) {
    let mut child = bin()
        .arg("--data-dir")
        .arg(dir)
        .args(["run", "--broker-port", &port.to_string(), "--session-timeout-ms", "6000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lines.iter().any(|l: &String| l.contains("consuming")) {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "run ended early: {lines:?}");
        lines.push(line);
        assert!(Instant::now() < deadline, "run never consumed: {lines:?}");
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, lines)
}

fn wait_until(what: &str, within: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_embedded_broker_dies_with_the_service_and_a_stranger_on_its_port_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let (mut first, _) = run_embedded(&dir, port);
    let pid = std::fs::read_to_string(dir.join("broker/tansu.pid")).unwrap().trim().to_string();
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "tansu runs as pid {pid}");
    // A copy of the live data dir (its pid file names the original's broker) does not
    // stop the original's broker: it is refused like a stranger.
    let copy = tmp.path().join("copy");
    assert!(Command::new("cp").arg("-a").arg(&dir).arg(&copy).status().unwrap().success());
    let out = bin().arg("--data-dir").arg(&copy).args(["run", "--broker-port", &port.to_string()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "the original's broker still runs");
    assert!(TcpStream::connect(&address).is_ok(), "and still listens");
    Command::new("kill").args(["-9", &first.id().to_string()]).status().unwrap();
    first.wait().unwrap();
    wait_until("the broker ends with the service", Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{pid}")).exists() || TcpStream::connect(&address).is_err()
    });

    // The next run starts its own broker on the same data; it serves as before.
    let (mut second, _) = run_embedded(&dir, port);
    Command::new("kill").args(["-TERM", &second.id().to_string()]).status().unwrap();
    assert!(second.wait().unwrap().success());

    // Someone else listening on the port is not adopted.
    let stranger = TcpListener::bind(&address).unwrap();
    let out = bin().arg("--data-dir").arg(&dir).args(["run", "--broker-port", &port.to_string()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
    drop(stranger);
}

#[test]
fn a_new_data_dir_is_readable_by_its_owner_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fresh/data");
    let file = tmp.path().join("one.jsonl");
    let start = r#"{"accountEvent":{"eventId":"a1","teamId":"t1","occurredAt":"2026-04-01T00:00:00Z","planStarted":{"plan":"api_basic","bucketImages":"1000"}}}"#;
    std::fs::write(&file, format!("{start}\n")).unwrap();
    ul_ok(&dir, &["import", file.to_str().unwrap()]);
    for d in [&dir, &tmp.path().join("fresh")] {
        let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }
    let files = every_file(&dir);
    assert!(files.len() >= 2, "{files:?}");
    for (path, mode) in &files {
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
    }

    // An existing data dir open to others (a volume mounted 0755) is tightened, in one line.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = bin().env("USAGE_LEDGER_LOG", "info").arg("--data-dir").arg(&dir).arg("verify").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("Tightened the data dir from 0755 to 0700"), "{stderr}");
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
}

/// Every file under `dir` with its mode.
fn every_file(dir: &Path) -> Vec<(std::path::PathBuf, u32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            out.extend(every_file(&entry.path()));
        } else {
            out.push((entry.path(), meta.permissions().mode() & 0o777));
        }
    }
    out
}

/// A read-only view of `dir` at `at`: a read-only bind mount where this machine lets the
/// tests mount (root: permissions alone do not stop root), else a copy without write
/// permission. Unmounted on drop.
struct ReadOnly {
    at: std::path::PathBuf,
    mounted: bool,
}

impl ReadOnly {
    fn of(dir: &Path, at: &Path) -> ReadOnly {
        std::fs::create_dir_all(at).unwrap();
        let bind = Command::new("mount").arg("--bind").arg(dir).arg(at).status().is_ok_and(|s| s.success());
        if bind {
            let ro = Command::new("mount").args(["-o", "remount,bind,ro"]).arg(at).status().unwrap();
            assert!(ro.success(), "remounting the bind mount read-only");
            return ReadOnly { at: at.to_path_buf(), mounted: true };
        }
        assert!(Command::new("cp").arg("-a").arg(format!("{}/.", dir.display())).arg(at).status().unwrap().success());
        assert!(Command::new("chmod").args(["-R", "a-w"]).arg(at).status().unwrap().success());
        ReadOnly { at: at.to_path_buf(), mounted: false }
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.at).status();
        } else {
            let _ = Command::new("chmod").args(["-R", "u+w"]).arg(&self.at).status();
        }
    }
}

#[test]
fn read_commands_and_serve_work_on_a_read_only_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let file = crate::support::scenarios_dir().join("E2.jsonl");
    ul_ok(&dir, &["import", file.to_str().unwrap()]);
    ul_ok(&dir, &["close", "--until", "2026-05-02T00:00:00Z"]);
    let expected: Vec<String> = READS.iter().map(|args| ul_ok(&dir, args)).collect();

    let view = ReadOnly::of(&dir, &tmp.path().join("ro"));
    for (args, want) in READS.iter().zip(&expected) {
        let run = ul(&view.at, args);
        assert_eq!(run.code, 0, "{args:?} on a read-only data dir: {}", run.stderr);
        assert_eq!(&run.stdout, want, "{args:?} reads what it reads in place");
        assert!(run.stderr.contains("reading a private copy"), "{args:?} says so: {}", run.stderr);
    }
    let close = ul(&view.at, &["close", "--until", "2026-06-02T00:00:00Z"]);
    assert_eq!(close.code, 1, "{}", close.stderr);
    assert!(close.stderr.contains("read-only") && close.stderr.lines().count() == 1, "{}", close.stderr);

    let config = crate::http::config(tmp.path(), "");
    let server = crate::http::Server::serve(&view.at, &config, &[]);
    let url = format!("{}/v1/teams/t1/balance?at=2026-05-10T00:00:00Z", server.base);
    let reply = crate::http::get(&url, Some(crate::http::TEAM_TOKEN));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, expected[2].trim_end(), "serve answers from the copy what balance prints");
    assert!(server.log().contains("reading a private copy"), "{}", server.log());
    let close = format!("{}/v1/close", server.base);
    let body = r#"{"until": "2026-06-02T00:00:00Z"}"#;
    let refused = crate::http::call("POST", &close, Some(crate::http::ADMIN_TOKEN), &[], Some(body));
    assert!(refused.status >= 400 && refused.body.contains("read-only"), "{} {}", refused.status, refused.body);
}

const READS: [&[&str]; 5] = [
    &["verify"],
    &["invoices", "--team", "t1"],
    &["balance", "--team", "t1", "--at", "2026-05-10T00:00:00Z"],
    &["verify-invoice", "--team", "t1", "--period", "2026-04-01"],
    &["alerts", "--team", "t1"],
];

/// A small filesystem of its own (tmpfs), unmounted on drop; `None` where this machine
/// does not let the tests mount one (not root).
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, megabytes: u32) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let size = format!("size={megabytes}m");
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &size, "tmpfs"]).arg(dir).status().ok()?.success();
        ok.then(|| SmallDisk { dir: dir.to_path_buf() })
    }

    fn grow(&self, megabytes: u32) {
        let opts = format!("remount,size={megabytes}m");
        assert!(Command::new("mount").args(["-o", &opts]).arg(&self.dir).status().unwrap().success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

#[test]
fn a_full_disk_stops_acknowledging_in_one_line_corrupts_nothing_and_resumes_once_freed() {
    import_onto_a_full_disk(&[]);
}

/// The same with the event-id index moving events to runs on disk about every batch:
/// a spill the disk cannot hold stops the import the same way, and the runs resume.
#[test]
fn a_full_disk_while_the_index_moves_events_to_disk_stops_and_resumes_the_same_way() {
    import_onto_a_full_disk(&["--index-memory-events", "4096"]);
}

fn import_onto_a_full_disk(extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&tmp.path().join("small"), 12) else {
        eprintln!("SKIPPED: this machine does not let the tests mount a tmpfs (run as root)");
        return;
    };
    let file = tmp.path().join("load.jsonl");
    ul_ok(tmp.path(), &["generate", "--teams", "200", "--events", "100000", "--out", file.to_str().unwrap()]);
    let dir = disk.dir.join("data");
    let full = bin()
        .arg("--data-dir")
        .arg(&dir)
        // Batches small enough that several fit before the disk is full.
        .args(["import", "--batch-events-max", "4096", file.to_str().unwrap()])
        .args(extra)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert_eq!(full.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("nothing of it was acknowledged") && stderr.contains("No space left"), "{stderr}");
    // What was acknowledged is intact; freed, the same import carries on where it stood.
    disk.grow(256);
    let verify = ul_ok(&dir, &["verify"]);
    assert!(verify.starts_with("ok: "), "{verify}");
    ul_ok(&dir, &[&["import", file.to_str().unwrap()], extra].concat());
    let clean = tmp.path().join("clean");
    ul_ok(&clean, &["import", file.to_str().unwrap()]);
    assert_eq!(ul_ok(&dir, &["replay"]), ul_ok(&clean, &["replay"]), "the same invoices as a clean import");
    let again = ul(&dir, &[&["import", file.to_str().unwrap()], extra].concat());
    assert!(again.stderr.contains("imported 0 of"), "all duplicates: {}", again.stderr);
    assert_eq!(dir.join("index/manifest.json").exists(), !extra.is_empty(), "runs only when asked for");
}

#[test]
fn the_service_on_a_full_disk_stops_without_acknowledging_and_resumes_once_freed() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&tmp.path().join("small"), 12) else {
        eprintln!("SKIPPED: this machine does not let the tests mount a tmpfs (run as root)");
        return;
    };
    let broker = crate::kafka::Broker::start(tmp.path());
    let file = tmp.path().join("load.jsonl");
    ul_ok(tmp.path(), &["generate", "--teams", "200", "--events", "100000", "--out", file.to_str().unwrap()]);
    ul_ok(tmp.path(), &["produce", "--brokers", &broker.address, file.to_str().unwrap()]);
    let dir = disk.dir.join("data");
    let out =
        crate::kafka::service(&dir, &broker.address, &["--exit-when-idle-ms", "5000"]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a full disk stops the service: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("No space left"), "{stderr}");
    disk.grow(256);
    let lines = std::fs::read_to_string(&file).unwrap().lines().count();
    let verify = crate::kafka::drain_until(&dir, &broker.address, lines);
    assert!(verify.starts_with("ok: 200 teams"), "{verify}");
    let clean = tmp.path().join("clean");
    ul_ok(&clean, &["import", file.to_str().unwrap()]);
    assert_eq!(ul_ok(&dir, &["replay"]), ul_ok(&clean, &["replay"]), "the same invoices as a clean import");
}
