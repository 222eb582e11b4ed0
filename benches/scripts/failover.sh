#!/usr/bin/env bash
# Failover time of the leader lease, and the lease store's load, against the
# release binary.
#
#   benches/scripts/failover.sh [KILLS]     # default 10
#
# Builds the release binary, then runs the ha_failover_* tests of
# tests/it/ha.rs with it (AGENT_SUPERVISOR_BIN): three sidecar processes
# watching a real Redis, the lease on a private redis-server, then on a real
# PostgreSQL through PgBouncer in transaction mode (ttl 2s, renew_every
# 500ms). First the store's load with three idle replicas (Redis commands or
# PostgreSQL transactions per second per replica, over 5 s); then KILLS
# times: an agent fails while the receiver refuses every attempt, the
# leader is SIGKILLed and the receiver accepts again; the time from the kill
# to the new leader's first delivered notification. Prints one Markdown
# table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

kills=${1:-10}

# shellcheck source=benches/scripts/common.sh
. benches/scripts/common.sh

out="$work/failover.jsonl"
release_tests ha_failover_ 1 HA_FAILOVERS="$kills" HA_OUT="$out"
versions_line
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| lease store | kills | failover median | failover max | ttl + renew_every | store load per replica |")
print("|---|---:|---:|---:|---:|---:|")
for r in rows:
    unit = "commands/s" if r["store"] == "redis" else "transactions/s"
    print(f"| {r['store']} | {r['kills']} | {r['median_s']:.2f} s | {r['max_s']:.2f} s | "
          f"{r['ttl_s'] + r['renew_every_s']:.1f} s | {r['load_per_replica_per_s']:.1f} {unit} |")
PY
exit "$status"
