//! The `agent-supervisor` binary: parse the command line, set up logging,
//! load the config (exit 64 listing every problem), then run a command.

#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agent_supervisor::app::{App, AppOptions};
use agent_supervisor::telemetry::{self, LogFormat};
use agent_supervisor::{config, scan};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Exit code for a config that cannot be used (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    version,
    about = "Watches the logical agents inside a service and reports, promptly and truthfully, when one has silently stopped."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file.
    #[arg(
        long,
        global = true,
        env = "AGENT_SUPERVISOR_CONFIG",
        default_value = "config.yaml"
    )]
    config: PathBuf,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar (the default).
    Run,
    /// Check the config: exit 0, or 64 listing every problem.
    CheckConfig {
        /// Check all but the alerting sections (receivers, routing,
        /// silences, delivery, external_url, api_token), whose ${VAR}s then
        /// need not be set.
        #[arg(long)]
        sources_only: bool,
    },
    /// Read every source once and print agents and states; exit 0 when all
    /// are healthy, 2 when one is stale/failing/missing, 3 when a source
    /// could not be read or an agent is unknown.
    Scan {
        /// Longest wait for each source.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Print the JSON Schema of the config file (config.schema.json).
    Schema,
}

fn main() -> ExitCode {
    // A file grown past RLIMIT_FSIZE must be a write error the state store
    // reports (and the sidecar survives), not SIGXFSZ killing the process.
    // SAFETY: called before any thread is started; SIG_IGN has no handler.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    // As many file descriptors as the hard limit allows: the HTTP
    // server's connection cap is sized from the soft limit.
    // SAFETY: getrlimit/setrlimit on this process, before any thread.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
    allocator_thresholds();
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    // A panic is one error line in the log (JSON when the log is), with its
    // place and thread, not bare text on stderr; the task supervisor then
    // restarts the task or stops the process.
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        error!(
            thread = thread.name().unwrap_or("unnamed"),
            panic = %info,
            "A task panicked."
        );
    }));
    // Test builds only: `FAILPOINTS=name=actions` injects faults (the
    // `fail` crate; tests/it/failpoints.rs). Other builds compile the
    // failpoints out and never read the variable.
    let _failpoints = fail::has_failpoints().then(fail::FailScenario::setup);
    if let Some(Command::Schema) = cli.command {
        print!("{}", config::schema::JSON_SCHEMA);
        return ExitCode::SUCCESS;
    }
    let command = cli.command.unwrap_or(Command::Run);
    // `scan` sends nothing: it needs neither the alerting sections nor their
    // variables.
    let sections = match command {
        Command::Scan { .. } | Command::CheckConfig { sources_only: true } => {
            config::Sections::SourcesOnly
        }
        _ => config::Sections::All,
    };
    let config = match config::load_sections(&cli.config, sections) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agent-supervisor: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match command {
        Command::Run => block_on(run(config)),
        Command::CheckConfig { sources_only } => {
            // Who can reach what: needs the tokens, which --sources-only
            // does not read.
            if !sources_only {
                for line in config::listeners::describe(&config) {
                    println!("{line}");
                }
            }
            for s in &config.sources {
                if let config::SourceKindConfig::Postgres(p) = &s.kind
                    && let Some(w) = p.tls_warning()
                {
                    println!("warning: sources.{}: {w}", s.name);
                }
            }
            println!(
                "{}: ok ({} sources, {} agent rules)",
                cli.config.display(),
                config.sources.len(),
                config.agents.len()
            );
            ExitCode::SUCCESS
        }
        Command::Scan { timeout } => block_on(scan(config, timeout)),
        // Printed above, before any config is read.
        Command::Schema => ExitCode::SUCCESS,
    }
}

