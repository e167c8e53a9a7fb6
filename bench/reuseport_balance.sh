#!/usr/bin/env bash
# Balance between workers with and without `reuseport` (not run by CI):
# wrk -t1 -c256 through 2 prefork workers, first with one shared listening
# socket, then with one SO_REUSEPORT socket per worker, each with keep-alive
# and with `Connection: close`; then nginx (2 workers, `listen ... reuseport`
# off and on) the same way. Prints the requests each worker served, counted
# from the access logs (both log only $pid). Loopback only.
#
# usage: bench/reuseport_balance.sh [DURATION]   (default 10; needs wrk, nginx)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNS=${CONNS:-256}
WORK_PREFIX=balance
# shellcheck source=scripts/common.sh
source bench/scripts/common.sh

run_wrk() { # $1: "keepalive" or "close"
    if [ "$1" = close ]; then
        wrk -t1 -c"$CONNS" -d"${DURATION}s" -H 'Connection: close' "http://127.0.0.1:$PORT/"
    else
        wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$PORT/"
    fi
}

# $1 label, $2 wrk output, $3 the per-worker counts ("count pid" lines)
report() {
    local reqs per logged
    reqs=$(grep -Eo '^ +[0-9]+ requests' <<<"$2" | grep -Eo '[0-9]+' || echo 0)
    per=$(sort -rn <<<"$3" | awk '{printf "%s%s", sep, $1; sep=" / "}')
    # Fewer logged than sent: the async access log dropped lines under load.
    logged=$(awk '{n += $1} END {print n + 0}' <<<"$3")
    printf '%-36s wrk=%-8s logged=%-8s per worker: %s\n' "$1" "$reqs" "$logged" "$per"
}

prefork_run() { # $1: reuseport true/false, $2 mode
    PORT=$(free_port)
    rm -f "$WORK/prefork.pid" "$WORK/access.log"
    cat > "$WORK/prefork.toml" <<CONF
workers = 2
pid_file = "$WORK/prefork.pid"
[log]
error_log = "$WORK/error.log"
access_log = "$WORK/access.log"
access_log_format = "\$pid"
[[listen]]
addr = "127.0.0.1:$PORT"
reuseport = $1
[upstreams.app]
servers = ["127.0.0.1:$ORIGIN_PORT"]
keepalive = 256
[[routes]]
path = "/"
upstream = "app"
CONF
    "$BIN" -c "$WORK/prefork.toml" >/dev/null 2>&1 &
    local master=$!
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
    local out
    out=$(run_wrk "$2" 2>&1)
    kill -QUIT "$master"
    wait "$master" || true
    # Each access-log line is the pid of the worker that served it.
    report "prefork reuseport=$1 ($2)" "$out" \
        "$(sort "$WORK/access.log" | uniq -c | awk '{print $1, $2}')"
}

nginx_run() { # $1: reuseport true/false, $2 mode
    PORT=$(free_port)
    rm -f "$WORK/nginx-access.log"
    mkdir -p "$WORK/nginx-tmp"
    local rp=""
    [ "$1" = true ] && rp=" reuseport"
    cat > "$WORK/nginx.conf" <<CONF
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
    log_format bypid '\$pid';
    access_log $WORK/nginx-access.log bypid buffer=256k;
    client_body_temp_path $WORK/nginx-tmp;
    upstream app { server 127.0.0.1:$ORIGIN_PORT; keepalive 256; }
    server {
        listen 127.0.0.1:$PORT$rp;
        location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
CONF
    nginx -c "$WORK/nginx.conf" -p "$WORK" 2>/dev/null
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
    local out
    out=$(run_wrk "$2" 2>&1)
    nginx -c "$WORK/nginx.conf" -p "$WORK" -s quit 2>/dev/null || true
    for _ in $(seq 50); do [ -f "$WORK/nginx.pid" ] || break; sleep 0.1; done
    report "nginx reuseport=$1 ($2)" "$out" "$(sort "$WORK/nginx-access.log" | uniq -c | awk '{print $1, $2}')"
}

echo "wrk -t1 -c$CONNS -d${DURATION}s, 2 workers; origin: may_minihttp; requests per worker from the access logs"
for mode in keepalive close; do
    for rp in false true; do prefork_run $rp $mode; done
    for rp in false true; do nginx_run $rp $mode; done
done
