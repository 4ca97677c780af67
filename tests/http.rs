//! The HTTP API and dashboard, served by the real binary (`serve`, and `run` against the
//! real broker) over a real ledger on disk: every path under every credential, the
//! documents against what the command line prints, invoice verification against a
//! tampered ledger, the limits, the OpenAPI document against the routes, and the
//! dashboard in headless Chromium.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use sha2::Digest as _;

use crate::support::{bin, ul, ul_ok};

pub const TEAM_TOKEN: &str = "team-t1-token";
pub const OTHER_TEAM_TOKEN: &str = "team-t2-token";
pub const FINANCE_TOKEN: &str = "finance-token";
pub const ADMIN_TOKEN: &str = "admin-token";

fn sha(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// A config file with one token per role and `extra` lines under `[http]`.
pub fn config(dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"[http]
portal_secret = "a test secret, 16+ chars"
{extra}
[[http.tokens]]
sha256 = "{}"
role = "team"
team = "t1"
[[http.tokens]]
sha256 = "{}"
role = "team"
team = "t2"
[[http.tokens]]
sha256 = "{}"
role = "finance"
[[http.tokens]]
sha256 = "{}"
role = "admin"
"#,
        sha(TEAM_TOKEN),
        sha(OTHER_TEAM_TOKEN),
        sha(FINANCE_TOKEN),
        sha(ADMIN_TOKEN)
    );
    let path = dir.join("usage-ledger.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn image(id: &str, team: &str, at: &str, api: &str, images: u32) -> String {
    format!(
        r#"{{"imageProcessed":{{"eventId":"{id}","teamId":"{team}","occurredAt":"{at}","api":"{api}","images":{images}}}}}"#
    )
}

/// Two teams on 1,000-image buckets from March 2026: March closed (a final invoice each),
/// April open with t1 past 80 % by the 15th.
pub fn seed(dir: &Path) -> PathBuf {
    let mut lines = Vec::new();
    for team in ["t1", "t2"] {
        lines.push(format!(
            r#"{{"accountEvent":{{"eventId":"{team}-plan","teamId":"{team}","occurredAt":"2026-03-01T00:00:00Z","planStarted":{{"plan":"api_basic","bucketImages":"1000"}}}}}}"#
        ));
    }
    for d in 1..=31 {
        lines.push(image(&format!("t1-m{d}"), "t1", &format!("2026-03-{d:02}T10:00:00Z"), "API_REMOVE_BACKGROUND", 20));
        lines.push(image(&format!("t2-m{d}"), "t2", &format!("2026-03-{d:02}T11:00:00Z"), "API_REMOVE_BACKGROUND", 5));
    }
    for d in 1..=15 {
        lines.push(image(&format!("t1-a{d}"), "t1", &format!("2026-04-{d:02}T09:00:00Z"), "API_REMOVE_BACKGROUND", 50));
        lines.push(image(&format!("t1-e{d}"), "t1", &format!("2026-04-{d:02}T15:00:00Z"), "API_IMAGE_EDITING", 1));
    }
    lines.push(image("t2-a1", "t2", "2026-04-10T12:00:00Z", "API_REMOVE_BACKGROUND", 3));
    let file = dir.join("seed.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let data = dir.join("data");
    ul_ok(&data, &["import", file.to_str().unwrap()]);
    data
}

/// A `usage-ledger serve` (or `run`) process on a free port, killed on drop.
pub struct Server {
    child: Child,
    pub base: String,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// `serve` over a freshly seeded data dir (`seed`) with `http` lines in the config's
    /// `[http]`; the data dir too.
    pub fn seeded(dir: &Path, http: &str) -> (PathBuf, Server) {
        let data = seed(dir);
        let server = Server::serve(&data, &config(dir, http), &[]);
        (data, server)
    }

    pub fn serve(data: &Path, config: &Path, extra: &[&str]) -> Server {
        let mut cmd = bin();
        cmd.arg("--data-dir").arg(data).arg("--config").arg(config).args(["serve", "--http-addr", "127.0.0.1:0"]);
        Server::spawn(cmd.args(extra), "over HTTP at ")
    }

    pub fn spawn(cmd: &mut std::process::Command, marker: &str) -> Server {
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let (sink, marker) = (std::sync::Arc::clone(&lines), marker.to_string());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Into the log before the address is sent: a test reads the log as soon as
                // it has the address.
                let url = line.find(&marker).map(|at| {
                    line[at + marker.len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .trim_end_matches('/')
                        .to_string()
                });
                sink.lock().unwrap().push(line);
                if let Some(url) = url {
                    let _ = tx.send(url);
                }
            }
        });
        let base = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the server never said where it listens: {:?}", lines.lock().unwrap())
        });
        Server { child, base, lines }
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Stops the process as an operator would (SIGTERM) and waits for it.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response's status, content type and body, whatever the status.
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
    pub retry_after: Option<String>,
}

