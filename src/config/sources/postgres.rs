//! `type: postgres`: a query or a table read from PostgreSQL (Supabase
//! included).

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::values::{check_scheme, required_url};
use crate::config::walk::{Obj, Problems};
use crate::secret::SecretUrl;

/// `type: postgres`: heartbeats in a PostgreSQL table (Supabase included).
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// `postgres://` or `postgresql://`; `sslmode` and the other libpq
    /// parameters go in the query string.
    pub url: SecretUrl,
    /// Full scan period.
    pub interval: Duration,
    /// `statement_timeout` of every read (a query-form scan: the longest
    /// wait for more rows and for a lock, the scan itself cancelled after
    /// ten intervals), and the bound on connecting and on waiting for a
    /// free connection.
    pub timeout: Duration,
    /// At most this many connections (1..=10).
    pub max_connections: usize,
    /// Rows per page of a table-form scan, and agents per point-read query
    /// (the query form's scan is one statement).
    pub page_size: NonZeroUsize,
    /// PEM file of the CA(s) to verify the server's certificate with
    /// (`sslmode=verify-ca` / `verify-full`).
    pub tls_ca_file: Option<PathBuf>,
    pub read: PostgresRead,
}

impl PostgresConfig {
    /// Why this URL's TLS is not safe, when the server is not on this
    /// machine and `sslmode` is not `verify-full` or `verify-ca` (without
    /// it the client uses `prefer`: unverified TLS, or none).
    pub fn tls_warning(&self) -> Option<String> {
        let url = url::Url::parse(self.url.expose()).ok()?;
        let local = match url.host() {
            None => true,
            // postgres:// is not a special scheme: its IPs come as text.
            Some(url::Host::Domain(d)) => {
                let d = d.trim_start_matches('[').trim_end_matches(']');
                d.is_empty()
                    || d.eq_ignore_ascii_case("localhost")
                    || d.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        };
        let mode = url
            .query_pairs()
            .find(|(k, _)| k.eq_ignore_ascii_case("sslmode"))
            .map(|(_, v)| v.to_ascii_lowercase());
        if local || matches!(mode.as_deref(), Some("verify-full" | "verify-ca")) {
            return None;
        }
        Some(format!(
            "sslmode={} does not verify the server {}: whoever is on the path can read the \
             heartbeats and the password; use sslmode=verify-full (and tls_ca_file)",
            mode.as_deref().unwrap_or("prefer (unset)"),
            url.host_str().unwrap_or_default()
        ))
    }
}

/// What a PostgreSQL source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostgresRead {
    /// A SQL query whose columns are taken by position: agent id, timestamp,
    /// then optionally a status and a details column.
    Query(String),
    /// A table (or view) read with keyset pagination on its id column.
    Table(PostgresTable),
}

/// The `table:` form of a PostgreSQL source. Names are used exactly as
/// written (quoted), so they are case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresTable {
    /// `table` or `schema.table`.
    pub schema: Option<String>,
    pub table: String,
    pub id_column: String,
    pub timestamp_column: String,
    pub status_column: Option<String>,
    /// An SQL condition added to every read (`where:`).
    pub filter: Option<String>,
}

