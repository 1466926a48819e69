//! Several `rhizome-signaling` processes as one, over a real `redis-server` started on a
//! free loopback port for each test (and killed by PID at its end).
//!
//! The servers are child processes of the built binary, so that one can be SIGKILLed
//! like a crashed machine. Clients are the protocol clients of `common`. Every test is
//! skipped, with a message, when `redis-server` is not installed (scripts/setup
//! installs it).

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{http_get, Client};
use rhizome::id::PeerId;
use rhizome::signal::{ErrorCode, ServerMsg, CLOSE_REPLACED};
use serde_json::json;

/// The expiry the servers run with: a killed server's members must vanish within it.
const TTL: Duration = Duration::from_millis(1500);

fn redis_installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

macro_rules! need_redis {
    () => {
        if !redis_installed() {
            eprintln!("SKIPPED: redis-server is not installed (scripts/setup installs it)");
            return;
        }
    };
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` on 127.0.0.1, without persistence.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
        };
        r.restart();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port) and waits until it answers.
    fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let mut buf = [0u8; 16];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read(&mut buf)
                        .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (by PID).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `rhizome-signaling` child process in the cluster.
struct Node {
    addr: SocketAddr,
    child: Child,
}

impl Node {
    fn start(redis: &str, extra: &[&str]) -> Node {
        Self::try_start(redis, extra).expect("the server starts")
    }

    fn try_start(redis: &str, extra: &[&str]) -> Result<Node, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rhizome-signaling"))
            .args(["--bind", "127.0.0.1:0", "--cluster", redis])
            .args(["--cluster-ttl", &format!("{}ms", TTL.as_millis())])
            .args(["--idle-timeout", "60s", "--threads", "1", "--log", "warn"])
            .args(["--shutdown-grace", "300ms"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let Some(addr) = line
            .trim()
            .strip_prefix("rhizome-signaling listening on http://")
        else {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            let status = child.wait().unwrap();
            return Err(format!("{status}: {err}"));
        };
        // Logs are not needed; do not let a full pipe block the server.
        if let Some(e) = child.stderr.take() {
            std::thread::spawn(move || std::io::copy(&mut { e }, &mut std::io::sink()));
        }
        Ok(Node {
            addr: addr.parse().unwrap(),
            child,
        })
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    async fn join(&self, room: &str) -> (Client, Vec<PeerId>) {
        let mut c = Client::connect(&self.url(), None).await;
        let peers = c.join(room).await;
        (c, peers)
    }

    async fn health(&self) -> serde_json::Value {
        let (status, _, body) = http_get(self.addr, "/healthz").await;
        assert_eq!(status, 200);
        serde_json::from_slice(&body).unwrap()
    }

    /// This server's id in the cluster, as /healthz reports it.
    async fn server_id(&self) -> String {
        self.health().await["cluster"]["server"]
            .as_str()
            .expect("a clustered server reports its id")
            .to_string()
    }

    async fn metrics(&self) -> String {
        let (_, _, body) = http_get(self.addr, "/metrics").await;
        String::from_utf8(body).unwrap()
    }

    /// Waits until /healthz reports the cluster `state` ("ok" or "degraded").
    async fn wait_state(&self, state: &str, within: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            let h = self.health().await;
            if h["cluster"]["state"] == state {
                return t0.elapsed();
            }
            assert!(t0.elapsed() < within, "still {h} after {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn expect_signal(c: &mut Client) -> (PeerId, serde_json::Value) {
    match c.recv().await {
        ServerMsg::Signal { from, envelope } => (from, envelope),
        other => panic!("expected a signal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_samples_the_whole_room_across_three_servers() {
    need_redis!();
    let redis = Redis::start();
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&redis.url(), &[])).collect();
    // Each sees the others by its next heartbeat (a quarter of the expiry).
    for n in &nodes {
        let t0 = Instant::now();
        loop {
            let h = n.health().await;
            assert_eq!(h["status"], "ok", "{h}");
            if h["cluster"]["servers"] == 3 {
                break;
            }
            assert!(t0.elapsed() < TTL, "{h}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut members = Vec::new();
    let mut home = HashMap::new();
    for i in 0..12 {
        let (c, _) = nodes[i % 3].join("lobby").await;
        home.insert(c.peer(), i % 3);
        members.push(c);
    }
    // Newcomers on server 0 only: their samples still name members of all three.
    let mut seen = HashSet::new();
    let mut per_server = [0usize; 3];
    for _ in 0..12 {
        let (c, sample) = nodes[0].join("lobby").await;
        assert_eq!(sample.len(), 8, "a full sample");
        assert!(!sample.contains(&c.peer()));
        for p in &sample {
            if let Some(s) = home.get(p) {
                per_server[*s] += 1;
                seen.insert(*p);
            }
        }
        drop(c);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.len(), 12, "every member sampled at least once");
    for (s, n) in per_server.iter().enumerate() {
        assert!(
            *n >= 15,
            "server {s} members sampled {n} times: {per_server:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_crosses_servers_in_order_and_an_unknown_target_is_refused() {
    need_redis!();
    let redis = Redis::start();
    let a = Node::start(&redis.url(), &[]);
    let _b = Node::start(&redis.url(), &[]);
    let c = Node::start(&redis.url(), &[]);
    let (mut on_a, _) = a.join("r").await;
    let (mut on_c, sample) = c.join("r").await;
    assert_eq!(sample, vec![on_a.peer()]);
    for i in 0..20 {
        on_a.signal(on_c.peer(), json!({ "n": i })).await;
    }
    for i in 0..20 {
        let (from, env) = expect_signal(&mut on_c).await;
        assert_eq!(from, on_a.peer());
        assert_eq!(env, json!({ "n": i }), "in the order sent");
    }
    on_c.signal(on_a.peer(), json!("back")).await;
    assert_eq!(expect_signal(&mut on_a).await.1, json!("back"));
    // A member of another room, and a peer nobody knows: refused, never silent.
    let (other, _) = c.join("elsewhere").await;
    for target in [
        other.peer(),
        rhizome::id::Identity::generate().unwrap().peer_id(),
    ] {
        on_a.signal(target, json!(1)).await;
        let (_, about) = on_a.expect_error_about(ErrorCode::UnknownPeer).await;
        assert_eq!(about, Some(target));
    }
    // A target that left after the sender learnt of it.
    let gone = on_c.peer();
    drop(on_c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    on_a.signal(gone, json!(2)).await;
    on_a.expect_error(ErrorCode::UnknownPeer).await;
    assert!(a
        .metrics()
        .await
        .contains("rhizome_signaling_cluster_relayed_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_replaced_on_another_server_is_closed() {
    need_redis!();
    let redis = Redis::start();
    let a = Node::start(&redis.url(), &[]);
    let b = Node::start(&redis.url(), &[]);
    let c = Node::start(&redis.url(), &[]);
    let (mut old, _) = a.join("r").await;
    let mut new = Client::connect(&b.url(), None).await;
    new.identity = old.identity.clone();
    new.join("r").await;
    old.expect_error(ErrorCode::Replaced).await;
    old.expect_close(ErrorCode::Replaced, CLOSE_REPLACED).await;
    // The id now lives on B: a signal from C reaches the new session.
    let (mut third, sample) = c.join("r").await;
    assert_eq!(sample, vec![new.peer()]);
    third.signal(new.peer(), json!("hi")).await;
    assert_eq!(expect_signal(&mut new).await.0, third.peer());
    // A's leaving did not withdraw B's membership.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_d, sample) = a.join("r").await;
    assert_eq!(
        sample.into_iter().collect::<HashSet<_>>(),
        HashSet::from([new.peer(), third.peer()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_servers_members_vanish_within_the_expiry() {
    need_redis!();
    let redis = Redis::start();
    let a = Node::start(&redis.url(), &[]);
    let mut b = Node::start(&redis.url(), &[]);
    let (mut on_a, _) = a.join("r").await;
    let mut on_b = Vec::new();
    for _ in 0..5 {
        on_b.push(b.join("r").await.0);
    }
    let doomed: HashSet<PeerId> = on_b.iter().map(|c| c.peer()).collect();
    let (_probe, sample) = a.join("r").await;
    assert_eq!(sample.len(), 6);
    b.kill();
    let killed = Instant::now();
    // Poll with fresh joins until no sample names B's members. The bound is on when the
    // last join that still saw one *started* (a slow join on a loaded machine must not
    // count against the expiry).
    let mut last_seen = Duration::ZERO;
    let vanished = loop {
        let started = killed.elapsed();
        let (_c, sample) = a.join("r").await;
        if !sample.iter().any(|p| doomed.contains(p)) {
            break killed.elapsed();
        }
        last_seen = started;
        assert!(started < TTL * 3, "still sampled after {started:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        last_seen <= TTL + Duration::from_millis(100),
        "a join {last_seen:?} after the kill still sampled the dead server's members"
    );
    // Signals to them are refused, and they never come back.
    let target = *doomed.iter().next().unwrap();
    on_a.signal(target, json!(1)).await;
    on_a.expect_error(ErrorCode::UnknownPeer).await;
    tokio::time::sleep(TTL).await;
    let mut conn = redis.conn().await;
    let left: HashMap<String, String> = redis::cmd("HGETALL")
        .arg("rhz:room:r")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        !left
            .keys()
            .any(|k| doomed.iter().any(|d| d.to_string() == *k)),
        "the janitor deleted them from Redis: {left:?}"
    );
    eprintln!("killed server's members vanished from samples after {vanished:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_servers_serve_locally_then_rejoin_when_it_returns() {
    need_redis!();
    let mut redis = Redis::start();
    let a = Node::start(&redis.url(), &[]);
    let b = Node::start(&redis.url(), &[]);
    let (mut a1, _) = a.join("r").await;
    let (b1, sample) = b.join("r").await;
    assert_eq!(sample, vec![a1.peer()]);
    redis.kill();
    let t = a.wait_state("degraded", Duration::from_secs(5)).await;
    b.wait_state("degraded", Duration::from_secs(5)).await;
    eprintln!("degraded reported {t:?} after Redis was killed");
    assert_eq!(a.health().await["status"], "degraded");
    assert!(a
        .metrics()
        .await
        .contains("rhizome_signaling_cluster_degradations_total"));
    // Local service goes on: local samples, local relay; cross-server targets are
    // refused with an error frame, never dropped silently.
    let (mut a2, sample) = a.join("r").await;
    assert_eq!(sample, vec![a1.peer()], "a local sample");
    a2.signal(a1.peer(), json!("local")).await;
    assert_eq!(expect_signal(&mut a1).await.1, json!("local"));
    a1.signal(b1.peer(), json!("far")).await;
    a1.expect_error(ErrorCode::UnknownPeer).await;
    // Redis comes back empty (no persistence): both servers publish their members again.
    redis.restart();
    let t = a.wait_state("ok", Duration::from_secs(5)).await;
    b.wait_state("ok", Duration::from_secs(5)).await;
    eprintln!("cluster again {t:?} after Redis returned");
    let (_c, sample) = b.join("r").await;
    assert_eq!(
        sample.into_iter().collect::<HashSet<_>>(),
        HashSet::from([a1.peer(), a2.peer(), b1.peer()]),
        "members of both servers, including one that joined during the outage"
    );
    a1.signal(b1.peer(), json!("far again")).await;
    let mut b1 = b1;
    assert_eq!(expect_signal(&mut b1).await.1, json!("far again"));
    assert!(a
        .metrics()
        .await
        .contains("rhizome_signaling_cluster_rejoins_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_at_start_refuses_unless_optional() {
    need_redis!();
    let nowhere = format!("redis://127.0.0.1:{}", free_port());
    let err = Node::try_start(&nowhere, &[])
        .err()
        .expect("refuses to start");
    assert!(err.contains("refusing to start"), "{err}");
    assert!(err.contains("--cluster-optional"), "{err}");
    let alone = Node::start(&nowhere, &["--cluster-optional"]);
    let h = alone.health().await;
    assert_eq!(h["status"], "degraded", "{h}");
    let (mut x, _) = alone.join("r").await;
    let (y, sample) = alone.join("r").await;
    assert_eq!(sample, vec![x.peer()]);
    drop(y);
    x.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_data_in_redis_is_dropped_not_trusted() {
    need_redis!();
    let redis = Redis::start();
    let a = Node::start(&redis.url(), &[]);
    let (mut m, _) = a.join("r").await;
    let sid = a.server_id().await;
    let mut conn = redis.conn().await;
    // Garbage members: bad ids, values without a server, values naming no live server.
    let live = format!("{sid}:1");
    for (field, value) in [
        ("zz", live.as_str()),
        ("", ""),
        (&"ab".repeat(32)[..], "no-colon"),
        (&"cd".repeat(32)[..], "ghost:1"),
        ("\u{0}\u{ff}", "\u{1}:\u{2}"),
    ] {
        let _: () = redis::cmd("HSET")
            .arg("rhz:room:r")
            .arg(field)
            .arg(value)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("ZADD")
        .arg("rhz:servers")
        .arg("not-a-number")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap_or(());
    // Garbage on the server's channel.
    let target = m.peer().to_string();
    for payload in [
        "".to_string(),
        "{".to_string(),
        "[1,2]".to_string(),
        json!({"t": "s", "r": "r", "p": target}).to_string(),
        json!({"t": "s", "r": "", "p": target, "f": target, "e": 1}).to_string(),
        json!({"t": "x", "r": "r", "p": target}).to_string(),
        json!({"t": "b", "r": "r", "p": "zz", "f": target}).to_string(),
        "\u{0}".repeat(2_000_000),
    ] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(format!("rhz:ch:{sid}"))
            .arg(payload)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    // The server goes on: its member is fine, and a sample names only real members.
    m.ping().await;
    let (n, sample) = a.join("r").await;
    assert_eq!(sample, vec![m.peer()], "garbage never sampled");
    m.signal(n.peer(), json!(1)).await;
    let mut n = n;
    assert_eq!(expect_signal(&mut n).await.0, m.peer());
    assert!(a
        .metrics()
        .await
        .contains("rhizome_signaling_cluster_malformed_total"));
    assert_eq!(a.health().await["cluster"]["state"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_storm_from_a_killed_server_is_absorbed() {
    need_redis!();
    const STORM: usize = 150;
    let redis = Redis::start();
    let a = Node::start(&redis.url(), &[]);
    let mut b = Node::start(&redis.url(), &[]);
    let c = Node::start(&redis.url(), &[]);
    let (mut on_a, _) = a.join("big").await;
    let (mut on_c, _) = c.join("big").await;
    let url_b = b.url();
    let mut on_b = Vec::new();
    for _ in 0..STORM {
        let mut cl = Client::connect(&url_b, None).await;
        cl.join("big").await;
        on_b.push(cl);
    }
    b.kill();
    // Every client of B reconnects at once, alternately to A and C, with its own key.
    let t0 = Instant::now();
    let targets = [a.url(), c.url()];
    let joins = on_b.into_iter().enumerate().map(|(i, old)| {
        let url = targets[i % 2].clone();
        tokio::spawn(async move {
            let mut cl = Client::connect(&url, None).await;
            cl.identity = old.identity.clone();
            let sample = cl.join("big").await;
            (cl, sample)
        })
    });
    let mut back = Vec::new();
    for j in futures_util::future::join_all(joins).await {
        back.push(j.expect("every reconnect is welcomed"));
    }
    let storm = t0.elapsed();
    eprintln!("{STORM} sessions of a killed server rejoined in {storm:?}");
    assert!(storm < Duration::from_secs(10), "{storm:?}");
    for (_, sample) in &back {
        assert_eq!(sample.len(), 8);
    }
    // One overlay still: members on A and C reach the returned peers either way.
    let far = back[1].0.peer(); // on C
    on_a.signal(far, json!("x")).await;
    let mut got = false;
    for (cl, _) in back.iter_mut().skip(1).take(1) {
        got = expect_signal(cl).await.0 == on_a.peer();
    }
    assert!(got);
    on_c.signal(back[0].0.peer(), json!("y")).await; // on A
    assert_eq!(expect_signal(&mut back[0].0).await.0, on_c.peer());
    let ha = a.health().await;
    let hc = c.health().await;
    assert_eq!(
        ha["members"].as_u64().unwrap() + hc["members"].as_u64().unwrap(),
        STORM as u64 + 2
    );
    // Once B's expiry has passed, its entries are gone from Redis too.
    tokio::time::sleep(TTL + Duration::from_millis(800)).await;
    let mut conn = redis.conn().await;
    let n: usize = redis::cmd("HLEN")
        .arg("rhz:room:big")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, STORM + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeliverable_signal_is_bounced_to_its_sender_as_an_error() {
    need_redis!();
    use futures_util::StreamExt;
    let redis = Redis::start();
    let a = Node::start(&redis.url(), &[]);
    let (mut member, _) = a.join("r").await;
    let sid = a.server_id().await;
    let mut conn = redis.conn().await;
    // A server "origin" (played by the test) relays to a peer that is not on A: A
    // answers on origin's channel with a bounce naming the sender and the target.
    let mut sub = redis::Client::open(redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    sub.subscribe("rhz:ch:origin").await.unwrap();
    let stranger = rhizome::id::Identity::generate().unwrap().peer_id();
    let sender = rhizome::id::Identity::generate().unwrap().peer_id();
    let signal =
        json!({"t": "s", "r": "r", "p": stranger, "f": sender, "o": "origin", "e": {"x": 1}});
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("rhz:ch:{sid}"))
        .arg(signal.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.on_message().next())
        .await
        .expect("a bounce in time")
        .expect("a message");
    let bounce: serde_json::Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
    assert_eq!(bounce["t"], "b");
    assert_eq!(bounce["c"], "unknown-peer");
    assert_eq!(bounce["p"], json!(stranger));
    assert_eq!(bounce["f"], json!(sender));
    // A bounce addressed to A's member reaches it as an error frame about the target.
    let bounce = json!({"t": "b", "r": "r", "p": stranger, "f": member.peer(), "c": "peer-busy"});
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("rhz:ch:{sid}"))
        .arg(bounce.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    let (_, about) = member.expect_error_about(ErrorCode::PeerBusy).await;
    assert_eq!(about, Some(stranger));
    // And a signal from "origin" to the member is delivered with its sender.
    let signal = json!({"t": "s", "r": "r", "p": member.peer(), "f": sender, "o": "origin", "e": [1, "two"]});
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("rhz:ch:{sid}"))
        .arg(signal.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        expect_signal(&mut member).await,
        (sender, json!([1, "two"]))
    );
}
