//! The HTTP API and dashboard (paths in `../shared/spec/http.md`, described by
//! `openapi.json`): served by `run --http-addr` from the ledgers the service holds, and
//! by `serve` over a data dir without Kafka. Handlers read through `Ledgers` and render
//! with `documents`, the renderer the command line prints with.
mod auth;
mod dashboard;
mod routes;
mod server;
mod views;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use ledger_store::Store;

pub use auth::TokenConfig;

/// HTTP options shared by `run` and `serve` (`[http]` in the config file).
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Serve the HTTP API and dashboard at this address (`serve`: 127.0.0.1:8080).
    #[arg(long, env = "USAGE_LEDGER_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// The URL clients reach this server at, for portal links (default: from the
    /// request's Host header).
    #[arg(long, env = "USAGE_LEDGER_HTTP_PUBLIC_URL")]
    pub http_public_url: Option<String>,
    /// The key portal links are signed with (≥ 16 characters); without it a random key
    /// is drawn at start and links die with the process.
    #[arg(long, env = "USAGE_LEDGER_HTTP_PORTAL_SECRET", hide_env_values = true)]
    pub http_portal_secret: Option<String>,
    /// How long a portal link opens its dashboard.
    #[arg(long, env = "USAGE_LEDGER_HTTP_PORTAL_LINK_TTL_SECS", default_value_t = 3600)]
    pub http_portal_link_ttl_secs: u32,
    /// Largest request body accepted (413 past it).
    #[arg(long, env = "USAGE_LEDGER_HTTP_BODY_MAX_BYTES", default_value_t = 16 * 1024)]
    pub http_body_max_bytes: usize,
    /// API requests per second per credential, after authentication (429 with
    /// Retry-After past the burst); 0 = no limit. `/healthz`, `/readyz`, `/metrics`,
    /// `/openapi.json` and the dashboard's assets are never limited.
    #[arg(long, env = "USAGE_LEDGER_HTTP_REQUESTS_PER_SEC", default_value_t = 20)]
    pub http_requests_per_sec: u32,
    #[arg(long, env = "USAGE_LEDGER_HTTP_REQUESTS_BURST", default_value_t = 40)]
    pub http_requests_burst: u32,
    /// API requests per second per client address, before authentication (the cheap
    /// limit: no hash computed for a flood); 0 = no limit.
    #[arg(long, env = "USAGE_LEDGER_HTTP_ADDRESS_REQUESTS_PER_SEC", default_value_t = 100)]
    pub http_address_requests_per_sec: u32,
    #[arg(long, env = "USAGE_LEDGER_HTTP_ADDRESS_REQUESTS_BURST", default_value_t = 200)]
    pub http_address_requests_burst: u32,
    /// Reads of the ledgers running at once (each on a thread of its own); past it 503
    /// with Retry-After. Default: twice the cores.
    #[arg(long, env = "USAGE_LEDGER_HTTP_READS_MAX")]
    pub http_reads_max: Option<usize>,
    /// Connections kept open (at most half the open-file limit); past it the oldest with
    /// no request in progress is closed. A connection that just arrived survives
    /// `connections_max / arrival rate` of a flood of idle ones (8,192 at 20,000/s:
    /// 0.4 s), time enough for a health check's request to be read.
    #[arg(long, env = "USAGE_LEDGER_HTTP_CONNECTIONS_MAX", default_value_t = 8192)]
    pub http_connections_max: usize,
    /// A connection with no request in progress this long is closed: idle between
    /// requests, or still sending its request's head.
    #[arg(long, env = "USAGE_LEDGER_HTTP_IDLE_TIMEOUT_SECS", default_value_t = 10)]
    pub http_idle_timeout_secs: u32,
    /// A request still being handled after this long is answered 503.
    #[arg(long, env = "USAGE_LEDGER_HTTP_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub http_request_timeout_secs: u32,
    /// Usage records the team states kept for balances, usage and drafts may hold in all
    /// (~150 bytes each; the documents rendered from them count 150 bytes a record); past
    /// it the least recently read are dropped (and folded again from their checkpoint
    /// when next read).
    #[arg(long, env = "USAGE_LEDGER_HTTP_CACHE_RECORDS", default_value_t = 2_000_000)]
    pub http_cache_records: usize,
    /// Team states kept at most.
    #[arg(long, env = "USAGE_LEDGER_HTTP_CACHE_TEAMS", default_value_t = 10_000)]
    pub http_cache_teams: usize,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub http: HttpArgs,
}

/// Where the API reads from and acts on: the service's ledgers, or a data dir's.
pub trait Ledgers: Send + Sync + 'static {
    /// The stores held now (sled handles: cloning is cheap).
    fn stores(&self) -> anyhow::Result<Vec<Store>>;
    /// Why the API cannot serve yet, if it cannot.
    fn readiness(&self) -> Result<(), String>;
    /// Closes every cycle due by `until`: (invoices, entries appended).
    fn close(&self, until: DateTime<Utc>) -> anyhow::Result<(u64, u64)>;
}

/// The shared state of the handlers.
pub struct Api {
    pub ledgers: Arc<dyn Ledgers>,
    pub metrics: Arc<crate::metrics::Metrics>,
    auth: auth::Auth,
    /// Before authentication, per client address.
    address_limiter: auth::RateLimiter<std::net::IpAddr>,
    /// After authentication, per credential (its SHA-256).
    credential_limiter: auth::RateLimiter<[u8; 32]>,
    /// Permits for reads of the ledgers running at once.
    readers: Arc<tokio::sync::Semaphore>,
    /// Refusal log lines, rate-limited.
    refusal_log: Mutex<auth::LogLimiter>,
    /// The team states balances, usage and drafts are rendered from.
    views: views::Views,
    public_url: Option<String>,
    body_max_bytes: usize,
    future_skew: chrono::Duration,
}

