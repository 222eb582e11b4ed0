mod alerts;
mod api;
mod cli;
mod deploy;
mod exposure;
mod failpoints;
mod faults;
mod ha;
// The harness waits on child processes from sync code: its bounded polls
// sleep between attempts, and it hands spawn requests to one thread.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod harness;
mod harness_smoke;
mod http_source;
mod postgres_e2e;
mod postgres_source;
mod quiet;
mod receiver;
mod redis_cluster;
mod redis_e2e;
mod redis_source;
mod remediation;
mod scenarios;
mod sidecar;
mod status_page;
mod support;
