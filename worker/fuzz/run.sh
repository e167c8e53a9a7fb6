#!/bin/sh
# Runs each fuzz target for a bounded time (default 60 s each):
#   worker/fuzz/run.sh [SECONDS]
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Crashes land in worker/fuzz/artifacts/<target>/; the script fails on one.
set -eu
seconds="${1:-60}"
cd "$(dirname "$0")/.."
for target in request_head chunked proxy_header; do
    mkdir -p "fuzz/corpus/$target"
    cp -n fuzz/seeds/"$target"/* "fuzz/corpus/$target/" 2>/dev/null || true
    echo "== $target for ${seconds}s"
    cargo +nightly fuzz run "$target" -- \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1
done
