#!/usr/bin/env bash
# Memory and CPU of the release binary watching a fleet, per layout and size.
#
#   benches/scripts/fleet.sh LAYOUT N [N...]    # LAYOUT: keys, hash, zset, postgres or push
#
# Builds the release binary, starts a private redis-server (or PostgreSQL
# cluster) on a free port, writes N agents' heartbeats and refreshes every
# one of them every 10 s from a second process (python3 + redis-py, or psql),
# and runs the sidecar against it with `interval: 5s`, `stale_after: 60s` and
# the state store on. First with no agent at all (the idle line), then with
# each N: warm-up (WARMUP, default 30 s), then the sidecar's utime+stime
# (/proc/PID/stat) over WINDOW (default 60 s), its RSS at the end and its
# peak (VmHWM). Prints one Markdown row per run:
#
#   | layout | agents | RSS | (RSS - idle) / agent | peak | CPU (one core) | scan |
#
# `scan` is agent_supervisor_source_scan_duration_seconds' mean over the
# window. Then an agent `stopper` (stale_after 15s) beats once: `detect` is
# how long after its deadline the API first shows it stale (polled every
# 50 ms), `/metrics` and `stale API` the time curl takes for `GET /metrics`
# and `GET /api/v1/agents?state=stale` (the slowest of three).
# AGENT_SUPERVISOR_BIN runs that binary instead of building one;
# AGENT_SUPERVISOR_BIN_B runs a second binary side by side with it, on the
# same datastore, writer and window (one row each, named by file name): an
# A/B comparison under the same load. Set MALLOC_ARENA_MAX or other allocator settings in the
# environment to measure them: the sidecar inherits it. WRAP runs the
# sidecar under a profiler (`WRAP="heaptrack -o /tmp/hp"`); its figures are
# then the profiler's, not the sidecar's. Everything runs on
# 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

layout=${1:?keys, hash, zset, postgres or push}
shift
sizes=("$@")
((${#sizes[@]} > 0)) || { echo "usage: $0 LAYOUT N [N...]" >&2; exit 64; }
window=${WINDOW:-60}
warmup=${WARMUP:-30}

# shellcheck source=benches/scripts/common.sh
. benches/scripts/common.sh
release_binary

# The datastore.
case "$layout" in
  keys | hash | zset)
    start_redis
    source_yaml="{name: redis, type: redis, url: \"redis://127.0.0.1:$rport\", interval: 5s, timeout: 5s"
    case "$layout" in
      keys) source_yaml+=", layout: keys, pattern: \"agent:{agent}:last_seen\"}" ;;
      hash) source_yaml+=", layout: hash, key: agents:last_seen}" ;;
      zset) source_yaml+=", layout: zset, key: agents:last_seen}" ;;
    esac
    ;;
  postgres)
    pgbin=$(dirname "$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -1)")
    pport=$(free_port)
    pguser=$(id -un)
    runuser=()
    if [[ $(id -u) -eq 0 ]]; then
      # initdb refuses root: the cluster belongs to `postgres`.
      pguser=postgres
      runuser=(runuser -u postgres --)
      chown postgres "$work"
    fi
    "${runuser[@]}" "$pgbin/initdb" -D "$work/pg" -U "$pguser" -A trust > "$work/initdb.log"
    "${runuser[@]}" "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
      -o "-p $pport -k $work -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off" start > /dev/null
    pgurl="postgres://$pguser@127.0.0.1:$pport/postgres"
    stop_pg() { "${runuser[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop > /dev/null 2>&1 || true; }
    trap 'stop_pg; cleanup' EXIT
    psql -X -q -d "$pgurl" -c "create table hb (agent_id text primary key, n int not null, last_seen timestamptz not null)"
    source_yaml="{name: pg, type: postgres, url: \"$pgurl\", interval: 5s, timeout: 5s, query: \"select agent_id, last_seen from hb\"}"
    ;;
  push)
    # Agents push to the admin listener as fast as one Python client can
    # (each agent about every N / rate seconds); `stale_after` is long
    # enough that none goes stale meanwhile.
    source_yaml="{name: push, type: push, max_agents: 10000000, stale_after: 10m}"
    ;;
  *) echo "layout: keys, hash, zset, postgres or push" >&2; exit 64 ;;
esac

