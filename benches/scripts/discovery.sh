#!/usr/bin/env bash
# Issue 17's benchmarks: import and reconcile 100,000 observed items (a generated Terraform
# state) against the large estate, with peak RSS; then the audit report of those 100,000 items
# over HTTP (summary, then every finding page by page).
#
#   bash benches/scripts/discovery.sh            (from the project root; ~6 min, 3 GB of disk)
set -euo pipefail
WORK=${WORK:-/tmp/cmdb-discovery-bench}
BIN=${BIN:-target/release/cmdb}
PORT=${PORT:-8099}
cargo build --release -p cmdb-api >/dev/null
mkdir -p "$WORK"
if [ ! -f "$WORK/estate/events.sqlite" ]; then
  rm -rf "$WORK/estate"; mkdir -p "$WORK/estate"
  "$BIN" --data-dir "$WORK/estate" fixtures load --size large
fi
python3 - "$WORK/big.tfstate" <<'PY'
import json, random, sys
random.seed(7)
types = ['aws_instance', 'aws_s3_bucket', 'aws_iam_role', 'aws_security_group', 'aws_subnet']
resources = []
for i in range(100000):
    t = types[i % 5]
    attrs = {"id": f"{t}-{i:06d}", "arn": f"arn:aws:x:eu-west-1:123456789012:{t}/{i}", "tags": {}, "name": f"r{i}"}
    if t == 'aws_instance':
        attrs["instance_type"] = random.choice(["t3.micro", "m5.large", "c6g.xlarge"])
    instance = {"schema_version": 0, "attributes": attrs}
    if i % 10 and i > 0:
        instance["dependencies"] = [f"{types[(i - 1) % 5]}.r{i - 1}"]
    resources.append({"mode": "managed", "type": t, "name": f"r{i}",
                      "provider": "provider[\"registry.terraform.io/hashicorp/aws\"]", "instances": [instance]})
json.dump({"version": 4, "terraform_version": "1.6.0", "serial": 1, "lineage": "bench-0000-0000-0000-000000000001",
           "outputs": {}, "resources": resources}, open(sys.argv[1], "w"))
PY
rm -rf "$WORK/run"; cp -r "$WORK/estate" "$WORK/run"
echo "== import of 100,000 items (the import's own phases are in the log line; the rest is the graph's rebuild)"
CMDB_LOG=info /usr/bin/time -v "$BIN" --data-dir "$WORK/run" import terraform "$WORK/big.tfstate" 2>&1 >/dev/null \
  | sed 's/\x1b\[[0-9;]*m//g' | grep -E "discovery run|Elapsed|Maximum resident"
"$BIN" --data-dir "$WORK/run" principal create bench --kind system --role admin >/dev/null
TOKEN=$("$BIN" --data-dir "$WORK/run" token create --principal bench | grep -o 'cmdb_[0-9a-f]*')
"$BIN" --data-dir "$WORK/run" serve --listen "127.0.0.1:$PORT" >"$WORK/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null' EXIT
until curl -sf "localhost:$PORT/readyz" >/dev/null; do sleep 1; done
q() { curl -s -o "$WORK/out.json" -w "%{time_total}" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "localhost:$PORT/graphql" -d "$1"; }
q '{"query":"{ audits(first: 1) { id } }"}' >/dev/null
ID=$(python3 -c "import json;print(json.load(open('$WORK/out.json'))['data']['audits'][0]['id'])")
echo "== audit summary (counts, findings recomputed and checked against the digest): $(q "{\"query\":\"{ audit(id: \\\"$ID\\\") { counts { total unauthorised } digestMatches findingCount } }\"}") s"
cat "$WORK/out.json"; echo
START=$(date +%s.%N)
for OFFSET in $(seq 0 500 99500); do
  q "{\"query\":\"{ audit(id: \\\"$ID\\\") { findings(first: 500, offset: $OFFSET) { kind externalId name class authorised } } }\"}" >/dev/null
done
echo "== every finding, 200 pages of 500: $(echo "$(date +%s.%N) - $START" | bc) s"
