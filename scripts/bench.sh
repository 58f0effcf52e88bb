#!/usr/bin/env bash
# Load benchmark of the release server on this machine.
#
#   bash scripts/bench.sh [--duration SECONDS] [--connections N] [--db sqlite|postgres]
#                                                    (defaults: 10 s, 64, sqlite)
#
# Starts target/release/session-pro-backend in developer mode on a free loopback port with a
# fresh temporary database, measures the time to its first /health answer and the machine's
# Ed25519 rates, registers development users, then drives each route with wrk
# (scripts/bench.lua) from pre-signed bodies made by `bench-gen`. wrk runs on the same cores
# as the server, so the figures are a lower bound for a server with the machine to itself.
# With --db postgres the server uses a fresh database created on the PostgreSQL server named by
# PRO_BENCH_PG_URL (else PRO_TEST_PG_URL, else the tests' default loopback URL), dropped after.
# With the defaults the whole run takes about a minute after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

DUR=10
CONN=64
THREADS=2
USERS=2000
DB=sqlite
while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) DUR="$2"; shift 2 ;;
        --connections) CONN="$2"; shift 2 ;;
        --db) DB="$2"; shift 2 ;;
        -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ "$DUR" =~ ^[1-9][0-9]*$ ]] || { echo "--duration wants a positive integer" >&2; exit 2; }
[[ "$CONN" =~ ^[1-9][0-9]*$ ]] || { echo "--connections wants a positive integer" >&2; exit 2; }
(( CONN >= THREADS )) || { echo "--connections must be at least $THREADS" >&2; exit 2; }
[[ "$DB" == sqlite || "$DB" == postgres ]] || { echo "--db wants sqlite or postgres" >&2; exit 2; }
if (( DUR > 60 )); then
    # Signed bodies carry the time they were made; the server accepts them for 70 s.
    echo "warning: generate_pro_proof/get_pro_details bodies go stale after 70 s;" \
        "runs longer than that will report errors" >&2
fi

if ! command -v wrk >/dev/null; then
    echo "== installing wrk"
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq wrk >/dev/null
fi

echo "== building (release)"
cargo build --release -q -p session-pro-backend -p bench-gen
SERVER_BIN=target/release/session-pro-backend
GEN=target/release/bench-gen

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pro-bench.XXXXXX")
SERVER_PID=""
PG_ADMIN_URL=""
PG_DB=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n "$PG_DB" ]]; then
        psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$("$GEN" free-port)
URL="http://127.0.0.1:$PORT"

