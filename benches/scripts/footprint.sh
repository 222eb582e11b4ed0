#!/usr/bin/env bash
# Idle footprint and probe cost of the release binary, measured from /proc.
#
#   benches/scripts/footprint.sh push N      # N agents pushing every 10 s
#   benches/scripts/footprint.sh http N      # N per-agent /health endpoints every 10 s
#
# Builds the release binary, starts a local load (python3), runs the sidecar
# on a free port with the state store off, warms up 15 s, then reads
# utime+stime (fields 14, 15 of /proc/PID/stat) over a 60 s window and the
# resident set size at the end. Prints one line of figures. Everything runs
# on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

mode=${1:?push or http}
n=${2:?number of agents}
window=${WINDOW:-60}
warmup=${WARMUP:-15}

cargo build --release --quiet
bin=target/release/agent-supervisor
# shellcheck source=benches/scripts/common.sh
. benches/scripts/common.sh

port=$(free_port)
aport=$(free_port)

case "$mode" in
  push)
    cat > "$work/config.yaml" <<YAML
listen: 127.0.0.1:$port
admin_listen: 127.0.0.1:$aport
state: {path: false}
sources: [{name: push, type: push}]
agents: [{match: "*", stale_after: 30s}]
YAML
    ;;
  http)
    hport=$(free_port)
    python3 - "$hport" > "$work/server.log" 2>&1 <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b'{"status": "active"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
    pids+=($!)
    ids=$(python3 -c "print(', '.join(f'agent_{i}' for i in range($n)))")
    cat > "$work/config.yaml" <<YAML
listen: 127.0.0.1:$port
admin_listen: 127.0.0.1:$aport
state: {path: false}
sources:
  - {name: svc, type: http, url: "http://127.0.0.1:$hport/health", interval: 10s, timeout: 2s,
     agents_url: "http://127.0.0.1:$hport/health/{agent}", agents: [$ids], concurrency: 16}
YAML
    ;;
  *) echo "mode: push or http" >&2; exit 64 ;;
esac

AGENT_SUPERVISOR_LOG=warn "$bin" run --config "$work/config.yaml" > "$work/sidecar.log" 2>&1 &
sup=$!
pids+=("$sup")
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break
  sleep 0.1
done

if [[ $mode == push ]]; then
  # N agents, each pushing every 10 s, spread over the interval.
  # Pushes go to the admin listener.
  python3 - "$aport" "$n" "$((warmup + window + 5))" > "$work/pusher.log" 2>&1 <<'PY' &
import sys, time, http.client
port, n, duration = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
end = time.time() + duration
i = 0
while time.time() < end:
    start = time.time()
    for a in range(n):
        conn.request("POST", f"/api/v1/heartbeats/agent_{a}", body=b"")
        conn.getresponse().read()
    time.sleep(max(0.0, 10 - (time.time() - start)))
PY
  pids+=($!)
fi

sleep "$warmup"
ticks() { awk '{print $14 + $15}' "/proc/$sup/stat"; }
t0=$(ticks)
sleep "$window"
t1=$(ticks)
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$sup/status")
hz=$(getconf CLK_TCK)
agents=$(curl -sf "http://127.0.0.1:$port/api/v1/agents" | python3 -c 'import json,sys; print(sum(json.load(sys.stdin)["counts"].values()))')
scrape_bytes=$(curl -sf "http://127.0.0.1:$port/metrics" | wc -c)
python3 - "$mode" "$n" "$t0" "$t1" "$hz" "$window" "$rss_kb" "$agents" "$scrape_bytes" <<'PY'
import sys
mode, n, t0, t1, hz, window, rss, agents, scrape = sys.argv[1:]
cpu = (float(t1) - float(t0)) / float(hz) / float(window) * 100
print(f"mode={mode} agents={n} seen={agents} cpu={cpu:.2f}% of one core over {window}s "
      f"rss={int(rss)/1024:.1f} MiB scrape={int(scrape)/1024:.0f} KiB")
PY
