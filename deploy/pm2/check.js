// Structural check of ecosystem.config.js (run by .ci/run):
//   node deploy/pm2/check.js
"use strict";
const assert = require("assert/strict");
const path = require("path");

const file = path.join(__dirname, "ecosystem.config.js");
const { apps } = require(file);
assert.ok(Array.isArray(apps), "module.exports.apps is an array");
const byName = Object.fromEntries(apps.map((a) => [a.name, a]));
for (const name of ["python-ai-services", "agent-supervisor"]) {
  const app = byName[name];
  assert.ok(app, `an app named ${name}`);
  assert.equal(app.autorestart, true, `${name}: autorestart`);
  assert.match(String(app.max_memory_restart), /^\d+[KMG]$/, `${name}: max_memory_restart`);
  assert.equal(app.interpreter, "none", `${name}: runs the binary directly`);
  for (const f of ["out_file", "error_file"]) {
    assert.ok(path.isAbsolute(app[f]), `${name}: ${f} is an absolute path`);
  }
  assert.equal(typeof app.env, "object", `${name}: env`);
}
const sup = byName["agent-supervisor"];
assert.match(sup.args, /^run\b/, "agent-supervisor: `run` command");
assert.ok(sup.env.AGENT_SUPERVISOR_CONFIG.endsWith("config.yaml"), "AGENT_SUPERVISOR_CONFIG");
assert.ok(sup.env.AGENT_SUPERVISOR_STATE_DIR, "AGENT_SUPERVISOR_STATE_DIR");
assert.ok(sup.kill_timeout >= 10000, "kill_timeout covers shutdown_timeout (10s)");
const uv = byName["python-ai-services"];
assert.equal(uv.script, "uvicorn");
assert.match(uv.args, /main:app/);
assert.equal(uv.env.AGENT_SUPERVISOR_URL, "http://127.0.0.1:9465", "pushes go to admin_listen");
assert.equal(sup.env.AGENT_SUPERVISOR_ADMIN_LISTEN, "127.0.0.1:9465", "admin_listen on loopback");
console.log(`${path.relative(process.cwd(), file)}: ok (${apps.length} apps)`);
