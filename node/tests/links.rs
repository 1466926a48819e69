//! `rhizome-node --links`: two native nodes in one room connect through a real
//! (in-process, 127.0.0.1) signaling server, and one that shuts down says goodbye.

use std::io::Write;
use std::time::Duration;

use clap::Parser;
use rhizome::id::Identity;
use rhizome_node::links::{serve_links, LinkOptions};
use rhizome_node::{join, Args};
use rhizome_signaling::{serve, Config};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

/// Hands each line the link manager writes to the test.
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
                .send(String::from_utf8_lossy(&line).trim_end().to_string());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn expect_line(rx: &mut mpsc::UnboundedReceiver<String>, want: &str) {
    let found = timeout(Duration::from_secs(15), async {
        while let Some(line) = rx.recv().await {
            if line.starts_with(want) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "a line starting with {want:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_with_links_connect_and_a_leaving_one_says_goodbye() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(Config::default(), listener, async {
        let _ = stopped.await;
    }));

    let node = |seed: u8, dial: bool| {
        let secret = Identity::from_secret_bytes([seed; 32]).secret_hex();
        let mut argv = vec![
            "rhizome-node".to_string(),
            "--signaling".into(),
            url.clone(),
            "--room".into(),
            "links".into(),
            "--secret".into(),
            secret,
            "--links".into(),
            "--bind".into(),
            "127.0.0.1:0".into(),
            "--mdns".into(),
            "off".into(),
        ];
        if dial {
            argv.push("--dial".into());
        }
        Args::parse_from(argv)
    };
    let start = |args: Args| async move {
        let mut joined = join(&args).await.expect("joins");
        let options = LinkOptions {
            config: args.native_config(),
            dial: args.dial,
            ..LinkOptions::default()
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut out = Lines {
                partial: Vec::new(),
                tx,
            };
            let shutdown = async {
                let _ = stopped.await;
            };
            serve_links(&mut joined, &options, shutdown, &mut out).await
        });
        (rx, stop, task)
    };

    let a_id = Identity::from_secret_bytes([1; 32]).peer_id();
    let b_id = Identity::from_secret_bytes([2; 32]).peer_id();
    let (mut a_lines, a_stop, a_task) = start(node(1, false)).await;
    let (mut b_lines, b_stop, b_task) = start(node(2, true)).await;
    expect_line(&mut b_lines, &format!("open {a_id}")).await;
    expect_line(&mut a_lines, &format!("open {b_id}")).await;

    // b leaves; a hears it at once (well before ICE would time out, 30 s by default).
    let _ = b_stop.send(());
    b_task.await.unwrap().expect("b shuts down cleanly");
    expect_line(&mut a_lines, &format!("closed {b_id}")).await;
    let _ = a_stop.send(());
    a_task.await.unwrap().expect("a shuts down cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_links_keeps_its_signaling_session_alive_with_pings() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let (_stop, stopped) = oneshot::channel::<()>();
    let config = Config {
        idle_timeout: Duration::from_millis(600),
        ..Config::default()
    };
    tokio::spawn(serve(config, listener, async {
        let _ = stopped.await;
    }));
    let secret = Identity::from_secret_bytes([3; 32]).secret_hex();
    let args = Args::parse_from([
        "rhizome-node",
        "--signaling",
        &url,
        "--room",
        "idle",
        "--secret",
        &secret,
        "--links",
    ]);
    let mut joined = join(&args).await.expect("joins");
    let options = LinkOptions {
        // No connection is made here; if one were, it would stay on 127.0.0.1.
        config: rhizome::transport::native::NativeConfig::loopback(),
        server_ping: Duration::from_millis(150),
        ..LinkOptions::default()
    };
    let (tx, mut lines) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut out = Lines {
            partial: Vec::new(),
            tx,
        };
        let shutdown = async {
            let _ = stopped.await;
        };
        let r = serve_links(&mut joined, &options, shutdown, &mut out).await;
        (r, joined)
    });
    // Well past the idle timeout, a newcomer is still introduced to the node.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let newcomer = Identity::from_secret_bytes([4; 32]);
    let (_c, peers) = rhizome::transport::native_signaling::SignalingClient::connect(
        &url, &newcomer, "idle", 5_000,
    )
    .await
    .expect("the newcomer joins");
    assert_eq!(peers, vec![Identity::from_secret_bytes([3; 32]).peer_id()]);
    let _ = stop.send(());
    let (result, _joined) = task.await.unwrap();
    result.expect("clean shutdown");
    assert!(lines.try_recv().is_err(), "no errors were reported");
}
