#!/usr/bin/env bash
# Issue 19: how long each page of the web console takes to become interactive, measured in
# headless Chromium as a user sees it (from the hash change to the page drawn, every GraphQL
# round trip and the picture's layout included). Loads an estate (large by default: about
# 96k CIs, 2.9 M events), serves it with the release build, and runs the console test
# `every_page_is_drawn_and_timed` against it; the figures are printed on its last line.
#
#   bash benches/scripts/console.sh              (from the project root; SIZE=medium for 119k events)
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE=${SIZE:-large}
WORK=${WORK:-/tmp/cmdb-console-bench-$SIZE}
BIN=${BIN:-target/release/cmdb}
PORT=${PORT:-8096}
source benches/scripts/serve_estate.sh
for run in 1 2 3; do
  CMDB_CONSOLE_BENCH_URL="http://127.0.0.1:$PORT" CMDB_CONSOLE_BENCH_TOKEN="$TOKEN" \
    cargo test -q -p cmdb-api --test console -- every_page_is_drawn_and_timed --nocapture 2>&1 \
    | grep "console pages to interactive" | sed "s/^/run $run: /"
done
