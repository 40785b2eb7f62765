#!/usr/bin/env bash
# Issue 18 part 4: what a redaction costs over HTTP. Loads an estate (medium by default: about
# 10k CIs), serves it, registers a person, then times requestRedaction and approveRedaction (the
# approval erases in the store and answers once the graph has rebuilt from the log) as a user
# sees them, 5 times.
#
#   bash benches/scripts/redaction.sh              (from the project root; SIZE=large for 2.9 M events)
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE=${SIZE:-medium}
WORK=${WORK:-/tmp/cmdb-redaction-bench-$SIZE}
BIN=${BIN:-target/release/cmdb}
PORT=${PORT:-8097}
source benches/scripts/serve_estate.sh
python3 - "$PORT" "$TOKEN" <<'PY'
import json, sys, time, urllib.request, uuid
port, admin = sys.argv[1], sys.argv[2]
def gql(token, query, variables=None):
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", body,
        {"content-type": "application/json", "authorization": f"Bearer {token}"})
    started = time.perf_counter()
    answer = json.load(urllib.request.urlopen(request, timeout=600))
    elapsed = time.perf_counter() - started
    if answer.get("errors"):
        raise SystemExit(f"{query}: {answer['errors']}")
    return answer["data"], elapsed
run = uuid.uuid4().hex[:8]
gql(admin, 'mutation($n: String!) { createPrincipal(input: { name: $n, kind: SYSTEM, roles: [AUDITOR] }) { position } }', {"n": f"bench-auditor-{run}"})
auditor = gql(admin, 'mutation($n: String!) { createToken(input: { principal: $n }) { token } }', {"n": f"bench-auditor-{run}"})[0]["createToken"]["token"]
try:  # the demo estates already leave people uncontrolled
    gql(admin, 'mutation { declareClassControl(input: { class: "person", controlled: false, reason: "benchmark" }) { position } }')
except SystemExit:
    pass
head = gql(admin, "{ head { position } }")[0]["head"]["position"]
print(f"estate head {head}")
asks, approvals = [], []
for i in range(5):
    reg = gql(admin, 'mutation($n: String!, $e: String!) { registerCi(input: { class: "PERSON", name: $n, attributes: { email: $e } }) { position } }',
              {"n": f"Bench Person {run}-{i}", "e": f"p{i}.{run}@example.com"})[0]["registerCi"]["position"]
    data = json.loads(gql(admin, "query($p: Position!) { event(position: $p) { dataText } }", {"p": reg})[0]["event"]["dataText"])
    pointer = "/attributes/email" if "attributes" in data and "email" in data["attributes"] else None
    if pointer is None:
        def find(v, at=""):
            if v == f"p{i}.{run}@example.com": return at
            if isinstance(v, dict):
                for k, x in v.items():
                    r = find(x, f"{at}/{k}")
                    if r: return r
        pointer = find(data)
    rid = f"bench-{run}-{i}"
    _, t_ask = gql(admin, 'mutation($i: RedactionInput!) { requestRedaction(input: $i) { id } }',
                   {"i": {"id": rid, "positions": [reg], "fields": [pointer], "reason": "benchmark"}})
    _, t_approve = gql(auditor, 'mutation($i: ApproveRedactionInput!) { approveRedaction(input: $i) { redaction { status } } }', {"i": {"id": rid}})
    asks.append(t_ask); approvals.append(t_approve)
    print(f"redaction {i}: request {t_ask*1000:.0f} ms, approval (erase + graph rebuilt) {t_approve*1000:.0f} ms")
asks.sort(); approvals.sort()
print(f"median: request {asks[2]*1000:.0f} ms, approval {approvals[2]*1000:.0f} ms (max {approvals[-1]*1000:.0f} ms)")
PY
