#!/usr/bin/env bash
# The fault suite against the release binary, and its table.
#
#   benches/scripts/faults.sh [RECEIVER_DOWN_SECONDS]     # default 600
#
# Builds the release binary, then runs the fault scenarios of
# tests/it/faults.rs with it (AGENT_SUPERVISOR_BIN): real redis-server,
# PostgreSQL, HTTP services and webhook receivers on 127.0.0.1, each broken
# the way its scenario says (killed, SIGSTOPped, slowed or reset through a
# fault proxy, /health hanging, 500 or 10 MB, the receiver away, the
# sidecar SIGKILLed mid-delivery, a full disk). The receiver stays away
# RECEIVER_DOWN_SECONDS (cargo test runs the same scenario with 20 s).
# Prints one Markdown table: per scenario, false pages, lost pages,
# duplicates (same webhook-id, the at-least-once window), double pages
# (one failure under two ids), panics and task restarts. Exits non-zero
# when a scenario fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

down=${1:-600}

# shellcheck source=benches/scripts/common.sh
. benches/scripts/common.sh

out="$work/faults.jsonl"
release_tests fault_ 3 FAULTS_OUT="$out" FAULTS_RECEIVER_DOWN_SECS="$down"
versions_line
python3 - "$out" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])] if sys.argv[1] else []
rows.sort(key=lambda r: r["scenario"])
cols = ["false_pages", "lost", "same_id_duplicates", "double_pages", "panics", "restarts"]
print("| scenario | false pages | lost pages | duplicates (same id) | double pages | panics | task restarts | note |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for r in rows:
    vals = " | ".join(str(int(r[c])) for c in cols)
    print(f"| {r['scenario']} | {vals} | {r['note']} |")
tot = {c: sum(int(r[c]) for r in rows) for c in cols}
print(f"| **all {len(rows)}** | " + " | ".join(str(tot[c]) for c in cols) + " | |")
EOF
exit "$status"
