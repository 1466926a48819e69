//! The `rhizome-node` binary: joins the overlay of a room and prints `peer <id>`, then one
//! line per neighbour change and per broadcast received; broadcasts each line of stdin.
//! Leaves gracefully (goodbyes to the neighbours, exit 0) on Ctrl-C, SIGTERM, or — unless
//! `--seed` — the end of stdin.
//!
//! The node driver is single-threaded (`Rc`-based, the same code as in the browser), so
//! everything runs on a current-thread tokio runtime inside a `LocalSet`; stdin is read
//! by a plain thread, which is the one blocking thing a process does.

use std::io::BufRead;
use std::process::ExitCode;

use clap::Parser;
use rhizome_node::{run, Args};
use tokio::task::LocalSet;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rhizome-node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let lines = stdin_lines();
    let result = LocalSet::new().block_on(&runtime, async {
        run(&args, lines, shutdown_signal(), &mut std::io::stdout()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rhizome-node: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Lines of stdin, read on a thread of their own; the stream ends with stdin.
fn stdin_lines() -> impl futures_util::Stream<Item = String> {
    let (tx, rx) = futures_channel::mpsc::unbounded();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.unbounded_send(line).is_err() {
                break;
            }
        }
    });
    rx
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
