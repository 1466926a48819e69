//! Cluster benchmark: one, two and three `rhizome-signaling` servers over one Redis, in
//! one run on this machine, loopback only.
//!
//! For each server count N (and a baseline: one server without `--cluster`), a fresh
//! `redis-server` (no persistence) and N servers are started as child processes, then:
//!
//! 1. **joins/s**: `--sessions` clients connect round-robin over the servers (session i
//!    to server i mod N) and join rooms of `--room-size`, so every room is spread over
//!    every server; `--connect-concurrency` at a time.
//! 2. **memory per idle session**: the servers' resident set after the joins minus
//!    before, over the sessions they hold.
//! 3. **relay**: `--pairs` random pairs of members of one room (so with N servers about
//!    (N-1)/N of them cross servers; the measured share is printed); each sender keeps
//!    `--window` signals in flight for `--relay-secs`. Signals delivered per second, and
//!    send-to-receive latency at p50 and p99 (one clock, both ends in this process).
//! 4. **Redis load**: `INFO commandstats` before and after each phase, so commands per
//!    join and per signal crossing servers (commands run inside scripts count one by
//!    one; each join and each crossing signal is one `evalsha` round trip), Redis's
//!    memory per member and its own CPU time.
//!
//! Every server runs with its anti-abuse rate limit lifted and long timeouts, as in
//! `bench`. Everything is bounded by `--max-secs`. See docs/BENCHMARKS.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use rand::seq::SliceRandom;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

mod common;

use common::{cpu_secs, rss_kib, Ws};

/// Benchmark 1, 2 and 3 rhizome-signaling servers over one Redis on loopback.
#[derive(Debug, Parser)]
struct Args {
    /// Sessions per configuration (spread round-robin over its servers).
    #[arg(long, default_value_t = 3000)]
    sessions: usize,
    /// Members per room.
    #[arg(long, default_value_t = 100)]
    room_size: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
    /// Sender/receiver pairs in the relay phase.
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Signals in flight per pair.
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Bytes of padding per signal.
    #[arg(long, default_value_t = 300)]
    payload: usize,
    /// Length of each relay phase, in seconds.
    #[arg(long, default_value_t = 5.0)]
    relay_secs: f64,
    /// Server counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    servers: Vec<usize>,
    /// Skip the baseline (one server without --cluster).
    #[arg(long)]
    no_baseline: bool,
    /// The rhizome-signaling binary (default: next to this example's directory).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Upper bound on the whole run, in seconds.
    #[arg(long, default_value_t = 900)]
    max_secs: u64,
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug, Default, Clone)]
struct Row {
    label: String,
    sessions: usize,
    joins_per_sec: f64,
    bytes_per_session: f64,
    relayed: usize,
    relay_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    cross_share: f64,
    cross_per_sec: f64,
    cross_p50_ms: f64,
    cross_p99_ms: f64,
    local_p99_ms: f64,
    redis_bytes_per_member: f64,
    redis_per_join: f64,
    redis_per_cross_relay: f64,
    join_breakdown: String,
    relay_breakdown: String,
    redis_cpu_join: f64,
    redis_cpu_relay: f64,
    server_cpu_join: f64,
    server_cpu_relay: f64,
    failed: usize,
}

