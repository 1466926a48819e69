//! The native transport end to end: peers join a real (in-process) signaling server,
//! set up webrtc-rs connections with signed envelopes relayed by it, and talk. Every
//! socket is bound to 127.0.0.1 and no ICE server is configured, so no packet leaves the
//! machine.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rhizome::id::{Identity, PeerId};
use rhizome::signal::{SignalPayload, SignedEnvelope};
use rhizome::transport::native::{NativeConfig, NativeConnection};
use rhizome::transport::native_signaling::{SignalingClient, SignalingError, SignalingEvent};
use rhizome::transport::{ConnEvent, ConnLimits, TransportError};
use rhizome_signaling::{serve, Config};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Barrier};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How long a test waits for a connection to open or a message to arrive.
const WAIT: Duration = Duration::from_secs(20);
/// Deadline for joining the signaling server.
const JOIN_MS: u32 = 5_000;

/// A signaling server on 127.0.0.1, port 0, stopped on drop.
struct Server {
    url: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Server {
    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve(Config::default(), listener, async {
            let _ = stopped.await;
        }));
        Server {
            url: format!("ws://{addr}/ws"),
            stop: Some(stop),
        }
    }

    async fn join(&self, seed: u8, room: &str) -> (Identity, SignalingClient, Vec<PeerId>) {
        let id = Identity::from_secret_bytes([seed; 32]);
        let (client, peers) = SignalingClient::connect(&self.url, &id, room, JOIN_MS)
            .await
            .expect("joins the room");
        (id, client, peers)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One side of a connection, with the plumbing a node driver would provide: signals go
/// out sealed through the server, envelopes from the server come in opened.
struct Endpoint {
    conn: Arc<NativeConnection>,
    events: mpsc::UnboundedReceiver<ConnEvent>,
    /// Kinds of the signals this side sent, in order ("offer", "answer", "candidate").
    sent: Arc<Mutex<Vec<&'static str>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Endpoint {
    /// Opens a connection to `remote` right away (both sides do this in a glare).
    async fn dial(
        me: Identity,
        client: SignalingClient,
        remote: PeerId,
        initiate: bool,
        limits: ConnLimits,
        config: &NativeConfig,
    ) -> Endpoint {
        Self::dial_gated(me, client, remote, initiate, limits, config, None).await
    }

    /// [`Endpoint::dial`] whose first signal waits at `gate` (see [`Endpoint::plumb`]).
    async fn dial_gated(
        me: Identity,
        client: SignalingClient,
        remote: PeerId,
        initiate: bool,
        limits: ConnLimits,
        config: &NativeConfig,
        gate: Option<Arc<Barrier>>,
    ) -> Endpoint {
        let (conn, rx) =
            NativeConnection::with_config(me.peer_id(), remote, &[], limits, initiate, config)
                .await
                .expect("creates a connection");
        Self::plumb(me, client, Arc::new(conn), rx, gate)
    }

    /// Waits for the first envelope from anyone and answers that peer.
    async fn accept(
        me: Identity,
        mut client: SignalingClient,
        limits: ConnLimits,
        config: &NativeConfig,
    ) -> Endpoint {
        let envelope = loop {
            match timeout(WAIT, client.next_event()).await.expect("a signal") {
                Some(SignalingEvent::Signal { envelope, .. }) => {
                    break SignedEnvelope::from_json(&envelope).expect("an envelope")
                }
                Some(SignalingEvent::Closed(r)) => panic!("server closed: {r}"),
                None => panic!("the session ended"),
                Some(SignalingEvent::Error { .. } | SignalingEvent::IceServers(_)) => continue,
            }
        };
        let first = envelope.open(&me.peer_id()).expect("a valid envelope");
        let (conn, rx) =
            NativeConnection::with_config(me.peer_id(), envelope.from, &[], limits, false, config)
                .await
                .expect("creates a connection");
        conn.handle_signal(first).await.expect("takes the offer");
        Self::plumb(me, client, Arc::new(conn), rx, None)
    }

    /// Wires a connection to the signaling client. With a `gate`, this side's first signal
    /// (its offer) is held until every side sharing the gate has made its first signal:
    /// then both offers are in flight at once, whatever the scheduling.
    fn plumb(
        me: Identity,
        mut client: SignalingClient,
        conn: Arc<NativeConnection>,
        mut rx: futures_channel::mpsc::UnboundedReceiver<ConnEvent>,
        mut gate: Option<Arc<Barrier>>,
    ) -> Endpoint {
        let (out, events) = mpsc::unbounded_channel();
        let sender = client.sender();
        let remote = conn.remote();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let outgoing = {
            let me = me.clone();
            let sent = sent.clone();
            tokio::spawn(async move {
                while let Some(ev) = rx.next().await {
                    match ev {
                        ConnEvent::Signal(payload) => {
                            if let Some(gate) = gate.take() {
                                gate.wait().await;
                            }
                            sent.lock().unwrap().push(match payload {
                                SignalPayload::Offer { .. } => "offer",
                                SignalPayload::Answer { .. } => "answer",
                                SignalPayload::Candidate { .. } => "candidate",
                                SignalPayload::Abort => "abort",
                            });
                            let env = SignedEnvelope::seal(&me, remote, 1, &payload);
                            let _ = sender.send_signal(&env);
                        }
                        other => {
                            let _ = out.send(other);
                        }
                    }
                }
            })
        };
        let incoming = {
            let conn = conn.clone();
            tokio::spawn(async move {
                while let Some(ev) = client.next_event().await {
                    let SignalingEvent::Signal { envelope, .. } = ev else {
                        continue;
                    };
                    let Ok(env) = SignedEnvelope::from_json(&envelope) else {
                        continue;
                    };
                    let Ok(payload) = env.open(&me.peer_id()) else {
                        continue;
                    };
                    if env.from == conn.remote() {
                        // Errors here are what a driver would log; the test watches events.
                        let _ = conn.handle_signal(payload).await;
                    }
                }
            })
        };
        Endpoint {
            conn,
            events,
            sent,
            tasks: vec![outgoing, incoming],
        }
    }

    /// The next event, failing the test if none comes in time.
    async fn next(&mut self) -> ConnEvent {
        timeout(WAIT, self.events.recv())
            .await
            .expect("an event in time")
            .expect("the event stream is still open")
    }

    async fn opened(&mut self) {
        match self.next().await {
            ConnEvent::Open => {}
            other => panic!("expected Open, got {other:?}"),
        }
        assert!(self.conn.is_open());
    }

    /// How many signals of `kind` this side sent.
    fn sent(&self, kind: &str) -> usize {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|k| **k == kind)
            .count()
    }

    async fn message(&mut self) -> Vec<u8> {
        match self.next().await {
            ConnEvent::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Two peers in one room: `b` joins second, is introduced to `a`, and dials it.
async fn pair(server: &Server, room: &str, limits: ConnLimits) -> (Endpoint, Endpoint) {
    let (a_id, a_client, a_peers) = server.join(1, room).await;
    assert!(
        a_peers.is_empty(),
        "the first member is introduced to nobody"
    );
    let (b_id, b_client, b_peers) = server.join(2, room).await;
    assert_eq!(
        b_peers,
        vec![a_id.peer_id()],
        "the second is introduced to the first"
    );
    let config = NativeConfig::loopback();
    let dial = Endpoint::dial(
        b_id,
        b_client,
        a_id.peer_id(),
        true,
        limits.clone(),
        &config,
    );
    let accept = Endpoint::accept(a_id, a_client, limits, &config);
    let (mut b, mut a) = tokio::join!(dial, accept);
    tokio::join!(a.opened(), b.opened());
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_native_peers_meet_through_the_signaling_server_and_talk_both_ways() {
    let server = Server::start().await;
    let (mut a, mut b) = pair(&server, "talk", ConnLimits::default()).await;
    assert_ne!(
        a.conn.is_polite(),
        b.conn.is_polite(),
        "exactly one side is polite"
    );

    b.conn.send(b"hello from b").unwrap();
    assert_eq!(a.message().await, b"hello from b");
    a.conn.send(b"hello from a").unwrap();
    assert_eq!(b.message().await, b"hello from a");
    a.conn.send(b"").unwrap();
    assert_eq!(b.message().await, b"", "an empty message is a message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_mib_message_arrives_intact_and_in_order_with_small_ones_around_it() {
    let server = Server::start().await;
    let (a, mut b) = pair(&server, "big", ConnLimits::default()).await;

    let big: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    a.conn.send(b"before").unwrap();
    a.conn.send(&big).unwrap();
    a.conn.send(b"after").unwrap();
    assert!(
        a.conn.buffered_amount() > 0,
        "the queue holds what is not sent yet"
    );

    assert_eq!(b.message().await, b"before");
    let got = b.message().await;
    assert_eq!(got.len(), big.len());
    assert!(got == big, "the 5 MiB message is intact");
    assert_eq!(b.message().await, b"after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_armed_queue_reports_drained_once_everything_is_with_webrtc_rs() {
    let server = Server::start().await;
    let (mut a, mut b) = pair(&server, "drain", ConnLimits::default()).await;
    assert!(a.conn.arm_drained(), "nothing is queued yet");
    let big: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i >> 9) as u8).collect();
    a.conn.send(&big).unwrap();
    // Past webrtc-rs's 1 MiB high water, the rest waits in our queue.
    assert!(!a.conn.arm_drained(), "4 MiB wait in the queue");
    match a.next().await {
        ConnEvent::Drained => {}
        other => panic!("expected Drained, got {other:?}"),
    }
    assert!(a.conn.arm_drained(), "empty once drained");
    assert!(b.message().await == big, "the message is intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_send_queue_refuses_without_losing_what_it_accepted() {
    let server = Server::start().await;
    let limits = ConnLimits {
        max_message: 1024 * 1024,
        max_queued: 2 * 1024 * 1024,
    };
    let (a, mut b) = pair(&server, "pressure", limits).await;

    let msg = vec![7u8; 512 * 1024];
    let mut accepted = 0;
    let refused = loop {
        match a.conn.send(&msg) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 1000, "the queue never filled");
    };
    assert_eq!(refused, TransportError::Backpressure);
    // Chunk headers count too, so 2 MiB holds three whole 512 KiB messages (more if the
    // writer drained some meanwhile).
    assert!(accepted >= 3, "the queue took its fill ({accepted})");
    assert_eq!(
        a.conn.send(&vec![0u8; 2 * 1024 * 1024]),
        Err(TransportError::TooLarge {
            size: 2 * 1024 * 1024,
            max: 1024 * 1024
        })
    );
    for _ in 0..accepted {
        assert_eq!(b.message().await, msg);
    }
    // Drained: sending works again.
    timeout(WAIT, async {
        while a.conn.send(b"again").is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the queue drains");
    assert_eq!(b.message().await, b"again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_peer_is_reported_as_corrupt() {
    let server = Server::start().await;
    let (mut a, mut b) = pair(&server, "garbage", ConnLimits::default()).await;

    a.conn.send(b"fine").unwrap();
    assert_eq!(b.message().await, b"fine");
    a.conn.send_unframed(&[0x7f, 1, 2, 3]).unwrap();
    match b.next().await {
        ConnEvent::Corrupt(reason) => assert!(reason.contains("0x7f"), "{reason}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The sender is not hurt by the receiver's verdict.
    b.conn.send(b"still here").unwrap();
    assert_eq!(a.message().await, b"still here");
}

/// Both sides dial each other at once, each holding one connection for the other as a
/// driver would; returns them once both are open and have exchanged a message, after
/// checking nothing else happens (no second channel, no close).
async fn both_dial(room: &str, offers_cross: bool) -> (Endpoint, Endpoint) {
    let server = Server::start().await;
    let (a_id, a_client, _) = server.join(1, room).await;
    let (b_id, b_client, _) = server.join(2, room).await;
    let (a_peer, b_peer) = (a_id.peer_id(), b_id.peer_id());
    let config = NativeConfig::loopback();
    // The gate holds each offer until both are made, so the offers always cross; without
    // it, one offer often arrives before the other side has made its own.
    let gate = offers_cross.then(|| Arc::new(Barrier::new(2)));
    let limits = ConnLimits::default();
    let (mut a, mut b) = tokio::join!(
        Endpoint::dial_gated(
            a_id,
            a_client,
            b_peer,
            true,
            limits.clone(),
            &config,
            gate.clone()
        ),
        Endpoint::dial_gated(b_id, b_client, a_peer, true, limits, &config, gate),
    );
    tokio::join!(a.opened(), b.opened());
    a.conn.send(b"a->b").unwrap();
    b.conn.send(b"b->a").unwrap();
    assert_eq!(b.message().await, b"a->b");
    assert_eq!(a.message().await, b"b->a");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(a.events.try_recv().is_err(), "no further events on a");
    assert!(b.events.try_recv().is_err(), "no further events on b");
    assert!(a.conn.is_open() && b.conn.is_open());
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_connects_from_both_sides_end_with_one_working_connection() {
    let (a, b) = both_dial("glare", true).await;
    // Both offered; only the polite side answered (after rolling its own offer back).
    let (polite, impolite) = if a.conn.is_polite() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!((polite.sent("offer"), impolite.sent("offer")), (1, 1));
    assert_eq!((polite.sent("answer"), impolite.sent("answer")), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_from_both_sides_a_moment_apart_end_with_one_working_connection() {
    // Whichever way the timing falls (offers crossing, or one side answering before it
    // offered), exactly one offer/answer exchange completes.
    let (a, b) = both_dial("almost-glare", false).await;
    assert_eq!(a.sent("answer") + b.sent("answer"), 1);
    assert!((1..=2).contains(&(a.sent("offer") + b.sent("offer"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_peer_is_noticed() {
    let server = Server::start().await;
    let (mut a, mut b) = pair(&server, "close", ConnLimits::default()).await;

    b.conn.close();
    assert!(!b.conn.is_open());
    assert_eq!(b.conn.send(b"x"), Err(TransportError::NotOpen));
    match b.next().await {
        ConnEvent::Closed(reason) => assert_eq!(reason, "closed locally"),
        other => panic!("expected Closed, got {other:?}"),
    }
    match a.next().await {
        ConnEvent::Closed(_) => {}
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(!a.conn.is_open());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signaling_reports_unreachable_servers_and_connect_any_moves_on() {
    let server = Server::start().await;
    let id = Identity::from_secret_bytes([9; 32]);
    // A port nothing listens on: bind one, learn it, free it.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("ws://{}/ws", l.local_addr().unwrap())
    };
    let err = SignalingClient::connect(&dead, &id, "r", JOIN_MS)
        .await
        .err()
        .expect("nobody listens there");
    assert!(matches!(err, SignalingError::Unreachable { .. }), "{err:?}");

    let urls = vec![dead, server.url.clone()];
    let (client, peers) = SignalingClient::connect_any(&urls, &id, "r", JOIN_MS)
        .await
        .expect("the second server works");
    assert_eq!(client.url(), server.url);
    assert!(peers.is_empty());
    assert_eq!(
        SignalingClient::connect_any(&[], &id, "r", JOIN_MS)
            .await
            .err(),
        Some(SignalingError::NoServers)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_times_out() {
    // Accepts TCP but never speaks WebSocket.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let id = Identity::from_secret_bytes([9; 32]);
    let err = SignalingClient::connect(&url, &id, "r", 300)
        .await
        .err()
        .expect("times out");
    assert_eq!(err, SignalingError::Timeout { url, ms: 300 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_vanishes_without_closing_is_noticed_by_ice_timeouts() {
    let server = Server::start().await;
    let (a_id, a_client, _) = server.join(1, "vanish").await;
    let (b_id, b_client, _) = server.join(2, "vanish").await;
    let a_peer = a_id.peer_id();
    // `b` lives in a runtime of its own, so it can die the way a killed process does:
    // webrtc-rs's driver and sockets stop and nothing more is sent, not even a goodbye.
    let b_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let b = b_runtime.spawn(async move {
        let config = NativeConfig::loopback();
        Endpoint::dial(b_id, b_client, a_peer, true, ConnLimits::default(), &config).await
    });
    let quick = NativeConfig {
        ice_disconnected_timeout: Duration::from_millis(500),
        ice_failed_timeout: Duration::from_secs(1),
        ice_keepalive_interval: Duration::from_millis(200),
        ..NativeConfig::loopback()
    };
    let mut a = Endpoint::accept(a_id, a_client, ConnLimits::default(), &quick).await;
    let mut b = b.await.unwrap();
    tokio::join!(a.opened(), b.opened());

    b_runtime.shutdown_background();
    let died = Instant::now();
    match a.next().await {
        ConnEvent::Closed(reason) => eprintln!("noticed after {:?}: {reason}", died.elapsed()),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(!a.conn.is_open());
    assert!(
        died.elapsed() < Duration::from_secs(10),
        "{:?}",
        died.elapsed()
    );
}

/// Compile-time: a multi-threaded driver can own connections and sessions in spawned
/// tasks and await their operations there.
#[test]
fn the_native_types_can_move_between_tokio_tasks() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<NativeConnection>();
    send_sync::<rhizome::transport::native_signaling::SignalingSender>();
    fn futures_are_send(c: &NativeConnection, s: &mut SignalingClient) {
        send(&c.handle_signal(SignalPayload::Abort));
        send(&c.close_and_wait());
        send(&s.next_event());
    }
    let _ = futures_are_send;
    fn session_is_send<T: Send>() {}
    session_is_send::<SignalingClient>();
}
