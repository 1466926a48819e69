//! Signaling benchmark: `rhizome-signaling` against the PeerJS server (npm `peer`), same
//! load, same run, loopback only.
//!
//! For each server, started as a child process on 127.0.0.1:
//!
//! 1. **joins/s**: `--sessions` WebSocket clients connect and join (rhizome: hello, signed
//!    join, welcome, in rooms of `--room-size`; PeerJS: connect with id and token, OPEN),
//!    `--connect-concurrency` at a time.
//! 2. **memory per idle session**: the server process's resident set (VmRSS) with all
//!    sessions open and idle, minus its RSS before the first connection, divided by the
//!    number of sessions.
//! 3. **relay**: `--pairs` sender/receiver pairs among those sessions; each sender keeps
//!    `--window` signals of `--payload` bytes in flight for `--relay-secs`. Relay rate is
//!    signals delivered per second; latency is send-to-receive time (one clock: both ends
//!    are in this process), reported at p50 and p99.
//!
//! Everything is bounded: session count (capped below the open-files limit), connection
//! phase and relay phase deadlines, and `--max-secs` for the whole run. Nothing leaves
//! 127.0.0.1. See docs/BENCHMARKS.md for the command and results.
//!
//! The rhizome server runs with its anti-abuse rate limit lifted (`--rate-burst`,
//! `--rate-per-sec` very high), because this measures capacity, not policy; PeerJS has no
//! such limit. Both servers get idle timeouts longer than the run.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

mod common;

use common::{cpu_secs, next_json, rss_kib, Ws};

