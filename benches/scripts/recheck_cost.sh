#!/usr/bin/env bash
# What the re-reads of stale agents cost Redis: commands per second the
# sidecar sends, with `recheck` on (the default: every 500ms) and off
# (`every: 0s`, the baseline), measured in the same run.
#
#   benches/scripts/recheck_cost.sh [AGENTS] [STALE]     # default 10000 100
#
# Starts a private redis-server on a free port, writes AGENTS heartbeat keys
# (layout `keys`): STALE of them a minute old under a 5 s threshold, the
# others fresh under a 1 h threshold, so nothing changes during the run and
# no writer adds commands. For each setting it runs the sidecar (interval
# 5s), waits until the STALE agents are stale, then reads Redis's
# `INFO commandstats` before and after a WINDOW-second window (default 20).
# The command count does not depend on the build profile: the debug binary
# is used. Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

agents=${1:-10000}
stale=${2:-100}
window=${WINDOW:-20}

cargo build --quiet
# shellcheck source=benches/scripts/common.sh
. benches/scripts/common.sh
cp target/debug/agent-supervisor "$work/agent-supervisor"

start_redis

python3 - "$agents" "$stale" <<'PY' | redis-cli -p "$rport" --pipe >/dev/null
import sys, time
n, stale = int(sys.argv[1]), int(sys.argv[2])
now = time.time()
def cmd(*args):
    out = f"*{len(args)}\r\n"
    for a in args:
        a = str(a)
        out += f"${len(a.encode())}\r\n{a}\r\n"
    sys.stdout.write(out)
for i in range(n):
    if i < stale:
        cmd("SET", f"hb:stale_{i}:last_seen", f"{now - 60:.6f}")
    else:
        cmd("SET", f"hb:agent_{i}:last_seen", f"{now:.6f}")
PY

# Redis commands per second the sidecar sends during the window, by command.
measure() {
  local every=$1 port
  port=$(free_port)
  cat > "$work/config.yaml" <<YAML
listen: 127.0.0.1:$port
admin_listen: false
state: {path: false}
startup_grace: 0s
recheck: {every: $every, max_per_second: 1000}
sources:
  - {name: redis, type: redis, url: "redis://127.0.0.1:$rport", interval: 5s, layout: keys, pattern: "hb:{agent}:last_seen"}
agents:
  - {match: "stale_*", stale_after: 5s}
  - {match: "*", stale_after: 1h}
YAML
  AGENT_SUPERVISOR_LOG=warn "$work/agent-supervisor" run --config "$work/config.yaml" \
    >"$work/sidecar.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 300); do
    local n
    n=$(curl -sf "localhost:$port/metrics" | sed -n 's/^agent_supervisor_agents{state="stale"} //p')
    [[ ${n:-0} == "$stale" ]] && break
    sleep 0.1
  done
  sleep 1
  redis-cli -p "$rport" config resetstat >/dev/null
  sleep "$window"
  redis-cli -p "$rport" info commandstats | python3 -c "
import re, sys
window = float(sys.argv[1])
calls = {}
for line in sys.stdin:
    m = re.match(r'cmdstat_(\w+):calls=(\d+)', line)
    if m and m.group(1) not in ('info', 'config'):
        calls[m.group(1)] = int(m.group(2))
total = sum(calls.values())
parts = ', '.join(f'{k} {v / window:.1f}/s' for k, v in sorted(calls.items()))
print(f'recheck every {sys.argv[2]:>5}: {total / window:7.1f} commands/s ({parts})')
" "$window" "$every"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

echo "$agents agents, $stale stale, interval 5s, window ${window}s"
measure 0s
measure 500ms
