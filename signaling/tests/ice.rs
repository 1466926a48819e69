//! Server-issued ICE servers: the `welcome`'s `iceServers` with coturn REST API
//! credentials, their refresh on joined sessions, and a secret that never shows.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{fast_config, Server};
use futures_util::StreamExt;
use rhizome::signal::ServerMsg;
use rhizome_signaling::config::TurnSecret;
use rhizome_signaling::ice::credential;
use rhizome_signaling::Config;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "correct-horse-battery-staple-7f3a";

fn ice_config(ttl: Duration) -> Config {
    Config {
        stun: vec!["stun:10.0.0.1:3478".into()],
        turn: vec![
            "turn:10.0.0.1:3478?transport=udp".into(),
            "turn:10.0.0.1:3478?transport=tcp".into(),
        ],
        turn_secret: Some(TurnSecret::new(SECRET)),
        turn_ttl: ttl,
        ..fast_config()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_server_without_ice_servers_sends_the_welcome_of_old() {
    let server = Server::start(fast_config()).await;
    let mut c = server.connect().await;
    let join = c.join_msg("r");
    c.send(&join).await;
    let text = loop {
        match c.ws.next().await.unwrap().unwrap() {
            Message::Text(t) => break t.to_string(),
            _ => continue,
        }
    };
    assert_eq!(text, r#"{"type":"welcome","peers":[]}"#);
    server.stop().await;
}

#[tokio::test]
async fn the_welcome_offers_stun_and_turn_with_credentials_coturn_accepts() {
    let server = Server::start(ice_config(Duration::from_secs(600))).await;
    let mut c = server.connect().await;
    let join = c.join_msg("r");
    c.send(&join).await;
    let ServerMsg::Welcome { ice_servers, .. } = c.recv().await else {
        panic!("welcome");
    };
    assert_eq!(ice_servers.len(), 2);
    assert_eq!(ice_servers[0].urls, ["stun:10.0.0.1:3478"]);
    assert_eq!(ice_servers[0].username, None);
    let turn = &ice_servers[1];
    assert_eq!(turn.urls.len(), 2);
    let user = turn.username.clone().unwrap();
    let (expiry, peer) = user.split_once(':').unwrap();
    assert_eq!(peer, c.peer().to_string());
    let expiry: u64 = expiry.parse().unwrap();
    let now = unix_now();
    assert!(
        (now + 590..=now + 610).contains(&expiry),
        "expiry {expiry} is now + the TTL"
    );
    assert_eq!(
        turn.credential.as_deref(),
        Some(credential(&TurnSecret::new(SECRET), &user).as_str())
    );
    assert!(!user.contains(SECRET) && !turn.credential.clone().unwrap().contains(SECRET));
    server.stop().await;
}

#[tokio::test]
async fn a_joined_session_gets_fresh_credentials_every_half_ttl() {
    let server = Server::start(Config {
        idle_timeout: Duration::from_secs(30),
        ..ice_config(Duration::from_secs(2))
    })
    .await;
    let mut c = server.connect().await;
    let join = c.join_msg("r");
    c.send(&join).await;
    let ServerMsg::Welcome { ice_servers, .. } = c.recv().await else {
        panic!("welcome");
    };
    let first = ice_servers[1].username.clone().unwrap();
    let mut users = Vec::new();
    for _ in 0..2 {
        // Half the TTL (1 s) apart; `recv` waits up to 5 s.
        match c.recv().await {
            ServerMsg::IceServers { ice_servers } => {
                assert_eq!(ice_servers.len(), 2);
                let user = ice_servers[1].username.clone().unwrap();
                assert_eq!(
                    ice_servers[1].credential.as_deref(),
                    Some(credential(&TurnSecret::new(SECRET), &user).as_str())
                );
                users.push(user);
            }
            other => panic!("expected ice-servers, got {other:?}"),
        }
    }
    let expiry = |u: &str| u.split_once(':').unwrap().0.parse::<u64>().unwrap();
    assert!(expiry(&users[0]) >= expiry(&first));
    assert!(expiry(&users[1]) > expiry(&first), "{first} {users:?}");
    // The session is still fine.
    c.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn a_session_that_has_not_joined_gets_no_ice_servers() {
    let server = Server::start(Config {
        join_deadline: Duration::from_secs(4),
        ..ice_config(Duration::from_secs(2))
    })
    .await;
    let mut c = server.connect().await;
    // Over two refresh periods, nothing but the pong.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    c.ping().await;
    server.stop().await;
}

#[test]
fn the_binary_never_logs_the_turn_secret_even_at_trace_level() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rhizome-signaling"))
        .args(["--bind", "127.0.0.1:0", "--log", "trace"])
        .args([
            "--stun",
            "stun:127.0.0.1:3478",
            "--turn",
            "turn:127.0.0.1:3478",
        ])
        .env("RHIZOME_TURN_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("rhizome-signaling listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = common::Client::connect(&format!("ws://{addr}/ws"), None).await;
        let join = c.join_msg("r");
        c.send(&join).await;
        assert!(matches!(c.recv().await, ServerMsg::Welcome { .. }));
        c.ping().await;
    });
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("joined"), "the log is at debug level:\n{log}");
    assert!(!log.contains(SECRET), "the secret is in the log:\n{log}");
    // --help shows the variable, not its value.
    let help = Command::new(env!("CARGO_BIN_EXE_rhizome-signaling"))
        .arg("--help")
        .env("RHIZOME_TURN_SECRET", SECRET)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--turn-secret"));
    assert!(!help.contains(SECRET), "{help}");
}