/// Benchmark rhizome-signaling against the PeerJS server on loopback.
#[derive(Debug, Parser)]
struct Args {
    /// Concurrent sessions to open against each server.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Members per rhizome room (PeerJS has no rooms).
    #[arg(long, default_value_t = 100)]
    room_size: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Sender/receiver pairs in the relay phase.
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Signals in flight per pair.
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Bytes of padding in each relayed signal (an ICE candidate is a few hundred).
    #[arg(long, default_value_t = 300)]
    payload: usize,
    /// Length of the relay phase, in seconds.
    #[arg(long, default_value_t = 5.0)]
    relay_secs: f64,
    /// Upper bound on the whole run, in seconds.
    #[arg(long, default_value_t = 600)]
    max_secs: u64,
    /// The rhizome-signaling binary (default: next to this example's directory).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// The PeerJS server script (default: signaling/bench/node_modules/peer/dist/bin/peerjs.js).
    #[arg(long)]
    peerjs: Option<PathBuf>,
    /// Extra argument for rhizome-signaling (repeat), e.g. `--server-arg=--threads=1`.
    #[arg(long, allow_hyphen_values = true)]
    server_arg: Vec<String>,
    /// Skip the PeerJS server (no ratios then).
    #[arg(long)]
    skip_peerjs: bool,
    /// Rounds per server (alternating which goes first); the table shows medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Rhizome,
    PeerJs,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Rhizome => "rhizome-signaling",
            Kind::PeerJs => "PeerJS server (peer 1.0.2)",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Results {
    sessions: usize,
    joins_per_sec: f64,
    rss_before_kib: u64,
    rss_idle_kib: u64,
    bytes_per_session: f64,
    relayed: u64,
    relay_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    failed_connects: usize,
    /// Server CPU seconds (user + system) spent in the join phase.
    join_cpu_secs: f64,
    /// Server CPU seconds spent in the relay phase.
    relay_cpu_secs: f64,
    joins_per_cpu_sec: f64,
    relays_per_cpu_sec: f64,
}

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM for a clean shutdown, then make sure.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let args = Args::parse();
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    // Client sockets live here; leave room for the runtime and the odd file.
    let cap = (limit as usize).saturating_sub(512);
    let mut args = args;
    if args.sessions > cap {
        eprintln!(
            "open-files limit {limit}: capping sessions at {cap} (asked {})",
            args.sessions
        );
        args.sessions = cap;
    }
    args.pairs = args.pairs.min(args.sessions / 2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let deadline = Duration::from_secs(args.max_secs);
    match rt.block_on(async { tokio::time::timeout(deadline, run(args)).await }) {
        Ok(()) => {}
        Err(_) => {
            eprintln!("benchmark exceeded --max-secs; stopped");
            std::process::exit(2);
        }
    }
}

async fn run(args: Args) {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let server_bin = args.server_bin.clone().unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("own path");
        // target/<profile>/examples/bench -> target/<profile>/rhizome-signaling
        exe.parent()
            .and_then(|p| p.parent())
            .map(|p| p.join("rhizome-signaling"))
            .expect("a target directory")
    });
    let peerjs = args
        .peerjs
        .clone()
        .unwrap_or_else(|| manifest.join("bench/node_modules/peer/dist/bin/peerjs.js"));

    eprintln!(
        "{} sessions, rooms of {}, {} pairs x window {}, {} B payload, {} s relay, {} rounds",
        args.sessions,
        args.room_size,
        args.pairs,
        args.window,
        args.payload,
        args.relay_secs,
        args.rounds
    );
    let with_peerjs = if args.skip_peerjs {
        false
    } else if !peerjs.exists() {
        eprintln!(
            "{} not found: run `npm ci` in signaling/bench (or pass --peerjs); skipping PeerJS",
            peerjs.display()
        );
        false
    } else {
        true
    };
    // Alternate which server goes first, so a change in machine load during the run
    // does not always favour the same one; report medians over rounds.
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 0..args.rounds.max(1) {
        let mut order = vec![Kind::Rhizome];
        if with_peerjs {
            order.push(Kind::PeerJs);
        }
        if round % 2 == 1 {
            order.reverse();
        }
        for kind in order {
            let r = match kind {
                Kind::Rhizome => {
                    bench(kind, &args, || start_rhizome(&server_bin, &args.server_arg)).await
                }
                Kind::PeerJs => bench(kind, &args, || start_peerjs(&peerjs)).await,
            };
            print_results(kind, &r);
            match kind {
                Kind::Rhizome => ours.push(r),
                Kind::PeerJs => theirs.push(r),
            }
        }
    }
    let rhizome = median(&ours);
    let peer = with_peerjs.then(|| median(&theirs));
    println!();
    println!(
        "| measure | {} | {} | ratio |",
        Kind::Rhizome.name(),
        Kind::PeerJs.name()
    );
    println!("|---|---|---|---|");
    let p = peer.clone().unwrap_or_default();
    let ratio = |a: f64, b: f64| {
        if peer.is_some() && b > 0.0 {
            format!("{:.2}x", a / b)
        } else {
            "-".into()
        }
    };
    println!(
        "| sessions held | {} | {} | |",
        rhizome.sessions, p.sessions
    );
    println!(
        "| joins/s (higher is better) | {:.0} | {:.0} | {} |",
        rhizome.joins_per_sec,
        p.joins_per_sec,
        ratio(rhizome.joins_per_sec, p.joins_per_sec)
    );
    println!(
        "| joins per server CPU-second (higher is better) | {:.0} | {:.0} | {} |",
        rhizome.joins_per_cpu_sec,
        p.joins_per_cpu_sec,
        ratio(rhizome.joins_per_cpu_sec, p.joins_per_cpu_sec)
    );
    println!(
        "| relayed signals per server CPU-second (higher is better) | {:.0} | {:.0} | {} |",
        rhizome.relays_per_cpu_sec,
        p.relays_per_cpu_sec,
        ratio(rhizome.relays_per_cpu_sec, p.relays_per_cpu_sec)
    );
    println!(
        "| relay signals/s (higher is better) | {:.0} | {:.0} | {} |",
        rhizome.relay_per_sec,
        p.relay_per_sec,
        ratio(rhizome.relay_per_sec, p.relay_per_sec)
    );
    println!(
        "| relay p50 ms (lower is better) | {:.2} | {:.2} | {} |",
        rhizome.p50_ms,
        p.p50_ms,
        ratio(p.p50_ms, rhizome.p50_ms)
    );
    println!(
        "| relay p99 ms (lower is better) | {:.2} | {:.2} | {} |",
        rhizome.p99_ms,
        p.p99_ms,
        ratio(p.p99_ms, rhizome.p99_ms)
    );
    println!(
        "| RSS per idle session, bytes (lower is better) | {:.0} | {:.0} | {} |",
        rhizome.bytes_per_session,
        p.bytes_per_session,
        ratio(p.bytes_per_session, rhizome.bytes_per_session)
    );
    println!(
        "| server RSS idle, MiB | {:.1} | {:.1} | |",
        rhizome.rss_idle_kib as f64 / 1024.0,
        p.rss_idle_kib as f64 / 1024.0
    );
    println!(
        "| failed connects (all rounds) | {} | {} | |",
        rhizome.failed_connects, p.failed_connects
    );
    println!();
    println!("Medians over {} rounds. Ratios are rhizome's advantage: >1x means rhizome-signaling is better on that line.", args.rounds.max(1));
}

async fn start_rhizome(bin: &PathBuf, extra: &[String]) -> Server {
    let mut child = Command::new(bin)
        .args([
            "--bind",
            "127.0.0.1:0",
            "--log",
            "warn",
            "--rate-burst",
            "1000000",
            "--rate-per-sec",
            "1000000",
            "--idle-timeout",
            "600s",
            "--join-deadline",
            "600s",
            "--send-queue",
            "1024",
            "--max-sessions",
            "100000",
            "--max-peers-per-room",
            "100000",
            "--max-rooms",
            "100000",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (build it with --release)",
                bin.display()
            )
        });
    let stdout = child.stdout.take().expect("piped stdout");
    let line = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
                .map(|_| line)
        }),
    )
    .await
    .expect("the server starts in time")
    .expect("the reader thread finishes")
    .expect("stdout is readable");
    let addr = line
        .trim()
        .strip_prefix("rhizome-signaling listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Server { child, addr }
}

