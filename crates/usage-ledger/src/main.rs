//! `usage-ledger`: the command line. Parses arguments, sets up tracing, wires the
//! store to the core, and turns every failure into one line and a non-zero exit.
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc: glibc malloc's arena locks were the top cost under sled's allocation
/// churn with a parsing thread beside the writer (measured with perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod advise;
mod broker;
mod commands;
mod config;
mod demo;
mod documents;
mod generate;
mod http;
mod import;
mod metrics;
mod private;
mod produce;
mod reading;
mod service;
mod watchdog;

/// The writers' (`import`, `run`) share of the event-id index's memory.
#[derive(Debug, Clone, clap::Args)]
pub struct IndexMemory {
    /// Events the event-id index of each ledger keeps in memory before it moves them to
    /// sorted runs on disk (`index/` in the ledger's directory): about 14 bytes of memory
    /// each.
    #[arg(
        long = "index-memory-events",
        id = "index_memory_events",
        env = "USAGE_LEDGER_INDEX_MEMORY_EVENTS",
        default_value_t = ledger_store::INDEX_MEMORY_EVENTS,
        value_parser = clap::value_parser!(u64).range(1024..=1 << 32)
    )]
    pub events: u64,
}

#[derive(Debug, Parser)]
#[command(
    name = "usage-ledger",
    version,
    about = "Event-sourced usage ledger: buckets, alerts and invoices from an immutable per-team ledger"
)]
struct Cli {
    /// A TOML config file giving defaults for any option (see
    /// deploy/usage-ledger.example.toml) and the API tokens.
    #[arg(long, global = true, env = "USAGE_LEDGER_CONFIG")]
    config: Option<PathBuf>,
    /// Where the ledger lives.
    #[arg(long, global = true, env = "USAGE_LEDGER_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Log lines as text or as JSON objects (one per line, on stderr).
    #[arg(long, global = true, env = "USAGE_LEDGER_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// How far past the wall clock an event may be dated (`run`, `import`) and a close
    /// may reach (`close`), in seconds.
    #[arg(long, global = true, env = "USAGE_LEDGER_FUTURE_SKEW_SECS", default_value_t = 86_400)]
    future_skew_secs: u32,
    /// A librdkafka property for every Kafka client (TLS, SASL, timeouts...), `KEY=VALUE`,
    /// repeatable; also from the environment as `USAGE_LEDGER_KAFKA_SECURITY_PROTOCOL=SSL`.
    #[arg(long, global = true, value_parser = ledger_kafka::property)]
    kafka_property: Vec<(String, String)>,
    /// A librdkafka property for producers only (`USAGE_LEDGER_PRODUCER_...` in the
    /// environment).
    #[arg(long, global = true, value_parser = ledger_kafka::property)]
    producer_property: Vec<(String, String)>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Csv,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AdviceFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The service: consume the input topics, append, publish alerts, invoices and dead
    /// letters. With no brokers configured it starts an embedded broker and says where.
    Run(service::RunArgs),
    /// Send a JSONL file to the input topics as protobuf, keyed by team.
    Produce {
        #[arg(long, env = "USAGE_LEDGER_BROKERS")]
        brokers: String,
        file: PathBuf,
    },
    /// Append events from a JSONL file (`-` = stdin) exactly as the consumer would.
    Import {
        file: PathBuf,
        /// Events per atomic, flushed batch. Larger batches write fewer, larger blocks
        /// (one per team a batch touches) and flush less often: a back-fill of many teams
        /// goes faster in large batches.
        #[arg(long, default_value_t = 65_536)]
        batch_events_max: usize,
        /// Print `ack N` on stdout once every line up to N is durable (for tooling).
        #[arg(long)]
        report_acks: bool,
        #[command(flatten)]
        index: IndexMemory,
    },
    /// Close every cycle whose end + grace ≤ the instant.
    Close {
        #[arg(long)]
        until: DateTime<Utc>,
        /// Close past now + the future skew (closing is irreversible).
        #[arg(long)]
        allow_future: bool,
    },
    /// The team's invoices, oldest first; with `--all --period YYYY-MM`, every team's
    /// final invoices whose period starts in that month (the finance export).
    Invoices {
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        team: Option<String>,
        #[arg(long, requires = "period")]
        all: bool,
        /// The month of `--all`, `YYYY-MM`.
        #[arg(long, requires = "all", value_parser = month)]
        period: Option<String>,
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
        /// Also show the open cycle's invoice as it stands (status "draft").
        #[arg(long, conflicts_with = "all")]
        draft: bool,
    },
    /// Recompute one issued invoice from the team's ledger entries alone (walking the
    /// hash chain to the invoice's head) and say whether it matches; exit 1 if not.
    VerifyInvoice {
        #[arg(long)]
        team: String,
        /// The invoice's period start date, `YYYY-MM-DD`.
        #[arg(long)]
        period: chrono::NaiveDate,
    },
    /// Serve the HTTP API and dashboard over the data dir, without Kafka.
    Serve(http::ServeArgs),
    /// Allowances, consumed and remaining in the cycle at an instant (default: the team's clock).
    Balance {
        #[arg(long)]
        team: String,
        #[arg(long)]
        at: Option<DateTime<Utc>>,
    },
    /// Alerts raised for the team, oldest first (JSON array).
    Alerts {
        #[arg(long)]
        team: String,
    },
    /// What the team's last closed cycles would have cost under every plan and bucket
    /// size it could buy, cheapest first (the team's real usage, replayed).
    Advise {
        #[arg(long)]
        team: String,
        /// How many of the last closed cycles to replay.
        #[arg(long, default_value_t = 3)]
        months: u32,
        #[arg(long, value_enum, default_value = "text")]
        format: AdviceFormat,
    },
    /// Outbox messages waiting to be published, and those the broker refused for good.
    Outbox,
    /// Rebuild every projection from the ledger alone and print a digest of all invoices.
    Replay,
    /// Check every team's hash chain, head and the event-id index.
    Verify,
    /// Play a month of sample traffic for three teams, printing alerts, balances and invoices.
    Demo,
    /// Write a deterministic synthetic JSONL workload (load tests, benchmarks).
    Generate {
        #[arg(long, default_value_t = 1000)]
        teams: u32,
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// `uniform`: every team alike (the tests' load); `realistic`: the benchmark's
        /// (Zipf-skewed teams, ~1 % duplicates, ~0.1 % refunds, plan changes).
        #[arg(long, value_enum, default_value_t = Profile::Uniform)]
        profile: Profile,
        /// Months the events spread over, from April 2026 (all but the last close).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1200))]
        months: u32,
        /// Output file (`-` = stdout).
        #[arg(long, default_value = "-")]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Profile {
    Uniform,
    Realistic,
}

/// A panic is a fault of the ledger or of a damaged store (sled panics on some damaged
/// files instead of returning an error): one line says which, nothing was acknowledged
/// after the last flush, and the exit code is 101. `RUST_BACKTRACE=1` adds the trace.
fn one_line_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let whose = if at.contains("/sled-") {
            "the store is damaged (sled failed reading it); restore it from a copy"
        } else {
            "a fault of the ledger; nothing after the last flushed batch was acknowledged"
        };
        eprintln!("error: stopped on a panic: {} at {at}: {whose}", message.replace('\n', " "));
        if std::env::var_os("RUST_BACKTRACE").is_some() {
            default(info);
        }
    }));
}

