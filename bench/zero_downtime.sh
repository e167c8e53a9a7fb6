#!/usr/bin/env bash
# Zero-downtime load script (not run by CI): wrk at full speed through
# prefork for DURATION seconds while it is (a) reloaded every second,
# alternating the hot path (routes change) and the new-generation path
# (a listener is added/removed), (b) losing a random worker to SIGKILL every
# 2 s, (c) binary-upgraded (SIGUSR2) mid-run; each with keep-alive and with
# `Connection: close`. The same reload loop runs against nginx (nginx -s
# reload, alternating two configs) for comparison. Loopback only.
#
# usage: bench/zero_downtime.sh [DURATION]   (default 30; needs wrk, nginx)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-30}
CONNS=${CONNS:-64}
WORK_PREFIX=zd
# shellcheck source=scripts/common.sh
source bench/scripts/common.sh

# prefork config; $1: extra [[listen]] port or empty, $2: route path variant
prefork_config() {
    local extra=$1 variant=$2
    cat > "$WORK/prefork.toml" <<CONF
workers = 2
pid_file = "$WORK/prefork.pid"
shutdown_timeout = "10s"
[log]
error_log = "$WORK/error.log"
access_log = "off"
[[listen]]
addr = "127.0.0.1:$PORT"
$( [ -n "$extra" ] && printf '[[listen]]\naddr = "127.0.0.1:%s"\n' "$extra" )
[upstreams.app]
servers = ["127.0.0.1:$ORIGIN_PORT"]
keepalive = 256
[[routes]]
path = "/"
upstream = "app"
[[routes]]
path = "/variant-$variant"
respond = { status = 200, body = "v$variant" }
CONF
}

summary() { # $1 label, $2 wrk output
    local reqs errs non2xx
    reqs=$(grep -Eo '^ +[0-9]+ requests' <<<"$2" | grep -Eo '[0-9]+' || echo 0)
    errs=$(grep -E 'Socket errors' <<<"$2" | sed 's/^ *//' || true)
    non2xx=$(grep -E 'Non-2xx' <<<"$2" | sed 's/^ *//' || true)
    printf '%-34s requests=%-9s %s %s\n' "$1" "$reqs" "${errs:-Socket errors: none}" "${non2xx:-Non-2xx: 0}"
}

run_wrk() { # $1: "keepalive" or "close"
    if [ "$1" = close ]; then
        wrk -t1 -c"$CONNS" -d"${DURATION}s" -H 'Connection: close' "http://127.0.0.1:$PORT/"
    else
        wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$PORT/"
    fi
}

prefork_scenario() { # $1 scenario, $2 mode
    PORT=$(free_port)
    EXTRA=$(free_port)
    rm -f "$WORK/prefork.pid"
    prefork_config "" 0
    "$BIN" -c "$WORK/prefork.toml" >>"$WORK/master.out" 2>&1 &
    local master=$!
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
    run_wrk "$2" >"$WORK/wrk.out" 2>&1 &
    local wrk=$!
    local t=0
    while kill -0 $wrk 2>/dev/null; do
        sleep 1; t=$((t + 1))
        local m; m=$(cat "$WORK/prefork.pid" 2>/dev/null || echo $master)
        case $1 in
            reload)
                if [ $((t % 2)) = 0 ]; then prefork_config "" $t   # hot: a route changes
                elif [ $((t % 4)) = 1 ]; then prefork_config "$EXTRA" $t  # generation: listener added
                else prefork_config "" $t; fi                      # generation: listener removed
                kill -HUP "$m" 2>/dev/null || true ;;
            kill)
                if [ $((t % 2)) = 0 ]; then
                    local victim
                    victim=$(pgrep -P "$m" -f 'prefork worker' | shuf -n1 || true)
                    [ -n "$victim" ] && kill -9 "$victim" 2>/dev/null || true
                fi ;;
            upgrade)
                [ $t = $((DURATION / 3)) ] && kill -USR2 "$m" ;;
        esac
    done
    wait $wrk || true
    summary "prefork $1 ($2)" "$(cat "$WORK/wrk.out")"
    if [ "$1" = upgrade ]; then
        echo "    master before $master, pid file after: $(cat "$WORK/prefork.pid" 2>/dev/null)"
    fi
    kill "$(cat "$WORK/prefork.pid" 2>/dev/null || echo $master)" 2>/dev/null || true
    wait $master 2>/dev/null || true
    sleep 1
}

nginx_config() { # $1: variant
    cat > "$WORK/nginx.conf" <<CONF
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx-tmp;
    upstream app { server 127.0.0.1:$ORIGIN_PORT; keepalive 256; }
    server {
        listen 127.0.0.1:$PORT;
        location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
        location /variant-$1 { return 200 "v$1"; }
    }
}
CONF
}

nginx_scenario() { # $1 mode
    PORT=$(free_port)
    mkdir -p "$WORK/nginx-tmp"
    nginx_config 0
    nginx -c "$WORK/nginx.conf" -p "$WORK" 2>/dev/null
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
    run_wrk "$1" >"$WORK/wrk.out" 2>&1 &
    local wrk=$! t=0
    while kill -0 $wrk 2>/dev/null; do
        sleep 1; t=$((t + 1))
        nginx_config $t
        nginx -c "$WORK/nginx.conf" -p "$WORK" -s reload 2>/dev/null || true
    done
    wait $wrk || true
    summary "nginx reload ($1)" "$(cat "$WORK/wrk.out")"
    nginx -c "$WORK/nginx.conf" -p "$WORK" -s quit 2>/dev/null || true
    sleep 1
}

echo "wrk -t1 -c$CONNS -d${DURATION}s; prefork 2 workers, nginx 2 workers; origin: may_minihttp"
for mode in keepalive close; do
    for scenario in reload kill upgrade; do prefork_scenario $scenario $mode; done
    nginx_scenario $mode
done
