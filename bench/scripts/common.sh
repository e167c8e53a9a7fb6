# Shared set-up of the shell load scripts in bench/ (sourced, not run): checks
# for wrk and nginx, builds prefork and the origin in release mode, makes a
# work directory, starts the origin on a free loopback port, and stops every
# process the script started (by pid) when it exits.
#
# usage: WORK_PREFIX=name; source bench/scripts/common.sh
# sets: BIN ORIGIN WORK ORIGIN_PORT PIDS; defines free_port.

command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)"; exit 1; }
command -v nginx >/dev/null || { echo "install nginx (apt-get install nginx)"; exit 1; }
cargo build --release -q -p prefork -p prefork-bench
BIN=$PWD/target/release/prefork
ORIGIN=$PWD/target/release/origin
WORK=$(mktemp -d "/tmp/prefork-${WORK_PREFIX}-XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$WORK/prefork.pid" ] && kill "$(cat "$WORK/prefork.pid")" 2>/dev/null || true
    [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    sleep 0.5
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
ORIGIN_PORT=$(free_port)
"$ORIGIN" --addr "127.0.0.1:$ORIGIN_PORT" --name origin --threads 1 >/dev/null 2>&1 &
PIDS+=($!)