async fn start_peerjs(script: &PathBuf) -> Server {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("an address").port()
    };
    let child = Command::new("node")
        .arg(script)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--concurrent_limit",
            "100000",
            "--alive_timeout",
            "600000",
            "--expire_timeout",
            "600000",
        ])
        // PeerJS logs a line per connection; nobody reads them.
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs the PeerJS server");
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(&addr).await.is_err() {
        assert!(Instant::now() < deadline, "PeerJS did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server { child, addr }
}

/// The number after `"t":` in a relayed frame.
fn timestamp(text: &str) -> Option<u64> {
    let at = text.find(r#""t":"#)? + 4;
    let digits = text[at..].find(|c: char| !c.is_ascii_digit())?;
    text[at..at + digits].parse().ok()
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

async fn bench<F, Fut>(kind: Kind, args: &Args, start: F) -> Results
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Server>,
{
    let server = start().await;
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib(pid);
    let addr = server.addr.clone();

    // Phase 1: joins.
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    let sem = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut tasks = Vec::with_capacity(args.sessions);
    for i in 0..args.sessions {
        let sem = sem.clone();
        let addr = addr.clone();
        let room = format!("room-{}", i / args.room_size.max(1));
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.ok()?;
            let session = tokio::time::timeout(Duration::from_secs(30), async {
                match kind {
                    Kind::Rhizome => join_rhizome(&addr, &room).await,
                    Kind::PeerJs => join_peerjs(&addr, i).await,
                }
            })
            .await
            .ok()
            .flatten();
            session
        }));
    }
    let mut sessions = Vec::with_capacity(args.sessions);
    let mut failed = 0;
    for t in tasks {
        match t.await.ok().flatten() {
            Some(s) => sessions.push(s),
            None => failed += 1,
        }
    }
    let join_secs = t0.elapsed().as_secs_f64();
    let join_cpu = cpu_secs(pid) - cpu0;
    eprintln!(
        "{}: {} sessions joined in {:.2} s ({} failed)",
        kind.name(),
        sessions.len(),
        join_secs,
        failed
    );

    // Phase 2: idle memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(pid);
    let held = sessions.len();

    // Phase 3: relay between pairs of sessions in the same room.
    let pairs = args.pairs.min(held / 2);
    let mut pair_sessions: Vec<Session> = sessions.drain(..pairs * 2).collect();
    let cpu1 = cpu_secs(pid);
    let bench_start = Instant::now();
    let relay_for = Duration::from_secs_f64(args.relay_secs);
    let pad = "x".repeat(args.payload);
    let mut handles = Vec::new();
    while let (Some(rx), Some(tx)) = (pair_sessions.pop(), pair_sessions.pop()) {
        let window = Arc::new(Semaphore::new(args.window.max(1)));
        let (tx_sink, tx_stream) = tx.ws.split();
        let (rx_sink, rx_stream) = rx.ws.split();
        let target = rx.id.clone();
        handles.push(tokio::spawn(send_loop(
            kind,
            tx_sink,
            target,
            window.clone(),
            bench_start,
            relay_for,
            pad.clone(),
        )));
        handles.push(tokio::spawn(async move {
            // Keep the sender's read half alive (its socket stays open).
            let _keep = (tx_stream, rx_sink);
            std::future::pending::<Vec<u64>>().await
        }));
        handles.push(tokio::spawn(recv_loop(
            rx_stream,
            window,
            bench_start,
            relay_for,
        )));
    }
    tokio::time::sleep(relay_for).await;
    let relay_cpu = cpu_secs(pid) - cpu1;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies: Vec<u64> = Vec::new();
    for h in handles {
        if h.is_finished() {
            if let Ok(l) = h.await {
                latencies.extend(l);
            }
        } else {
            h.abort();
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i] as f64 / 1e6
    };
    let results = Results {
        sessions: held,
        joins_per_sec: held as f64 / join_secs,
        rss_before_kib: rss_before,
        rss_idle_kib: rss_idle,
        bytes_per_session: (rss_idle.saturating_sub(rss_before) as f64 * 1024.0)
            / held.max(1) as f64,
        relayed: latencies.len() as u64,
        relay_per_sec: latencies.len() as f64 / relay_for.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        failed_connects: failed,
        join_cpu_secs: join_cpu,
        relay_cpu_secs: relay_cpu,
        joins_per_cpu_sec: held as f64 / join_cpu.max(0.01),
        relays_per_cpu_sec: latencies.len() as f64 / relay_cpu.max(0.01),
    };
    drop(sessions);
    drop(server);
    results
}