pub fn call(method: &str, url: &str, token: Option<&str>, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
    let mut req = ureq::request(method, url).timeout(Duration::from_secs(60));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = response.status();
    let content_type = response.header("Content-Type").unwrap_or_default().to_string();
    let retry_after = response.header("Retry-After").map(str::to_string);
    Reply { status, content_type, body: response.into_string().unwrap(), retry_after }
}

pub fn get(url: &str, token: Option<&str>) -> Reply {
    call("GET", url, token, &[], None)
}

fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.body))
}

/// The command line's output, as the API's body is (without the final newline).
fn cli(data: &Path, args: &[&str]) -> String {
    ul_ok(data, args).trim_end_matches('\n').to_string()
}

const TEAM_PATHS: [&str; 7] = [
    "/v1/teams/{team}/balance",
    "/v1/teams/{team}/usage",
    "/v1/teams/{team}/invoices",
    "/v1/teams/{team}/invoices/2026-03-01",
    "/v1/teams/{team}/invoices/2026-03-01/verification",
    "/v1/teams/{team}/alerts",
    "/v1/teams/{team}/entries",
];

#[test]
fn every_team_path_answers_401_403_or_200_by_credential() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, server) = Server::seeded(tmp.path(), "");
    for path in TEAM_PATHS {
        let url = |team: &str| format!("{}{}", server.base, path.replace("{team}", team));
        assert_eq!(get(&url("t1"), None).status, 401, "{path} without a token");
        assert_eq!(get(&url("t1"), Some("not-a-token")).status, 401, "{path} with an unknown token");
        assert_eq!(get(&url("t1"), Some(TEAM_TOKEN)).status, 200, "{path}: a team reads its own");
        assert_eq!(get(&url("t1"), Some(FINANCE_TOKEN)).status, 200, "{path}: finance reads every team");
        assert_eq!(get(&url("t1"), Some(ADMIN_TOKEN)).status, 200, "{path}: admin reads every team");
        let other = get(&url("t2"), Some(TEAM_TOKEN));
        let missing = get(&url("no-such-team"), Some(TEAM_TOKEN));
        assert_eq!((other.status, missing.status), (403, 403), "{path}: another team's");
        assert_eq!(other.body, missing.body, "{path}: the same 403 whether or not the team exists");
    }
    let month = format!("{}/v1/invoices?period=2026-03", server.base);
    assert_eq!(get(&month, None).status, 401);
    assert_eq!(get(&month, Some(TEAM_TOKEN)).status, 403, "a team does not read the finance export");
    assert_eq!(get(&month, Some(FINANCE_TOKEN)).status, 200);
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(get(&format!("{}{path}", server.base), None).status, 200, "{path} needs no token");
    }
    let log = server.log();
    assert!(log.contains("status=401") && log.contains("status=403"), "refusals are logged: {log}");
    for token in [TEAM_TOKEN, FINANCE_TOKEN, "not-a-token"] {
        assert!(!log.contains(token), "a refused request is logged without its token");
    }
}

