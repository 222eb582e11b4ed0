#!/usr/bin/env bash
# The status page at fleet size: server-side render time and weight of
# `GET /` (and a few other views) on the release binary.
#
#   benches/scripts/status_page.sh [N]          # N agents, default 10000
#
# Builds the release binary (or runs AGENT_SUPERVISOR_BIN), starts it with a
# push source and pushes N agents over one keep-alive connection: 5 % of
# them (`stale_*`, `stale_after: 1s`) go stale, 3 % (`failing_*`) push an
# error status with a detail, the rest stay healthy (`stale_after: 1h`).
# Once every agent is in its state, each view is fetched REQUESTS times
# (default 50) with curl; the render time is the `Server-Timing: render`
# the sidecar measures itself (the handler, from the latest snapshot to the
# HTML string), the weight the body's bytes (no compression). Prints one
# Markdown row per view:
#
#   | view | rows | bytes | render median | p95 | max | curl total median |
#
# Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

n=${1:-10000}
requests=${REQUESTS:-50}
# shellcheck source=benches/scripts/common.sh
. benches/scripts/common.sh
release_binary

port=$(free_port)
aport=$(free_port)
cat > "$work/config.yaml" <<YAML
listen: 127.0.0.1:$port
admin_listen: 127.0.0.1:$aport
startup_grace: 1s
state: {path: "$work/state"}
sources: [{name: push, type: push, max_agents: 1000000}]
agents:
  - {match: "stale_*", stale_after: 1s, labels: {team: trading, severity: critical}}
  - {match: "failing_*", stale_after: 1h, labels: {team: risk}}
  - {match: "*", stale_after: 1h, labels: {team: research}}
YAML
AGENT_SUPERVISOR_LOG=warn "$bin" run --config "$work/config.yaml" > "$work/sidecar.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break
  sleep 0.1
done

# Push every agent once.
python3 - "$aport" "$n" <<'PY'
import sys, http.client, json, time
port, n = int(sys.argv[1]), int(sys.argv[2])
stale, failing = n * 5 // 100, n * 3 // 100
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
def push(agent, body=b""):
    # A 503 (the sidecar's queue to its core is full) is tried again.
    for _ in range(100):
        conn.request("POST", f"/api/v1/heartbeats/{agent}", body=body,
                     headers={"content-type": "application/json"} if body else {})
        r = conn.getresponse()
        r.read()
        if r.status != 503:
            break
        time.sleep(0.05)
    assert r.status < 300, (agent, r.status)
for i in range(stale):
    push(f"stale_{i:05d}")
for i in range(failing):
    push(f"failing_{i:05d}", json.dumps({"status": "error", "detail": "db pool exhausted (42 waiting)"}).encode())
for i in range(n - stale - failing):
    push(f"agent_{i:05d}")
PY

# Wait until the fleet is in place: every agent known, the stale ones stale.
want_stale=$((n * 5 / 100))
for _ in $(seq 300); do
  counts=$(curl -sf "http://127.0.0.1:$port/api/v1/agents?limit=1" |
    python3 -c 'import json,sys; c=json.load(sys.stdin)["counts"]; print(sum(c.values()), c.get("stale", 0))')
  [[ $counts == "$n $want_stale" ]] && break
  sleep 0.2
done
[[ $counts == "$n $want_stale" ]] || { echo "fleet not in place: $counts" >&2; exit 1; }

measure() {
  local name=$1 rows=$2 path=$3
  : > "$work/times"
  : > "$work/render"
  for _ in $(seq "$requests"); do
    curl -s -o "$work/body" -D "$work/headers" -w '%{time_total}\n' "http://127.0.0.1:$port$path" >> "$work/times"
    { grep -i '^server-timing:' "$work/headers" || true; } | sed -E 's/.*dur=([0-9.]+).*/\1/' >> "$work/render"
  done
  python3 - "$name" "$rows" "$(wc -c < "$work/body")" "$work/render" "$work/times" <<'PY'
import sys, statistics
name, rows, size, render_file, times_file = sys.argv[1:]
render = sorted(float(x) for x in open(render_file))
total = sorted(float(x) * 1e3 for x in open(times_file))
if render:
    p95 = render[max(0, int(len(render) * 0.95) - 1)]
    timing = f"{statistics.median(render):.2f} ms | {p95:.2f} ms | {render[-1]:.2f} ms"
else:
    timing = "- | - | -"
print(f"| {name} | {rows} | {int(size) / 1000:.1f} kB | {timing} | {statistics.median(total):.2f} ms |")
PY
}

echo "| view | rows | bytes | render median | p95 | max | curl total median |"
echo "|---|---|---:|---:|---:|---:|---:|"
measure '`/` (first page)' "100 + 50" "/"
measure '`/?state=healthy&hp=80` (a later page)' "50" "/?state=healthy&hp=80"
measure '`/?q=agent_0919` (search)' "10" "/?q=agent_0919"
measure '`/?label=team%3Dtrading` (label)' "100" "/?label=team%3Dtrading"
measure '`/agents/stale_00001`' "1" "/agents/stale_00001"
measure '`/api/v1/agents?limit=1` (the script'"'"'s poll)' "1" "/api/v1/agents?limit=1"
versions_line