/// glibc's malloc with fixed thresholds instead of its adaptive ones:
/// freed memory above 128 KiB at the top of a heap goes back to the system,
/// and allocations of 128 KiB or more are mapped on their own. Adaptive,
/// the thresholds rise to the size of the largest block freed (a first
/// scan's burst of transitions, a large page), up to 32 MiB, and a heap
/// then keeps that much freed memory resident for good: 1.1 MiB more at
/// 10,000 agents (benches/scripts/fleet.sh, MALLOC_*_ environment against
/// none). Skipped when the operator set either in the environment.
fn allocator_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const THRESHOLD: libc::c_int = 128 * 1024;
        let tuned = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        if !tuned {
            // SAFETY: mallopt only sets malloc parameters; called before any
            // thread is started.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
                libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
            }
        }
    }
}

/// `pow` and `log10`, the only functions of the C math library the binary
/// calls (redis-protocol counting a length's digits, tokio's scheduler
/// statistics, minijinja's `**`), defined here from the `libm` crate (the
/// Rust port of musl's libm). With no other symbol needed from it, the C
/// libm is not linked (`--as-needed`), and its pages, about 0.5 MiB of an
/// idle sidecar's RSS (the kernel maps them in large folios), are not
/// mapped. log10 runs for every Redis command the integration tests send.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod math {
    #[unsafe(no_mangle)]
    extern "C" fn pow(x: f64, y: f64) -> f64 {
        libm::pow(x, y)
    }

    #[unsafe(no_mangle)]
    extern "C" fn log10(x: f64) -> f64 {
        libm::log10(x)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn pow_and_log10_answer_as_the_c_library_would() {
            assert_eq!(super::pow(2.0, 10.0), 1024.0);
            assert_eq!(super::pow(10.0, -2.0), 0.01);
            assert!(super::pow(-1.0, 0.5).is_nan());
            assert_eq!(super::log10(1000.0), 3.0);
            assert_eq!(super::log10(1.0), 0.0);
            assert_eq!(super::log10(0.0), f64::NEG_INFINITY);
        }

        /// What redis-protocol computes with it: a length's decimal digits,
        /// `floor(log10(n)) + 1`, right on both sides of every power of ten
        /// up to a terabyte (a Redis value is at most 512 MB). At 10^15 - 1
        /// the formula itself fails, with any correctly rounded log10: its
        /// log10 rounds to 15.0.
        #[test]
        fn log10_counts_the_digits_of_every_length() {
            let mut p: u64 = 1;
            for _ in 1..=12 {
                for n in [p, p + 1, p * 10 - 1] {
                    let counted = super::log10(n as f64).floor() as usize + 1;
                    assert_eq!(counted, n.to_string().len(), "{n}");
                }
                p *= 10;
            }
        }
    }
}

/// Run `command` on a runtime with the TLS stack every client uses.
fn block_on(command: impl Future<Output = ExitCode>) -> ExitCode {
    // One TLS stack for every client (rediss://, Postgres and webhooks).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        // Boxed: the whole sidecar's future would otherwise live (and be
        // moved) on the main thread's stack, whose pages stay resident.
        Ok(runtime) => runtime.block_on(Box::pin(command)),
        Err(e) => {
            eprintln!("agent-supervisor: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn scan(config: config::Config, timeout: Duration) -> ExitCode {
    match scan::scan(&config, timeout).await {
        Ok(snap) => {
            let push: Vec<_> = config
                .sources
                .iter()
                .filter(|s| s.kind.interval().is_none())
                .map(|s| s.name.clone())
                .collect();
            print!("{}", scan::render_table(&snap, &push));
            ExitCode::from(scan::exit_code(&snap) as u8)
        }
        Err(e) => {
            eprintln!("agent-supervisor: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: config::Config) -> ExitCode {
    let app = match App::build(config, AppOptions::default()).await {
        Ok(a) => a,
        Err(e) => {
            error!("Cannot start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // The handlers are installed here, before the app runs and says it has
    // started: a SIGTERM right after start drains like any other, instead
    // of meeting the default action (death) because a task had not run yet.
    let signals = match ShutdownSignals::install() {
        Ok(s) => s,
        Err(e) => {
            error!("Cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        signals.received().await;
        info!("Signal received.");
        c.cancel();
    });
    match app.run(cancel).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM and SIGINT, listened to from the moment they are installed.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn received(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
