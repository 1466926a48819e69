//! Native nodes report each link's round-trip time: their own in `stats().links`, and
//! everyone's through topology announcements in `topology().links`.
//!
//! Three native nodes (the browser's driver over webrtc-rs) on 127.0.0.1, bootstrapped by
//! an in-process signaling server; ICE binds 127.0.0.1 only, mDNS is off and no ICE server
//! is configured, so no packet leaves the machine.

use std::time::Duration;

use futures_util::StreamExt;
use rhizome::node::{Node, NodeConfig};
use rhizome::transport::native::NativeConfig;
use rhizome_signaling::{serve, Config};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::LocalSet;
use tokio::time::{sleep, Instant};

/// Generous bound; the test finishes as soon as the condition holds.
const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `ok` every 100 ms until it holds; panics with `what` after [`DEADLINE`].
async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < DEADLINE, "{what} within {DEADLINE:?}");
        sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn every_node_learns_the_round_trip_time_of_every_link() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    LocalSet::new().block_on(&rt, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let (_stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve(Config::default(), listener, async {
            let _ = stopped.await;
        }));

        let mut nodes: Vec<Node> = Vec::new();
        for _ in 0..3 {
            let mut config = NodeConfig::new(vec![url.clone()], "rtt");
            config.native = NativeConfig::loopback();
            config.announce_topology_ms = Some(300);
            let (node, mut events) = Node::join(config).await.expect("joins the room");
            tokio::task::spawn_local(async move { while events.next().await.is_some() {} });
            nodes.push(node);
        }

        // Each node measures its own links: every open active link gets an RTT.
        until("every node measures each of its neighbour links", || {
            nodes.iter().all(|n| {
                let links: Vec<_> = n
                    .stats()
                    .links
                    .into_iter()
                    .filter(|l| l.kind == "active")
                    .collect();
                links.len() == 2 && links.iter().all(|l| l.open && l.rtt_ms.is_some())
            })
        })
        .await;
        for n in &nodes {
            for l in n.stats().links.iter().filter(|l| l.kind == "active") {
                let rtt = l.rtt_ms.unwrap_or(f64::NAN);
                // Loopback: well under a second, and never negative.
                assert!((0.0..1_000.0).contains(&rtt), "rtt {rtt} ms");
                assert!(l.bytes_sent > 0 && l.bytes_received > 0, "{l:?}");
            }
        }

        // Announcements carry them: node 0 knows the RTT of the link between the other two.
        let (b, c) = (nodes[1].id(), nodes[2].id());
        let far = if b < c { (b, c) } else { (c, b) };
        until("node 0 hears the RTT of a link it is not part of", || {
            nodes[0]
                .topology()
                .links
                .iter()
                .any(|l| (l.a, l.b) == far && l.kind == "active" && l.rtt_ms.is_some())
        })
        .await;
        let topo = nodes[0].topology();
        assert!(
            topo.links.iter().all(|l| l.rtt_ms.is_some()),
            "every link drawn has an RTT: {:?}",
            topo.links
        );

        for n in &nodes {
            n.leave().await;
        }
    });
}
