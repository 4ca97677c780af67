//! Who may call the API: bearer tokens from the config file (kept as SHA-256, never in
//! clear), signed team-scoped portal links that expire, and a request rate per client.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use ledger_core::TeamId;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// One configured token: `[[http.tokens]]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// SHA-256 of the token, hex.
    pub sha256: String,
    pub role: Role,
    /// The team a `team` token reads.
    pub team: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Team,
    Finance,
    Admin,
}

/// Who a request comes from, once its credential checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Reads one team (a team token or a team's portal link).
    Team(TeamId),
    /// Reads every team.
    Finance,
    /// Reads every team and may act (close, mint portal links).
    Admin,
}

impl Principal {
    pub fn reads(&self, team: &str) -> bool {
        match self {
            Principal::Team(own) => own.as_str() == team,
            Principal::Finance | Principal::Admin => true,
        }
    }

    pub fn reads_all(&self) -> bool {
        matches!(self, Principal::Finance | Principal::Admin)
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Admin)
    }
}

/// What a portal link opens: one team's dashboard, or the finance view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Team(TeamId),
    Finance,
}

/// Portal links: `pl1~EXPIRES~SIGNATURE~SCOPE`, the signature an HMAC-SHA256 over
/// `pl1~EXPIRES~SCOPE` with the server's secret; SCOPE is a team id or `*` (finance).
const LINK_PREFIX: &str = "pl1~";

pub struct Auth {
    tokens: HashMap<[u8; 32], Principal>,
    secret: Vec<u8>,
    pub link_ttl: chrono::Duration,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("tokens", &self.tokens.len()).finish_non_exhaustive()
    }
}

impl Auth {
    /// `secret`: the portal links' signing key; without one a random key is drawn, and
    /// links stop working when the process restarts.
    pub fn new(tokens: &[TokenConfig], secret: Option<&str>, link_ttl: chrono::Duration) -> anyhow::Result<Auth> {
        let mut by_hash: HashMap<[u8; 32], (usize, Principal)> = HashMap::new();
        for (n, t) in tokens.iter().enumerate() {
            let what = || format!("http.tokens[{n}]");
            let hash: [u8; 32] = hex::decode(t.sha256.trim())
                .ok()
                .and_then(|h| h.try_into().ok())
                .with_context(|| format!("{}: sha256 must be 64 hex digits", what()))?;
            let principal = match (t.role, &t.team) {
                (Role::Team, Some(team)) => {
                    Principal::Team(ledger_proto::new_team(team.clone()).with_context(|| format!("{}: team", what()))?)
                }
                (Role::Team, None) => bail!("{}: a team token names its team", what()),
                (_, Some(_)) => bail!("{}: only a team token names a team", what()),
                (Role::Finance, None) => Principal::Finance,
                (Role::Admin, None) => Principal::Admin,
            };
            // Two entries with one secret (hex in another case, say) would leave the
            // role to the order of the file: refused, whatever the roles.
            if let Some((earlier, _)) = by_hash.insert(hash, (n, principal)) {
                bail!("{}: the same secret (sha256) as http.tokens[{earlier}]; every token needs its own", what());
            }
        }
        let tokens = by_hash.into_iter().map(|(hash, (_, principal))| (hash, principal)).collect();
        let secret = match secret {
            Some(s) if s.len() >= 16 => s.as_bytes().to_vec(),
            Some(_) => bail!("http.portal_secret: at least 16 characters"),
            None => random_key()?,
        };
        Ok(Auth { tokens, secret, link_ttl })
    }

    /// The principal a bearer credential (a token or a portal link) stands for.
    pub fn principal(&self, credential: &str, now: DateTime<Utc>) -> Option<Principal> {
        if let Some(link) = credential.strip_prefix(LINK_PREFIX) {
            return match self.check_link(link, now)? {
                Scope::Team(team) => Some(Principal::Team(team)),
                Scope::Finance => Some(Principal::Finance),
            };
        }
        let hash: [u8; 32] = Sha256::digest(credential.as_bytes()).into();
        self.tokens.get(&hash).cloned()
    }

    /// A link credential for `scope`, valid until the returned instant.
    pub fn mint(&self, scope: &Scope, now: DateTime<Utc>) -> (String, DateTime<Utc>) {
        let expires = now + self.link_ttl;
        let scope = match scope {
            Scope::Team(team) => team.as_str().to_string(),
            Scope::Finance => "*".to_string(),
        };
        let signature = hex::encode(self.sign(expires.timestamp(), &scope));
        (format!("{LINK_PREFIX}{}~{signature}~{scope}", expires.timestamp()), expires)
    }

    fn sign(&self, expires: i64, scope: &str) -> Vec<u8> {
        self.mac(expires, scope).finalize().into_bytes().to_vec()
    }

    fn mac(&self, expires: i64, scope: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(format!("{LINK_PREFIX}{expires}~{scope}").as_bytes());
        mac
    }

    fn check_link(&self, link: &str, now: DateTime<Utc>) -> Option<Scope> {
        let mut parts = link.splitn(3, '~');
        let (expires, signature, scope) = (parts.next()?, parts.next()?, parts.next()?);
        let expires: i64 = expires.parse().ok()?;
        self.mac(expires, scope).verify_slice(&hex::decode(signature).ok()?).ok()?;
        if now.timestamp() >= expires {
            return None;
        }
        match scope {
            "*" => Some(Scope::Finance),
            team => TeamId::new(team.to_string()).ok().map(Scope::Team),
        }
    }
}

