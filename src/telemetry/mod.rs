//! The sidecar's own telemetry: the metrics registry ([`metrics`]) and the
//! logging set-up (human-readable or JSON lines, level from
//! `AGENT_SUPERVISOR_LOG`, an `EnvFilter` directive, default `info`).

pub mod metrics;

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("AGENT_SUPERVISOR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log that cannot be written (stderr redirected to a full disk)
        // loses lines; by default the failure is reported with eprintln!,
        // which panics on that same stderr, and the panic's own log line
        // then aborts the process. The sidecar keeps watching instead.
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
