#!/bin/bash
# maria-down.sh BASE -> SIGTERM (a clean shutdown), then wait at most 30 s until the PID is gone
# or only a zombie (mariadbd is re-parented to init, which reaps it late).  Nothing running is
# not an error; still running after 30 s gets SIGKILL.
PID=$(cat "$1/server.pid" 2>/dev/null) && kill -TERM "$PID" 2>/dev/null || exit 0
for _ in $(seq 300); do
    st=$(ps -o stat= -p "$PID") || break
    [[ $st == Z* ]] && break
    sleep 0.1
done
[[ ${st:-} == "" || $st == Z* ]] || kill -KILL "$PID" 2>/dev/null
rm -f "$1/server.pid"