fn random_key() -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut key = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .context("reading /dev/urandom for the portal link key")?;
    Ok(key)
}

/// A token bucket: `burst` deep, refilled at `per_sec`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket { tokens: burst, at: now }
    }

    /// Refills for the time since the last take, then takes one token if there is one.
    fn take(&mut self, per_sec: f64, burst: f64, now: Instant) -> bool {
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * per_sec).min(burst);
        self.at = now;
        let taken = self.tokens >= 1.0;
        if taken {
            self.tokens -= 1.0;
        }
        taken
    }
}

/// Requests per key (a client address before authentication, a credential after it): a
/// bucket each. The table is bounded: past `CLIENTS_MAX` keys, idle ones are forgotten.
pub struct RateLimiter<K> {
    per_sec: f64,
    burst: f64,
    clients: Mutex<HashMap<K, Bucket>>,
}

const CLIENTS_MAX: usize = 10_000;

impl<K: std::hash::Hash + Eq + Copy> RateLimiter<K> {
    pub fn new(per_sec: u32, burst: u32) -> RateLimiter<K> {
        RateLimiter { per_sec: f64::from(per_sec), burst: f64::from(burst.max(1)), clients: Mutex::new(HashMap::new()) }
    }

    /// Takes one request from the key's bucket; false when it is empty.
    pub fn allow(&self, client: K) -> bool {
        if self.per_sec <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let mut clients = self.clients.lock().expect("not poisoned");
        if clients.len() >= CLIENTS_MAX && !clients.contains_key(&client) {
            let (per_sec, burst) = (self.per_sec, self.burst);
            clients.retain(|_, b| now.duration_since(b.at).as_secs_f64() * per_sec < burst);
            if clients.len() >= CLIENTS_MAX {
                return false;
            }
        }
        clients.entry(client).or_insert(Bucket::full(self.burst, now)).take(self.per_sec, self.burst, now)
    }
}

/// A log line budget: `LOG_BURST` lines, then `LOG_PER_SEC` a second; the lines left out
/// are counted and reported with the next line written.
pub struct LogLimiter {
    bucket: Bucket,
    suppressed: u64,
}

const LOG_PER_SEC: f64 = 5.0;
const LOG_BURST: f64 = 20.0;

impl LogLimiter {
    pub fn new() -> LogLimiter {
        LogLimiter { bucket: Bucket::full(LOG_BURST, Instant::now()), suppressed: 0 }
    }

    /// `Some(lines left out since the last one written)` when this line may be written.
    pub fn allow(&mut self) -> Option<u64> {
        if !self.bucket.take(LOG_PER_SEC, LOG_BURST, Instant::now()) {
            self.suppressed += 1;
            return None;
        }
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn auth() -> Auth {
        let tokens = [TokenConfig { sha256: hex::encode(Sha256::digest(b"t0k")), role: Role::Finance, team: None }];
        Auth::new(&tokens, Some("a secret of sixteen+"), chrono::Duration::hours(1)).unwrap()
    }

    #[test]
    fn tokens_are_matched_by_their_hash_and_links_by_their_signature() {
        let auth = auth();
        let now = Utc::now();
        assert_eq!(auth.principal("t0k", now), Some(Principal::Finance));
        assert_eq!(auth.principal("t0K", now), None);
        let team = TeamId::new("acme".to_string()).unwrap();
        let (link, expires) = auth.mint(&Scope::Team(team.clone()), now);
        assert_eq!(auth.principal(&link, now), Some(Principal::Team(team)));
        assert_eq!(auth.principal(&link, expires), None, "expired");
        let forged = link.replace("~acme", "~other");
        assert_eq!(auth.principal(&forged, now), None, "scope changed");
    }

    #[test]
    fn a_secret_given_twice_is_refused_whatever_its_case() {
        let hash = hex::encode(Sha256::digest(b"t0k"));
        let tokens = [
            TokenConfig { sha256: hash.clone(), role: Role::Finance, team: None },
            TokenConfig { sha256: hash.to_uppercase(), role: Role::Admin, team: None },
        ];
        let e = Auth::new(&tokens, None, chrono::Duration::hours(1)).unwrap_err().to_string();
        assert_eq!(e, "http.tokens[1]: the same secret (sha256) as http.tokens[0]; every token needs its own");
        let dots = [TokenConfig { sha256: hash, role: Role::Team, team: Some("..".into()) }];
        let e = format!("{:#}", Auth::new(&dots, None, chrono::Duration::hours(1)).unwrap_err());
        assert!(e.contains("URL dot segment"), "{e}");
    }

    #[test]
    fn the_bucket_refuses_past_its_burst() {
        let limiter = RateLimiter::<IpAddr>::new(1, 3);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!((0..5).filter(|_| limiter.allow(ip)).count(), 3);
        let mut log = LogLimiter::new();
        let written: Vec<Option<u64>> = (0..25).map(|_| log.allow()).collect();
        assert_eq!(written.iter().filter(|w| w.is_some()).count(), 20);
        log.bucket.tokens = 1.0;
        assert_eq!(log.allow(), Some(5), "the next line written reports the five left out");
    }
}
