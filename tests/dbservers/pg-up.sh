#!/bin/sh
# pg-up.sh BASE PORT -> PostgreSQL 15 (Debian's) on 127.0.0.1:PORT, data in BASE/data, role and
# database "app" (password "app"); prints the postmaster PID.  Exits 1 within ~45 s on any failure
# (pg_ctl's own 30 s wait, then 10 s of readiness polls); pg-down.sh BASE stops whatever it started.
# BASE's parent must be traversable by the postgres user (0755): pytest's tmp_path is not.
set -eu
BASE=$1; PORT=$2; PGBIN=/usr/lib/postgresql/15/bin   # not on PATH on Debian
if [ "$(id -u)" = 0 ]; then
    AS_PG="runuser -u postgres --"                   # initdb and postgres refuse to run as root
    mkdir -p "$BASE"; chown postgres:postgres "$BASE"
else
    AS_PG=""; mkdir -p "$BASE"
fi
chmod 700 "$BASE"
cd "$BASE"                                           # runuser keeps the cwd: one postgres can enter
NEW=0
[ -f data/PG_VERSION ] || { NEW=1; $AS_PG "$PGBIN/initdb" -D "$BASE/data" -U postgres \
    -A trust -E UTF8 --locale=C.UTF-8 --no-sync >initdb.log 2>&1 || { cat initdb.log >&2; exit 1; }; }
# fsync and friends off: a throwaway test server, durability is not wanted.
$AS_PG "$PGBIN/pg_ctl" -D "$BASE/data" -l "$BASE/postgres.log" -w -t 30 -o "-p $PORT -k $BASE \
    -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null || { cat "$BASE/postgres.log" >&2; exit 1; }
i=0
until "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres; do
    i=$((i+1)); [ $i -lt 100 ] || { echo "postgres not ready on port $PORT" >&2; exit 1; }; sleep 0.1
done
[ $NEW = 0 ] || "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -q -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE app LOGIN PASSWORD 'app'" -c "CREATE DATABASE app OWNER app" >&2
head -1 data/postmaster.pid
