//! librdkafka properties beyond the defaults (TLS, SASL, timeouts, sizes), given once at
//! start from the command line and the environment and applied to every client this
//! process makes. Properties the ledger's guarantees rest on cannot be overridden.
use std::sync::OnceLock;

use rdkafka::config::ClientConfig;

use crate::{Error, Result};

/// Extra properties: for every client, and for producers only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub all: Vec<(String, String)>,
    pub producer: Vec<(String, String)>,
}

/// What the delivery contract rests on: offsets stored only after the flush, the
/// group's co-partitioning, every replica's acknowledgement.
const PROTECTED: [&str; 7] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "partition.assignment.strategy",
    "acks",
    "isolation.level",
];

static PROPERTIES: OnceLock<Properties> = OnceLock::new();

/// Sets the properties for the rest of the process (once, before any client is made).
pub fn configure(properties: Properties) -> Result<()> {
    let protected = properties.all.iter().chain(&properties.producer).find(|(k, _)| PROTECTED.contains(&k.as_str()));
    if let Some((key, _)) = protected {
        return Err(Error::Config(format!("{key} is set by the ledger and cannot be overridden")));
    }
    PROPERTIES.set(properties).map_err(|_| Error::Config("properties were already configured".into()))
}

/// Parses `KEY=VALUE`.
pub fn property(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// `PREFIX_SECURITY_PROTOCOL=SSL` in the environment → `security.protocol=SSL`.
pub fn from_env(prefix: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::env::vars()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|rest| (rest.to_ascii_lowercase().replace('_', "."), v)))
        .collect();
    out.sort();
    out
}

/// A client configuration: the ledger's settings, then the configured properties.
pub(crate) fn client(brokers: &str, settings: &[(&str, String)], producer: bool) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    let extra = PROPERTIES.get().cloned().unwrap_or_default();
    let extra = extra.all.iter().chain(if producer { extra.producer.as_slice() } else { &[] });
    for (k, v) in settings.iter().map(|(k, v)| (*k, v.as_str())).chain(extra.map(|(k, v)| (k.as_str(), v.as_str()))) {
        config.set(k, v);
    }
    config
}
