//! The PostgreSQL ledger most teams would build, fed the same events: a table of events
//! with a unique `event_id` (exact dedup by `ON CONFLICT DO NOTHING`), a table of
//! per-team balances updated in the same transaction, 1,000 events a transaction, each
//! table written by one array statement (`unnest`), `synchronous_commit` on (the
//! default: a commit returns once its WAL is flushed). Balances here are only image
//! counts and list-price amounts per team: far less work than the ledger's fold, hash
//! chain and projections, which favours PostgreSQL.
use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use ledger_core::{Api, Event};
use postgres::{Client, NoTls};

/// Events a transaction.
const BATCH: usize = 1_000;

pub struct Target {
    url: String,
}

/// One event as the PostgreSQL ledger stores it (account events with no images).
pub struct Row {
    event_id: String,
    team_id: String,
    occurred_at: DateTime<Utc>,
    api: i16,
    images: i32,
    sandbox: bool,
    /// images × list price, as text for a `numeric` column.
    amount: String,
}

pub fn rows(events: &[Event]) -> Vec<Row> {
    events
        .iter()
        .map(|e| {
            let (api, images, sandbox) = match e {
                Event::Image(i) => (i.api as i16, i.images as i32, i.sandbox),
                Event::Account(_) => (0, 0, false),
            };
            let price = match e {
                Event::Image(i) if i.api == Api::ImageEditing => rust_decimal::Decimal::new(10, 2),
                Event::Image(_) => rust_decimal::Decimal::new(2, 2),
                Event::Account(_) => rust_decimal::Decimal::ZERO,
            };
            Row {
                event_id: e.event_id().to_string(),
                team_id: e.team_id().to_string(),
                occurred_at: e.occurred_at(),
                api,
                images,
                sandbox,
                amount: (price * rust_decimal::Decimal::from(images)).to_string(),
            }
        })
        .collect()
}

const SCHEMA: &str = "
DROP TABLE IF EXISTS bench_events, bench_balances;
CREATE TABLE bench_events (
    event_id    text PRIMARY KEY,
    team_id     text NOT NULL,
    occurred_at timestamptz NOT NULL,
    api         smallint NOT NULL,
    images      integer NOT NULL,
    sandbox     boolean NOT NULL,
    amount      numeric(20, 4) NOT NULL
);
CREATE INDEX bench_events_team ON bench_events (team_id, occurred_at);
CREATE TABLE bench_balances (
    team_id  text PRIMARY KEY,
    images   bigint NOT NULL,
    consumed numeric(20, 4) NOT NULL
);";

const INSERT_EVENTS: &str = "
INSERT INTO bench_events (event_id, team_id, occurred_at, api, images, sandbox, amount)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::int2[], $5::int4[], $6::bool[], $7::text[]::numeric[])
ON CONFLICT (event_id) DO NOTHING
RETURNING team_id, images, amount::text";

const UPSERT_BALANCES: &str = "
INSERT INTO bench_balances (team_id, images, consumed)
SELECT * FROM unnest($1::text[], $2::int8[], $3::text[]::numeric[])
ON CONFLICT (team_id) DO UPDATE
SET images = bench_balances.images + excluded.images, consumed = bench_balances.consumed + excluded.consumed";

impl Target {
    /// The server `USAGE_LEDGER_BENCH_PG` names (a libpq connection string), if set.
    pub fn from_env() -> Option<Target> {
        std::env::var("USAGE_LEDGER_BENCH_PG").ok().filter(|u| !u.is_empty()).map(|url| Target { url })
    }

    /// Server version and the durability settings the figures depend on.
    pub fn describe(&self) -> String {
        let mut c = Client::connect(&self.url, NoTls).expect("PostgreSQL accepts the connection");
        let show = |c: &mut Client, what: &str| -> String { c.query_one(&format!("SHOW {what}"), &[]).unwrap().get(0) };
        format!(
            "PostgreSQL {}, fsync {}, synchronous_commit {}, wal_sync_method {}",
            show(&mut c, "server_version"),
            show(&mut c, "fsync"),
            show(&mut c, "synchronous_commit"),
            show(&mut c, "wal_sync_method")
        )
    }

    /// Loads `rows` into fresh tables; returns events/s. Checks afterwards that every
    /// distinct event is stored once and the balances add up to the events.
    pub fn load(&self, rows: &[Row]) -> f64 {
        let mut c = Client::connect(&self.url, NoTls).expect("PostgreSQL accepts the connection");
        c.batch_execute(SCHEMA).unwrap();
        let insert = c.prepare(INSERT_EVENTS).unwrap();
        let upsert = c.prepare(UPSERT_BALANCES).unwrap();
        let started = Instant::now();
        for batch in rows.chunks(BATCH) {
            let mut tx = c.transaction().unwrap();
            let ids: Vec<&str> = batch.iter().map(|r| r.event_id.as_str()).collect();
            let teams: Vec<&str> = batch.iter().map(|r| r.team_id.as_str()).collect();
            let at: Vec<DateTime<Utc>> = batch.iter().map(|r| r.occurred_at).collect();
            let api: Vec<i16> = batch.iter().map(|r| r.api).collect();
            let images: Vec<i32> = batch.iter().map(|r| r.images).collect();
            let sandbox: Vec<bool> = batch.iter().map(|r| r.sandbox).collect();
            let amount: Vec<&str> = batch.iter().map(|r| r.amount.as_str()).collect();
            let inserted = tx.query(&insert, &[&ids, &teams, &at, &api, &images, &sandbox, &amount]).unwrap();
            // Balances of the events actually inserted (duplicates change nothing), in team
            // order so concurrent writers could not deadlock.
            let mut per_team: BTreeMap<String, (i64, rust_decimal::Decimal)> = BTreeMap::new();
            for row in &inserted {
                let e = per_team.entry(row.get::<_, String>(0)).or_default();
                e.0 += i64::from(row.get::<_, i32>(1));
                e.1 += row.get::<_, String>(2).parse::<rust_decimal::Decimal>().unwrap();
            }
            let teams: Vec<&str> = per_team.keys().map(String::as_str).collect();
            let counts: Vec<i64> = per_team.values().map(|v| v.0).collect();
            let sums: Vec<String> = per_team.values().map(|v| v.1.to_string()).collect();
            tx.execute(&upsert, &[&teams, &counts, &sums]).unwrap();
            tx.commit().unwrap();
        }
        let rate = rows.len() as f64 / started.elapsed().as_secs_f64();
        let distinct: i64 = c.query_one("SELECT count(*) FROM bench_events", &[]).unwrap().get(0);
        let unique = rows.iter().map(|r| r.event_id.as_str()).collect::<std::collections::HashSet<_>>().len();
        assert_eq!(distinct as usize, unique, "PostgreSQL stored every distinct event once");
        let (a, b): (i64, i64) = {
            let r = c
                .query_one("SELECT (SELECT sum(images) FROM bench_events)::int8, (SELECT sum(images) FROM bench_balances)::int8", &[])
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert_eq!(a, b, "balances add up to the stored events");
        rate
    }
}
