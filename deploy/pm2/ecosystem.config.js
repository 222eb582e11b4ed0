// PM2 process file: the Python FastAPI service (uvicorn) and agent-supervisor
// side by side on one host.
//
//   pm2 start deploy/pm2/ecosystem.config.js            # from the repository root
//   pm2 start deploy/pm2/ecosystem.config.js --env production
//   pm2 save && pm2 startup                             # start both at boot
//
// Paths are relative to the repository root (cwd below); set APP_DIR to the
// Python service's checkout and AGENT_SUPERVISOR_BIN to the installed binary
// (default: target/release/agent-supervisor from `cargo build --release`).
// Secrets (REDIS_URL, SUPABASE_DB_URL, AGENT_SUPERVISOR_PUSH_TOKEN) are read
// from the environment PM2 is started with; nothing secret is written here.
"use strict";

const path = require("path");

const root = path.resolve(__dirname, "..", "..");
const appDir = process.env.APP_DIR || path.join(root, "..", "python-ai-services");
const logDir = process.env.LOG_DIR || path.join(root, "logs");
const supervisorBin =
  process.env.AGENT_SUPERVISOR_BIN || path.join(root, "target", "release", "agent-supervisor");

// Only pass on what is set, so config.yaml's ${VAR:-default}s apply otherwise.
const passthrough = (...names) =>
  Object.fromEntries(names.filter((n) => process.env[n] !== undefined).map((n) => [n, process.env[n]]));

const shared = passthrough("REDIS_URL", "SUPABASE_DB_URL", "AGENT_SUPERVISOR_PUSH_TOKEN");

module.exports = {
  apps: [
    {
      name: "python-ai-services",
      cwd: appDir,
      script: "uvicorn",
      args: "main:app --host 0.0.0.0 --port 8000",
      interpreter: "none",
      exec_mode: "fork",
      instances: 1,
      autorestart: true,
      max_restarts: 10,
      min_uptime: "10s",
      restart_delay: 2000,
      exp_backoff_restart_delay: 100,
      max_memory_restart: "1G",
      kill_timeout: 10000,
      out_file: path.join(logDir, "python-ai-services.out.log"),
      error_file: path.join(logDir, "python-ai-services.err.log"),
      merge_logs: true,
      time: true,
      env: {
        ...shared,
        PYTHONUNBUFFERED: "1",
        // Pushes go to the sidecar's admin listener (loopback).
        AGENT_SUPERVISOR_URL: "http://127.0.0.1:9465",
      },
      env_production: {
        APP_ENV: "production",
      },
    },
    {
      name: "agent-supervisor",
      cwd: root,
      script: supervisorBin,
      args: "run --log-format json",
      interpreter: "none",
      exec_mode: "fork",
      instances: 1,
      autorestart: true,
      max_restarts: 10,
      min_uptime: "10s",
      restart_delay: 1000,
      exp_backoff_restart_delay: 100,
      max_memory_restart: "256M",
      // SIGTERM first: the sidecar saves its state within shutdown_timeout (10s).
      kill_timeout: 15000,
      out_file: path.join(logDir, "agent-supervisor.out.log"),
      error_file: path.join(logDir, "agent-supervisor.err.log"),
      merge_logs: true,
      time: false,
      env: {
        ...shared,
        AGENT_SUPERVISOR_CONFIG: path.join(root, "config.yaml"),
        AGENT_SUPERVISOR_STATE_DIR: process.env.AGENT_SUPERVISOR_STATE_DIR || path.join(root, "data"),
        AGENT_SUPERVISOR_LISTEN: "127.0.0.1:9464",
        AGENT_SUPERVISOR_ADMIN_LISTEN: "127.0.0.1:9465",
        RUST_LOG: "info",
      },
    },
  ],
};
