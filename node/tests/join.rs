//! `rhizome-node` joins a room on a real (in-process, 127.0.0.1) signaling server and
//! reports itself and its introductions.

use clap::Parser;
use rhizome::id::Identity;
use rhizome::transport::native_signaling::{SignalingClient, SignalingError};
use rhizome_node::{join, Args, NodeError};
use rhizome_signaling::{serve, Config};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

async fn server() -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(Config::default(), listener, async {
        let _ = stopped.await;
    }));
    (url, stop)
}

#[tokio::test]
async fn the_node_reports_its_peer_id_and_the_members_it_was_introduced_to() {
    let (url, _stop) = server().await;
    let member = Identity::from_secret_bytes([5; 32]);
    let (_held, _) = SignalingClient::connect(&url, &member, "lobby", 5_000)
        .await
        .unwrap();

    let secret = Identity::from_secret_bytes([6; 32]).secret_hex();
    let args = Args::parse_from([
        "rhizome-node",
        "--signaling",
        &url,
        "--room",
        "lobby",
        "--secret",
        &secret,
    ]);
    let joined = join(&args).await.expect("joins");
    let mut out = Vec::new();
    joined.report(&mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    let me = Identity::from_secret_bytes([6; 32]).peer_id();
    assert_eq!(
        out,
        format!("peer {me}\nintroduced {}\n", member.peer_id()),
        "stable, parseable output"
    );
}

#[tokio::test]
async fn a_bad_secret_or_no_server_is_an_error_not_a_panic() {
    let args = Args::parse_from(["rhizome-node", "--secret", "not hex"]);
    assert!(matches!(join(&args).await, Err(NodeError::Secret(_))));

    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("ws://{}/ws", l.local_addr().unwrap())
    };
    let args = Args::parse_from(["rhizome-node", "--signaling", &dead]);
    assert!(matches!(
        join(&args).await,
        Err(NodeError::Signaling(SignalingError::Unreachable { .. }))
    ));
}
