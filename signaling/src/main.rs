//! The `rhizome-signaling` binary: flags and environment in, one "listening" line out,
//! then the server until SIGINT or SIGTERM.
//!
//! Tools start it with `--bind 127.0.0.1:0` and read the first stdout line to learn the
//! port, so stdout carries exactly that line; logs go to stderr.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use rhizome_signaling::{bind, serve_ready, Config};
use tracing::{error, warn};
use tracing_subscriber::EnvFilter;

/// The rhizome bootstrap signaling server: rooms, random samples, signed relays.
///
/// Serves the signaling WebSocket at /ws, health at /healthz, Prometheus metrics at
/// /metrics, and optionally a static directory at / and the wasm-pack output at /pkg/.
/// Every flag can also be given as the environment variable shown.
#[derive(Debug, Parser)]
#[command(name = "rhizome-signaling", version)]
struct Cli {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, env = "RHIZOME_BIND", default_value = "127.0.0.1:8080")]
    bind: String,

    /// Log filter in tracing's EnvFilter syntax, e.g. "info" or "rhizome_signaling=debug".
    #[arg(long, env = "RHIZOME_LOG", default_value = "info")]
    log: String,

    /// Worker threads; 0 means one per CPU, 1 runs everything on the main thread.
    #[arg(long, env = "RHIZOME_THREADS", default_value_t = 0)]
    threads: usize,

    #[command(flatten)]
    config: Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut runtime = match cli.threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if cli.threads > 1 {
        runtime.worker_threads(cli.threads);
    }
    match runtime.enable_all().build() {
        Ok(rt) => {
            let code = rt.block_on(run(cli));
            // `serve` has already bounded the shutdown by its grace period; do not wait
            // for blocking work still running (a static file being read).
            rt.shutdown_timeout(std::time::Duration::from_millis(100));
            code
        }
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        warn!("could not raise the open-files limit: {e}");
    }
    let listener = match bind(&cli.bind).await {
        Ok(l) => l,
        Err(e) => {
            error!("cannot listen on {}: {e}", cli.bind);
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            error!("cannot read the bound address: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ready = move || {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "rhizome-signaling listening on http://{addr}");
        let _ = out.flush();
    };
    match serve_ready(cli.config, listener, shutdown_signal(), ready).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
