//! Native nodes run the real overlay: the same driver as the browser (`rhizome::node`),
//! over webrtc-rs on 127.0.0.1, bootstrapped by a real in-process signaling server.
//!
//! Every node of a test lives in one process, on one current-thread tokio runtime and one
//! `LocalSet` (the driver is single-threaded); ICE binds 127.0.0.1 only, mDNS is off and
//! no ICE server is configured, so no packet leaves the machine.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use futures_util::StreamExt;
use rhizome::id::PeerId;
use rhizome::node::{Node, NodeConfig, NodeEvent};
use rhizome::transport::native::NativeConfig;
use rhizome_signaling::{serve, Config};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::LocalSet;
use tokio::time::{sleep, Instant};

/// Generous bound on forming an overlay or spreading a broadcast; the tests finish as soon
/// as the condition holds.
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `test` on a current-thread runtime inside a `LocalSet`, as a native node must.
fn run_local<F: std::future::Future<Output = ()>>(test: F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    LocalSet::new().block_on(&rt, test);
}

/// A signaling server on 127.0.0.1, port 0, stopped by [`Server::kill`] or on drop.
struct Server {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    stopped: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = serve(Config::default(), listener, async {
                let _ = stopped.await;
            })
            .await;
        });
        Server {
            url: format!("ws://{addr}/ws"),
            stop: Some(stop),
            stopped: Some(task),
        }
    }

    /// Stops the server and waits until it has closed every session.
    async fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.stopped.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Broadcasts each node delivered to the application: `(origin, payload)`.
type Deliveries = Rc<RefCell<Vec<(PeerId, Vec<u8>)>>>;

/// `n` nodes joined to `room`, one after the other, each with a task recording what it
/// delivers.
async fn join_nodes(url: &str, room: &str, n: usize) -> Vec<(Node, Deliveries)> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        let mut config = NodeConfig::new(vec![url.to_string()], room);
        config.native = NativeConfig::loopback();
        let (node, mut events) = Node::join(config).await.expect("joins the room");
        let delivered: Deliveries = Rc::default();
        let record = delivered.clone();
        tokio::task::spawn_local(async move {
            while let Some(ev) = events.next().await {
                if let NodeEvent::Broadcast { from, data, .. } = ev {
                    record.borrow_mut().push((from, data));
                }
            }
        });
        nodes.push((node, delivered));
    }
    nodes
}

/// Whether every node has neighbours, every link is known at both ends, and the active
/// views connect all nodes.
fn formed(nodes: &[(Node, Deliveries)]) -> bool {
    let views: HashMap<PeerId, Vec<PeerId>> =
        nodes.iter().map(|(n, _)| (n.id(), n.neighbors())).collect();
    let symmetric = views.iter().all(|(me, neighbors)| {
        !neighbors.is_empty()
            && neighbors
                .iter()
                .all(|p| views.get(p).is_some_and(|theirs| theirs.contains(me)))
    });
    if !symmetric {
        return false;
    }
    let start = nodes[0].0.id();
    let mut seen = HashSet::from([start]);
    let mut queue = VecDeque::from([start]);
    while let Some(p) = queue.pop_front() {
        for q in &views[&p] {
            if seen.insert(*q) {
                queue.push_back(*q);
            }
        }
    }
    seen.len() == nodes.len()
}

/// Waits until `done` holds, checking every 50 ms, or panics after [`DEADLINE`].
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < DEADLINE,
            "timed out waiting until {what}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// Broadcasts `payload` from node `from` and checks every other node delivers it exactly
/// once (waiting a little after the last delivery for any duplicate).
async fn broadcast_reaches_each_exactly_once(
    nodes: &[(Node, Deliveries)],
    from: usize,
    payload: &[u8],
) {
    let origin = nodes[from].0.id();
    nodes[from]
        .0
        .broadcast(payload.to_vec())
        .expect("broadcasts");
    let copies = |d: &Deliveries| {
        d.borrow()
            .iter()
            .filter(|(o, data)| *o == origin && data == payload)
            .count()
    };
    wait_until("every node delivered the broadcast", || {
        nodes
            .iter()
            .enumerate()
            .all(|(i, (_, d))| i == from || copies(d) >= 1)
    })
    .await;
    sleep(Duration::from_millis(500)).await;
    for (i, (node, d)) in nodes.iter().enumerate() {
        let want = usize::from(i != from);
        assert_eq!(copies(d), want, "node {i} ({}) deliveries", node.id());
    }
}

/// Every node leaves, all at once (each waits up to ~1 s for its goodbyes).
async fn leave_all(nodes: &[(Node, Deliveries)]) {
    futures_util::future::join_all(nodes.iter().map(|(n, _)| n.leave())).await;
}

#[test]
fn twenty_native_peers_form_a_symmetric_overlay_and_a_broadcast_reaches_each_exactly_once() {
    run_local(async {
        let server = Server::start().await;
        let nodes = join_nodes(&server.url, "twenty", 20).await;
        wait_until("the overlay is connected and symmetric", || formed(&nodes)).await;
        broadcast_reaches_each_exactly_once(&nodes, 7, b"hello, twenty").await;
        leave_all(&nodes).await;
    });
}

#[test]
fn a_broadcast_reaches_everyone_after_the_signaling_server_is_killed() {
    run_local(async {
        let mut server = Server::start().await;
        let nodes = join_nodes(&server.url, "serverless", 8).await;
        wait_until("the overlay is connected and symmetric", || formed(&nodes)).await;
        server.kill().await;
        wait_until("every node noticed the server is gone", || {
            nodes.iter().all(|(n, _)| !n.stats().server_connected)
        })
        .await;
        broadcast_reaches_each_exactly_once(&nodes, 3, b"no server needed").await;
        leave_all(&nodes).await;
    });
}
