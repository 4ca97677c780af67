#!/usr/bin/env bash
# Serving under load (issue 21): `GET /v1/teams/T/balance` of a team with 1,000,000 image
# events in its open cycle, from `run` over a tansu broker, at a fixed rate (oha, with
# latency correction: a late request counts from when it was due). Per run, a fresh
# broker and data dir, then three phases of --secs each:
#   idle      nothing ingested;
#   others    ingesting records for 2,000 other teams at full speed;
#   same      ingesting records for the big team itself (its ledger moves all the time).
# Before the phases, and for USAGE_LEDGER_BENCH_BASELINE (another build's binary) on the
# same data, five requests one at a time. Prints each phase's figures and min / median /
# max of the p99 over the runs.
#
#   bash deploy/serving-bench.sh [--runs 3] [--rate 500] [--secs 20] [--events 1000000]
#
# Needs tansu (`.ci/run` installs it) and oha (installed from crates.io if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=3 rate=500 secs=20 events=1000000
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --events) events=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
export PATH="$HOME/.cargo/bin:$PATH"
command -v tansu >/dev/null || { echo "tansu is not installed (cargo install tansu --locked --features libsql)" >&2; exit 1; }
command -v oha >/dev/null || cargo install oha --locked
cargo build --release -p usage-ledger --locked
ul=$PWD/target/release/usage-ledger
baseline=${USAGE_LEDGER_BENCH_BASELINE:-}

tmp=$(mktemp -d /tmp/usage-ledger-serving.XXXXXX)
pids=()
stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap stop EXIT
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# The token "test", finance role (reads every team).
cat > "$tmp/config.toml" <<'EOF'
[[http.tokens]]
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
role = "finance"
EOF

echo "== workloads"
"$ul" generate --teams 1 --events "$events" --months 1 --out "$tmp/big.jsonl"
# Other teams (team-NNNNN), and more of the big team's: event ids of their own.
"$ul" generate --profile realistic --teams 2000 --events 1000000 --seed 2 --months 1 --out - \
  | sed 's/"eventId":"/"eventId":"o-/; s/"originalEventId":"/"originalEventId":"o-/' > "$tmp/others.jsonl"
"$ul" generate --teams 1 --events 1000000 --seed 3 --months 1 --out - | grep -v planStarted \
  | sed 's/"eventId":"/"eventId":"s-/' > "$tmp/same.jsonl"
big=$(wc -l < "$tmp/big.jsonl")
url_of() { echo "http://$1/v1/teams/team-0000/balance"; }

# Sum of a metric's samples in the service's /metrics text.
metric() {
  { curl -sf "http://$1/metrics" || true; } | awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%d\n", s }'
}

# Five balance requests one at a time: the slowest's seconds.
sequential() {
  local slowest=0 t
  for _ in 1 2 3 4 5; do
    t=$(curl -s -o /dev/null -w '%{time_total}' -H 'Authorization: Bearer test' "$(url_of "$1")")
    slowest=$(python3 -c "print(max($slowest, $t))")
  done
  echo "$slowest"
}

# oha at $rate/s for $secs s; the JSON report in $2.
load() {
  oha --no-tui --output-format json --latency-correction -z "${secs}s" -q "$rate" -c 32 \
    -H 'Authorization: Bearer test' "$(url_of "$1")" > "$2"
}

