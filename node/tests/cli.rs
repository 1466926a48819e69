//! `rhizome-node`'s behaviour, driven through its library half ([`run`]) on a real
//! in-process signaling server, with WebRTC on 127.0.0.1 only (`--bind 127.0.0.1:0
//! --mdns off`): what it prints, what it broadcasts, and when it leaves.

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;
use std::time::Duration;

use clap::Parser;
use futures_channel::mpsc;
use rhizome::id::Identity;
use rhizome::transport::signaling_types::SignalingError;
use rhizome_node::{one_line, run, Args, JoinError, NodeError};
use rhizome_signaling::{serve, Config};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::LocalSet;
use tokio::time::timeout;

/// Runs `test` on a current-thread runtime inside a `LocalSet`, as a native node must.
fn run_local<F: std::future::Future<Output = ()>>(test: F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    LocalSet::new().block_on(&rt, test);
}

async fn server() -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(Config::default(), listener, async {
        let _ = stopped.await;
    }));
    (url, stop)
}

fn args(url: &str, seed: u8, extra: &[&str]) -> Args {
    let secret = Identity::from_secret_bytes([seed; 32]).secret_hex();
    let mut argv = vec![
        "rhizome-node",
        "--signaling",
        url,
        "--room",
        "cli",
        "--secret",
        &secret,
        "--bind",
        "127.0.0.1:0",
        "--mdns",
        "off",
    ];
    argv.extend_from_slice(extra);
    Args::parse_from(argv)
}

/// Hands each line `run` writes to the test.
struct Lines {
    partial: Vec<u8>,
    tx: mpsc::UnboundedSender<String>,
}

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            let _ = self
                .tx
                .unbounded_send(String::from_utf8_lossy(&line).trim_end().to_string());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A running `rhizome-node`: its stdin, its stdout lines, its Ctrl-C and its result.
struct Running {
    stdin: Option<mpsc::UnboundedSender<String>>,
    stdout: mpsc::UnboundedReceiver<String>,
    ctrl_c: Option<oneshot::Sender<()>>,
    result: Rc<RefCell<Option<Result<(), String>>>>,
}

fn start(args: Args) -> Running {
    let (stdin, lines) = mpsc::unbounded::<String>();
    let (tx, stdout) = mpsc::unbounded();
    let (ctrl_c, pressed) = oneshot::channel::<()>();
    let result = Rc::new(RefCell::new(None));
    let done = result.clone();
    tokio::task::spawn_local(async move {
        let mut out = Lines {
            partial: Vec::new(),
            tx,
        };
        let shutdown = async {
            let _ = pressed.await;
        };
        let r = run(&args, lines, shutdown, &mut out).await;
        *done.borrow_mut() = Some(r.map_err(|e| e.to_string()));
    });
    Running {
        stdin: Some(stdin),
        stdout,
        ctrl_c: Some(ctrl_c),
        result,
    }
}