#[test]
fn the_documents_are_the_ones_the_command_line_prints() {
    let tmp = tempfile::tempdir().unwrap();
    let data = seed(tmp.path());
    let expected = [
        ("/v1/teams/t1/balance", cli(&data, &["balance", "--team", "t1"])),
        (
            "/v1/teams/t1/balance?at=2026-04-08T00:00:00Z",
            cli(&data, &["balance", "--team", "t1", "--at", "2026-04-08T00:00:00Z"]),
        ),
        ("/v1/teams/t1/invoices", cli(&data, &["invoices", "--team", "t1"])),
        ("/v1/teams/t1/invoices?draft=true", cli(&data, &["invoices", "--team", "t1", "--draft"])),
        ("/v1/teams/t1/invoices?format=csv", cli(&data, &["invoices", "--team", "t1", "--format", "csv"])),
        ("/v1/teams/t1/alerts", cli(&data, &["alerts", "--team", "t1"])),
        ("/v1/invoices?period=2026-03", cli(&data, &["invoices", "--all", "--period", "2026-03"])),
        (
            "/v1/invoices?period=2026-03&format=csv",
            cli(&data, &["invoices", "--all", "--period", "2026-03", "--format", "csv"]),
        ),
        (
            "/v1/teams/t1/invoices/2026-03-01/verification",
            cli(&data, &["verify-invoice", "--team", "t1", "--period", "2026-03-01"]),
        ),
    ];
    let server = Server::serve(&data, &config(tmp.path(), ""), &[]);
    for (path, cli_output) in &expected {
        let reply = get(&format!("{}{path}", server.base), Some(FINANCE_TOKEN));
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert_eq!(reply.body.trim_end(), cli_output, "{path} differs from the command line");
    }
    // The finance export holds both teams' March invoices, and its CSV one row per line
    // plus a total row per invoice.
    let month: serde_json::Value =
        json(&get(&format!("{}/v1/invoices?period=2026-03", server.base), Some(FINANCE_TOKEN)));
    let teams: Vec<&str> = month.as_array().unwrap().iter().map(|i| i["team_id"].as_str().unwrap()).collect();
    assert_eq!(teams, ["t1", "t2"]);
    let csv = get(&format!("{}/v1/invoices?period=2026-03&format=csv", server.base), Some(FINANCE_TOKEN));
    assert!(csv.content_type.starts_with("text/csv"), "{}", csv.content_type);
    let lines: usize = month.as_array().unwrap().iter().map(|i| i["lines"].as_array().unwrap().len() + 1).sum();
    assert_eq!(csv.body.trim_end().lines().count(), 1 + lines, "{}", csv.body);
    // One invoice by its period, as JSON and (by Accept) as CSV.
    let one = get(&format!("{}/v1/teams/t1/invoices/2026-03-01", server.base), Some(TEAM_TOKEN));
    assert_eq!(json(&one), month[0]);
    let one_csv = call(
        "GET",
        &format!("{}/v1/teams/t1/invoices/2026-03-01", server.base),
        Some(TEAM_TOKEN),
        &[("Accept", "text/csv")],
        None,
    );
    assert!(one_csv.content_type.starts_with("text/csv"));
    assert!(one_csv.body.lines().last().unwrap().contains(",total,"), "{}", one_csv.body);
    assert!(one_csv.body.contains(month[0]["total"].as_str().unwrap()));
    // The balance of the open cycle carries a forecast past 100 % at this pace.
    let balance = json(&get(&format!("{}/v1/teams/t1/balance", server.base), Some(TEAM_TOKEN)));
    let forecast = &balance["forecast"]["allowances"][0];
    assert_eq!(forecast["allowance"], "bucket");
    assert!(forecast["runs_out_at"].as_str().is_some_and(|t| t.starts_with("2026-04")), "{balance}");
}

#[test]
fn errors_are_one_json_line_with_a_fitting_status() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, server) = Server::seeded(tmp.path(), "");
    let cases = [
        ("/v1/teams/t1/invoices/2026-02-01", 404),
        ("/v1/teams/t1/invoices/2026-02-01/verification", 404),
        ("/v1/teams/t1/invoices/March", 400),
        ("/v1/teams/t1/balance?at=yesterday", 400),
        ("/v1/teams/t1/entries?limit=0", 400),
        ("/v1/teams/t1/entries?limit=1001", 400),
        ("/v1/teams/t1/invoices?format=xml", 400),
        ("/v1/invoices", 400),
        ("/v1/invoices?period=2026-13", 400),
        ("/v1/teams/nobody/balance", 404),
        ("/v1/no/such/path", 404),
    ];
    for (path, status) in cases {
        let reply = get(&format!("{}{path}", server.base), Some(FINANCE_TOKEN));
        assert_eq!(reply.status, status, "{path}: {}", reply.body);
        let error = json(&reply)["error"].as_str().map(str::to_string).unwrap_or_default();
        assert!(!error.is_empty() && !error.contains('\n'), "{path}: {}", reply.body);
    }
}

#[test]
fn the_ledger_pages_walk_every_entry_once_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, server) = Server::seeded(tmp.path(), "");
    let (mut after, mut seqs, mut kinds) = (0u64, Vec::new(), std::collections::BTreeSet::new());
    loop {
        let page =
            json(&get(&format!("{}/v1/teams/t1/entries?after_seq={after}&limit=7", server.base), Some(TEAM_TOKEN)));
        for e in page["entries"].as_array().unwrap() {
            seqs.push(e["seq"].as_u64().unwrap());
            assert_eq!(e["hash"].as_str().unwrap().len(), 64);
            kinds.insert(e["kind"].as_str().unwrap().to_string());
        }
        match page["next_after_seq"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    let last = json(&get(&format!("{}/v1/teams/t1/invoices/2026-03-01", server.base), Some(TEAM_TOKEN)))["ledger"]
        ["last_seq"]
        .as_u64()
        .unwrap();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "contiguous from 1");
    assert!(seqs.len() as u64 > last, "past the March invoice's last entry");
    assert_eq!(kinds, ["account", "cycle_closed", "image"].map(String::from).into(), "{kinds:?}");
}

