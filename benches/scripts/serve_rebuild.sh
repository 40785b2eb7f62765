#!/usr/bin/env bash
# Issue 15, part 6: how long `cmdb serve` takes to rebuild its graph from the log alone.
#
#   bash benches/scripts/serve_rebuild.sh BINARY DATA_DIR [PORT]
#
# DATA_DIR is a copy of an estate (e.g. the large one from `large_estate`) whose projections
# folder this script deletes, so the server starts with no checkpoint. Prints: seconds from
# launch to the "graph projection ready" log line, user and system CPU seconds, and RssAnon MB.
set -euo pipefail
BIN=${1:?usage: serve_rebuild.sh BINARY DATA_DIR [PORT]}
DIR=${2:?usage: serve_rebuild.sh BINARY DATA_DIR [PORT]}
PORT=${3:-8099}
[ -f "$DIR/events.sqlite" ] || { echo "no events.sqlite in $DIR" >&2; exit 2; }
rm -rf "$DIR/projections"
LOG=$(mktemp)
start=$(date +%s.%N)
"$BIN" --data-dir "$DIR" serve --listen "127.0.0.1:$PORT" > /dev/null 2> "$LOG" &
PID=$!
trap 'kill -INT $PID 2>/dev/null || true; rm -f "$LOG"' EXIT
until grep -q "graph projection ready" "$LOG"; do
    kill -0 $PID 2>/dev/null || { echo "the server stopped:" >&2; tail -5 "$LOG" >&2; exit 1; }
    sleep 0.05
done
end=$(date +%s.%N)
cpu=$(awk '{print $14/100, $15/100}' "/proc/$PID/stat")
anon=$(awk '/RssAnon/ {print $2/1024}' "/proc/$PID/status")
echo "$(echo "$end - $start" | bc) s; user, system CPU s: $cpu; RssAnon MB: $anon"
