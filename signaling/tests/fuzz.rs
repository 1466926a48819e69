//! Property test: random and malformed frames thrown at a running server never make it
//! panic, and two well-behaved clients in the same room keep relaying to each other
//! throughout.
//!
//! The server runs on its own runtime whose worker threads are named, and a panic hook
//! counts panics on those threads, so a panic inside any session task (which tokio would
//! otherwise swallow) fails the test. Each case opens a fresh attacker session, which may
//! first join (the victims' room or another one), then sends a random sequence of text
//! frames (arbitrary strings, JSON with random values, mutated protocol messages,
//! oversized and deeply nested frames), binary frames, and raw bytes under the WebSocket
//! framing, and finally closes politely or just drops the socket.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{fast_config, Client};
use futures_util::SinkExt;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use rhizome::id::Identity;
use rhizome::signal::{sign_join_proof, ClientMsg, ServerMsg};
use rhizome_signaling::Config;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

const SERVER_THREAD: &str = "signaling-server-under-fuzz";
static SERVER_PANICS: AtomicUsize = AtomicUsize::new(0);

const MAX_FRAME: usize = 2048;

/// One thing the attacker does.
#[derive(Debug, Clone)]
enum Frame {
    Text(String),
    Json(Value),
    /// A protocol message with one field replaced by a random value.
    Mutated(&'static str, &'static str, Value),
    /// A signal to one of the well-behaved victims, with a random envelope.
    SignalVictim(bool, Value),
    Binary(Vec<u8>),
    /// Just over the soft size limit, or over the hard one.
    Oversized(bool),
    /// `[[[[…]]]]` nested this deep.
    Nested(usize),
    /// Bytes written under the WebSocket framing (breaks the connection).
    Raw(Vec<u8>),
    Ping,
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        "[0-9a-f]{64}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn frame() -> impl Strategy<Value = Frame> {
    let types = prop::sample::select(vec![
        "join", "signal", "ping", "hello", "welcome", "", "JOIN",
    ]);
    let fields = prop::sample::select(vec!["type", "room", "peer", "proof", "to", "envelope"]);
    prop_oneof![
        3 => ".{0,300}".prop_map(Frame::Text),
        3 => json_value().prop_map(Frame::Json),
        4 => (types, fields, json_value()).prop_map(|(t, f, v)| Frame::Mutated(t, f, v)),
        3 => (any::<bool>(), json_value()).prop_map(|(b, v)| Frame::SignalVictim(b, v)),
        1 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Frame::Binary),
        1 => any::<bool>().prop_map(Frame::Oversized),
        1 => (0usize..2000).prop_map(Frame::Nested),
        1 => prop::collection::vec(any::<u8>(), 1..64).prop_map(Frame::Raw),
        2 => Just(Frame::Ping),
    ]
}

/// Where the attacker joins before attacking (if at all).
#[derive(Debug, Clone, Copy)]
enum Membership {
    None,
    VictimsRoom,
    OtherRoom,
}

fn membership() -> impl Strategy<Value = Membership> {
    prop_oneof![
        Just(Membership::None),
        Just(Membership::VictimsRoom),
        Just(Membership::OtherRoom)
    ]
}

