//! The `rhizome-node` binary: joins a room, prints `peer <id>` and `introduced <id>`
//! lines on stdout, then stays in the room until Ctrl-C, SIGTERM or the server closes the
//! session: logging what the server relays to stderr, or with `--links` serving WebRTC
//! connections and printing their events on stdout (see `links.rs`).

use std::process::ExitCode;

use clap::Parser;
use rhizome::transport::native_signaling::SignalingEvent;
use rhizome_node::links::{serve_links, LinkOptions};
use rhizome_node::{join, Args, SERVER_PING};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut joined = match join(&args).await {
        Ok(j) => j,
        Err(e) => {
            eprintln!("rhizome-node: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = joined.report(&mut std::io::stdout().lock()) {
        eprintln!("rhizome-node: cannot write output: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!(
        "rhizome-node: joined room {:?} on {}",
        args.room,
        joined.signaling.url()
    );
    if args.links {
        let options = LinkOptions {
            config: args.native_config(),
            dial: args.dial,
            ..LinkOptions::default()
        };
        let mut out = std::io::stdout();
        return match serve_links(&mut joined, &options, shutdown_signal(), &mut out).await {
            Ok(()) => {
                joined.signaling.close();
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rhizome-node: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut ping = tokio::time::interval(SERVER_PING);
    ping.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if let Err(e) = joined.signaling.ping() {
                    eprintln!("rhizome-node: cannot ping the server: {e}");
                }
            }
            () = &mut shutdown => {
                eprintln!("rhizome-node: shutting down");
                joined.signaling.close();
                return ExitCode::SUCCESS;
            }
            event = joined.signaling.next_event() => match event {
                Some(SignalingEvent::Signal { from, .. }) => {
                    eprintln!("rhizome-node: signal from {from} (no overlay driver yet)");
                }
                Some(SignalingEvent::Error { code, message }) => {
                    eprintln!("rhizome-node: server error {code:?}: {message}");
                }
                Some(SignalingEvent::Closed(reason)) => {
                    eprintln!("rhizome-node: signaling session closed: {reason}");
                    return ExitCode::FAILURE;
                }
                None => return ExitCode::FAILURE,
            },
        }
    }
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
