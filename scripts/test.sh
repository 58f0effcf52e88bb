#!/usr/bin/env bash
# Runs every test of the workspace. The PostgreSQL variants need a PostgreSQL server: when none
# answers at PRO_TEST_PG_URL, this script installs one (Debian packages), starts a cluster and
# creates the test role, then runs `cargo test --workspace --locked` (extra arguments are passed
# on). Set PRO_TEST_SKIP_PG=1 to run without PostgreSQL (its variants are then skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"

# The role and password the tests use by default (tests/integration/pg.rs).
PG_ROLE=pro_test
PG_PASSWORD=pro_test

pg_answers() {
    command -v psql >/dev/null && PGCONNECT_TIMEOUT=3 psql "$1" -Atqc 'SELECT 1' >/dev/null 2>&1
}

# Installs PostgreSQL if needed, starts a cluster, creates the test role and points
# PRO_TEST_PG_URL at it.
setup_postgres() {
    if ! command -v pg_lsclusters >/dev/null || [[ -z "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null)" ]]; then
        echo "== installing PostgreSQL (Debian packages)"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
    fi
    if [[ -z "$(pg_lsclusters -h 2>/dev/null)" ]]; then
        local version
        version=$(ls /usr/lib/postgresql | sort -V | tail -1)
        echo "== creating cluster $version/main"
        $SUDO pg_createcluster "$version" main >/dev/null
    fi
    # The first cluster (version, name, port, status).
    local version name port status
    read -r version name port status _ < <(pg_lsclusters -h | head -1)
    if [[ "$status" != online* ]]; then
        echo "== starting cluster $version/$name on port $port"
        $SUDO pg_ctlcluster "$version" "$name" start
    fi
    $SUDO runuser -u postgres -- psql -p "$port" -qc "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE') THEN
            CREATE ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
        END IF; END \$\$;"
    export PRO_TEST_PG_URL="postgresql://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$port/postgres"
}

if [[ "${PRO_TEST_SKIP_PG:-}" == 1 ]]; then
    echo "== PostgreSQL variants skipped (PRO_TEST_SKIP_PG=1)"
elif [[ -n "${PRO_TEST_PG_URL:-}" ]] && pg_answers "$PRO_TEST_PG_URL"; then
    echo "== PostgreSQL for the tests: PRO_TEST_PG_URL (given)"
else
    setup_postgres
    pg_answers "$PRO_TEST_PG_URL" || { echo "PostgreSQL does not answer at $PRO_TEST_PG_URL" >&2; exit 1; }
    echo "== PostgreSQL for the tests: $PRO_TEST_PG_URL"
fi

cargo test --workspace --locked "$@"