fn main() -> ExitCode {
    one_line_panics();
    private::restrict_new_files();
    if let Err(e) = config::load(&<Cli as clap::CommandFactory>::command()) {
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("USAGE_LEDGER_LOG").unwrap_or_else(|_| "warn,sled=off".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let result = run(cli);
    private::remove_copies();
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(1)
        }
    }
}

/// Writes to stdout; a closed pipe (`usage-ledger invoices ... | head`) ends the command quietly.
pub fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Creates `dir` (and its missing parents) readable by this user only: a ledger holds
/// every team's usage and money.
pub fn private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))
}

/// A month, `YYYY-MM`.
fn month(s: &str) -> Result<String, String> {
    chrono::NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d")
        .ok()
        .filter(|_| s.len() == 7)
        .map(|_| s.to_string())
        .ok_or_else(|| format!("{s:?} is not a month (YYYY-MM)"))
}

/// The instants an event may be dated, with "now" read here, at the edge.
pub fn window(future_skew: chrono::Duration) -> ledger_proto::Window {
    let first = ledger_core::Catalog::builtin().versions[0].effective_from;
    ledger_proto::Window::new(first, Utc::now(), future_skew)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let dir = cli.data_dir;
    if !matches!(cli.command, Command::Produce { .. } | Command::Generate { .. }) {
        private::check_mode(&dir);
    }
    let mut all = ledger_kafka::from_env("USAGE_LEDGER_KAFKA_");
    all.extend(cli.kafka_property);
    let mut producer = ledger_kafka::from_env("USAGE_LEDGER_PRODUCER_");
    producer.extend(cli.producer_property);
    ledger_kafka::configure(ledger_kafka::Properties { all, producer })?;
    // Commands that only read the store are watched whole; the others (close, advise,
    // import, run) where they read, not while they compute or write.
    let _watch = matches!(
        cli.command,
        Command::Invoices { .. }
            | Command::Balance { .. }
            | Command::Alerts { .. }
            | Command::VerifyInvoice { .. }
            | Command::Outbox
            | Command::Replay
            | Command::Verify
    )
    .then(|| watchdog::Watchdog::arm("reading the ledger", &dir));
    let skew = chrono::Duration::seconds(i64::from(cli.future_skew_secs));
    match cli.command {
        Command::Run(args) => service::run(&dir, args, skew),
        Command::Produce { brokers, file } => produce::produce(&brokers, &file),
        Command::Import { file, batch_events_max, report_acks, index } => {
            import::run(&dir, &file, batch_events_max, report_acks, skew, index.events)
        }
        Command::Close { until, allow_future } => {
            commands::close_allowed(until, skew, allow_future, "--allow-future")?;
            commands::close(&dir, until)
        }
        Command::Invoices { team: Some(team), format, draft, .. } => {
            commands::invoices(&dir, &team, matches!(format, Format::Csv), draft)
        }
        Command::Invoices { team: None, period, format, .. } => {
            commands::month_invoices(&dir, period.as_deref().unwrap_or_default(), matches!(format, Format::Csv))
        }
        Command::VerifyInvoice { team, period } => commands::verify_invoice(&dir, &team, period),
        Command::Serve(args) => http::serve_dir(&dir, args, skew),
        Command::Balance { team, at } => commands::balance(&dir, &team, at),
        Command::Alerts { team } => commands::alerts(&dir, &team),
        Command::Advise { team, months, format } => {
            advise::run(&dir, &team, months, matches!(format, AdviceFormat::Json))
        }
        Command::Outbox => commands::outbox(&dir),
        Command::Replay => commands::replay(&dir),
        Command::Verify => commands::verify(&dir),
        Command::Demo => demo::run(&dir),
        Command::Generate { teams, events, seed, profile: Profile::Uniform, months, out } => {
            generate::run(teams, events, seed, months, &out)
        }
        Command::Generate { teams, events, seed, profile: Profile::Realistic, months, out } => {
            generate::realistic(teams, events, seed, months, &out)
        }
    }
}
