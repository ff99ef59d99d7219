#!/usr/bin/env bash
# Development / test database helper for policy-values.
#
#   scripts/dev-db.sh DBNAME    make sure a PostgreSQL server answers and that
#                               database DBNAME exists on it, then print ONLY
#                               its connection URL on stdout (logs: stderr)
#   scripts/dev-db.sh --status  exit 0 if the project-local cluster is running
#   scripts/dev-db.sh --stop    stop the project-local cluster (if any)
#   scripts/dev-db.sh --list    print the databases on the server, one per
#                               line: NAME OID (a re-created one has a new OID)
#   scripts/dev-db.sh --drop NAME...  drop these databases on the server, if
#                               they exist (never forced: one in use is left)
#
# Server choice, first match wins:
#   (a) $DATABASE_URL is set: use that server (its database name is replaced
#       by DBNAME);
#   (b) a server answers on 127.0.0.1:5432 as user postgres without password;
#   (c) a project-local cluster in <repo>/.pgdata on 127.0.0.1:54329 (trust
#       auth, superuser postgres), created on first use. PostgreSQL is
#       installed with apt-get if no server binaries are found.
#
# Environment knobs (all optional):
#   DEV_DB_FORCE_LOCAL=1   skip (a) and (b), always use the local cluster
#   DEV_DB_PORT=54329      port of the local cluster
#   PG_BINDIR=/path/bin    where initdb/pg_ctl/postgres live
set -euo pipefail

# Everything except the final URL goes to stderr.
exec 3>&1 1>&2

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
LOCAL_HOST=127.0.0.1
LOCAL_PORT="${DEV_DB_PORT:-54329}"
PGDIR_LINK="$ROOT/.pgdata"
export PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-5}"

