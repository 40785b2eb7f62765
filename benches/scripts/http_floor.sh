#!/usr/bin/env bash
# Issue 15 part 7: the HTTP floor of this host against the server's smallest answers, one
# connection each. Measures, three rounds:
#   nginx     a fixed `200 ok` from nginx on loopback (installed with apt-get if missing): what
#             any server pays on this host;
#   healthz   the server's `/healthz` (no GraphQL), with wrk;
#   head      `{ head { position } }`, with loadgen;
#   asof      the as-of reads of one CI written by large_answers.sh, with loadgen.
# Each line gives the p50 and the server's CPU per request (user + system, from /proc/PID/stat).
#
#   bash benches/scripts/large_answers.sh          (once: writes the estate and the samples)
#   bash benches/scripts/http_floor.sh             (BIN=... to measure another build)
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${WORK:-/tmp/cmdb-large-answers-large}
BIN=${BIN:-target/release/cmdb}
PORT=${PORT:-8097}
NGINX_PORT=${NGINX_PORT:-8093}
ROUNDS=${ROUNDS:-3}
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
command -v nginx >/dev/null || apt-get install -y nginx-light >/dev/null
[ -f "$WORK/asof.txt" ] || { echo "run benches/scripts/large_answers.sh first" >&2; exit 1; }
cargo build --release -p cmdb-benches --bin loadgen >/dev/null

cat > "$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon on;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 64; }
http { access_log off; server { listen 127.0.0.1:$NGINX_PORT; location / { return 200 "ok"; } } }
EOF
nginx -c "$WORK/nginx.conf"
"$BIN" --data-dir "$WORK/estate" serve --listen "127.0.0.1:$PORT" > "$WORK/floor.out" 2> "$WORK/floor.err" &
SERVER=$!
trap 'kill -INT $SERVER 2>/dev/null; nginx -c "$WORK/nginx.conf" -s quit 2>/dev/null || true' EXIT
until curl -fs -o /dev/null "http://127.0.0.1:$PORT/readyz"; do sleep 0.5; done
NGINX=$(cat "$WORK/nginx.pid")
NGINX_WORKER=$(pgrep -P "$NGINX" | head -1)
LOADGEN="target/release/loadgen --url http://127.0.0.1:$PORT/graphql --token $(cat "$WORK/token") --connections 1"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# measure NAME PID COMMAND...: runs the command (which prints "p50 REQUESTS"), reports per request.
measure() {
  local name=$1 pid=$2; shift 2
  local before after p50 requests
  before=$(cpu_ticks "$pid")
  read -r p50 requests < <("$@")
  after=$(cpu_ticks "$pid")
  echo "$name: p50 ${p50} us, server CPU $(( (after - before) * 1000000 / 100 / requests )) us per request"
}
with_wrk() {
  wrk -t1 -c1 -d4s --latency "$1" | awk '/ 50%/ {p = $2 + 0; if ($2 ~ /ms/) p *= 1000} /requests in/ {n = $1} END {print p, n}'
}
with_loadgen() {
  $LOADGEN --duration-secs 4 --warmup-secs 0 "$@" | tail -1 | sed 's/^requests \([0-9]*\) .*p50 \([0-9]*\).*/\2 \1/'
}
$LOADGEN --duration-secs 1 --warmup-secs 1 --query-file "$WORK/asof.txt" > /dev/null
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round"
  measure "  nginx, fixed 200" "$NGINX_WORKER" with_wrk "http://127.0.0.1:$NGINX_PORT/"
  measure "  cmdb /healthz" "$SERVER" with_wrk "http://127.0.0.1:$PORT/healthz"
  measure "  cmdb head" "$SERVER" with_loadgen
  measure "  cmdb as-of read" "$SERVER" with_loadgen --query-file "$WORK/asof.txt"
done
