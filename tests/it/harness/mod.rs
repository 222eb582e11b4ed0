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
mod postgres;
mod process;
mod redis;
mod wait;

use std::sync::Once;

pub use alertmanager::AlertmanagerServer;
pub use postgres::{PostgresServer, PostgresSetup, shared_postgres};
pub use process::{free_port, spawn_child, stop_child, tail_of_log};
pub use redis::{RedisServer, redis_ping, shared_redis_url, unique_prefix};
pub use wait::{wait_until, wait_until_sync};

/// Reads an environment variable holding a URL; unset and empty are the same.
fn env_url(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

// ---------------------------------------------------------------------------
// URLs
// ---------------------------------------------------------------------------

struct UrlParts<'a> {
    scheme: &'a str,
    authority: &'a str,
    /// Without the leading '/'.
    path: &'a str,
    /// `?query#fragment`, or "".
    rest: &'a str,
}

fn split_url(url: &str) -> Option<UrlParts<'_>> {
    let (scheme, after) = url.split_once("://")?;
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, tail) = after.split_at(end);
    let (path, rest) = match tail.find(['?', '#']) {
        Some(i) => tail.split_at(i),
        None => (tail, ""),
    };
    Some(UrlParts {
        scheme,
        authority,
        path: path.trim_start_matches('/'),
        rest,
    })
}

struct Authority {
    user: Option<String>,
    password: Option<String>,
    host: String,
    port: Option<u16>,
}

fn parse_authority(authority: &str) -> Authority {
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo.map(|u| u.split_once(':')) {
        Some(Some((u, p))) => (Some(percent_decode(u)), Some(percent_decode(p))),
        Some(None) => (userinfo.map(percent_decode), None),
        None => (None, None),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => (v6, None),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    Authority {
        user,
        password,
        host: if host.is_empty() { "127.0.0.1" } else { host }.to_owned(),
        port: port.and_then(|p| p.parse().ok()),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = if bytes[i] == b'%' {
            s.get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        } else {
            None
        };
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