fn main() {
    let args = Args::parse();
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let mut args = args;
    let cap = (limit as usize).saturating_sub(512);
    if args.sessions > cap {
        eprintln!("open-files limit {limit}: capping sessions at {cap}");
        args.sessions = cap;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let deadline = Duration::from_secs(args.max_secs);
    if rt
        .block_on(async { tokio::time::timeout(deadline, run(args)).await })
        .is_err()
    {
        eprintln!("benchmark exceeded --max-secs; stopped");
        std::process::exit(2);
    }
}

async fn run(args: Args) {
    let bin = args.server_bin.clone().unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("own path");
        exe.parent()
            .and_then(|p| p.parent())
            .map(|p| p.join("rhizome-signaling"))
            .expect("a target directory")
    });
    eprintln!(
        "{} sessions, rooms of {}, {} pairs x window {}, {} B payload, {} s relay",
        args.sessions, args.room_size, args.pairs, args.window, args.payload, args.relay_secs
    );
    let mut rows = Vec::new();
    if !args.no_baseline {
        rows.push(bench(&args, &bin, 1, false).await);
    }
    for &n in &args.servers {
        rows.push(bench(&args, &bin, n.max(1), true).await);
    }
    println!();
    println!("| servers | sessions | joins/s | relayed/s | p50 ms | p99 ms | crossing servers: share, /s, p50 ms, p99 ms | local p99 ms | RSS/session B | Redis B/member | Redis cmds/join | Redis cmds/crossing signal | Redis CPU s (joins, relay) | servers CPU s (joins, relay) | failed |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0}%, {:.0}, {:.2}, {:.2} | {:.2} | {:.0} | {:.0} | {:.1} | {:.1} | {:.2}, {:.2} | {:.2}, {:.2} | {} |",
            r.label,
            r.sessions,
            r.joins_per_sec,
            r.relay_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.cross_share * 100.0,
            r.cross_per_sec,
            r.cross_p50_ms,
            r.cross_p99_ms,
            r.local_p99_ms,
            r.bytes_per_session,
            r.redis_bytes_per_member,
            r.redis_per_join,
            r.redis_per_cross_relay,
            r.redis_cpu_join,
            r.redis_cpu_relay,
            r.server_cpu_join,
            r.server_cpu_relay,
            r.failed
        );
    }
    println!();
    for r in &rows {
        if !r.join_breakdown.is_empty() {
            println!(
                "{}: per join {}; per signal crossing servers {}",
                r.label, r.join_breakdown, r.relay_breakdown
            );
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn start_redis() -> (Proc, u16) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("redis-server runs (apt-get install redis-server)");
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (Proc(child), port)
}

async fn start_server(bin: &PathBuf, cluster: Option<&str>) -> (Proc, String) {
    let mut cmd = Command::new(bin);
    cmd.args(["--bind", "127.0.0.1:0", "--log", "warn"])
        .args(["--rate-burst", "1000000", "--rate-per-sec", "1000000"])
        .args(["--idle-timeout", "600s", "--join-deadline", "600s"])
        .args(["--send-queue", "1024", "--max-sessions", "100000"])
        .args(["--max-peers-per-room", "100000", "--max-rooms", "100000"]);
    if let Some(url) = cluster {
        cmd.args(["--cluster", url]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        line
    })
    .await
    .expect("reader");
    let addr = line
        .trim()
        .strip_prefix("rhizome-signaling listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (Proc(child), addr)
}

/// `INFO commandstats` as command → calls.
async fn commandstats(
    conn: &mut Option<redis::aio::MultiplexedConnection>,
) -> BTreeMap<String, u64> {
    let Some(c) = conn.as_mut() else {
        return BTreeMap::new();
    };
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(c)
        .await
        .unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("cmdstat_")?;
            let (name, stats) = rest.split_once(':')?;
            let calls = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// Redis's `used_memory`, in bytes.
async fn used_memory(conn: &mut Option<redis::aio::MultiplexedConnection>) -> u64 {
    let Some(c) = conn.as_mut() else {
        return 0;
    };
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(c)
        .await
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn delta(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    b.iter()
        .filter(|(k, _)| k.as_str() != "info")
        .map(|(k, v)| (k.clone(), v.saturating_sub(*a.get(k).unwrap_or(&0))))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn breakdown(d: &BTreeMap<String, u64>, per: usize) -> (f64, String) {
    let total: u64 = d.values().sum();
    let per = per.max(1) as f64;
    let text = d
        .iter()
        .map(|(k, v)| format!("{k} {:.2}", *v as f64 / per))
        .collect::<Vec<_>>()
        .join(", ");
    (total as f64 / per, text)
}

struct Session {
    ws: Ws,
    id: String,
    server: usize,
    room: usize,
}

async fn bench(args: &Args, bin: &PathBuf, n: usize, cluster: bool) -> Row {
    let label = if cluster {
        format!("{n} (cluster)")
    } else {
        "1 (no --cluster)".to_string()
    };
    let (redis, port) = if cluster {
        let (p, port) = start_redis().await;
        (Some(p), port)
    } else {
        (None, 0)
    };
    let url = format!("redis://127.0.0.1:{port}");
    let mut servers = Vec::new();
    for _ in 0..n {
        servers.push(start_server(bin, cluster.then_some(url.as_str())).await);
    }
    let mut conn = None;
    if cluster {
        if let Ok(c) = redis::Client::open(url.as_str()) {
            conn = c.get_multiplexed_async_connection().await.ok();
        }
    }
    let redis_pid = redis.as_ref().map(|p| p.0.id());
    let pids: Vec<u32> = servers.iter().map(|(p, _)| p.0.id()).collect();
    let server_cpu = || pids.iter().map(|p| cpu_secs(*p)).sum::<f64>();
    let redis_cpu = || redis_pid.map(cpu_secs).unwrap_or(0.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0: u64 = pids.iter().map(|p| rss_kib(*p)).sum();

    // Phase 1: joins, round-robin over the servers.
    let mem0 = used_memory(&mut conn).await;
    let stats0 = commandstats(&mut conn).await;
    let (c0, r0) = (server_cpu(), redis_cpu());
    let t0 = Instant::now();
    let sem = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut tasks = Vec::new();
    for i in 0..args.sessions {
        let sem = sem.clone();
        let server = i % n;
        let addr = servers[server].1.clone();
        let room = i / args.room_size.max(1);
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await.ok()?;
            let (ws, id) = tokio::time::timeout(
                Duration::from_secs(30),
                common::join_rhizome(&addr, &format!("room-{room}"), None),
            )
            .await
            .ok()??;
            Some(Session {
                ws,
                id,
                server,
                room,
            })
        }));
    }
    let mut sessions = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await.ok().flatten() {
            Some(s) => sessions.push(s),
            None => failed += 1,
        }
    }
    let join_secs = t0.elapsed().as_secs_f64();
    let (c1, r1) = (server_cpu(), redis_cpu());
    let stats1 = commandstats(&mut conn).await;
    let mem1 = used_memory(&mut conn).await;
    let held = sessions.len();
    eprintln!("{label}: {held} sessions joined in {join_secs:.2} s ({failed} failed)");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1: u64 = pids.iter().map(|p| rss_kib(*p)).sum();

    // Phase 3: random pairs within rooms.
    let mut by_room: BTreeMap<usize, Vec<Session>> = BTreeMap::new();
    for s in sessions {
        by_room.entry(s.room).or_default().push(s);
    }
    let mut pairs = Vec::new();
    let mut rng = rand::rng();
    'rooms: for members in by_room.values_mut() {
        members.shuffle(&mut rng);
        while members.len() >= 2 {
            if pairs.len() >= args.pairs {
                break 'rooms;
            }
            let a = members.pop().expect("two left");
            let b = members.pop().expect("two left");
            pairs.push((a, b));
        }
    }
    let cross = pairs.iter().filter(|(a, b)| a.server != b.server).count();
    eprintln!("{label}: {cross} of {} pairs cross servers", pairs.len());
    let stats2 = commandstats(&mut conn).await;
    let (c2, r2) = (server_cpu(), redis_cpu());
    let start = Instant::now();
    let relay_for = Duration::from_secs_f64(args.relay_secs);
    let pad = "x".repeat(args.payload);
    let mut handles = Vec::new();
    let mut keep = Vec::new();
    for (tx, rx) in pairs {
        let crosses = tx.server != rx.server;
        let window = Arc::new(Semaphore::new(args.window.max(1)));
        let (mut sink, tx_stream) = tx.ws.split();
        let (rx_sink, mut stream) = rx.ws.split();
        keep.push((tx_stream, rx_sink));
        let prefix = format!(r#"{{"type":"signal","to":"{}","envelope":{{"t":"#, rx.id);
        let suffix = format!(r#","pad":"{pad}"}}}}"#);
        let w = window.clone();
        let until = start + relay_for;
        handles.push(tokio::spawn(async move {
            loop {
                let Ok(Ok(p)) = tokio::time::timeout_at(until.into(), w.acquire()).await else {
                    break;
                };
                p.forget();
                let t = start.elapsed().as_nanos() as u64;
                if sink
                    .send(Message::text(format!("{prefix}{t}{suffix}")))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            drop(sink);
            (false, Vec::new())
        }));
        let until = start + relay_for;
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until.into(), stream.next()).await
            {
                let Message::Text(text) = msg else { continue };
                let s = text.as_str();
                if let Some(at) = s.find(r#""t":"#) {
                    let digits: String = s[at + 4..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    if let Ok(t) = digits.parse::<u64>() {
                        lat.push((start.elapsed().as_nanos() as u64).saturating_sub(t));
                        window.add_permits(1);
                    }
                }
            }
            drop(stream);
            (crosses, lat)
        }));
    }
    tokio::time::sleep(relay_for + Duration::from_millis(300)).await;
    let (c3, r3) = (server_cpu(), redis_cpu());
    let mut lat: Vec<u64> = Vec::new();
    let mut cross_lat: Vec<u64> = Vec::new();
    let mut local_lat: Vec<u64> = Vec::new();
    for h in handles {
        if let Ok((crosses, l)) = h.await {
            if crosses {
                cross_lat.extend(&l);
            } else {
                local_lat.extend(&l);
            }
            lat.extend(l);
        }
    }
    cross_lat.sort_unstable();
    local_lat.sort_unstable();
    let stats3 = commandstats(&mut conn).await;
    drop(keep);
    lat.sort_unstable();
    let pct_of = |v: &[u64], p: f64| {
        if v.is_empty() {
            f64::NAN
        } else {
            v[((v.len() as f64 - 1.0) * p).round() as usize] as f64 / 1e6
        }
    };
    let pct = |p: f64| pct_of(&lat, p);
    let (per_join, join_breakdown) = breakdown(&delta(&stats0, &stats1), held);
    let relay_delta = delta(&stats2, &stats3);
    // Each signal that crosses servers is one script call and one `publish` in Redis
    // (heartbeats are script calls too, but publish nothing).
    let evalsha = relay_delta.get("publish").copied().unwrap_or(0);
    let cross_relays = evalsha.max(1) as f64;
    let relay_breakdown = if evalsha == 0 {
        "none crossed".to_string()
    } else {
        breakdown(&relay_delta, evalsha as usize).1
    };
    let row = Row {
        label,
        sessions: held,
        joins_per_sec: held as f64 / join_secs,
        bytes_per_session: (rss1.saturating_sub(rss0) as f64 * 1024.0) / held.max(1) as f64,
        relayed: lat.len(),
        relay_per_sec: lat.len() as f64 / relay_for.as_secs_f64(),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        cross_share: cross_lat.len() as f64 / lat.len().max(1) as f64,
        cross_per_sec: cross_lat.len() as f64 / relay_for.as_secs_f64(),
        cross_p50_ms: pct_of(&cross_lat, 0.5),
        cross_p99_ms: pct_of(&cross_lat, 0.99),
        local_p99_ms: pct_of(&local_lat, 0.99),
        redis_bytes_per_member: mem1.saturating_sub(mem0) as f64 / held.max(1) as f64,
        redis_per_join: per_join,
        redis_per_cross_relay: if evalsha == 0 {
            0.0
        } else {
            relay_delta.values().sum::<u64>() as f64 / cross_relays
        },
        join_breakdown,
        relay_breakdown,
        redis_cpu_join: r1 - r0,
        redis_cpu_relay: r3 - r2,
        server_cpu_join: c1 - c0,
        server_cpu_relay: c3 - c2,
        failed,
    };
    eprintln!(
        "{}: {:.0} joins/s, {} relayed ({:.0}/s), p50 {:.2} ms, p99 {:.2} ms, crossing {:.0}% (p99 {:.2} ms), {:.0} B/session",
        row.label,
        row.joins_per_sec,
        row.relayed,
        row.relay_per_sec,
        row.p50_ms,
        row.p99_ms,
        row.cross_share * 100.0,
        row.cross_p99_ms,
        row.bytes_per_session
    );
    drop(servers);
    drop(redis);
    row
}
