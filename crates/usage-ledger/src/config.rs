//! The config file (`--config FILE` or `USAGE_LEDGER_CONFIG`, TOML; every key is in
//! `deploy/usage-ledger.example.toml`). Each option it gives becomes the default of the
//! command-line option of the same name, so the order is: command line, then
//! environment, then file, then the built-in default. API tokens live only here.
//!
//! Keys: top-level ones are the global options (`data_dir`, `future_skew_secs`);
//! `[run]` and `[serve]` hold their command's options by long name (`batch_events_max`);
//! `[http]` the HTTP options without their `http_` prefix (`addr`, `public_url`) and the
//! `[[http.tokens]]`; `[kafka]` and `[producer]` librdkafka properties by their own names.
use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{bail, Context as _};
use serde::Deserialize;

use crate::http::TokenConfig;

#[derive(Debug, Default, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub http: HttpSection,
}

#[derive(Debug, Default, Deserialize)]
pub struct HttpSection {
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

static LOADED: OnceLock<Config> = OnceLock::new();

/// The loaded config (empty when no file was given).
pub fn loaded() -> &'static Config {
    LOADED.get_or_init(Config::default)
}

/// Reads the config file named on the command line or in the environment, if any, and
/// turns its options into environment defaults for `cli`'s arguments. Runs before the
/// command line is parsed (and before any thread starts).
pub fn load(cli: &clap::Command) -> anyhow::Result<()> {
    let Some(path) = config_path() else { return Ok(()) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("--config {}", path.display()))?;
    let table: toml::Table = text.parse().with_context(|| format!("--config {}", path.display()))?;
    for (name, value) in options(cli, &table).with_context(|| format!("--config {}", path.display()))? {
        if std::env::var_os(&name).is_none() {
            std::env::set_var(name, value);
        }
    }
    let config: Config = table.try_into().with_context(|| format!("--config {}", path.display()))?;
    let _ = LOADED.set(config);
    Ok(())
}

fn config_path() -> Option<PathBuf> {
    let args: Vec<String> = std::env::args().collect();
    for (i, a) in args.iter().enumerate() {
        if a == "--config" {
            return args.get(i + 1).map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("USAGE_LEDGER_CONFIG").map(PathBuf::from)
}

/// (environment variable, value) for every option in the file.
fn options(cli: &clap::Command, table: &toml::Table) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (key, value) in table {
        match (key.as_str(), value) {
            ("run" | "serve", toml::Value::Table(t)) => {
                let command = cli.find_subcommand(key).expect("run and serve exist");
                for (k, v) in t {
                    out.push((env_of(command, cli, &format!("[{key}] {k}"), k)?, scalar(k, v)?));
                }
            }
            ("http", toml::Value::Table(t)) => {
                let run = cli.find_subcommand("run").expect("run exists");
                for (k, v) in t.iter().filter(|(k, _)| *k != "tokens") {
                    out.push((env_of(run, cli, &format!("[http] {k}"), &format!("http_{k}"))?, scalar(k, v)?));
                }
            }
            ("kafka" | "producer", toml::Value::Table(t)) => {
                for (k, v) in t {
                    let name = format!("USAGE_LEDGER_{}_{}", key.to_uppercase(), k.to_uppercase().replace('.', "_"));
                    out.push((name, scalar(k, v)?));
                }
            }
            (_, toml::Value::Table(_)) => bail!("unknown section [{key}]"),
            _ => out.push((env_of(cli, cli, key, key)?, scalar(key, value)?)),
        }
    }
    Ok(out)
}

/// The environment variable of option `name` (`batch_events_max`) of `command` or a
/// global one.
fn env_of(command: &clap::Command, cli: &clap::Command, what: &str, name: &str) -> anyhow::Result<String> {
    let long = name.replace('_', "-");
    let arg = command
        .get_arguments()
        .chain(cli.get_arguments())
        .find(|a| a.get_long() == Some(long.as_str()))
        .with_context(|| format!("{what}: no such option"))?;
    let env = arg.get_env().with_context(|| format!("{what}: not settable from the config file"))?;
    Ok(env.to_string_lossy().into_owned())
}

fn scalar(key: &str, value: &toml::Value) -> anyhow::Result<String> {
    Ok(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Float(f) => f.to_string(),
        _ => bail!("{key}: a string, number or boolean"),
    })
}
