//! Key layout of the single `ledger` tree. Team and event ids never contain 0x00
//! (their alphabet is [A-Za-z0-9._:-]), so it separates key parts.
//!
//! | prefix | key                               | value                         |
//! |--------|-----------------------------------|-------------------------------|
//! | `E`    | team 0 first_seq(u64 BE)          | block of entries (codec)      |
//! | `I`    | batch number (u64 BE)             | index segment: the batch's events |
//! | `A`    | team 0 n(u64 BE)                  | alert JSON                    |
//! | `V`    | team 0 period_start(i64 BE, ^sign)| final invoice JSON            |
//! | `X`    | n(u64 BE)                         | outbox message (codec)        |
//! | `O`    | source name                       | next offset (u64 BE)          |
//! | `C`    | team 0 event_id 0 n(u64 BE)       | conflict record JSON          |
//! | `M`    | name                              | metadata (format, catalog)    |
//! | `P`    | team 0 refund event_id            | parked refund (codec)         |

pub const ENTRY: u8 = b'E';
pub const INDEX: u8 = b'I';
pub const ALERT: u8 = b'A';
pub const INVOICE: u8 = b'V';
pub const OUTBOX: u8 = b'X';
pub const OFFSET: u8 = b'O';
pub const CONFLICT: u8 = b'C';
pub const META: u8 = b'M';
pub const PARKED: u8 = b'P';

pub fn team_prefix(prefix: u8, team: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(team.len() + 10);
    k.push(prefix);
    k.extend_from_slice(team.as_bytes());
    k.push(0);
    k
}

pub fn team_key(prefix: u8, team: &str, n: u64) -> Vec<u8> {
    let mut k = team_prefix(prefix, team);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

pub fn simple(prefix: u8, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 1);
    k.push(prefix);
    k.extend_from_slice(name);
    k
}

pub fn outbox(n: u64) -> Vec<u8> {
    simple(OUTBOX, &n.to_be_bytes())
}

/// Sortable encoding of a signed instant (period start, in seconds).
pub fn time_key(prefix: u8, team: &str, secs: i64) -> Vec<u8> {
    team_key(prefix, team, (secs as u64) ^ (1 << 63))
}

/// Splits `team 0 u64` after the prefix byte.
pub fn split_team_key(key: &[u8]) -> Option<(&str, u64)> {
    let body = &key[1..];
    let zero = body.iter().position(|b| *b == 0)?;
    let team = std::str::from_utf8(&body[..zero]).ok()?;
    let n = u64::from_be_bytes(body.get(zero + 1..zero + 9)?.try_into().ok()?);
    Some((team, n))
}

/// A refund parked until the image event it names arrives.
pub fn parked(team: &str, refund_id: &str) -> Vec<u8> {
    let mut k = team_prefix(PARKED, team);
    k.extend_from_slice(refund_id.as_bytes());
    k
}
