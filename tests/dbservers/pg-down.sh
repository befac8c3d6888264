#!/bin/sh
# pg-down.sh BASE -> fast shutdown of the server pg-up.sh started there (open transactions are
# rolled back); waits at most 30 s.  Nothing running (or a half-made BASE) is not an error.
set -eu
BASE=$1
[ -f "$BASE/data/postmaster.pid" ] || exit 0
cd "$BASE"
AS_PG=""; [ "$(id -u)" != 0 ] || AS_PG="runuser -u postgres --"
$AS_PG /usr/lib/postgresql/15/bin/pg_ctl -D "$BASE/data" -m fast -w -t 30 stop >/dev/null
