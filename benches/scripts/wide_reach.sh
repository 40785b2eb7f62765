#!/usr/bin/env bash
# Issue 15, part 3: why one CI's failure reaches nearly every business service on the large
# estate. Serves the estate (loaded once, as large_answers.sh does), draws CIS random CIs of each
# technical class, asks each one's downstream impact over GraphQL (maxDepth 30, up to 10,000
# CIs), and prints per class how many are "wide" (reach >= 1,000 services) with how many of those
# services are DOWN, and, for the first few wide ones, the shortest path to their deepest DOWN
# service: where the width comes from.
#
#   bash benches/scripts/wide_reach.sh          (from the project root; CIS=30 SIZE=large)
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE=${SIZE:-large}
WORK=${WORK:-/tmp/cmdb-large-answers-$SIZE}
BIN=${BIN:-target/release/cmdb}
PORT=${PORT:-8096}
CIS=${CIS:-30}
SERVE_ARGS="--max-page-size 10000 --cost-per-second admin=1000000000"
source benches/scripts/serve_estate.sh
python3 - "http://127.0.0.1:$PORT/graphql" "$TOKEN" "$CIS" <<'PY'
import collections, json, random, sys, urllib.request
url, token, per_class = sys.argv[1], sys.argv[2], int(sys.argv[3])
WIDE_SERVICES = 1000
SHOWN_PATHS = 6
def q(query):
    request = urllib.request.Request(url, data=json.dumps({"query": query}).encode(),
        headers={"authorization": "Bearer " + token, "content-type": "application/json"})
    answer = json.loads(urllib.request.urlopen(request, timeout=600).read())
    if answer.get("errors"):
        raise SystemExit(str(answer["errors"])[:800])
    return answer["data"]["at"]
rng = random.Random(3)
drawn = []
for cls in ["application", "database", "host", "virtual_machine", "container", "network_device"]:
    page = q('{ at { cis(first: 2000, filter: {classes: ["%s"]}) { edges { node { id } } } } }' % cls)
    ids = [e["node"]["id"] for e in page["cis"]["edges"]]
    if not ids:
        print(f"{cls}: none live at the head")
    drawn += [(cls, i) for i in rng.sample(ids, min(per_class, len(ids)))]
wide, drawn_by_class, down_share, shown = collections.Counter(), collections.Counter(), collections.defaultdict(list), 0
for cls, ci in drawn:
    drawn_by_class[cls] += 1
    services = q('{ at { impact(ci: "%s", maxDepth: 30, maxResults: 10000) { services { severity depth service { id } } } } }'
                 % ci)["impact"]["services"]
    if len(services) < WIDE_SERVICES:
        continue
    wide[cls] += 1
    down = [s for s in services if s["severity"] == "DOWN"]
    down_share[cls].append(len(down) / len(services))
    if shown < SHOWN_PATHS and down:
        shown += 1
        far = max(down, key=lambda s: s["depth"])
        path = q('{ at { path(from: "%s", to: "%s", direction: DOWNSTREAM, maxDepth: 30) { type ci { class } } } }'
                 % (ci, far["service"]["id"]))["path"] or []
        print(f"{cls}: {len(services)} services, {len(down)} down; to the deepest (depth {far['depth']}):",
              " -> ".join(f"{step['type']} {step['ci']['class']}" for step in path))
for cls in drawn_by_class:
    shares = sorted(down_share[cls])
    median = f"{shares[len(shares) // 2]:.0%}" if shares else "-"
    print(f"{cls}: {wide[cls]} of {drawn_by_class[cls]} wide; median share of their services DOWN {median}")
PY