#[test]
fn verification_catches_a_tampered_entry_from_the_api_and_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = seed(tmp.path());
    let args = ["verify-invoice", "--team", "t1", "--period", "2026-03-01"];
    let clean: serde_json::Value = serde_json::from_str(&ul_ok(&data, &args)).unwrap();
    assert_eq!((clean["matches"].as_bool(), clean["chain_ok"].as_bool()), (Some(true), Some(true)), "{clean}");
    assert_eq!(clean["stored_total"], clean["recomputed_total"]);

    // An image's count changed and the chain rebuilt after it: the chain holds, the
    // recomputed invoice does not.
    let rechained = tmp.path().join("rechained");
    crate::support::copy_store(&data, &rechained);
    ledger_store::tamper_image_rechained(&rechained, "t1", 5).unwrap();
    let run = ul(&rechained, &args);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let check: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!((check["matches"].as_bool(), check["chain_ok"].as_bool()), (Some(false), Some(false)), "{check}");
    assert!(run.stderr.lines().count() == 1 && run.stderr.contains("team t1"), "{}", run.stderr);

    // A flipped byte: the chain breaks at that entry.
    let flipped = tmp.path().join("flipped");
    crate::support::copy_store(&data, &flipped);
    ledger_store::tamper_entry(&flipped, "t1", 5).unwrap();
    let server = Server::serve(&flipped, &config(tmp.path(), ""), &[]);
    let reply = get(&format!("{}/v1/teams/t1/invoices/2026-03-01/verification", server.base), Some(TEAM_TOKEN));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let check = json(&reply);
    assert_eq!((check["matches"].as_bool(), check["chain_ok"].as_bool()), (Some(false), Some(false)), "{check}");
    assert!(check["mismatch"].as_str().unwrap().contains("seq 5"), "{check}");
    assert_eq!(check["stored_total"], clean["stored_total"], "what was issued is reported as issued");
}

#[test]
fn admins_close_and_mint_portal_links_that_open_one_team() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, server) = Server::seeded(tmp.path(), "");
    let close = format!("{}/v1/close", server.base);
    let body = r#"{"until": "2026-05-02T00:00:00Z"}"#;
    assert_eq!(call("POST", &close, None, &[], Some(body)).status, 401);
    assert_eq!(call("POST", &close, Some(FINANCE_TOKEN), &[], Some(body)).status, 403);
    let future = call("POST", &close, Some(ADMIN_TOKEN), &[], Some(r#"{"until": "2199-01-01T00:00:00Z"}"#));
    assert_eq!(future.status, 400, "past now + skew without allow_future: {}", future.body);
    assert_eq!(call("POST", &close, Some(ADMIN_TOKEN), &[], Some("{")).status, 400);
    let closed = call("POST", &close, Some(ADMIN_TOKEN), &[], Some(body));
    assert_eq!(closed.status, 200, "{}", closed.body);
    assert_eq!(json(&closed)["invoices"], 2, "April of both teams: {}", closed.body);
    let april = get(&format!("{}/v1/teams/t1/invoices/2026-04-01/verification", server.base), Some(TEAM_TOKEN));
    assert_eq!(json(&april)["matches"], true, "{}", april.body);

    let mint = format!("{}/v1/teams/t1/portal-links", server.base);
    let finance_mint = format!("{}/v1/portal-links", server.base);
    for url in [&mint, &finance_mint] {
        assert_eq!(call("POST", url, None, &[], None).status, 401, "{url}");
        assert_eq!(call("POST", url, Some(TEAM_TOKEN), &[], None).status, 403, "{url}");
        assert_eq!(call("POST", url, Some(FINANCE_TOKEN), &[], None).status, 403, "{url}");
    }
    assert_eq!(get(&format!("{}/", server.base), None).status, 401, "the finance view needs a credential");
    assert_eq!(call("POST", &mint, Some(FINANCE_TOKEN), &[], None).status, 403);
    let link = json(&call("POST", &mint, Some(ADMIN_TOKEN), &[], None));
    let url = link["url"].as_str().unwrap();
    assert!(link["expires_at"].as_str().unwrap() > "2026", "{link}");
    let page = get(url, None);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.content_type.starts_with("text/html") && page.body.contains("\"t1\""));
    let credential = url.split("link=").nth(1).unwrap();
    assert_eq!(get(&format!("{}/v1/teams/t1/balance", server.base), Some(credential)).status, 200);
    assert_eq!(get(&format!("{}/v1/teams/t2/balance", server.base), Some(credential)).status, 403);
    assert_eq!(get(&format!("{}/teams/t2?link={credential}", server.base), None).status, 403);
    assert_eq!(call("POST", &close, Some(credential), &[], Some(body)).status, 403, "a link only reads");
    let forged = credential.replace("~t1", "~t2");
    assert_eq!(get(&format!("{}/v1/teams/t2/balance", server.base), Some(&forged)).status, 401);
    assert_eq!(get(&format!("{}/teams/t1", server.base), None).status, 401);
}