struct Session {
    ws: Ws,
    id: String,
}

async fn join_rhizome(addr: &str, room: &str) -> Option<Session> {
    let (ws, id) = common::join_rhizome(addr, room, Some(ws_config())).await?;
    Some(Session { ws, id })
}

async fn join_peerjs(addr: &str, i: usize) -> Option<Session> {
    let id = format!("peer-{i}");
    let url = format!("ws://{addr}/peerjs?key=peerjs&id={id}&token=t{i}");
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true)
        .await
        .ok()?;
    let open: serde_json::Value = next_json(&mut ws).await?;
    (open["type"] == "OPEN").then_some(Session { ws, id })
}

async fn send_loop(
    kind: Kind,
    mut sink: SplitSink<Ws, Message>,
    target: String,
    window: Arc<Semaphore>,
    start: Instant,
    duration: Duration,
    pad: String,
) -> Vec<u64> {
    let until = start + duration;
    // The frame is built by string concatenation, so the client spends as little CPU as
    // possible and the servers' costs dominate.
    let (prefix, suffix) = match kind {
        Kind::Rhizome => (
            format!(r#"{{"type":"signal","to":"{target}","envelope":{{"t":"#),
            format!(r#","pad":"{pad}"}}}}"#),
        ),
        Kind::PeerJs => (
            format!(r#"{{"type":"CANDIDATE","dst":"{target}","payload":{{"t":"#),
            format!(r#","pad":"{pad}"}}}}"#),
        ),
    };
    loop {
        let Ok(Ok(permit)) = tokio::time::timeout_at(until.into(), window.acquire()).await else {
            break;
        };
        permit.forget();
        let t = start.elapsed().as_nanos() as u64;
        let text = format!("{prefix}{t}{suffix}");
        if sink.send(Message::text(text)).await.is_err() {
            break;
        }
    }
    // Keep the write half open until the measurement is collected.
    std::future::pending::<Vec<u64>>().await
}

async fn recv_loop(
    mut stream: SplitStream<Ws>,
    window: Arc<Semaphore>,
    start: Instant,
    duration: Duration,
) -> Vec<u64> {
    let until = start + duration;
    let mut latencies = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until.into(), stream.next()).await {
        let Message::Text(text) = msg else { continue };
        // Find the timestamp without parsing the whole frame (client CPU is shared with
        // the server under test).
        if let Some(t) = timestamp(text.as_str()) {
            let now = start.elapsed().as_nanos() as u64;
            latencies.push(now.saturating_sub(t));
            window.add_permits(1);
        }
    }
    latencies
}

/// The median of every measure over rounds (each measure on its own).
fn median(rounds: &[Results]) -> Results {
    let pick = |f: &dyn Fn(&Results) -> f64| -> f64 {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    Results {
        sessions: pick(&|r| r.sessions as f64) as usize,
        joins_per_sec: pick(&|r| r.joins_per_sec),
        rss_before_kib: pick(&|r| r.rss_before_kib as f64) as u64,
        rss_idle_kib: pick(&|r| r.rss_idle_kib as f64) as u64,
        bytes_per_session: pick(&|r| r.bytes_per_session),
        relayed: pick(&|r| r.relayed as f64) as u64,
        relay_per_sec: pick(&|r| r.relay_per_sec),
        p50_ms: pick(&|r| r.p50_ms),
        p99_ms: pick(&|r| r.p99_ms),
        failed_connects: rounds.iter().map(|r| r.failed_connects).sum(),
        join_cpu_secs: pick(&|r| r.join_cpu_secs),
        relay_cpu_secs: pick(&|r| r.relay_cpu_secs),
        joins_per_cpu_sec: pick(&|r| r.joins_per_cpu_sec),
        relays_per_cpu_sec: pick(&|r| r.relays_per_cpu_sec),
    }
}

fn print_results(kind: Kind, r: &Results) {
    eprintln!(
        "{}: {} sessions ({} failed), {:.0} joins/s, RSS {} -> {} KiB ({:.0} B/session), \
         {} relayed ({:.0}/s), p50 {:.2} ms, p99 {:.2} ms; server CPU: joins {:.2} s, relay {:.2} s",
        kind.name(),
        r.sessions,
        r.failed_connects,
        r.joins_per_sec,
        r.rss_before_kib,
        r.rss_idle_kib,
        r.bytes_per_session,
        r.relayed,
        r.relay_per_sec,
        r.p50_ms,
        r.p99_ms,
        r.join_cpu_secs,
        r.relay_cpu_secs
    );
}
