//! A native node takes the ICE servers its signaling server offers into use, after its
//! own, and takes fresh TURN credentials when the server pushes them. Everything on
//! 127.0.0.1; the offered STUN/TURN addresses are loopback ports nobody listens on, so
//! the nodes connect by their host candidates as before.

use std::time::Duration;

use rhizome::node::{Node, NodeConfig};
use rhizome::transport::native::NativeConfig;
use rhizome::transport::IceServer;
use rhizome_signaling::config::TurnSecret;
use rhizome_signaling::{serve, Config};
use tokio::net::TcpListener;
use tokio::task::LocalSet;
use tokio::time::{sleep, Instant};

fn own() -> IceServer {
    IceServer {
        urls: vec!["stun:127.0.0.1:9".into()],
        username: None,
        credential: None,
    }
}

#[test]
fn a_node_merges_offered_ice_servers_with_its_own_and_takes_refreshed_credentials() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    LocalSet::new().block_on(&rt, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let config = Config {
            stun: vec!["stun:127.0.0.1:7".into()],
            turn: vec!["turn:127.0.0.1:7?transport=udp".into()],
            turn_secret: Some(TurnSecret::new("test-secret")),
            turn_ttl: Duration::from_secs(2),
            ..Config::default()
        };
        tokio::spawn(serve(config, listener, std::future::pending::<()>()));

        let mut config = NodeConfig::new(vec![url.clone()], "ice");
        config.native = NativeConfig::loopback();
        config.ice_servers = vec![own()];
        let (a, _events_a) = Node::join(config).await.expect("joins");
        let servers = a.ice_servers();
        assert_eq!(servers.len(), 3, "{servers:?}");
        assert_eq!(servers[0], own());
        assert_eq!(servers[1].urls, ["stun:127.0.0.1:7"]);
        let first = servers[2].username.clone().expect("TURN has a user name");
        assert!(first.ends_with(&format!(":{}", a.id())), "{first}");

        // Another node joins and the two connect by their host candidates.
        let mut config = NodeConfig::new(vec![url], "ice");
        config.native = NativeConfig::loopback();
        let (b, _events_b) = Node::join(config).await.expect("joins");
        assert_eq!(b.ice_servers().len(), 2, "no own servers: the offered ones");
        let started = Instant::now();
        while !(a.neighbors().contains(&b.id()) && b.neighbors().contains(&a.id())) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "a and b connect"
            );
            sleep(Duration::from_millis(50)).await;
        }

        // A refresh (every second here) brings a later expiry.
        let expiry = |u: &str| u.split_once(':').unwrap().0.parse::<u64>().unwrap();
        let started = Instant::now();
        loop {
            let now = a.ice_servers()[2].username.clone().unwrap();
            if expiry(&now) > expiry(&first) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "refreshed");
            sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(a.ice_servers()[0], own());
        a.leave().await;
        b.leave().await;
    });
}
