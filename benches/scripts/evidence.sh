#!/usr/bin/env bash
# Issue 18's evidence figures (BENCHMARKS.md, "Issue 18"): proofs and verification in process on a
# 3-million-leaf tree, appends with and without the tree following, then over HTTP on the large
# estate (2.89 M events): restart to ready, inclusion and consistency proofs at 1 and 16
# connections, and the CLI. Needs ~6 GB of disk in $WORK and about 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK="${WORK:-/tmp/evidence-bench}"
PORT="${PORT:-18181}"
cargo build --release -p cmdb-api --bin cmdb
cargo build --release -p cmdb-benches --bin evidence_latency --bin loadgen
BIN=target/release/cmdb
./target/release/evidence_latency

mkdir -p "$WORK"
[ -f "$WORK/signing.key" ] || "$BIN" key create --name cmdb.bench/large --out "$WORK/signing.key" > "$WORK/verifier.txt"
[ -d "$WORK/estate" ] || "$BIN" --data-dir "$WORK/estate" fixtures load --size large
serve() {
  "$BIN" --data-dir "$WORK/estate" serve --listen "127.0.0.1:$PORT" --signing-key "$WORK/signing.key" > "$WORK/serve.out" 2> "$WORK/serve.err" &
  local start; start=$(date +%s.%N)
  until curl -fs -o /dev/null "http://127.0.0.1:$PORT/readyz"; do sleep 0.1; done
  echo "ready after $(echo "$(date +%s.%N) - $start" | bc) s"
}
serve
TOKEN=$(grep -o "cmdb_[0-9a-f]\{64\}" "$WORK/serve.out" | head -1 || true)
[ -n "$TOKEN" ] && echo "$TOKEN" > "$WORK/token"
TOKEN=$(cat "$WORK/token")
HEAD=$(curl -fs -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  "http://127.0.0.1:$PORT/graphql" -d '{"query":"{ head { position } }"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["head"]["position"])')
python3 - "$HEAD" "$WORK" <<'PY'
import random, sys
head, work = int(sys.argv[1]), sys.argv[2]
random.seed(18)
with open(f"{work}/incl.txt", "w") as f:
    for _ in range(5000):
        f.write("{ inclusionProof(position: %d) { leafIndex treeSize hashes rootHash } }\n" % random.randint(1, head - 1))
with open(f"{work}/cons.txt", "w") as f:
    for _ in range(5000):
        f.write("{ consistencyProof(fromSize: %d) { toSize hashes fromRootHash toRootHash } }\n" % random.randint(1, head - 2))
PY
for file in incl cons; do
  for connections in 1 16; do
    ./target/release/loadgen --url "http://127.0.0.1:$PORT/graphql" --token "$TOKEN" --connections "$connections" \
      --duration-secs 10 --query-file "$WORK/$file.txt" | tail -1
  done
done
curl -fs -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/v1/checkpoint" > "$WORK/cp.note"
time "$BIN" --data-dir "$WORK/estate" proof inclusion --position 1234567 > "$WORK/p.json"
time "$BIN" proof verify --key "$(cat "$WORK/verifier.txt")" --proof "$WORK/p.json" --checkpoint "$WORK/cp.note"
pkill -TERM -f "serve --listen 127.0.0.1:$PORT"; sleep 8
serve   # the restart, from both checkpoints
pkill -TERM -f "serve --listen 127.0.0.1:$PORT"; sleep 8
