#!/usr/bin/env bash
# Load figures against a release build on loopback: /healthz, resolve, the
# snapshot and its 304 at 64 connections with wrk (Debian's package,
# installed if missing), side by side in one run, then admin writes
# (benches/admin_writes.rs); then, each with its own server: reads with the
# database cut (benches/db_down.rs) and the change feed's fan-out
# (benches/fanout.rs, FANOUT_SUBSCRIBERS subscribers, 10,000 by default, on
# the project-local cluster, which keeps commit timestamps).
# Usage: DATABASE_URL=... scripts/bench-load.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${DATABASE_URL:?DATABASE_URL must be set (make bench sets it)}"
ADDR=127.0.0.1:18088
TARGET="${CARGO_TARGET_DIR:-target}"
DURATION="${LOAD_SECONDS:-5}"

if ! command -v wrk >/dev/null; then
    echo "==> installing wrk (Debian's package)" >&2
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
SQLX_OFFLINE=true cargo build --release --bin policy-values >&2
BIN="$TARGET/release/policy-values"
"$BIN" migrate >/dev/null
READER=$("$BIN" token create --role reader --name load-reader | tail -n 1)
ADMIN=$("$BIN" token create --role admin --name load-admin | tail -n 1)
RUST_LOG=warn POLICY_VALUES_ADDR=$ADDR POLICY_VALUES_WRITE_RATE=1000000 POLICY_VALUES_WRITE_BURST=1000000 \
    "$BIN" serve --skip-migrate >/tmp/policy-values-load-server.log 2>&1 &
SERVER=$!
cleanup() {
    kill "$SERVER" 2>/dev/null || true
    "$BIN" token revoke load-reader >/dev/null 2>&1 || true
    "$BIN" token revoke load-admin >/dev/null 2>&1 || true
}
trap cleanup EXIT
for _ in $(seq 1 300); do curl -fs "http://$ADDR/readyz" >/dev/null && break; sleep 0.1; done

run_wrk() { # name, then wrk arguments
    local name=$1; shift
    local out
    out=$(wrk -t2 -c64 -d"${DURATION}s" --latency "$@")
    local rps p99
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    echo "$name: $rps requests/s, p99 $p99 (wrk -t2 -c64 -d${DURATION}s)" >&2
    echo "$rps"
}
RESOLVE="http://$ADDR/api/v1/policy-values/resolve?key=allocation.max_concurrent_per_user&user_id=u1&project_id=p1&org_id=o1&plan=pro"
SNAPSHOT="http://$ADDR/api/v1/policy-values/snapshot?user_id=u1&project_id=p1&org_id=o1&plan=pro"
ETAG=$(curl -s -D - -o /dev/null -H "Authorization: Bearer $READER" "$SNAPSHOT" | awk 'tolower($1) == "etag:" {print $2}' | tr -d '\r')
AUTH="Authorization: Bearer $READER"
# The four loads take turns, ROUNDS times, so that whatever else the machine
# is doing weighs on each alike; ratios are per round, and the median round
# is reported.
ROUNDS="${LOAD_ROUNDS:-3}"
declare -A RPS
for round in $(seq 1 "$ROUNDS"); do
    RPS[health,$round]=$(run_wrk "round $round: GET /healthz" "http://$ADDR/healthz")
    RPS[resolve,$round]=$(run_wrk "round $round: GET resolve (reader token, five-level scope)" -H "$AUTH" "$RESOLVE")
    RPS[snapshot,$round]=$(run_wrk "round $round: GET snapshot (reader token, five-level scope, every key)" -H "$AUTH" "$SNAPSHOT")
    RPS[not_modified,$round]=$(run_wrk "round $round: GET snapshot with a matching If-None-Match (304)" -H "$AUTH" -H "If-None-Match: $ETAG" "$SNAPSHOT")
done
median_ratio() { # name, numerator, denominator
    local ratios=()
    for round in $(seq 1 "$ROUNDS"); do
        ratios+=("$(awk -v n="${RPS[$2,$round]}" -v d="${RPS[$3,$round]}" 'BEGIN { printf "%.2f", n / d }')")
    done
    local sorted
    sorted=$(printf '%s\n' "${ratios[@]}" | sort -n | tr '\n' ' ')
    local median
    median=$(printf '%s\n' "${ratios[@]}" | sort -n | sed -n "$(( (ROUNDS + 1) / 2 ))p")
    echo "$1: median $median (rounds: $sorted)"
}
median_ratio "resolve / healthz throughput ratio" resolve health
median_ratio "snapshot / resolve throughput ratio (target >= 0.8)" snapshot resolve
median_ratio "304 / resolve throughput ratio (target >= 1.0)" not_modified resolve

# The benches are built with the features `make bench` builds them with.
BENCH=(cargo bench --features http-source --bench)
POLICY_VALUES_URL="http://$ADDR" POLICY_VALUES_TOKEN="$ADMIN" SQLX_OFFLINE=true "${BENCH[@]}" admin_writes 2>/dev/null \
    | grep -E '^admin writes'

# The next two start their own server; this one would add to the database
# connections counted.
kill "$SERVER" 2>/dev/null || true
wait "$SERVER" 2>/dev/null || true
export POLICY_VALUES_BIN="$BIN"
SQLX_OFFLINE=true "${BENCH[@]}" db_down 2>/dev/null | grep -E '^(db down|resolve with)'
# A descriptor per subscriber in this process and in the server: as many
# as the hard limit allows (fanout.rs measures fewer if that is too low).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open files limit: $(ulimit -n)" >&2
# On the project-local cluster, whose settings keep commit timestamps
# (scripts/dev-db.sh): the latencies are measured from each write's commit.
FANOUT_URL=$(DEV_DB_FORCE_LOCAL=1 scripts/dev-db.sh policy_values_fanout)
DATABASE_URL="$FANOUT_URL" SQLX_OFFLINE=true "${BENCH[@]}" fanout 2>/dev/null | grep -E '^fan-out'
