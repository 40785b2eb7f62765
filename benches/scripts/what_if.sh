#!/usr/bin/env bash
# Issue 15 part 3 over HTTP: `whatIf` (a risk assessment and the policy's decision for a change
# of 20 random technical CIs, never truncated) on the large estate, as a change form or a
# deployment tool asks it. Serves the estate, writes 500 queries with `change_risk` (which
# also prints the in-process figures), then runs `loadgen` with one connection (latency)
# and with 64 (throughput).
#
#   bash benches/scripts/what_if.sh          (from the project root; SIZE=medium to try it)
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE=${SIZE:-large}
WORK=${WORK:-/tmp/cmdb-large-answers-$SIZE}
BIN=${BIN:-target/release/cmdb}
PORT=${PORT:-8097}
SERVE_ARGS="--cost-per-second admin=1000000000"
cargo build --release -p cmdb-benches --bin loadgen --bin change_risk >/dev/null
source benches/scripts/serve_estate.sh
# The server is idle meanwhile (it holds its own graph of the estate, so memory is doubled).
target/release/change_risk "$WORK/estate" --query-file "$WORK/whatif.txt" | grep -E "assessment|walk alone|wrote"
grep "indexes of the head built" "$WORK/serve.err" | head -3 || true
LOADGEN="target/release/loadgen --url http://127.0.0.1:$PORT/graphql --token $TOKEN --query-file $WORK/whatif.txt"
echo -n "whatIf, 1 connection: "; $LOADGEN --connections 1 --duration-secs 10 --warmup-secs 2 | tail -1
echo -n "whatIf, 64 connections: "; $LOADGEN --connections 64 --duration-secs 10 --warmup-secs 2 | tail -1