/// Serves the API at `args.http_addr` (or `default_addr`); returns the bound address.
pub fn spawn(
    args: &HttpArgs,
    default_addr: &str,
    ledgers: Arc<dyn Ledgers>,
    metrics: Arc<crate::metrics::Metrics>,
    future_skew: chrono::Duration,
) -> anyhow::Result<SocketAddr> {
    let addr = args.http_addr.as_deref().unwrap_or(default_addr);
    let config = crate::config::loaded();
    let auth = auth::Auth::new(
        &config.http.tokens,
        args.http_portal_secret.as_deref(),
        chrono::Duration::seconds(i64::from(args.http_portal_link_ttl_secs)),
    )?;
    if config.http.tokens.is_empty() {
        tracing::warn!("No API tokens configured ([[http.tokens]] in --config): every /v1/ path answers 401.");
    }
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let api = Api {
        ledgers,
        metrics,
        auth,
        address_limiter: auth::RateLimiter::new(args.http_address_requests_per_sec, args.http_address_requests_burst),
        credential_limiter: auth::RateLimiter::new(args.http_requests_per_sec, args.http_requests_burst),
        readers: Arc::new(tokio::sync::Semaphore::new(args.http_reads_max.unwrap_or(2 * cores).max(1))),
        refusal_log: Mutex::new(auth::LogLimiter::new()),
        views: views::Views::new(args.http_cache_records, args.http_cache_teams),
        public_url: args.http_public_url.clone(),
        body_max_bytes: args.http_body_max_bytes,
        future_skew,
    };
    let limits = server::Limits {
        connections_max: args.http_connections_max.min(raise_file_limit() / 2),
        idle: std::time::Duration::from_secs(u64::from(args.http_idle_timeout_secs.max(1))),
        request: std::time::Duration::from_secs(u64::from(args.http_request_timeout_secs.max(1))),
    };
    serve_router(addr, routes::router(Arc::new(api)), limits)
}

/// Serves only `GET /metrics` at `addr` (`run --metrics-addr`), the same text as the API's.
pub fn spawn_metrics(
    addr: &str,
    ledgers: Arc<dyn Ledgers>,
    metrics: Arc<crate::metrics::Metrics>,
) -> anyhow::Result<SocketAddr> {
    let limits = server::Limits {
        connections_max: 64,
        idle: std::time::Duration::from_secs(10),
        request: std::time::Duration::from_secs(30),
    };
    serve_router(addr, routes::metrics_router(ledgers, metrics), limits)
}

/// Binds `addr` now, so a taken port is an error at start, and serves `router` from a
/// thread of its own. Returns the bound address.
fn serve_router(addr: &str, router: axum::Router, limits: server::Limits) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs as _;
    let at = addr
        .to_socket_addrs()
        .with_context(|| format!("HTTP listener on {addr}"))?
        .next()
        .with_context(|| format!("HTTP listener on {addr}: no address"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("http-worker")
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let listener = runtime.block_on(async {
        let socket = if at.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(at)?;
        // A deep queue: a burst of connections waits to be accepted instead of being
        // dropped (the kernel caps it at net.core.somaxconn).
        socket.listen(4096)
    });
    let listener = listener.with_context(|| format!("HTTP listener on {addr}"))?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("http".into()).spawn(move || {
        runtime.block_on(server::serve(listener, router, limits));
    })?;
    Ok(bound)
}

/// Raises this process's open-file limit to its hard limit, so the connection cap, not
/// the descriptors, bounds what clients hold; returns the limit now in force.
fn raise_file_limit() -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let raise = match (limit.current, limit.maximum) {
        (Some(current), Some(maximum)) => current < maximum,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if raise && setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum }).is_ok() {
        return limit.maximum.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    }
    limit.current.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// `serve`: the API over a data dir, no Kafka, until interrupted. The stores are held
/// (sled's lock) for the process's life; `close` appends through a ledger folded on demand.
pub fn serve_dir(dir: &Path, args: ServeArgs, future_skew: chrono::Duration) -> anyhow::Result<ExitCode> {
    let (stores, read_only) = crate::commands::open_existing_at(dir)?;
    let ledgers = Arc::new(Served { stores, read_only, closing: Mutex::new(()) });
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let bound = spawn(&args.http, "127.0.0.1:8080", ledgers, metrics, future_skew)?;
    eprintln!("usage-ledger: serving {} over HTTP at http://{bound}/ (no Kafka)", dir.display());
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("installing the signal handler")?;
    let _ = rx.recv();
    eprintln!("usage-ledger: stopped serving");
    Ok(ExitCode::SUCCESS)
}

/// A data dir's stores, served without Kafka.
struct Served {
    stores: Vec<Store>,
    /// A private copy of a read-only data dir: nothing may be appended to it.
    read_only: bool,
    /// One close at a time.
    closing: Mutex<()>,
}

impl Ledgers for Served {
    fn stores(&self) -> anyhow::Result<Vec<Store>> {
        Ok(self.stores.clone())
    }

    fn readiness(&self) -> Result<(), String> {
        Ok(())
    }

    fn close(&self, until: DateTime<Utc>) -> anyhow::Result<(u64, u64)> {
        if self.read_only {
            anyhow::bail!("this server reads a read-only data dir: close appends to the ledger");
        }
        let _one = self.closing.lock().expect("not poisoned");
        crate::commands::close_stores(&self.stores, until)
    }
}