impl Running {
    /// Waits for a stdout line starting with `want` and returns it.
    async fn expect(&mut self, want: &str) -> String {
        use futures_util::StreamExt;
        let found = timeout(Duration::from_secs(30), async {
            while let Some(line) = self.stdout.next().await {
                if line.starts_with(want) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!("no line starting with {want:?}"),
        }
    }

    /// Waits until `run` returned.
    async fn finished(&self) -> Result<(), String> {
        timeout(Duration::from_secs(10), async {
            loop {
                if let Some(r) = self.result.borrow().clone() {
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the node exits")
    }
}

#[test]
fn two_nodes_report_each_other_as_neighbours_and_print_each_others_stdin_broadcasts() {
    run_local(async {
        let (url, _stop) = server().await;
        let a_id = Identity::from_secret_bytes([1; 32]).peer_id();
        let b_id = Identity::from_secret_bytes([2; 32]).peer_id();
        let mut a = start(args(&url, 1, &[]));
        assert_eq!(a.expect("peer ").await, format!("peer {a_id}"));
        let mut b = start(args(&url, 2, &[]));
        assert_eq!(b.expect("peer ").await, format!("peer {b_id}"));
        assert_eq!(a.expect("neighbor-up").await, format!("neighbor-up {b_id}"));
        assert_eq!(b.expect("neighbor-up").await, format!("neighbor-up {a_id}"));

        let sent = "hello from a\\ with a backslash";
        a.stdin
            .as_ref()
            .unwrap()
            .unbounded_send(sent.into())
            .unwrap();
        assert_eq!(
            b.expect("broadcast").await,
            format!("broadcast {a_id} {}", one_line(sent.as_bytes()))
        );

        // Ctrl-C: a leaves gracefully and b hears the goodbye at once.
        let _ = a.ctrl_c.take().unwrap().send(());
        assert_eq!(a.finished().await, Ok(()));
        assert_eq!(
            b.expect("neighbor-down").await,
            format!("neighbor-down {a_id}")
        );
        let _ = b.ctrl_c.take().unwrap().send(());
        assert_eq!(b.finished().await, Ok(()));
    });
}

#[test]
fn a_stdin_line_addressed_to_a_peer_is_sent_to_it_alone_and_reported_delivered() {
    run_local(async {
        let (url, _stop) = server().await;
        let a_id = Identity::from_secret_bytes([3; 32]).peer_id();
        let b_id = Identity::from_secret_bytes([4; 32]).peer_id();
        let mut a = start(args(&url, 3, &[]));
        let mut b = start(args(&url, 4, &[]));
        a.expect("neighbor-up").await;
        b.expect("neighbor-up").await;
        let stdin = a.stdin.clone().unwrap();
        stdin.unbounded_send(format!("@{b_id} psst")).unwrap();
        assert_eq!(b.expect("message").await, format!("message {a_id} psst"));
        assert_eq!(a.expect("delivered").await, format!("delivered {b_id} 1"));
        // A bad peer id is reported, not broadcast, and the node goes on.
        stdin.unbounded_send("@nope hi".into()).unwrap();
        stdin.unbounded_send("after".into()).unwrap();
        assert_eq!(
            b.expect("broadcast").await,
            format!("broadcast {a_id} after")
        );
        let _ = a.ctrl_c.take().unwrap().send(());
        let _ = b.ctrl_c.take().unwrap().send(());
        assert_eq!(a.finished().await, Ok(()));
        assert_eq!(b.finished().await, Ok(()));
    });
}

#[test]
fn without_seed_the_end_of_stdin_leaves_and_with_seed_the_node_stays() {
    run_local(async {
        let (url, _stop) = server().await;
        let mut plain = start(args(&url, 3, &[]));
        let mut seed = start(args(&url, 4, &["--seed"]));
        plain.expect("peer ").await;
        seed.expect("peer ").await;

        plain.stdin.take();
        seed.stdin.take();
        assert_eq!(plain.finished().await, Ok(()));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(seed.result.borrow().is_none(), "a seed outlives its stdin");
        let _ = seed.ctrl_c.take().unwrap().send(());
        assert_eq!(seed.finished().await, Ok(()));
    });
}

#[test]
fn a_bad_secret_or_no_server_is_an_error_not_a_panic() {
    run_local(async {
        let never = std::future::pending::<()>;
        let no_lines = futures_util::stream::empty::<String>;

        let bad = Args::parse_from(["rhizome-node", "--secret", "not hex"]);
        let r = run(&bad, no_lines(), never(), &mut Vec::new()).await;
        assert!(matches!(r, Err(NodeError::Secret(_))), "{r:?}");

        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            format!("ws://{}/ws", l.local_addr().unwrap())
        };
        let unreachable = Args::parse_from(["rhizome-node", "--signaling", &dead]);
        let r = run(&unreachable, no_lines(), never(), &mut Vec::new()).await;
        assert!(
            matches!(
                r,
                Err(NodeError::Join(JoinError::Signaling(
                    SignalingError::Unreachable { .. }
                )))
            ),
            "{r:?}"
        );
    });
}

#[test]
fn the_mode_flag_picks_the_overlay_mode_and_hybrid_is_the_default() {
    use rhizome::overlay::dht::Mode;
    let mode = |extra: &[&str]| {
        args("ws://127.0.0.1:9/ws", 6, extra)
            .node_config()
            .map(|c| c.overlay.mode)
            .ok()
    };
    assert_eq!(mode(&[]), Some(Mode::Hybrid));
    assert_eq!(mode(&["--mode", "unstructured"]), Some(Mode::Unstructured));
    assert_eq!(mode(&["--mode", "structured"]), Some(Mode::Structured));
    assert!(Args::try_parse_from(["rhizome-node", "--mode", "banana"]).is_err());
}
