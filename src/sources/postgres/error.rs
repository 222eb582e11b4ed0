//! sqlx's errors as the source's error kinds, with messages that name the
//! endpoint and never a secret.

use crate::core::ErrorKind;
use crate::sources::SourceError;
use crate::sources::common::{classify_io, is_tls_failure};

use super::PostgresSource;

impl PostgresSource {
    /// An error of the query form's scan statement, which runs under a
    /// `statement_timeout` of `limit` rather than `timeout`.
    pub(super) fn scan_sql_error(
        &self,
        e: &sqlx::Error,
        limit: std::time::Duration,
    ) -> SourceError {
        match e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => self.error(
                ErrorKind::Timeout,
                format!(
                    "the scan ran longer than {}, ten times `interval`, and was cancelled \
                     ({}): {}",
                    humantime::format_duration(limit),
                    self.endpoint,
                    db.message()
                ),
            ),
            _ => self.sql_error(e),
        }
    }

    /// An error from sqlx as a kind and a message without secrets.
    pub(super) fn sql_error(&self, e: &sqlx::Error) -> SourceError {
        let ep = &self.endpoint;
        let (kind, message) = match e {
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                let msg = db.message();
                match code.as_str() {
                    "28P01" | "28000" => (
                        ErrorKind::Auth,
                        format!("authentication failed ({ep}): {msg}"),
                    ),
                    "57014" => (
                        ErrorKind::Timeout,
                        format!(
                            "statement timed out after {} ({ep}): {msg}",
                            humantime::format_duration(self.timeout)
                        ),
                    ),
                    "42P01" => (
                        ErrorKind::Other,
                        format!("table not found ({ep}): {msg}; check `table` or `query`"),
                    ),
                    "42703" => (
                        ErrorKind::Other,
                        format!("column not found ({ep}): {msg}; check the column names"),
                    ),
                    "25006" => (
                        ErrorKind::Other,
                        format!(
                            "the read tried to write and was refused: it runs read-only ({ep}): {msg}"
                        ),
                    ),
                    "08P01" => (ErrorKind::Protocol, format!("protocol error ({ep}): {msg}")),
                    _ => (ErrorKind::Other, format!("{msg} (SQLSTATE {code}) ({ep})")),
                }
            }
            sqlx::Error::Io(io) => self.io_error(io),
            sqlx::Error::Tls(t) => (ErrorKind::Tls, format!("TLS failure ({ep}): {t}")),
            sqlx::Error::Protocol(m) => {
                (ErrorKind::Protocol, format!("protocol error ({ep}): {m}"))
            }
            sqlx::Error::ColumnDecode { index, source } => (
                ErrorKind::BadValue,
                format!("cannot decode column {index} ({ep}): {source}"),
            ),
            other => {
                let text = other.to_string();
                if self.uses_tls && is_tls_failure(&text) {
                    (ErrorKind::Tls, format!("TLS failure ({ep}): {text}"))
                } else {
                    (ErrorKind::Other, format!("{text} ({ep})"))
                }
            }
        };
        self.error(kind, message)
    }

    fn io_error(&self, e: &std::io::Error) -> (ErrorKind, String) {
        let text = e.to_string();
        let tls = self.uses_tls && (is_tls_failure(&text) || is_tls_failure(&format!("{e:?}")));
        classify_io(Some(e.kind()), &text, tls, &self.endpoint)
    }
}