#[test]
fn random_and_malformed_frames_never_panic_the_server_or_disturb_a_room() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some(SERVER_THREAD) {
            SERVER_PANICS.fetch_add(1, Ordering::SeqCst);
        }
        default_hook(info);
    }));

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let config = Config {
        max_frame_bytes: MAX_FRAME,
        rate_burst: 1000,
        rate_per_sec: 1000.0,
        max_errors: 8,
        idle_timeout: Duration::from_secs(60),
        ..fast_config()
    };
    let (addr, stop, server) = server_rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(rhizome_signaling::serve(config, listener, async {
            let _ = stopped.await;
        }));
        (addr, stop, server)
    });
    let url = format!("ws://{addr}/ws");

    let victims = client_rt.block_on(async {
        let mut a = Client::connect(&url, None).await;
        a.join("room").await;
        let mut b = Client::connect(&url, None).await;
        b.join("room").await;
        tokio::sync::Mutex::new((a, b))
    });
    let round = AtomicUsize::new(0);

    // 128 cases by default keep the suite fast; PROPTEST_CASES=5000 for a longer hunt.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(128);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (
        membership(),
        prop::collection::vec(frame(), 1..12),
        any::<bool>(),
    );
    let result = runner.run(&strategy, |(membership, frames, polite)| {
        let n = round.fetch_add(1, Ordering::SeqCst) as i64;
        client_rt.block_on(async {
            let mut victims = victims.lock().await;
            let (a, b) = &mut *victims;
            attack(&url, membership, &frames, polite, a, b).await;
            // The room still works, both ways.
            relay_ok(a, b, n).await?;
            relay_ok(b, a, -n).await?;
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }

    assert_eq!(
        SERVER_PANICS.load(Ordering::SeqCst),
        0,
        "a server thread panicked"
    );
    assert!(!server.is_finished(), "the server is still serving");
    let _ = stop.send(());
    let served = server_rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), server).await })
        .expect("the server stops in time")
        .expect("the server task did not panic");
    assert!(served.is_ok());
    assert_eq!(
        SERVER_PANICS.load(Ordering::SeqCst),
        0,
        "a server thread panicked"
    );
}

async fn attack(
    url: &str,
    membership: Membership,
    frames: &[Frame],
    polite: bool,
    a: &Client,
    b: &Client,
) {
    let mut c = Client::connect(url, None).await;
    let room = match membership {
        Membership::None => None,
        Membership::VictimsRoom => Some("room"),
        Membership::OtherRoom => Some("elsewhere"),
    };
    if let Some(room) = room {
        c.join(room).await;
    }
    for f in frames {
        let msg = match f {
            Frame::Text(t) => Message::text(t.clone()),
            Frame::Json(v) => Message::text(v.to_string()),
            Frame::Mutated(ty, field, value) => {
                let id = Identity::from_secret_bytes([3; 32]);
                let mut m = json!({
                    "type": ty,
                    "room": "room",
                    "peer": id.peer_id(),
                    "proof": sign_join_proof(&id, &c.nonce, "room"),
                    "to": a.peer(),
                    "envelope": {"x": 1},
                });
                m[*field] = value.clone();
                Message::text(m.to_string())
            }
            Frame::SignalVictim(to_a, envelope) => {
                let to = if *to_a { a.peer() } else { b.peer() };
                let m = ClientMsg::Signal {
                    to,
                    envelope: envelope.clone(),
                };
                Message::text(serde_json::to_string(&m).unwrap())
            }
            Frame::Binary(bytes) => Message::binary(bytes.clone()),
            Frame::Oversized(hard) => {
                let len = if *hard {
                    MAX_FRAME * 4 + 10
                } else {
                    MAX_FRAME + 10
                };
                Message::text("x".repeat(len))
            }
            Frame::Nested(depth) => {
                Message::text(format!("{}{}", "[".repeat(*depth), "]".repeat(*depth)))
            }
            Frame::Raw(bytes) => {
                if let MaybeTlsStream::Plain(s) = c.ws.get_mut() {
                    let _ = s.write_all(bytes).await;
                }
                // The framing is broken now; nothing more to say on this connection.
                break;
            }
            Frame::Ping => Message::text(r#"{"type":"ping"}"#),
        };
        if c.ws.send(msg).await.is_err() {
            break; // the server closed this session: allowed
        }
    }
    if polite {
        let _ = tokio::time::timeout(Duration::from_millis(200), c.ws.close(None)).await;
    }
    drop(c);
}

/// `from` signals `to`; `to` must receive it (skipping whatever attackers sent it).
async fn relay_ok(from: &mut Client, to: &mut Client, n: i64) -> Result<(), TestCaseError> {
    let marker = json!({"round": n});
    from.signal(to.peer(), marker.clone()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = tokio::time::timeout(left, to.recv())
            .await
            .map_err(|_| TestCaseError::fail("relay did not arrive in time"))?;
        match msg {
            ServerMsg::Signal { from: f, envelope } if f == from.peer() && envelope == marker => {
                return Ok(())
            }
            // Attackers in the room may signal the victims; that is allowed traffic.
            ServerMsg::Signal { .. } => continue,
            other => return Err(TestCaseError::fail(format!("victim got {other:?}"))),
        }
    }
}