# Writes all n agents' heartbeats now, then refreshes a tenth of them every
# second (each agent every 10 s) until killed. Push: pushes every agent in
# turn, over and over, from one keep-alive connection (to the sidecar's admin
# port, $aport, so started once it is up).
start_writer() {
  local n=$1
  case "$layout" in
    push)
      python3 - "$aport" "$n" > "$work/writer.log" 2>&1 <<'PY' &
import sys, http.client
port, n = int(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
while n:
    for a in range(n):
        conn.request("POST", f"/api/v1/heartbeats/agent_{a}", body=b"")
        conn.getresponse().read()
    print("round", flush=True)
PY
      ;;
    postgres)
      psql -X -q -d "$pgurl" -c "truncate hb" \
        -c "insert into hb select 'agent_' || i, i % 10, now() from generate_series(0, $n - 1) i"
      (
        while :; do
          for k in 0 1 2 3 4 5 6 7 8 9; do
            echo "update hb set last_seen = now() where n = $k;"
            sleep 1
          done
        done | psql -X -q -d "$pgurl" > "$work/writer.log" 2>&1
      ) &
      ;;
    *)
      python3 - "$rport" "$layout" "$n" > "$work/writer.log" 2>&1 <<'PY' &
import sys, time
import redis
port, layout, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
r = redis.Redis(port=port)
r.flushall()
def write(lo, hi):
    now = time.time()
    p = r.pipeline(transaction=False)
    for start in range(lo, hi, 1000):
        ids = range(start, min(start + 1000, hi))
        if layout == "keys":
            p.mset({f"agent:agent_{i}:last_seen": f"{now:.6f}" for i in ids})
        elif layout == "hash":
            p.hset("agents:last_seen", mapping={f"agent_{i}": f"{now:.6f}" for i in ids})
        else:
            p.zadd("agents:last_seen", {f"agent_{i}": now for i in ids})
    p.execute()
write(0, n)
print("written", flush=True)
while True:
    for k in range(10):
        t = time.time()
        write(n * k // 10, n * (k + 1) // 10)
        time.sleep(max(0.0, 1 - (time.time() - t)))
PY
      ;;
  esac
  writer=$!
  pids+=("$writer")
}

stop_writer() {
  pkill -P "$writer" 2>/dev/null || true
  kill "$writer" 2>/dev/null || true
  wait "$writer" 2>/dev/null || true
}

# The stopper beats once, now; prints, for each sidecar (by its port), how
# long after its deadline (last_seen + 15 s) its API first says it is stale.
beat_once_and_time_detection() {
  local ts
  ts=$(date +%s.%N)
  case "$layout" in
    keys) redis-cli -p "$rport" set agent:stopper:last_seen "$ts" > /dev/null ;;
    hash) redis-cli -p "$rport" hset agents:last_seen stopper "$ts" > /dev/null ;;
    zset) redis-cli -p "$rport" zadd agents:last_seen "$ts" stopper > /dev/null ;;
    postgres) psql -X -q -d "$pgurl" -c "insert into hb values ('stopper', -1, to_timestamp($ts))
      on conflict (agent_id) do update set last_seen = excluded.last_seen" ;;
    push) curl -sf -o /dev/null -X POST "http://127.0.0.1:${aports[0]}/api/v1/heartbeats/stopper" ;;
  esac
  python3 - "$ts" "${ports[@]}" <<'PY'
import json, sys, time, urllib.request
ts, ports = float(sys.argv[1]), [int(p) for p in sys.argv[2:]]
deadline = ts + 15
found = {}
while time.time() < deadline + 60 and len(found) < len(ports):
    for port in ports:
        if port in found:
            continue
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/agents/stopper", timeout=5) as r:
                state = json.load(r)["agent"]["state"]
        except OSError:
            state = None  # not found by a scan yet
        if state == "stale":
            found[port] = f"{time.time() - deadline:+.2f} s"
    time.sleep(0.05)
print(" ".join(found.get(p, "not-stale").replace(" ", "_") for p in ports))
PY
}

printf '| layout | agents | RSS | (RSS - idle) / agent | peak | CPU (one core) | scan | detect | /metrics | stale API |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
bins=("$bin")
if [[ -n ${AGENT_SUPERVISOR_BIN_B:-} ]]; then
  [[ $layout != push ]] || { echo "AGENT_SUPERVISOR_BIN_B: not with push (one writer, one sidecar)" >&2; exit 64; }
  bins+=("$AGENT_SUPERVISOR_BIN_B")
