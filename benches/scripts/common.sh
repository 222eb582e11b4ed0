# Shared by the benchmark scripts (sourced): a temporary directory `work`,
# background processes recorded in `pids`, both cleaned up on exit, and
# free_port.
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Start a private redis-server (no persistence) on a free port, recorded in
# `pids`; sets `rport` and returns once it answers.
start_redis() {
  rport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work" --logfile "$work/redis.log" &
  pids+=($!)
  for _ in $(seq 100); do
    redis-cli -p "$rport" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
}

# Run the integration tests matching FILTER with the release binary
# (AGENT_SUPERVISOR_BIN), after building it; further arguments are
# NAME=VALUE settings for them. Their output goes to $work/test.log; on
# failure the failing tests are printed. Sets `status` (their exit code).
#   release_tests FILTER THREADS [NAME=VALUE...]
release_tests() {
  local filter=$1 threads=$2
  shift 2
  cargo build --quiet --release
  status=0
  env AGENT_SUPERVISOR_BIN="$PWD/target/release/agent-supervisor" "$@" \
    cargo test --quiet --test it "$filter" -- --test-threads "$threads" >"$work/test.log" 2>&1 || status=$?
  if [[ $status -ne 0 ]]; then
    grep -E "^test |panicked at" "$work/test.log" || true
  fi
}

# The binary measured: AGENT_SUPERVISOR_BIN when set (to compare two builds
# in one run), else the release build, built now. Sets `bin`.
release_binary() {
  if [[ -n ${AGENT_SUPERVISOR_BIN:-} ]]; then
    bin=$AGENT_SUPERVISOR_BIN
  else
    cargo build --release --quiet
    bin=$PWD/target/release/agent-supervisor
  fi
}

# The line above each table: the date and the versions measured.
versions_line() {
  echo
  echo "$(date -u +%F), $("${bin:-target/release/agent-supervisor}" --version), $(redis-server --version | cut -d' ' -f1-3), $(psql --version)"
  echo
}
