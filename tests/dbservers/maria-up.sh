#!/bin/bash
# maria-up.sh BASE PORT -> MariaDB (Debian's mariadb-server-core) on 127.0.0.1:PORT, data in
# BASE/data, database "app" for user app/app@127.0.0.1; prints the server PID.  Exits 1 within
# ~15 s on any failure; maria-down.sh BASE stops whatever it started.
set -eu
BASE=$1; PORT=$2; mkdir -p "$BASE"
SMALL="--innodb-log-file-size=8M --innodb-buffer-pool-size=64M"   # a small datadir, quick to make
# --no-defaults first: Debian's /etc/mysql/my.cnf (socket in /run/mysqld) stays out
[ -d "$BASE/data/mysql" ] || timeout 60 mariadb-install-db --no-defaults --datadir="$BASE/data" \
    --auth-root-authentication-method=normal --skip-test-db $SMALL >"$BASE/install-db.log" 2>&1 \
    || { cat "$BASE/install-db.log" >&2; exit 1; }
USER_ARG=""; [ "$(id -u)" != 0 ] || USER_ARG="--user=root"    # mariadbd refuses root otherwise
/usr/sbin/mariadbd --no-defaults $USER_ARG --datadir="$BASE/data" --socket="$BASE/mysqld.sock" \
    --port="$PORT" --bind-address=127.0.0.1 --skip-name-resolve --pid-file="$BASE/mariadbd.pid" \
    --log-error="$BASE/mariadbd.err" $SMALL </dev/null >>"$BASE/mariadbd.out" 2>&1 &
PID=$!; echo $PID >"$BASE/server.pid"
SQL="mariadb --no-defaults -S $BASE/mysqld.sock -uroot"
for i in $(seq 100); do
    $SQL -e 'SELECT 1' >/dev/null 2>&1 && break
    kill -0 $PID 2>/dev/null && [ "$i" -lt 100 ] || { cat "$BASE/mariadbd.err" >&2; exit 1; }
    sleep 0.1
done
$SQL -e "CREATE DATABASE IF NOT EXISTS app; GRANT ALL ON app.* TO 'app'@'127.0.0.1' IDENTIFIED BY 'app'"
echo $PID
