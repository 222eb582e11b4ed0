#!/usr/bin/env bash
# Runs the README's "Five minutes with it" block exactly as written, the way
# a newcomer pastes it into a shell, then checks what it printed, in order.
#
#   bash tests/quickstart.sh
#
# Needs what the README says: curl, python3, redis-server/redis-cli, ports
# 9464 and 9465 free. A Redis already answering on 127.0.0.1:6379 is used (the block
# writes one key, agent:trading_coordinator:last_seen, deleted afterwards);
# otherwise a private redis-server is started on 6379 for the run. The
# sidecar's state goes to a temporary directory, not ./data.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail() {
  printf 'quickstart: %s\n' "$*" >&2
  exit 1
}

for tool in curl python3 redis-cli redis-server; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool not found (the README asks for it)"
done

block=$(awk '
  /<!-- quickstart:start/ { inside = 1; next }
  /<!-- quickstart:end/ { inside = 0 }
  inside && /^```/ { next }
  inside { print }
' README.md)
[[ -n $block ]] || fail "no quickstart block between the markers in README.md"

for port in 9464 9465; do
  if curl -s -o /dev/null --max-time 2 "localhost:$port/"; then
    fail "port $port is already in use; the README's steps need it"
  fi
done

work=$(mktemp -d)
private_redis=""
cleanup() {
  redis-cli DEL agent:trading_coordinator:last_seen >/dev/null 2>&1 || true
  if [[ -n $private_redis ]]; then
    redis-cli shutdown nosave >/dev/null 2>&1 || true
  fi
  rm -rf "$work" sidecar.log
}
trap cleanup EXIT

if ! redis-cli ping >/dev/null 2>&1; then
  echo "no Redis on 127.0.0.1:6379: starting a private one for the run"
  redis-server --port 6379 --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work" --daemonize yes --logfile "$work/redis.log" >/dev/null
  private_redis=yes
  for _ in $(seq 100); do
    redis-cli ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli ping >/dev/null 2>&1 || fail "the private redis-server did not start: $(cat "$work/redis.log")"
fi
redis-cli DEL agent:trading_coordinator:last_seen >/dev/null

export AGENT_SUPERVISOR_STATE_DIR="$work/data"
transcript="$work/transcript"
echo "running the README's quick start (about a minute)..."
status=0
timeout 600 bash -c "$block" >"$transcript" 2>&1 || status=$?
cat "$transcript"
[[ $status -eq 0 ]] || fail "the block exited with $status"

# What each step must have printed, in order (python: ordered multi-line
# matching is clearer there than in grep).
python3 - "$transcript" <<'EOF'
import json, re, sys

text = open(sys.argv[1]).read()
pos = 0

def expect(what, pattern):
    global pos
    m = re.compile(pattern, re.M | re.S).search(text, pos)
    if not m:
        sys.exit(f"quickstart: expected {what} after offset {pos}, not found")
    pos = m.end()
    return m

def json_doc(what):
    """The next pretty-printed JSON document (python3 -m json.tool)."""
    m = expect(what, r"^\{\n.*?^\}\n")
    return json.loads(m.group(0))

expect("step 1: ready", r"^ready$")
expect("step 2: the push accepted", r'^\{"agent":"market_analyst","last_seen":"[^"]+"\}$')
agents = {a["id"]: a["state"] for a in json_doc("step 4: the agent list")["agents"]}
want = {"trading_coordinator": "healthy", "market_analyst": "healthy", "risk_agent": "failing"}
for agent, state in want.items():
    if agents.get(agent) != state:
        sys.exit(f"quickstart: step 4: {agent} is {agents.get(agent)}, the README says {state}: {agents}")
one = json_doc("step 4: trading_coordinator")["agent"]
if one["state"] != "healthy":
    sys.exit(f"quickstart: step 4: trading_coordinator is {one['state']}")
one = json_doc("step 5: trading_coordinator after 30 s")["agent"]
if one["state"] != "stale":
    sys.exit(f"quickstart: step 5: trading_coordinator is {one['state']}, the README says stale")
expect("step 5: the one-hot state series",
       r'^agent_supervisor_agent_state\{agent="trading_coordinator",state="stale"\} 1$')
alerts = json_doc("step 5: the alerts")
kinds = {(a.get("kind"), a.get("agent")) for a in alerts.get("alerts", [])}
if ("agent_stale", "trading_coordinator") not in kinds:
    sys.exit(f"quickstart: step 5: no agent_stale alert for trading_coordinator: {alerts}")
expect("step 6: scan exits 2", r"^exit code 2$")
expect("step 7: a clean exit", r"^sidecar exited with 0$")
print("quickstart: every step printed what the README says")
EOF