DB_ENV=(SESH_PRO_BACKEND_DB_PATH="$WORK/bench.db")
if [[ "$DB" == postgres ]]; then
    command -v psql >/dev/null || { echo "--db postgres needs psql (Debian package postgresql-client)" >&2; exit 1; }
    PG_ADMIN_URL=${PRO_BENCH_PG_URL:-${PRO_TEST_PG_URL:-postgresql://pro_test:pro_test@127.0.0.1:5432/postgres}}
    PG_DB="bench_$(date +%s)_$$"
    psql "$PG_ADMIN_URL" -qc "CREATE DATABASE $PG_DB" || { echo "cannot create a database at $PG_ADMIN_URL" >&2; exit 1; }
    # Same URL, the new database's name in place of the admin one (query string kept).
    base=${PG_ADMIN_URL%%\?*}
    query=""
    [[ "$PG_ADMIN_URL" == *\?* ]] && query="?${PG_ADMIN_URL#*\?}"
    DB_ENV=(SESH_PRO_BACKEND_DB_URL="${base%/*}/$PG_DB$query")
    echo "== database: PostgreSQL $(psql "$PG_ADMIN_URL" -Atc 'SHOW server_version'), fresh database $PG_DB"
else
    echo "== database: SQLite file in $WORK"
fi

# add_pro_payment claims payments the server has witnessed (the production path): record them
# first, as the Apple receiver would, with one claim body each — more than a run can send.
echo "== recording $((DUR * 10000)) witnessed payments to claim"
DB_FLAG=(--db-path "$WORK/bench.db")
[[ "$DB" == postgres ]] && DB_FLAG=(--db-url "${DB_ENV[0]#SESH_PRO_BACKEND_DB_URL=}")
"$GEN" witness "${DB_FLAG[@]}" --count "$((DUR * 10000))" --out "$WORK/add_pro_payment.jsonl"

echo "== starting the server on $URL (dev mode, fresh database)"
T0=$(date +%s%N)
env SESH_PRO_BACKEND_DEV=1 \
    "${DB_ENV[@]}" \
    SESH_PRO_BACKEND_LISTEN="127.0.0.1:$PORT" \
    "$SERVER_BIN" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
if ! "$GEN" wait-health --url "$URL" --timeout-ms 10000 >/dev/null; then
    echo "server did not become healthy; its log:" >&2
    cat "$WORK/server.log" >&2
    exit 1
fi
T1=$(date +%s%N)
START_MS=$(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')
echo "start to first /health answer: ${START_MS} ms"

CORES=$(nproc)
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo "== machine: $CORES cores, ${CPU_MODEL:-unknown CPU}"

echo "== single-thread Ed25519 rates"
CRYPTO=$("$GEN" crypto-rate --millis 1000)
echo "$CRYPTO"
SIGN_PER_S=$(sed -n 's/.*sign_per_s=\([0-9.]*\).*/\1/p' <<<"$CRYPTO")
VERIFY_PER_S=$(sed -n 's/.*verify_per_s=\([0-9.]*\).*/\1/p' <<<"$CRYPTO")

echo "== registering $USERS development users"
"$GEN" setup --url "$URL" --users "$USERS" --out "$WORK/seeds.txt"

# Server CPU time so far, in clock ticks (utime + stime from /proc/PID/stat).
server_ticks() {
    # Field 2 (comm) is in parentheses and may contain spaces: cut after the last ')'.
    local stat
    stat=$(<"/proc/$SERVER_PID/stat")
    stat=${stat##*) }
    awk '{ print $12 + $13 }' <<<"$stat"
}
# CPU time of every PostgreSQL server process, in clock ticks (0 without PostgreSQL).
db_ticks() {
    local total=0 pid stat
    for pid in $(pgrep -x postgres || true); do
        stat=$(<"/proc/$pid/stat") 2>/dev/null || continue
        stat=${stat##*) }
        total=$((total + $(awk '{ print $12 + $13 }' <<<"$stat")))
    done
    echo "$total"
}
status_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$SERVER_PID/status"; }
CLK_TCK=$(getconf CLK_TCK)

# wrk prints latencies as e.g. 812.00us, 1.43ms, 1.02s; convert to milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.2f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.2f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.2f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.2f", v * 1000 }
        else { printf "?" }
    }'
}

# A route followed by "@onion" is the same load wrapped in onion requests to /oxen/v4/lsrpc.
ROUTES=(generate_pro_proof generate_pro_proof@onion get_pro_details get_pro_revocations get_pro_revocations@onion
    add_pro_payment)
declare -A RPS P50 P99 ERRS HWM RSS CPU DBCPU SAMPLE
for route in "${ROUTES[@]}"; do
    echo "== $route"
    base=${route%@onion}
    ONION=0
    ROUTE_PATH="/$base"
    if [[ "$route" == *@onion ]]; then
        ONION=1
        ROUTE_PATH=/oxen/v4/lsrpc
    fi
    case "$base" in
        generate_pro_proof | get_pro_details) COUNT=20000 ;;
        get_pro_revocations) COUNT=1000 ;;
        # Every body claims a new payment exactly once: make more than a run can send.
        add_pro_payment) COUNT=$((DUR * 10000)) ;;
    esac
    BODIES="$WORK/$route.jsonl"
    if [[ "$route" != add_pro_payment ]]; then
        "$GEN" bodies --route "$base" --count "$COUNT" --seeds "$WORK/seeds.txt" --onion "$ONION" --out "$BODIES"
    fi

    TICKS0=$(server_ticks)
    DB0=$(db_ticks)
    BODIES="$BODIES" ROUTE_PATH="$ROUTE_PATH" THREADS="$THREADS" ONION="$ONION" \
        wrk -t"$THREADS" -c"$CONN" -d"${DUR}s" --latency -s scripts/bench.lua "$URL" >"$WORK/wrk.$route.txt"
    TICKS1=$(server_ticks)
    DB1=$(db_ticks)
    sed -e '/^bench_/d' "$WORK/wrk.$route.txt"

    out="$WORK/wrk.$route.txt"
    RPS[$route]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    P50[$route]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    P99[$route]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    bad=$(sed -n 's/^bench_errors=//p' "$out")
    # Connect/read/write failures and timeouts are errors too.
    sock=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$out")
    ERRS[$route]=$((${bad:-0} + ${sock:-0}))
    wraps=$(sed -n 's/^bench_wraps=//p' "$out")
    SAMPLE[$route]=$(sed -n 's/^bench_sample_error=//p' "$out")
    if [[ "$route" == add_pro_payment && "${wraps:-0}" -gt 0 ]]; then
        echo "note: add_pro_payment bodies ran out and were reused ($wraps wraps); reused claims answer 100"
    fi
    if [[ -n "${SAMPLE[$route]}" ]]; then
        echo "first error response: ${SAMPLE[$route]}"
    fi
    CPU[$route]=$(awk -v t="$((TICKS1 - TICKS0))" -v hz="$CLK_TCK" -v d="$DUR" 'BEGIN { printf "%.0f", 100 * t / hz / d }')
    DBCPU[$route]=$(awk -v t="$((DB1 - DB0))" -v hz="$CLK_TCK" -v d="$DUR" 'BEGIN { printf "%.0f", 100 * t / hz / d }')
    HWM[$route]=$(awk -v k="$(status_kb VmHWM)" 'BEGIN { printf "%.1f", k / 1024 }')
    RSS[$route]=$(awk -v k="$(status_kb VmRSS)" 'BEGIN { printf "%.1f", k / 1024 }')
    echo "errors=${ERRS[$route]} server_cpu=${CPU[$route]}% db_cpu=${DBCPU[$route]}% peak_rss=${HWM[$route]}MB rss_now=${RSS[$route]}MB"