log() { printf 'dev-db: %s\n' "$*" >&2; }
die() {
    printf 'dev-db: error: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

IS_ROOT=0
[[ "$(id -u)" == 0 ]] && IS_ROOT=1

# ---------------------------------------------------------------------------
# Binaries
# ---------------------------------------------------------------------------

APT_UPDATED=0
apt_install() {
    [[ $IS_ROOT == 1 ]] || die "PostgreSQL is not installed and we are not root; install it (packages: $*) and retry"
    command -v apt-get >/dev/null || die "PostgreSQL is not installed and apt-get is not available; install it and retry"
    if [[ $APT_UPDATED == 0 ]]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}

# Directory holding initdb/pg_ctl/postgres, or empty. Prefers the version a
# data directory was created with ($1 = data dir, optional).
find_server_bindir() {
    local data="${1:-}" ver d
    if [[ -n "${PG_BINDIR:-}" && -x "$PG_BINDIR/initdb" ]]; then
        echo "$PG_BINDIR"
        return
    fi
    if [[ -n "$data" && -r "$data/PG_VERSION" ]]; then
        ver="$(cat "$data/PG_VERSION")"
        if [[ -x "/usr/lib/postgresql/$ver/bin/pg_ctl" ]]; then
            echo "/usr/lib/postgresql/$ver/bin"
            return
        fi
    fi
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$d" && -x "$d/initdb" ]]; then
        echo "$d"
        return
    fi
    if d="$(command -v initdb 2>/dev/null)"; then
        dirname "$(readlink -f "$d")"
        return
    fi
    echo ""
}

# Sets PSQL / PG_ISREADY to a usable client, installing one if $1 == install.
find_client() {
    PSQL="$(command -v psql 2>/dev/null || true)"
    PG_ISREADY="$(command -v pg_isready 2>/dev/null || true)"
    local bindir
    bindir="$(find_server_bindir)"
    if [[ -z "$PSQL" && -n "$bindir" && -x "$bindir/psql" ]]; then PSQL="$bindir/psql"; fi
    if [[ -z "$PG_ISREADY" && -n "$bindir" && -x "$bindir/pg_isready" ]]; then PG_ISREADY="$bindir/pg_isready"; fi
    if [[ -z "$PSQL" && "${1:-}" == install ]]; then
        apt_install postgresql-client
        find_client
    fi
}

# ---------------------------------------------------------------------------
# Database creation
# ---------------------------------------------------------------------------

# psql against the given URL: quiet, unaligned, never prompts for a password.
psql_url() {
    local url="$1"
    shift
    "$PSQL" "$url" -X -q -w -v ON_ERROR_STOP=1 -tA "$@"
}

db_exists() { # admin_url dbname
    local out
    out="$(psql_url "$1" -v db="$2" <<<"select 1 from pg_database where datname = :'db';")"
    [[ "$out" == 1 ]]
}

ensure_db() { # admin_url dbname
    local admin="$1" db="$2" err
    if db_exists "$admin" "$db"; then
        return
    fi
    log "creating database $db"
    if ! err="$(psql_url "$admin" -v db="$db" <<<'create database :"db";' 2>&1)"; then
        # A concurrent call may have created it in the meantime.
        if db_exists "$admin" "$db"; then
            log "database $db was created concurrently"
            return
        fi
        die "could not create database $db: $err"
    fi
}

# ---------------------------------------------------------------------------
# (a) DATABASE_URL
# ---------------------------------------------------------------------------

# Replace the database (path) part of a postgres URL, keeping the query.
url_with_db() { # url dbname
    local url="$1" db="$2" scheme rest query="" authority
    [[ "$url" == *://* ]] || die "DATABASE_URL does not look like a URL (postgres://...): $url"
    scheme="${url%%://*}"
    rest="${url#*://}"
    if [[ "$rest" == *\?* ]]; then
        query="?${rest#*\?}"
        rest="${rest%%\?*}"
    fi
    authority="${rest%%/*}"
    printf '%s://%s/%s%s' "$scheme" "$authority" "$db" "$query"
}

# Hide a password in a URL for logging.
redact() { sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"; }

# ---------------------------------------------------------------------------
# (c) project-local cluster
# ---------------------------------------------------------------------------

# Run a command as the cluster owner (postgres when we are root).
as_owner() {
    if [[ $IS_ROOT == 1 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# Create <repo>/.pgdata (owned by the cluster owner). If the postgres OS user
# cannot reach the repo (e.g. a checkout under /root), .pgdata becomes a
# symlink to a directory under /var/tmp instead.
make_pgdir() {
    if [[ -e "$PGDIR_LINK" || -L "$PGDIR_LINK" ]]; then
        return
    fi
    if [[ $IS_ROOT == 1 ]]; then
        if ! id -u postgres >/dev/null 2>&1; then
            log "creating OS user postgres"
            useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
        fi
        mkdir -m 0700 "$PGDIR_LINK"
        chown postgres: "$PGDIR_LINK"
        if ! as_owner test -w "$PGDIR_LINK"; then
            local alt
            alt="/var/tmp/policy-values-pgdata-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
            log "OS user postgres cannot access $ROOT; keeping the cluster in $alt"
            rmdir "$PGDIR_LINK"
            mkdir -p -m 0700 "$alt"
            chown postgres: "$alt"
            ln -s "$alt" "$PGDIR_LINK"
        fi
    else
        mkdir -m 0700 "$PGDIR_LINK"
    fi
}

# Sets PGDIR, DATA, LOGFILE, SOCKDIR.
local_paths() {
    PGDIR="$(readlink -f "$PGDIR_LINK")"
    DATA="$PGDIR/data"
    LOGFILE="$PGDIR/postgres.log"
    SOCKDIR="$PGDIR/run"
}

local_running() { # needs BINDIR + paths
    [[ -f "$DATA/PG_VERSION" ]] && as_owner "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

port_answers() { # host port
    if [[ -n "${PG_ISREADY:-}" ]]; then
        # 0 = accepting, 1 = rejecting (starting up / shutting down),
        # 2 = no response, 3 = no attempt
        local rc=0
        "$PG_ISREADY" -q -h "$1" -p "$2" -t 3 >/dev/null 2>&1 || rc=$?
        [[ $rc == 0 || $rc == 1 ]]
    else
        (exec 9<>"/dev/tcp/$1/$2") 2>/dev/null
    fi
}

# Settings regenerated at every start, so a moved checkout still works.
write_local_conf() {
    local sockdirs="$SOCKDIR"
    # unix socket paths are limited to ~107 bytes; fall back to TCP only.
    if (( ${#SOCKDIR} + 20 > 100 )); then
        log "socket dir path too long for a unix socket; TCP only"
        sockdirs=""
    fi
    as_owner mkdir -p "$SOCKDIR"
    as_owner tee "$DATA/dev-db.conf" >/dev/null <<EOF
# Written by scripts/dev-db.sh at every start; do not edit.
listen_addresses = '$LOCAL_HOST'
port = $LOCAL_PORT
unix_socket_directories = '${sockdirs//\'/\'\'}'
# The fan-out benchmark (benches/fanout.rs) reads each write's commit time.
track_commit_timestamp = on
EOF
}

init_local() {
    log "initialising a project-local PostgreSQL cluster in $DATA ($("$BINDIR/postgres" --version))"
    as_owner "$BINDIR/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C >"$PGDIR/initdb.log" 2>&1 ||
        { cat "$PGDIR/initdb.log" >&2; die "initdb failed"; }
    # Throwaway dev/test data: trade durability for speed.
    as_owner tee -a "$DATA/postgresql.conf" >/dev/null <<'EOF'

# --- policy-values dev cluster (scripts/dev-db.sh) ---
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
include_if_exists = 'dev-db.conf'
EOF
}

# pg_ctl start, without leaking our file descriptors (the stdout pipe of a
# `$(scripts/dev-db.sh ...)` caller, the lock) into the long-lived server:
# that would block the caller and hold the lock forever.
start_server() {
    (
        local fd
        for fd in /proc/self/fd/*; do
            fd="${fd##*/}"
            if [[ "$fd" =~ ^[0-9]+$ ]] && ((fd > 2)); then
                eval "exec $fd>&-" 2>/dev/null || true
            fi
        done
        as_owner "$BINDIR/pg_ctl" -D "$DATA" -l "$LOGFILE" -w -t 60 start </dev/null >&2
    )
}

start_local() {
    # Serialise concurrent callers (mkdir/initdb/start races): lock this
    # script file (one per checkout).
    exec 8<"${BASH_SOURCE[0]}"
    flock 8

    make_pgdir
    local_paths

    BINDIR="$(find_server_bindir "$DATA")"
    if [[ -z "$BINDIR" ]]; then
        apt_install postgresql postgresql-client
        BINDIR="$(find_server_bindir "$DATA")"
        [[ -n "$BINDIR" ]] || die "no initdb found even after installing postgresql"
    fi
    find_client install

    if [[ ! -f "$DATA/PG_VERSION" ]]; then
        init_local
    fi

    if local_running; then
        # Reuse it, on whatever port it was started with.
        local port
        port="$(sed -n 4p "$DATA/postmaster.pid" 2>/dev/null || true)"
        if [[ "$port" =~ ^[0-9]+$ && "$port" != "$LOCAL_PORT" ]]; then
            log "local cluster is already running on port $port (not $LOCAL_PORT); using it"
            LOCAL_PORT="$port"
        fi
    else
        if port_answers "$LOCAL_HOST" "$LOCAL_PORT"; then
            die "port $LOCAL_PORT is taken by another server (not $DATA); stop it or set DEV_DB_PORT"
        fi
        write_local_conf
        log "starting local cluster on $LOCAL_HOST:$LOCAL_PORT (log: $LOGFILE)"
        if ! start_server; then
            tail -n 30 "$LOGFILE" >&2 || true
            die "could not start the local cluster"
        fi
    fi

    flock -u 8
    exec 8>&-
}

stop_local() {
    if [[ ! -e "$PGDIR_LINK" ]]; then
        log "no project-local cluster ($PGDIR_LINK does not exist)"
        return
    fi
    local_paths
    if [[ ! -f "$DATA/PG_VERSION" ]]; then
        log "no project-local cluster in $DATA"
        return
    fi
    BINDIR="$(find_server_bindir "$DATA")"
    [[ -n "$BINDIR" ]] || die "no pg_ctl found"
    if local_running; then
        log "stopping local cluster in $DATA"
        as_owner "$BINDIR/pg_ctl" -D "$DATA" -m fast -w stop >&2
    else
        log "local cluster in $DATA is not running"
    fi
}

status_local() {
    [[ -e "$PGDIR_LINK" ]] || return 1
    local_paths
    BINDIR="$(find_server_bindir "$DATA")"
    [[ -n "$BINDIR" ]] || return 1
    local_running
}

# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

# Sets ADMIN_URL to the maintenance database of the server to use, first
# match wins (see the top of this file).
choose_server() {
    if [[ "${DEV_DB_FORCE_LOCAL:-}" != 1 && -n "${DATABASE_URL:-}" ]]; then
        # (a)
        find_client install
        ADMIN_URL="$(url_with_db "$DATABASE_URL" postgres)"
        psql_url "$ADMIN_URL" -c 'select 1' >/dev/null ||
            die "server from DATABASE_URL does not answer: $(redact "$ADMIN_URL")"
        log "using the server from DATABASE_URL"
    elif [[ "${DEV_DB_FORCE_LOCAL:-}" != 1 ]] && {
        find_client
        port_answers 127.0.0.1 5432
    } && {
        [[ -n "$PSQL" ]] || find_client install
        psql_url "postgres://postgres@127.0.0.1:5432/postgres" -c 'select 1' >/dev/null 2>&1
    }; then
        # (b)
        ADMIN_URL="postgres://postgres@127.0.0.1:5432/postgres"
    else
        # (c)
        start_local
        ADMIN_URL="postgres://postgres@$LOCAL_HOST:$LOCAL_PORT/postgres"
    fi
}

check_name() {
    [[ "$1" =~ ^[A-Za-z_][A-Za-z0-9_]{0,62}$ ]] ||
        die "database name must match [A-Za-z_][A-Za-z0-9_]* (got '$1')"
}

# Drops each named database that exists, without force: one still in use
# (after PostgreSQL's own 5-second wait) is left, with a warning.
drop_dbs() { # admin_url dbname...
    local admin="$1" db err failed=0
    shift
    for db in "$@"; do
        db_exists "$admin" "$db" || continue
        log "dropping database $db"
        if ! err="$(psql_url "$admin" -v db="$db" <<<'drop database if exists :"db";' 2>&1)"; then
            log "warning: could not drop database $db: $err"
            failed=1
        fi
    done
    return "$failed"
}

case "${1:-}" in
"" | -h | --help)
    usage
    [[ -n "${1:-}" ]] && exit 0
    exit 2
    ;;
--stop)
    stop_local
    exit 0
    ;;
--status)
    if status_local; then
        log "local cluster in $DATA is running on $LOCAL_HOST:$LOCAL_PORT"
        exit 0
    fi
    log "local cluster is not running"
    exit 1
    ;;
--list)
    choose_server
    psql_url "$ADMIN_URL" -F ' ' <<<'select datname, oid from pg_database order by datname;' >&3
    exit 0
    ;;
--drop)
    shift
    for name in "$@"; do check_name "$name"; done
    choose_server
    drop_dbs "$ADMIN_URL" "$@"
    exit
    ;;
-*) die "unknown option $1" ;;
esac

DBNAME="$1"
check_name "$DBNAME"
choose_server
URL="$(url_with_db "$ADMIN_URL" "$DBNAME")"
ensure_db "$ADMIN_URL" "$DBNAME"
printf '%s\n' "$URL" >&3
