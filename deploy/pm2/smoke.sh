#!/usr/bin/env bash
# Runs agent-supervisor under a real PM2 (from the npm registry) with
# deploy/pm2/ecosystem.config.js, waits for /readyz, restarts it through PM2,
# then removes everything. Not part of .ci/run (it downloads PM2).
#
#   cargo build --release && bash deploy/pm2/smoke.sh
#   AGENT_SUPERVISOR_BIN=target/debug/agent-supervisor bash deploy/pm2/smoke.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

work=$(mktemp -d)
export PM2_HOME="$work/pm2-home" LOG_DIR="$work/logs" AGENT_SUPERVISOR_STATE_DIR="$work/state"
export AGENT_SUPERVISOR_BIN=${AGENT_SUPERVISOR_BIN:-$PWD/target/release/agent-supervisor}
pm2="$work/npm/node_modules/.bin/pm2"
cleanup() {
  [[ -x "$pm2" ]] && "$pm2" kill >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

[[ -x "$AGENT_SUPERVISOR_BIN" ]] || { echo "no binary at $AGENT_SUPERVISOR_BIN: cargo build --release" >&2; exit 1; }
npm install --silent --no-audit --no-fund --prefix "$work/npm" pm2@6 >/dev/null
"$pm2" --version

ready() {
  local i
  for i in $(seq 1 100); do   # bounded: 100 x 0.1 s
    curl -fsS -o /dev/null http://127.0.0.1:9464/readyz && return 0
    sleep 0.1
  done
  echo "agent-supervisor not ready; logs:" >&2
  tail -n 40 "$LOG_DIR"/agent-supervisor.*.log >&2 || true
  return 1
}

"$pm2" start deploy/pm2/ecosystem.config.js --only agent-supervisor
ready
"$pm2" jlist | node -e '
  const apps = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const a = apps.find((x) => x.name === "agent-supervisor");
  if (!a || a.pm2_env.status !== "online") { console.error("not online:", a && a.pm2_env.status); process.exit(1); }
  console.log("agent-supervisor online, pid", a.pid, "max_memory_restart", a.pm2_env.max_memory_restart);'
"$pm2" restart agent-supervisor
ready
curl -fsS http://127.0.0.1:9464/metrics | grep -m1 '^agent_supervisor_build_info'
ls "$LOG_DIR"
"$pm2" delete all
echo "pm2 smoke test: ok"