for run in $(seq 1 "$runs"); do
  echo "== run $run of $runs"
  dir=$tmp/run$run
  mkdir -p "$dir/broker"
  kafka=127.0.0.1:$(port)
  (cd "$dir/broker" && exec tansu broker --listener-url "tcp://$kafka" --advertised-listener-url "tcp://$kafka" \
    --storage-engine sqlite://broker.sqlite >/dev/null 2>&1) &
  pids+=($!)
  until (exec 3<>"/dev/tcp/${kafka%:*}/${kafka#*:}") 2>/dev/null; do sleep 0.2; done
  "$ul" produce --brokers "$kafka" "$tmp/big.jsonl" 2>/dev/null
  http=127.0.0.1:$(port)
  "$ul" --config "$tmp/config.toml" --data-dir "$dir/data" run --brokers "$kafka" --partitions 4 \
    --http-addr "$http" --http-requests-per-sec 0 --http-address-requests-per-sec 0 > "$dir/run.log" 2>&1 &
  service=$!
  pids+=("$service")
  start=$(date +%s)
  until [ "$(metric "$http" usage_ledger_records_total)" -ge "$big" ] \
    && [ "$(metric "$http" usage_ledger_consumer_lag)" -eq 0 ]; do
    sleep 1
    if [ $(($(date +%s) - start)) -gt 900 ]; then echo "the service never caught up" >&2; tail "$dir/run.log" >&2; exit 1; fi
  done
  echo "   $big records in the ledger after $(($(date +%s) - start)) s"
  first=$(curl -s -o /dev/null -w '%{time_total}' -H 'Authorization: Bearer test' "$(url_of "$http")")
  echo "   first balance (the team folded from its checkpoint): ${first} s; then one at a time, slowest of 5: $(sequential "$http") s"
  load "$http" "$dir/idle.json"
  for phase in others same; do
    before=$(metric "$http" usage_ledger_records_total)
    "$ul" produce --brokers "$kafka" "$tmp/$phase.jsonl" 2>/dev/null &
    producer=$!
    # The window opens once the records flow (the producer takes seconds to start).
    until [ "$(metric "$http" usage_ledger_records_total)" -gt "$before" ]; do sleep 0.2; done
    # The records applied, every 2 s of the window.
    (for _ in $(seq 1 $((secs / 2))); do sleep 2; metric "$http" usage_ledger_records_total; done > "$dir/$phase.ingest") &
    sampler=$!
    load "$http" "$dir/$phase.json"
    wait "$sampler" || true
    echo "   $phase: $(($(metric "$http" usage_ledger_records_total) - before)) records applied during the $secs s;" \
      "applied so far every 2 s: $(awk -v b="$before" '{ printf "%d ", $1 - b }' "$dir/$phase.ingest")"
    wait "$producer"
    # The phase's ingest drained before the next one.
    until [ "$(metric "$http" usage_ledger_consumer_lag)" -eq 0 ]; do sleep 1; done
  done
  echo "   the service's RSS at the end: $(($(ps -o rss= -p "$service") / 1024)) MiB (the writer's states and the API's)"
  kill "$service"; wait "$service" 2>/dev/null || true
  if [ -n "$baseline" ]; then
    "$baseline" --config "$tmp/config.toml" --data-dir "$dir/data" serve --http-addr "$http" \
      --http-requests-per-sec 0 --http-address-requests-per-sec 0 > "$dir/base.log" 2>&1 &
    base=$!
    until curl -sf "http://$http/healthz" >/dev/null; do sleep 0.2; done
    echo "   baseline ($baseline, serve on the same data): one at a time, slowest of 5: $(sequential "$http") s"
    kill "$base"; wait "$base" 2>/dev/null || true
  fi
  kill "${pids[0]}" 2>/dev/null || true; wait "${pids[0]}" 2>/dev/null || true
  pids=()
done

python3 - "$tmp" "$runs" "$rate" <<'EOF'
import json, statistics, sys
tmp, runs, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3]
print(f"\n== balance of a team with a 1M-event open cycle at {rate}/s (ms; oha, latency-corrected)")
print(f"{'phase':8} {'run':>3} {'ok':>7} {'non-200':>7} {'p50':>8} {'p99':>8} {'p99.9':>8} {'max':>8}")
for phase in ["idle", "others", "same"]:
    p99s = []
    for run in range(1, runs + 1):
        r = json.load(open(f"{tmp}/run{run}/{phase}.json"))
        codes = r.get("statusCodeDistribution", {})
        ok = codes.get("200", 0)
        # oha counts the requests still in flight when the window closes as errors.
        errors = {k: v for k, v in r.get("errorDistribution", {}).items() if k != "aborted due to deadline"}
        bad = sum(v for k, v in codes.items() if k != "200") + sum(errors.values())
        p = r["latencyPercentiles"]
        ms = lambda k: p[k] * 1000
        p99s.append(ms("p99"))
        others = {k: v for k, v in {**codes, **errors}.items() if k != "200"}
        print(f"{phase:8} {run:>3} {ok:>7} {bad:>7} {ms('p50'):8.2f} {ms('p99'):8.2f} {ms('p99.9'):8.2f} {r['summary']['slowest'] * 1000:8.2f} {others or ''}")
    print(f"{phase:8} p99 min / median / max: {min(p99s):.2f} / {statistics.median(p99s):.2f} / {max(p99s):.2f}")
EOF
