#!/usr/bin/env bash
# Two `cmdb serve` processes on one PostgreSQL log (issue 14): `head` and an as-of query over
# HTTP against one server, then against both at once (two load generators, half the
# connections each); prints requests/s for each. Needs the release binaries and a database
# URL whose role may CREATE DATABASE:
#   cargo build --release -p cmdb-api -p cmdb-benches --bin cmdb --bin loadgen
#   benches/scripts/two_servers.sh postgres://cmdb:cmdb@localhost/cmdb_test
set -euo pipefail
cd "$(dirname "$0")/../.."
admin_url="${1:?a PostgreSQL URL}"
seconds="${SECONDS_MEASURED:-10}"
name="cmdb_bench_$(date +%s)"
psql -q "$admin_url" -c "CREATE DATABASE $name"
url="${admin_url%/*}/$name"
work="$(mktemp -d)"
cleanup() {
    # The servers are started inside `start`'s subshell: stop them by their recorded pids.
    for pid_file in "$work"/*.pid; do
        [ -f "$pid_file" ] && kill "$(cat "$pid_file")" 2>/dev/null || true
    done
    sleep 1
    psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" || true
    rm -rf "$work"
}
trap cleanup EXIT

start() { # $1: name, rest: extra flags; prints "address token"
    local out="$work/$1.out"
    CMDB_LOG=warn ./target/release/cmdb serve --listen 127.0.0.1:0 --max-connections 4096 \
        --data-dir "$work/$1" --store "$url" "${@:2}" >"$out" 2>"$work/$1.err" &
    echo $! >"$work/$1.pid"
    for _ in $(seq 1 600); do
        grep -q "serving GraphQL" "$out" 2>/dev/null && break
        sleep 0.5
    done
    local address token
    address="$(grep -o 'http://[^/]*' "$out" | head -1)"
    token="$(grep -o 'cmdb_[A-Za-z0-9_-]*' "$out" | head -1 || true)"
    echo "$address $token"
}

read -r a token < <(start a --demo)
read -r b _ < <(start b)
echo "writer a: $a, writer b: $b (log: PostgreSQL database $name)"

run() { # $1: url, $2: connections, $3: query
    ./target/release/loadgen --url "$1/graphql" --token "$token" --connections "$2" \
        --duration-secs "$seconds" --query "$3" | grep -o 'requests [0-9]* ([0-9]*/s)' | grep -o '[0-9]*/s' | tr -d '/s'
}

for query in '{ head { position } }' '{ at(position: 20000) { cis(first: 20) { nodes { id name class } } } }'; do
    one="$(run "$a" 64 "$query")"
    run "$a" 32 "$query" >"$work/a.rate" &
    first=$!
    run "$b" 32 "$query" >"$work/b.rate" &
    second=$!
    wait "$first" "$second"
    both=$(( $(cat "$work/a.rate") + $(cat "$work/b.rate") ))
    echo "query $query: one server $one req/s; two servers $both req/s ($(cat "$work/a.rate") + $(cat "$work/b.rate"))"
done