fi
idle_kbs=()
for n in 0 "${sizes[@]}"; do
  ports=()
  aports=()
  sups=()
  [[ $layout == push ]] || start_writer "$n"
  for j in "${!bins[@]}"; do
    ports+=("$(free_port)")
    aports+=("$(free_port)")
    rm -rf "$work/state$j"
    cat > "$work/config$j.yaml" <<YAML
listen: 127.0.0.1:${ports[j]}
admin_listen: 127.0.0.1:${aports[j]}
startup_grace: 5s
state: {path: "$work/state$j"}
defaults: {stale_after: 60s}
agents: [{match: stopper, stale_after: 15s}]
sources: [$source_yaml]
YAML
    # shellcheck disable=SC2086 # WRAP is a command line, split on purpose
    AGENT_SUPERVISOR_LOG=warn ${WRAP:-} "${bins[j]}" run --config "$work/config$j.yaml" > "$work/sidecar$j.log" 2>&1 &
    sups+=($!)
    pids+=($!)
  done
  for port in "${ports[@]}"; do
    for _ in $(seq 300); do
      curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break
      sleep 0.1
    done
  done
  aport=${aports[0]}
  [[ $layout != push ]] || start_writer "$n"
  sleep "$warmup"
  scan() {
    curl -sf "http://127.0.0.1:$1/metrics" |
      awk '/^agent_supervisor_source_scan_duration_seconds_(sum|count)/ {print $2}' | paste -sd' '
  }
  ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
  s0=() t0=() s1=() t1=()
  for j in "${!bins[@]}"; do s0+=("$(scan "${ports[j]}")"); t0+=("$(ticks "${sups[j]}")"); done
  sleep "$window"
  for j in "${!bins[@]}"; do t1+=("$(ticks "${sups[j]}")"); s1+=("$(scan "${ports[j]}")"); done
  read -r -a detects <<< "$(beat_once_and_time_detection)"
  slowest() {
    for _ in 1 2 3; do curl -sf -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$1$2"; done |
      sort -n | tail -1
  }
  for j in "${!bins[@]}"; do
    sup=${sups[j]}
    port=${ports[j]}
    rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$sup/status")
    hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$sup/status")
    seen=$(curl -sf "http://127.0.0.1:$port/api/v1/agents?limit=1" |
      python3 -c 'import json,sys; c=json.load(sys.stdin)["counts"]; print(sum(c.values()), c.get("healthy", 0))')
    metrics_s=$(slowest "$port" /metrics)
    stale_s=$(slowest "$port" "/api/v1/agents?state=stale")
    [[ -n ${idle_kbs[j]:-} ]] || idle_kbs[j]=$rss_kb
    name=$layout
    ((${#bins[@]} == 1)) || name="$layout ($(basename "${bins[j]}"))"
    python3 - "$name" "$n" "$rss_kb" "$hwm_kb" "${idle_kbs[j]}" "${t0[j]}" "${t1[j]}" "$(getconf CLK_TCK)" "$window" "${s0[j]}" "${s1[j]}" "$seen" "${detects[j]//_/ }" "$metrics_s" "$stale_s" <<'PY'
import sys
layout, n, rss, hwm, idle, t0, t1, hz, window, s0, s1, seen, detect, metrics_s, stale_s = sys.argv[1:]
n, rss, hwm, idle = int(n), int(rss), int(hwm), int(idle)
cpu = (float(t1) - float(t0)) / float(hz) / float(window) * 100
per = f"{(rss - idle) * 1024 / n:.0f} B" if n else "idle"
(sum0, c0), (sum1, c1) = (map(float, s.split()) if s else (0, 0) for s in (s0, s1))
scan = f"{(sum1 - sum0) / (c1 - c0) * 1e3:.1f} ms" if c1 > c0 else "-"
total, healthy = map(int, seen.split())
note = "" if total == n and healthy == n else f" (seen {total}, healthy {healthy})"
ms = lambda s: f"{float(s) * 1e3:.0f} ms"
print(f"| {layout} | {n}{note} | {rss / 1024:.1f} MiB | {per} | {hwm / 1024:.1f} MiB | {cpu:.2f} % | {scan} "
      f"| {detect} | {ms(metrics_s)} | {ms(stale_s)} |")
PY
  done
  for sup in "${sups[@]}"; do
    kill "$sup"
    wait "$sup" 2>/dev/null || true
  done
  stop_writer
done
versions_line