#[test]
fn oversized_and_too_many_requests_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // The address's burst (7) covers the close and the team's burst (5) below, not the
    // eight health checks as well: they must not be counted.
    let limits = "requests_per_sec = 1\nrequests_burst = 5\naddress_requests_per_sec = 1\naddress_requests_burst = 7\nbody_max_bytes = 1024";
    let (_, server) = Server::seeded(tmp.path(), limits);
    let big = format!(r#"{{"until": "2026-05-02T00:00:00Z", "pad": "{}"}}"#, "x".repeat(4096));
    let reply = call("POST", &format!("{}/v1/close", server.base), Some(ADMIN_TOKEN), &[], Some(&big));
    assert_eq!(reply.status, 413, "{}", reply.body);
    let statuses: Vec<u16> = (0..8).map(|_| get(&format!("{}/healthz", server.base), None).status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "health is never limited: {statuses:?}");
    let url = format!("{}/v1/teams/t1/balance", server.base);
    let statuses: Vec<u16> = (0..5).map(|_| get(&url, Some(TEAM_TOKEN)).status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "the burst: {statuses:?}");
    let refused = get(&url, Some(TEAM_TOKEN));
    assert_eq!(refused.status, 429);
    assert_eq!(refused.retry_after.as_deref(), Some("1"));
    assert!(json(&refused)["error"].is_string());
}

/// `(method, path)` of every route the router serves, read from its source.
fn routes() -> std::collections::BTreeSet<(String, String)> {
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/routes.rs")).unwrap();
    let mut out = std::collections::BTreeSet::new();
    for line in src.lines().map(str::trim).filter(|l| l.starts_with(".route(\"")) {
        let path = line.split('"').nth(1).unwrap().to_string();
        let method = line.split(", ").nth(1).unwrap().split('(').next().unwrap().to_string();
        out.insert((method, path));
    }
    out
}

#[test]
fn the_openapi_document_describes_exactly_the_routes_served() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, server) = Server::seeded(tmp.path(), "");
    let served = json(&get(&format!("{}/openapi.json", server.base), None));
    let checked_in: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(served, checked_in, "the served document is the checked-in one");
    assert!(served["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = std::collections::BTreeMap::new();
    for (path, ops) in served["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let required: Vec<String> = op["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter(|p| p["in"] == "query" && p["required"] == true))
                .into_iter()
                .flatten()
                .map(|p| format!("{}=2026-03", p["name"].as_str().unwrap()))
                .collect();
            documented.insert((method.clone(), path.clone()), required);
        }
    }
    assert_eq!(
        documented.keys().cloned().collect::<std::collections::BTreeSet<_>>(),
        routes(),
        "openapi.json and the router differ"
    );
    // Every documented path is served (not the fallback's 404) with an admin token and
    // its required query.
    for ((method, path), query) in &documented {
        let path = path.replace("{team}", "t1").replace("{period}", "2026-03-01") + "?" + &query.join("&");
        let body = (method == "post").then_some(r#"{"until": "2026-04-01T00:00:00Z"}"#);
        let reply = call(&method.to_uppercase(), &format!("{}{path}", server.base), Some(ADMIN_TOKEN), &[], body);
        assert!(reply.status < 300, "{method} {path}: {} {}", reply.status, reply.body);
    }
}

