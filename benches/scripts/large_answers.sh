#!/usr/bin/env bash
# Issue 15 part 7: large answers over HTTP, one client, as a dashboard sees them. Loads the large
# estate (2.9 M events) once, serves it with the page size and the admin budget raised so that
# one answer may hold 10,000 entries, writes three sample files from the estate itself, then
# runs `loadgen` with one connection on each:
#   diff    a day's diff (20 days out of the last 170): every CI and relationship entry with the
#           full CI before and after, one page of up to 10,000 of each;
#   impact  20 starting CIs whose impact now reaches >= 10,000 CIs (maxDepth 6), every CI id;
#   asof    200 as-of reads of one CI at a random moment of the last 170 days;
#   head    the smallest query, the HTTP floor.
#
#   bash benches/scripts/large_answers.sh          (from the project root; SIZE=medium to try it)
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE=${SIZE:-large}
WORK=${WORK:-/tmp/cmdb-large-answers-$SIZE}
BIN=${BIN:-target/release/cmdb}
PORT=${PORT:-8098}
SERVE_ARGS="--max-page-size 10000 --cost-per-second admin=1000000000"
cargo build --release -p cmdb-benches --bin loadgen >/dev/null
source benches/scripts/serve_estate.sh
python3 - "http://127.0.0.1:$PORT/graphql" "$TOKEN" "$WORK" <<'PY'
import datetime, json, random, sys, urllib.request
url, token, work = sys.argv[1:4]
def q(query):
    request = urllib.request.Request(url, data=json.dumps({"query": query}).encode(),
        headers={"authorization": "Bearer " + token, "content-type": "application/json"})
    answer = json.loads(urllib.request.urlopen(request, timeout=600).read())
    if answer.get("errors"):
        raise SystemExit(str(answer["errors"])[:500])
    return answer["data"]
head = q("{ head { position recordedAt } }")["head"]
end = datetime.datetime.fromisoformat(head["recordedAt"].replace("Z", "+00:00")).replace(
    hour=0, minute=0, second=0, microsecond=0)
CI = "id class name status environment version owner { id } location { id } attributes"
rnd = random.Random(42)
fmt = lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")
days = [end - datetime.timedelta(days=rnd.randint(2, 170)) for _ in range(20)]
with open(f"{work}/diff.txt", "w") as f:
    for d in days:
        f.write('{ diff(from: {time: "%s"}, to: {time: "%s"}) { cis(first: 10000) { nodes { id kind before { %s } after { %s } } pageInfo { hasNextPage endCursor } } relationships(first: 10000) { nodes { kind relationship { id type sourceId targetId } } pageInfo { hasNextPage endCursor } } } }\n'
                % (fmt(d), fmt(d + datetime.timedelta(days=1)), CI, CI))
starts = []
for cls in ["network_device", "kubernetes_cluster", "database", "host", "virtual_machine"]:
    nodes = q('{ at { cis(first: 200, filter: {classes: ["%s"]}) { nodes { id } } } }' % cls)["at"]["cis"]["nodes"]
    for n in nodes:
        c = q('{ at { impact(ci: "%s", maxDepth: 6, maxResults: 10000) { count truncated } } }' % n["id"])["at"]["impact"]
        if c["count"] >= 10000:
            starts.append(n["id"])
        if len(starts) >= 20:
            break
    if len(starts) >= 20:
        break
if not starts:
    raise SystemExit("no CI reaches 10,000 others: use the large estate")
with open(f"{work}/impact.txt", "w") as f:
    for s in starts:
        f.write('{ at { impact(ci: "%s", maxDepth: 6, maxResults: 10000) { count truncated reached { depth ci { id } } } } }\n' % s)
nodes = q('{ at { cis(first: 1000) { nodes { id } } } }')["at"]["cis"]["nodes"]
with open(f"{work}/asof.txt", "w") as f:
    for n in rnd.sample(nodes, min(200, len(nodes))):
        t = end - datetime.timedelta(seconds=rnd.randint(0, 170 * 86400))
        f.write('{ at(time: "%s") { ci(id: "%s") { %s } } }\n' % (fmt(t), n["id"], CI))
print(f"samples: 20 days, {len(starts)} impact starts, 200 as-of reads")
PY
LOADGEN="target/release/loadgen --url http://127.0.0.1:$PORT/graphql --token $TOKEN --connections 1"
for sample in diff impact asof; do
  echo -n "$sample: "; $LOADGEN --duration-secs 8 --warmup-secs 2 --query-file "$WORK/$sample.txt" | tail -1
done
echo -n "head: "; $LOADGEN --duration-secs 5 --warmup-secs 1 | tail -1
