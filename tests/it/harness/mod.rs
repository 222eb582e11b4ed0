//! Real servers for the integration tests.
//!
//! Rules this module follows, and that tests built on it should follow too:
//!
//! * Real servers only, no mocks: a private `redis-server` and a private
//!   PostgreSQL cluster (and, on request, a private Alertmanager) are started
//!   from the binaries installed on the machine.
//! * A missing server binary fails the test loudly, saying what to install; it
//!   never skips.
//! * Nothing synchronises with a bare sleep: every wait is a bounded poll with a
//!   deadline that panics with a message saying what it was waiting for.
//!
//! Environment:
//!
//! * `REDIS_URL` set: [`shared_redis_url`] returns it instead of starting a
//!   private server.
//! * `DATABASE_URL` set: [`shared_postgres`] uses it as the admin URL instead of
//!   starting a private cluster.
//!
//! Lifetime of the servers:
//!
//! * Every server process is spawned from one long-lived helper thread with
//!   `PR_SET_PDEATHSIG` set in the child (SIGKILL for Redis, SIGQUIT, i.e.
//!   PostgreSQL's "immediate shutdown", for the postmaster). The kernel sends
//!   that signal when the *thread* that forked the child exits, which is why
//!   the spawning is not done from the (short-lived) test threads. So a test
//!   process that dies, however it dies, takes its servers with it.
//! * [`RedisServer`], [`PostgresServer`] and [`AlertmanagerServer`] values
//!   stop their server on drop.
//! * The shared servers live in statics that are never dropped; an `atexit`
//!   handler stops them and deletes their temporary directories when the test
//!   process exits normally (which is also what it does after a failed test).
//!
//! PostgreSQL refuses to run as root. When the tests run as uid 0, `initdb` and
//! `postgres` run as the `postgres` OS user (or `nobody` where that user does
//! not exist), switched to in the child with `setgid`/`setuid`, and the
//! cluster's temporary directory is handed to that user.
// Not every test binary uses every helper.
#![allow(dead_code, unused_imports)]

mod alertmanager;
mod netns;
mod pgbouncer;
mod postgres;
mod process;
mod proxy;
mod redis;
mod redis_ha;
mod service;
mod wait;

use std::sync::Once;

pub use alertmanager::AlertmanagerServer;
pub use netns::NetNs;
pub use pgbouncer::{PgBouncer, start_pgbouncer};
pub use postgres::{PostgresServer, PostgresSetup, shared_postgres};
pub use process::{
    NextLine, OwnedChild, PipeLines, free_port, spawn_child, stop_child, tail_of_log,
};
pub use proxy::{FaultProxy, Mode};
pub use redis::{RedisServer, redis_ping, shared_redis_url, unique_prefix};
pub use redis_ha::{RedisCluster, RedisSentinel, key_slot, redis_cmd};
pub use service::{AdminCall, PythonService, RestartMode, ServiceSetup};
pub use wait::{holds_for, poll_until, wait_for, wait_until, wait_until_sync};

/// Reads an environment variable holding a URL; unset and empty are the same.
fn env_url(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

// ---------------------------------------------------------------------------
// Exit
// ---------------------------------------------------------------------------

/// Registers (once) the `atexit` handler that stops the shared servers.
fn register_exit_cleanup() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: stop_shared_servers is an `extern "C" fn()` that does not
        // unwind.
        let rc = unsafe { libc::atexit(stop_shared_servers) };
        assert_eq!(rc, 0, "atexit failed to register the shared-server cleanup");
    });
}

/// Runs at process exit: stops the shared servers and deletes their
/// directories (statics are never dropped). Must not unwind.
extern "C" fn stop_shared_servers() {
    let _ = std::panic::catch_unwind(|| {
        redis::stop_shared();
        postgres::stop_shared();
    });
}