#[test]
fn the_config_file_sets_options_the_environment_and_command_line_override() {
    let tmp = tempfile::tempdir().unwrap();
    let data = seed(tmp.path());
    let text = format!("data_dir = \"{}\"\n[serve]\n", data.display());
    let file = tmp.path().join("c.toml");
    std::fs::write(&file, text + "\n[http]\naddr = \"127.0.0.1:0\"\n").unwrap();
    // data_dir and the address from the file alone.
    let mut cmd = bin();
    cmd.arg("--config").arg(&file).arg("serve");
    let server = Server::spawn(&mut cmd, "over HTTP at ");
    assert!(server.log().contains(&data.display().to_string()), "{}", server.log());
    drop(server);
    // The environment beats the file.
    let mut cmd = bin();
    cmd.arg("--config").arg(&file).env("USAGE_LEDGER_DATA_DIR", tmp.path().join("nowhere")).arg("serve");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no ledger at"), "{out:?}");
    // An unknown option in the file is one line and exit 2.
    std::fs::write(&file, "[run]\nbatch_size = 3\n").unwrap();
    let out = bin().arg("--config").arg(&file).arg("serve").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.trim().lines().count() == 1 && stderr.contains("[run] batch_size: no such option"), "{stderr}");
    // The documented example loads (its one token is valid; no ledger there is exit 1).
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/usage-ledger.example.toml");
    let run =
        ul(&tmp.path().join("empty"), &["--config", example.to_str().unwrap(), "serve", "--http-addr", "127.0.0.1:0"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("no ledger at"), "{}", run.stderr);
    // A token without its team is refused at start.
    std::fs::write(&file, "[[http.tokens]]\nsha256 = \"00\"\nrole = \"team\"\n").unwrap();
    let run = ul(&data, &["--config", file.to_str().unwrap(), "serve", "--http-addr", "127.0.0.1:0"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("http.tokens[0]"), "{}", run.stderr);
    // One secret twice (hex in another case), whatever the roles: refused at start, one line.
    let hash = sha(FINANCE_TOKEN);
    let twice = format!(
        "[[http.tokens]]\nsha256 = \"{hash}\"\nrole = \"finance\"\n[[http.tokens]]\nsha256 = \"{}\"\nrole = \"admin\"\n",
        hash.to_uppercase()
    );
    std::fs::write(&file, twice).unwrap();
    let run = ul(&data, &["--config", file.to_str().unwrap(), "serve", "--http-addr", "127.0.0.1:0"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("http.tokens[1]: the same secret (sha256) as http.tokens[0]"), "{}", run.stderr);
}

/// Runs headless Chromium on `url` until the page has loaded its data, and returns the
/// DOM; saves a screenshot to `png`.
pub fn chromium(url: &str, png: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let common = |cmd: &mut std::process::Command| {
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=8000",
            "--window-size=1280,1500",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    };
    let mut dump = std::process::Command::new("chromium");
    common(&mut dump);
    let out = dump.arg("--dump-dom").arg(url).output().expect("chromium runs (.ci/run installs Debian's chromium)");
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    let mut shot = std::process::Command::new("chromium");
    common(&mut shot);
    let status = shot.arg(format!("--screenshot={}", png.display())).arg(url).output().unwrap();
    assert!(status.status.success() && png.is_file(), "screenshot: {}", String::from_utf8_lossy(&status.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element carrying `data-k="key"`.
fn shown(dom: &str, key: &str) -> Option<String> {
    let at = dom.find(&format!("data-k=\"{key}\""))?;
    let rest = &dom[at..];
    let text = &rest[rest.find('>')? + 1..];
    Some(text[..text.find('<')?].trim().to_string())
}

#[test]
fn the_dashboard_in_chromium_shows_the_figures_the_api_gives() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, server) = Server::seeded(tmp.path(), "");
    let link = json(&call("POST", &format!("{}/v1/teams/t1/portal-links", server.base), Some(ADMIN_TOKEN), &[], None));
    let png = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-team.png");
    let dom = chromium(link["url"].as_str().unwrap(), &png);
    assert!(dom.contains("data-loaded=\"1\"") || dom.contains("data-loaded=\"2\""), "the page loaded its data: {dom}");
    let balance = json(&get(&format!("{}/v1/teams/t1/balance", server.base), Some(TEAM_TOKEN)));
    let bucket = &balance["allowances"][0];
    for field in ["value", "consumed", "remaining"] {
        assert_eq!(shown(&dom, &format!("bucket.0.{field}")).as_deref(), bucket[field].as_str(), "{field}");
    }
    let cents: u64 = bucket["remaining"].as_str().unwrap().replace('.', "").parse().unwrap();
    let left = shown(&dom, "bucket.0.images_left.remove_background").unwrap();
    assert_eq!(left, (cents / 2).to_string(), "images left at $0.02");
    assert_eq!(shown(&dom, "bucket.0.images_left.image_editing").unwrap(), (cents / 10).to_string(), "at $0.10");
    let projected = &balance["forecast"]["allowances"][0]["projected_consumed"];
    assert_eq!(shown(&dom, "forecast.bucket.0.projected").as_deref(), projected.as_str());
    let march = json(&get(&format!("{}/v1/teams/t1/invoices/2026-03-01", server.base), Some(TEAM_TOKEN)));
    assert_eq!(shown(&dom, "invoice.2026-03-01.final.total").as_deref(), march["total"].as_str());
    assert!(shown(&dom, "verified.2026-03-01").unwrap().contains("matches"), "{dom}");
    assert!(dom.contains("data-k=\"usage-line\"") && dom.contains("data-k=\"alert\""), "chart and alerts drawn");
    // The finance view lists both teams' March totals.
    let link = json(&call("POST", &format!("{}/v1/portal-links", server.base), Some(ADMIN_TOKEN), &[], None));
    let url = format!("{}&period=2026-03", link["url"].as_str().unwrap());
    let dom = chromium(&url, &Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-finance.png"));
    let month = json(&get(&format!("{}/v1/invoices?period=2026-03", server.base), Some(FINANCE_TOKEN)));
    let mut cents = 0u64;
    for invoice in month.as_array().unwrap() {
        let (team, total) = (invoice["team_id"].as_str().unwrap(), invoice["total"].as_str().unwrap());
        assert_eq!(shown(&dom, &format!("total.{team}")).as_deref(), Some(total), "{team}: {dom}");
        cents += total.replace('.', "").parse::<u64>().unwrap();
    }
    assert_eq!(shown(&dom, "month-total").unwrap(), format!("{}.{:02}", cents / 100, cents % 100));
}

/// The sum of a metric's samples in Prometheus text (0 when absent).
pub(crate) fn sample_sum(text: &str, name: &str) -> i64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum()
}

#[test]
fn under_run_the_api_serves_the_live_ledgers_and_the_metrics_move() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = crate::kafka::Broker::start(tmp.path());
    let file = tmp.path().join("load.jsonl");
    ul_ok(
        tmp.path(),
        &["generate", "--teams", "20", "--events", "100000", "--seed", "7", "--out", file.to_str().unwrap()],
    );
    let events = std::fs::read_to_string(&file).unwrap().lines().count() as i64;
    let data = tmp.path().join("data");
    let mut cmd = bin();
    cmd.arg("--data-dir").arg(&data).arg("--config").arg(config(tmp.path(), ""));
    cmd.args(["run", "--brokers", &broker.address, "--http-addr", "127.0.0.1:0", "--partitions", "2"]);
    // Small batches (a flushed commit each) make catching up take a while (the aligner
    // lets a stream's held records go at once, so the load is large enough to take
    // seconds even so).
    cmd.args([
        "--batch-events-max",
        "20",
        "--batch-wait-ms",
        "50",
        "--kafka-property",
        "statistics.interval.ms=100",
        "--session-timeout-ms",
        "6000",
    ]);
    // The records are on the broker before the service starts: it starts behind.
    let produced = bin().args(["produce", "--brokers", &broker.address]).arg(&file).output().unwrap();
    assert!(produced.status.success(), "{}", String::from_utf8_lossy(&produced.stderr));
    let server = Server::spawn(&mut cmd, "HTTP API and dashboard on ");
    let (mut lags, mut records) = (Vec::new(), Vec::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        let text = get(&format!("{}/metrics", server.base), None).body;
        let (lag, consumed) =
            (sample_sum(&text, "usage_ledger_consumer_lag"), sample_sum(&text, "usage_ledger_records_total"));
        if lags.last() != Some(&lag) {
            lags.push(lag);
        }
        if records.last() != Some(&consumed) {
            records.push(consumed);
        }
        if consumed >= events && lag == 0 && get(&format!("{}/readyz", server.base), None).status == 200 {
            assert!(text.contains("usage_ledger_batch_seconds_count"), "{text}");
            assert!(sample_sum(&text, "usage_ledger_commit_seconds_count") > 0, "{text}");
            assert!(text.contains(r#"usage_ledger_published_by_kind_total{kind="alert"}"#), "{text}");
            assert!(sample_sum(&text, "usage_ledger_store_bytes") > 0, "{text}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never caught up: lag {lags:?}, records {records:?}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("metrics during the run: consumer lag {lags:?}; records {records:?}");
    assert!(records.len() >= 3, "the records counter moved: {records:?}");
    assert!(lags.iter().any(|l| *l > 0) && lags.last() == Some(&0), "the lag rose and fell back to 0: {lags:?}");
    // The live ledgers answer as an import of the same events does.
    let team = "team-0003";
    let live = get(&format!("{}/v1/teams/{team}/balance?at=2026-04-20T00:00:00Z", server.base), Some(FINANCE_TOKEN));
    assert_eq!(live.status, 200, "{}", live.body);
    drop(server);
    let imported = tmp.path().join("imported");
    let import = ul(&imported, &["import", file.to_str().unwrap()]);
    assert!(import.code == 0 || import.code == 2, "{}", import.stderr);
    assert_eq!(live.body.trim_end(), cli(&imported, &["balance", "--team", team, "--at", "2026-04-20T00:00:00Z"]));
}

#[test]
fn readyz_says_why_a_member_without_partitions_cannot_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = crate::kafka::Broker::start(tmp.path());
    let config = config(tmp.path(), "");
    // One partition, two members of one group: one owns it, the other nothing.
    let member = |name: &str| {
        let mut cmd = bin();
        cmd.arg("--data-dir").arg(tmp.path().join("data")).arg("--config").arg(&config);
        cmd.args(["run", "--brokers", &broker.address, "--http-addr", "127.0.0.1:0", "--partitions", "1"]);
        cmd.args(["--session-timeout-ms", "6000", "--takeover-wait-ms", "60000"]);
        let server = Server::spawn(&mut cmd, "HTTP API and dashboard on ");
        eprintln!("{name} at {}", server.base);
        server
    };
    let (first, second) = (member("first"), member("second"));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let replies = [get(&format!("{}/readyz", first.base), None), get(&format!("{}/readyz", second.base), None)];
        let mut statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
        statuses.sort();
        if statuses == [200, 503] {
            let idle = replies.iter().find(|r| r.status == 503).unwrap();
            assert!(json(idle)["error"].as_str().unwrap().contains("no partition"), "{}", idle.body);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never one ready and one not: {statuses:?}\n{}\n{}",
            first.log(),
            second.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One raw HTTP/1.1 request (no client normalises its path or rewrites its Host); the
/// whole response as text.
pub fn raw(base: &str, request: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn the_leaks_a_security_review_found_are_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = seed(tmp.path());
    // A team whose id a spreadsheet would evaluate, billed for March.
    let formula = tmp.path().join("formula.jsonl");
    let lines = [
        r#"{"accountEvent":{"eventId":"f-plan","teamId":"-2-3","occurredAt":"2026-03-01T00:00:00Z","planStarted":{"plan":"api_basic","bucketImages":"1000"}}}"#.to_string(),
        image("f-1", "-2-3", "2026-03-02T00:00:00Z", "API_REMOVE_BACKGROUND", 1),
    ];
    std::fs::write(&formula, lines.join("\n") + "\n").unwrap();
    ul_ok(&data, &["import", formula.to_str().unwrap()]);
    ul_ok(&data, &["close", "--until", "2026-04-02T00:00:00Z"]);
    let server = Server::serve(&data, &config(tmp.path(), ""), &[]);

    let csv = get(&format!("{}/v1/invoices?period=2026-03&format=csv", server.base), Some(FINANCE_TOKEN));
    let rows: Vec<&str> = csv.body.lines().filter(|r| r.contains("-2-3")).collect();
    assert!(!rows.is_empty(), "{}", csv.body);
    for row in rows {
        assert!(row.starts_with(r#""'-2-3","#), "a formula cell is neutralised: {row}");
    }

    // `..` as a team: refused, never rewritten into the finance-scope mint.
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}\r\n");
    let dots = raw(
        &server.base,
        &format!("POST /v1/teams/../portal-links HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"),
    );
    assert!(dots.starts_with("HTTP/1.1 400") && dots.contains("URL dot segment"), "{dots}");
    // A portal URL never carries a Host it was not configured with.
    let hostile = raw(
        &server.base,
        &format!("POST /v1/teams/t1/portal-links HTTP/1.1\r\nHost: \"><script>x</script>\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"),
    );
    assert!(hostile.starts_with("HTTP/1.1 400") && !hostile.contains("<script>"), "{hostile}");

    // The page: no inline script, never framed, no referrer carrying its link.
    let link = json(&call("POST", &format!("{}/v1/teams/t1/portal-links", server.base), Some(ADMIN_TOKEN), &[], None));
    let path = link["url"].as_str().unwrap().split_once("//").unwrap().1.split_once('/').unwrap().1;
    let page = raw(&server.base, &format!("GET /{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    let head = page.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    let policy = head.lines().find(|l| l.starts_with("content-security-policy:")).expect("a CSP");
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert!(head.contains("referrer-policy: no-referrer"), "{head}");
    let body = page.split_once("\r\n\r\n").unwrap().1;
    assert!(body.contains(r#"<script src="/dashboard.js"></script>"#), "{body}");
    assert!(!body.contains("<script>") && !body.contains("<style>"), "nothing inline: {body}");
    for (asset, kind) in [("/dashboard.js", "text/javascript"), ("/dashboard.css", "text/css")] {
        let reply = get(&format!("{}{asset}", server.base), None);
        assert_eq!(reply.status, 200, "{asset}");
        assert!(reply.content_type.starts_with(kind), "{asset}: {}", reply.content_type);
    }

    drop(server);
    // With public_url set, the Host header plays no part.
    let configured = Server::serve(&data, &config(tmp.path(), "public_url = \"https://billing.example.com/\""), &[]);
    let minted = raw(
        &configured.base,
        &format!("POST /v1/teams/t1/portal-links HTTP/1.1\r\nHost: evil.example\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"),
    );
    assert!(minted.contains(r#""url":"https://billing.example.com/teams/t1?link="#), "{minted}");
}