pub(super) fn parse(o: &mut Obj<'_>, p: &mut Problems) -> Option<PostgresConfig> {
    let url = required_url(o, p, |u| {
        check_scheme(u, &["postgres", "postgresql"])?;
        check_postgres_url(u)
    });
    let interval = o
        .positive_duration("interval", p)
        .unwrap_or(Duration::from_secs(10));
    let timeout = o
        .positive_duration("timeout", p)
        .unwrap_or(Duration::from_secs(5));
    let max_connections = o.integer("max_connections", 1..=10, p).unwrap_or(2) as usize;
    let page_size = o.integer("page_size", 1..=100_000, p).unwrap_or(5000) as usize;
    let tls_ca_file = o.string("tls_ca_file", p).and_then(|s| {
        let path = PathBuf::from(&s);
        if path.is_file() {
            Some(path)
        } else {
            p.add(
                o.at("tls_ca_file"),
                format!("`{s}` is not a readable file (a PEM file of CA certificates)"),
            );
            None
        }
    });

    let non_empty = |o: &mut Obj<'_>, key: &'static str, p: &mut Problems| {
        o.string(key, p).filter(|s| {
            if s.trim().is_empty() {
                p.add(o.at(key), "must not be empty");
            }
            !s.trim().is_empty()
        })
    };
    let query = non_empty(o, "query", p);
    let table = non_empty(o, "table", p);
    let table_keys = ["id_column", "timestamp_column", "status_column", "where"];
    let read = match (o.has("query"), o.has("table")) {
        (true, true) => {
            p.add(o.at("table"), "set either `query` or `table`, not both");
            None
        }
        (false, false) => {
            p.add(
                o.at("query"),
                "required: set `query` (SQL returning agent id and timestamp) or `table` \
                 (with id_column and timestamp_column)",
            );
            None
        }
        (true, false) => {
            for key in table_keys {
                if o.has(key) {
                    p.add(
                        o.at(key),
                        "only used with `table`; with `query`, select the columns in the SQL",
                    );
                }
            }
            query.map(|q| PostgresRead::Query(trim_query(&q)))
        }
        (false, true) => {
            let name = table.and_then(|t| {
                split_table_name(&t)
                    .map_err(|e| p.add(o.at("table"), e))
                    .ok()
            });
            let id_column = non_empty(o, "id_column", p);
            let timestamp_column = non_empty(o, "timestamp_column", p);
            if !o.has("id_column") {
                p.add(o.at("id_column"), "required with `table`");
            }
            if !o.has("timestamp_column") {
                p.add(o.at("timestamp_column"), "required with `table`");
            }
            let status_column = non_empty(o, "status_column", p);
            let filter = non_empty(o, "where", p);
            match (name, id_column, timestamp_column) {
                (Some((schema, table)), Some(id_column), Some(timestamp_column)) => {
                    Some(PostgresRead::Table(PostgresTable {
                        schema,
                        table,
                        id_column,
                        timestamp_column,
                        status_column,
                        filter,
                    }))
                }
                _ => None,
            }
        }
    };
    // Reported above where misplaced; never as unknown keys.
    for key in table_keys {
        let _ = o.get(key);
    }
    Some(PostgresConfig {
        url: url?,
        interval,
        timeout,
        max_connections,
        page_size: NonZeroUsize::new(page_size)?,
        tls_ca_file,
        read: read?,
    })
}

/// The URL as the PostgreSQL client will read it (`sslmode` and the other
/// parameters); the message never holds the password.
fn check_postgres_url(u: &SecretUrl) -> Result<(), String> {
    use std::str::FromStr as _;
    match sqlx::postgres::PgConnectOptions::from_str(u.expose()) {
        Ok(_) => Ok(()),
        Err(e) => {
            let mut msg = e.to_string().replace("error with configuration: ", "");
            if let Some(pw) = url::Url::parse(u.expose())
                .ok()
                .and_then(|x| x.password().map(str::to_string))
                .filter(|pw| !pw.is_empty())
            {
                msg = msg.replace(&pw, "***");
            }
            Err(format!("not a usable PostgreSQL URL: {msg}"))
        }
    }
}

/// A query without the trailing `;` and blanks (it is wrapped in other SQL).
fn trim_query(q: &str) -> String {
    q.trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
        .to_string()
}

/// `table` or `schema.table`.
fn split_table_name(s: &str) -> Result<(Option<String>, String), String> {
    let parts: Vec<&str> = s.split('.').collect();
    match parts.as_slice() {
        [t] if !t.is_empty() => Ok((None, t.to_string())),
        [schema, t] if !schema.is_empty() && !t.is_empty() => {
            Ok((Some(schema.to_string()), t.to_string()))
        }
        _ => Err(format!(
            "`{s}` is not `table` or `schema.table` (names are used exactly as written)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::SourceKindConfig;
    use crate::config::tests::{no_env, parse_ok_env};

    fn warning(url: &str) -> Option<String> {
        let c = parse_ok_env(
            &format!(
                "sources:\n  - {{name: pg, type: postgres, url: \"{url}\", query: \"select 1\"}}\n"
            ),
            &no_env,
        );
        match &c.sources[0].kind {
            SourceKindConfig::Postgres(p) => p.tls_warning(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn unverified_tls_to_another_machine_is_warned_about_without_the_password() {
        let w = warning("postgres://u:hunter2@db.example.com:5432/app").unwrap();
        assert!(
            w.contains("sslmode=prefer (unset)") && w.contains("verify-full"),
            "{w}"
        );
        assert!(!w.contains("hunter2"));
        assert!(warning("postgres://u:p@db.example.com/app?sslmode=require").is_some());
        for quiet in [
            "postgres://u:p@db.example.com/app?sslmode=verify-full",
            "postgres://u:p@db.example.com/app?SSLMODE=verify-ca",
            "postgres://u:p@127.0.0.1:5432/app",
            "postgres://u:p@localhost/app?sslmode=disable",
            "postgres://u:p@[::1]/app",
        ] {
            assert_eq!(warning(quiet), None, "{quiet}");
        }
    }
}
