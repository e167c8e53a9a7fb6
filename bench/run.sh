#!/usr/bin/env bash
# Side-by-side benchmark of prefork, nginx and HAProxy on loopback (not in CI).
# Installs wrk, nginx and HAProxy from the distribution if missing, builds
# prefork and the origin in release mode, then runs bench/scripts/bench.py
# (options: --duration S --rounds N --threads N --workers N --idle N
# --cells 1,2|all|none --no-balance --cpu-affinity auto|off).
# Writes the Markdown report to bench/results/latest.md. `bench/run.sh tls`
# runs the TLS cells instead (bench/scripts/tls.py: --duration --rounds
# --cells --idle --targets), written to bench/results/tls.md; `bench/run.sh h2`
# the HTTP/2 cells (bench/scripts/h2.py: --duration --rounds --cells --idle
# --targets, h2load from nghttp2-client), written to bench/results/h2.md.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v openssl >/dev/null || missing+=(openssl)
if [ "${1:-}" = h2 ]; then
  command -v h2load >/dev/null || missing+=(nghttp2-client)
fi
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

cargo build --release --bin prefork --bin origin --bin tlsload
# `bench/run.sh tls [options]`: the TLS cells (bench/scripts/tls.py) instead.
if [ "${1:-}" = tls ]; then
  shift
  exec python3 bench/scripts/tls.py "$@"
fi
# `bench/run.sh h2 [options]`: the HTTP/2 cells (bench/scripts/h2.py) instead.
if [ "${1:-}" = h2 ]; then
  shift
  exec python3 bench/scripts/h2.py "$@"
fi
exec python3 bench/scripts/bench.py "$@"