done

echo
echo "== summary ($DB; $CORES cores, ${CPU_MODEL:-unknown CPU}; wrk -t$THREADS -c$CONN -d${DUR}s on the same cores)"
printf '%-22s %10s %9s %9s %8s %11s %13s %8s\n' route req/s p50_ms p99_ms errors server_cpu peak_rss_MB db_cpu
for route in "${ROUTES[@]}"; do
    printf '%-22s %10s %9s %9s %8s %10s%% %13s %7s%%\n' "$route" "${RPS[$route]}" "${P50[$route]}" "${P99[$route]}" \
        "${ERRS[$route]}" "${CPU[$route]}" "${HWM[$route]}" "${DBCPU[$route]}"
done
echo "start to first answer: ${START_MS} ms"
for base in generate_pro_proof get_pro_revocations; do
    awk -v d="${RPS[$base]}" -v o="${RPS[$base@onion]}" -v r="$base" 'BEGIN {
        printf "%s through onion requests: %.0f%% of the direct rate\n", r, 100 * o / d }'
done
# Each generate_pro_proof verifies two signatures and signs one proof; with every core doing
# nothing else, that bounds its throughput.
awk -v c="$CORES" -v s="$SIGN_PER_S" -v v="$VERIFY_PER_S" -v r="${RPS[generate_pro_proof]}" 'BEGIN {
    sign_us = 1e6 / s; verify_us = 1e6 / v
    ceiling = c * 1e6 / (2 * verify_us + sign_us)
    printf "ed25519: sign %.1f us, strict verify %.1f us (single thread)\n", sign_us, verify_us
    printf "generate_pro_proof crypto ceiling: %.0f req/s (%d cores / (2 x verify + sign)); measured %.0f = %.0f%% of it\n",
        ceiling, c, r, 100 * r / ceiling
}'
