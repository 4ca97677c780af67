#!/usr/bin/env bash
# The benchmark (issue 12), from a fresh Debian machine: installs PostgreSQL from
# Debian's packages if it is missing, starts a private server (its own data directory
# in a temporary folder, loopback only, default durability: fsync and synchronous_commit
# on), runs `cargo bench -p usage-ledger --bench ledger` with the arguments given
# (default: 1M events, 10,000 teams, 3 runs; e.g. `--events 1000000,10000000`), and
# stops the server. tansu (installed by .ci/run) adds the Kafka figures.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "== installing PostgreSQL (Debian's package)"
  apt-get update -qq && apt-get install -y -qq postgresql
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
port=${USAGE_LEDGER_BENCH_PG_PORT:-55432}
pgdata=$(mktemp -d /tmp/usage-ledger-bench-pg.XXXXXX)
# The server refuses to run as root: as root, it runs as Debian's `postgres` user.
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$pgdata"
  as_pg=(runuser -u postgres --)
fi
stop() {
  "${as_pg[@]}" "$bin/pg_ctl" -D "$pgdata/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$pgdata"
}
trap stop EXIT
"${as_pg[@]}" "$bin/initdb" -D "$pgdata/data" -A trust -U postgres >/dev/null
"${as_pg[@]}" "$bin/pg_ctl" -D "$pgdata/data" -l "$pgdata/log" -w start \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $pgdata -c shared_buffers=1GB -c max_wal_size=4GB" >/dev/null
export USAGE_LEDGER_BENCH_PG="host=127.0.0.1 port=$port user=postgres dbname=postgres"
# tansu sleeps through a fetch's whole wait even when records are there (tansu-storage
# 0.6 service/fetch.rs), so librdkafka's default 500 ms would be measured as latency;
# Kafka answers a fetch as soon as its minimum bytes are there.
export USAGE_LEDGER_KAFKA_FETCH_WAIT_MAX_MS=${USAGE_LEDGER_KAFKA_FETCH_WAIT_MAX_MS:-10}
export PATH="$HOME/.cargo/bin:$PATH"
cargo bench -p usage-ledger --bench ledger --locked -- "$@"
