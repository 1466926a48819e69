//! The hostile-client suite: what an attacker can send the server, and what it must
//! survive with bounded memory and descriptors, answering honest clients meanwhile.
//!
//! Tests that measure memory or descriptors run the real binary as a child process (so
//! its `/proc/PID/status` and `/proc/PID/fd` hold the server alone) and print their
//! before/after figures (`cargo test -p rhizome-signaling --test hostile -- --nocapture`).
//! Everything is on loopback and bounded in time and count; limits are passed through
//! the environment (`RHIZOME_*`), so an older binary runs the same test.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fast_config, http_get, Client, Event, Server};
use futures_util::{SinkExt, StreamExt};
use rhizome::signal::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::tungstenite::Message;

/// The server binary, started under `sh -c 'ulimit -n N; exec ...'` with `RHIZOME_*`
/// variables; killed when dropped.
struct Child {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Child {
    fn start(nofile: u32, env: &[(&str, &str)]) -> Child {
        let bin = env!("CARGO_BIN_EXE_rhizome-signaling");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "ulimit -n {nofile} && exec \"$0\" --bind 127.0.0.1:0 --log error"
            ))
            .arg(bin)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("rhizome-signaling listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Child { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the server, KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Open file descriptors of the server.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit; its exit status if it did.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lets this test process hold many client sockets.
fn raise_own_fd_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

/// `GET /healthz` within `limit`: the session count, or `None` if it did not answer.
async fn healthz_sessions(addr: SocketAddr, limit: Duration) -> Option<u64> {
    let get = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        if !text.starts_with("HTTP/1.1 200") {
            return None;
        }
        let body = &text[text.find("\r\n\r\n")? + 4..];
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        v["sessions"].as_u64()
    };
    tokio::time::timeout(limit, get).await.ok().flatten()
}

/// Polls `/healthz` until the server reports `want` sessions, for at most `limit`.
async fn wait_sessions(addr: SocketAddr, want: u64, limit: Duration) -> Option<u64> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < deadline {
        last = healthz_sessions(addr, Duration::from_secs(1)).await;
        if last == Some(want) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

/// A frame with any opcode and payload, valid or not (the client masks it on sending).
fn raw(opcode: OpCode, is_final: bool, payload: &[u8]) -> Frame {
    let header = FrameHeader {
        is_final,
        opcode,
        ..FrameHeader::default()
    };
    Frame::from_payload(header, payload.to_vec().into())
}

/// Sends raw bytes as one frame (masked, as a client must).
async fn send_frame(c: &mut Client, frame: Frame) {
    c.ws.send(Message::Frame(frame)).await.unwrap();
}

/// The next text message or close, skipping control frames; `None` if the connection
/// simply ended.
async fn error_then_close(c: &mut Client) -> (Option<ErrorCode>, Option<(u16, String)>) {
    let mut error = None;
    loop {
        match c.next_event().await {
            Event::Msg(ServerMsg::Error { code, .. }) => error = Some(code),
            Event::Msg(_) => {}
            Event::Closed(close) => return (error, close),
            Event::Broken(_) => return (error, None),
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. WebSocket control frames

/// A joined client that stops reading and floods ping frames: each ping made the server
/// queue a pong in an unbounded write buffer, the session was never closed (control
/// frames bypassed the rate limiter and reset the idle timer), and RSS grew with the
/// bytes sent. Now control frames take tokens, the flood is refused and the session closed,
/// and the write buffer is bounded.
#[tokio::test]
async fn a_non_reading_client_flooding_pings_is_closed_with_bounded_memory() {
    ping_flood("rate limit on", &[]).await;
}

/// The same flood with the rate limit lifted: the pongs the server cannot write stay
/// within the bounded write buffer, and the session is dropped once its writes make no
/// progress for the write timeout.
#[tokio::test]
async fn without_the_rate_limit_a_ping_flood_is_bounded_by_the_write_buffer_and_timeout() {
    ping_flood(
        "rate limit lifted",
        &[
            ("RHIZOME_RATE_BURST", "1000000000"),
            ("RHIZOME_RATE_PER_SEC", "1000000000"),
        ],
    )
    .await;
}

async fn ping_flood(what: &str, env: &[(&str, &str)]) {
    let mut env = env.to_vec();
    env.extend([
        ("RHIZOME_WRITE_TIMEOUT", "1s"),
        ("RHIZOME_IDLE_TIMEOUT", "10s"),
    ]);
    let server = Child::start(1024, &env);
    let mut c = Client::connect(&server.url(), None).await;
    c.join("pings").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (rss0, fds0) = (server.rss_kib(), server.fds());
    let payload = vec![0x55u8; 125];
    let start = Instant::now();
    let (mut sent, mut peak) = (0u64, rss0);
    let mut refused = false;
    while start.elapsed() < Duration::from_secs(3) {
        match tokio::time::timeout(
            Duration::from_millis(200),
            c.ws.send(Message::Ping(payload.clone().into())),
        )
        .await
        {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) => {
                refused = true;
                break;
            }
            Err(_) => {} // the server applies back-pressure; keep trying
        }
        if sent % 2048 == 0 {
            peak = peak.max(server.rss_kib());
        }
    }
    peak = peak.max(server.rss_kib());
    let sessions = wait_sessions(server.addr, 0, Duration::from_secs(4)).await;
    let (rss1, fds1) = (server.rss_kib(), server.fds());
    eprintln!(
        "ping flood ({what}): {sent} pings in {:?} (connection refused by the server: \
         {refused}); server RSS {rss0} KiB before, {peak} KiB peak, {rss1} KiB after; fds \
         {fds0} before, {fds1} after; sessions afterwards {sessions:?}",
        start.elapsed()
    );
    assert_eq!(sessions, Some(0), "the flooding session is closed");
    assert!(
        peak < rss0 + 8 * 1024,
        "server RSS grew from {rss0} to {peak} KiB"
    );
    assert!(fds1 <= fds0, "descriptors {fds0} -> {fds1}");
}

/// Pings alone do not keep a session alive: a client that only sends WebSocket pings
/// (and reads nothing) is closed by the idle timeout like a silent one.
#[tokio::test]
async fn pings_alone_do_not_keep_a_session_alive() {
    let server = Server::start(rhizome_signaling::Config {
        idle_timeout: Duration::from_secs(1),
        ..fast_config()
    })
    .await;
    let (mut c, _) = server.join("idle").await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        if c.ws.send(Message::Ping(vec![1].into())).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The idle timeout fired while the pings went on: its frames are already waiting
    // (without the fix it fires only a second after the last ping).
    let waiting = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            match c.ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => return other,
            }
        }
    })
    .await;
    assert!(
        matches!(&waiting, Ok(Some(Ok(Message::Text(t)))) if t.contains("idle-timeout")),
        "the session was closed while it only sent pings: {waiting:?}"
    );
    let (error, close) = error_then_close(&mut c).await;
    assert_eq!(error, None);
    assert_eq!(close.map(|c| c.0), Some(CLOSE_IDLE_TIMEOUT));
    server.stop().await;
}

/// Control frames take tokens from the session's bucket like messages: a burst of pings
/// beyond it is refused (`rate-limited`) and, past the error budget, closes the session.
#[tokio::test]
async fn control_frames_are_counted_by_the_rate_limiter() {
    let server = Server::start(fast_config()).await;
    let (mut c, _) = server.join("rate").await;
    for _ in 0..200 {
        if c.ws.send(Message::Ping(vec![2].into())).await.is_err() {
            break;
        }
    }
    let mut rate_limited = 0;
    let close = loop {
        match c.next_event().await {
            Event::Msg(ServerMsg::Error {
                code: ErrorCode::RateLimited,
                ..
            }) => rate_limited += 1,
            Event::Msg(_) => {}
            Event::Closed(close) => break close,
            Event::Broken(e) => panic!("connection broke: {e}"),
        }
    };
    assert!(rate_limited > 0, "pings beyond the burst are refused");
    assert_eq!(
        close,
        Some((CLOSE_TOO_MANY_ERRORS, "too-many-errors".to_string()))
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// 2. Connections before the upgrade

/// The attack of issue 18 against a server limited to 256 descriptors: for 3 s, hundreds
/// of connections that send an unfinished request head (some with 8 KiB of header, some
/// one byte every 100 ms) or nothing at all. Honest joins and `/healthz` keep working
/// meanwhile, and afterwards descriptors and memory come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_heads_and_silent_connections_do_not_lock_out_honest_clients() {
    raise_own_fd_limit();
    let server = Child::start(256, &[("RHIZOME_HEADER_TIMEOUT", "1s")]);
    let addr = server.addr;
    assert!(healthz_sessions(addr, Duration::from_secs(2))
        .await
        .is_some());
    let (rss0, fds0) = (server.rss_kib(), server.fds());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let attack = tokio::spawn(async move {
        let mut held = Vec::new();
        let mut slow = Vec::new();
        let start = Instant::now();
        let mut opened = 0u32;
        let mut round = 0;
        // At least 3 s, and until the honest clients are done.
        while start.elapsed() < Duration::from_secs(3) || !*stopped.borrow() {
            // 400 at once, then 20 more every 100 ms.
            round += 1;
            for i in 0..if round == 1 { 400 } else { 20 } {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    continue;
                };
                opened += 1;
                match i % 4 {
                    0 => {
                        let head = format!(
                            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nX-Pad: {}",
                            "a".repeat(8000)
                        );
                        let _ = s.write_all(head.as_bytes()).await;
                        held.push(s);
                    }
                    1 => {
                        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHo").await;
                        slow.push(s);
                    }
                    _ => held.push(s),
                }
            }
            for s in &mut slow {
                let _ = s.try_write(b"x");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (opened, held.len() + slow.len())
    });
    // Honest clients while the attack runs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut worst = Duration::ZERO;
    let mut served = 0;
    let mut peak_fds = 0;
    let mut peak_rss = rss0;
    for i in 0..4 {
        let t = Instant::now();
        let joined = tokio::time::timeout(Duration::from_secs(2), async {
            let mut c = Client::connect(&server.url(), None).await;
            c.join(&format!("honest-{i}")).await;
            c.ping().await;
        })
        .await;
        let health = healthz_sessions(addr, Duration::from_secs(2)).await;
        if joined.is_ok() && health.is_some() {
            served += 1;
        }
        worst = worst.max(t.elapsed());
        peak_fds = peak_fds.max(server.fds());
        peak_rss = peak_rss.max(server.rss_kib());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = stop.send(true);
    let (opened, held) = attack.await.unwrap();
    peak_fds = peak_fds.max(server.fds());
    // Everything the attacker held is dropped now; the server lets go of it too.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (rss1, fds1) = (server.rss_kib(), server.fds());
    eprintln!(
        "unfinished heads: {opened} attacking connections opened ({held} held open at the \
         end); {served} of 4 honest join + /healthz served, slowest {worst:?}; server fds \
         {fds0} before, {peak_fds} peak, {fds1} after; RSS {rss0} KiB before, {peak_rss} KiB \
         peak, {rss1} KiB after"
    );
    assert_eq!(
        served, 4,
        "honest joins and /healthz get through during the attack"
    );
    assert!(peak_fds <= 256, "descriptors stay under the limit");
    assert!(fds1 <= fds0 + 2, "descriptors come back: {fds0} -> {fds1}");
    assert!(
        rss1 < rss0 + 16 * 1024,
        "memory comes back: {rss0} -> {rss1} KiB"
    );
}

/// SIGTERM while clients hold unfinished request heads and silent connections: the
/// server exits within its shutdown grace period (it used to wait for them forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_half_open_connections_exits_within_the_grace_period() {
    let mut server = Child::start(
        1024,
        &[
            ("RHIZOME_SHUTDOWN_GRACE", "1s"),
            ("RHIZOME_HEADER_TIMEOUT", "60s"),
        ],
    );
    let addr = server.addr;
    let mut held = Vec::new();
    for i in 0..10 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        held.push(s);
    }
    // A session that does not read either.
    let mut quiet = Client::connect(&server.url(), None).await;
    quiet.join("r").await;
    let mut c = Client::connect(&server.url(), None).await;
    c.join("r").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fds0 = server.fds();
    let start = Instant::now();
    server.sigterm();
    c.expect_error_and_close(ErrorCode::ShuttingDown, CLOSE_GOING_AWAY)
        .await;
    let exit = tokio::task::block_in_place(|| server.wait_exit(Duration::from_secs(6)));
    eprintln!(
        "SIGTERM with {} half-open connections (server fds {fds0}): exit {exit:?} after {:?}",
        held.len(),
        start.elapsed()
    );
    let exit = exit.expect("the server exits after SIGTERM");
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "exited within the grace period (1 s) and a margin"
    );
    drop(held);
}

/// Request heads beyond the header limit are refused (431) instead of buffered.
#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let server = Server::start(fast_config()).await;
    let big = "b".repeat(20 * 1024);
    let status = raw_status(
        server.addr,
        &format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"),
    )
    .await;
    assert_eq!(status, Some(431));
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let status = raw_status(
        server.addr,
        &format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n"),
    )
    .await;
    assert_eq!(status, Some(431));
    // Garbage and odd requests get HTTP errors, never a hang or a crash.
    for req in [
        "BLAH\r\n\r\n".to_string(),
        "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        "POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_string(),
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 12\r\nSec-WebSocket-Key: x\r\n\r\n"
            .to_string(),
        "GET /../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "p".repeat(9000)),
    ] {
        let status = raw_status(server.addr, &req).await;
        assert!(
            matches!(status, Some(400..=499)),
            "{:?} -> {status:?}",
            &req[..req.len().min(60)]
        );
    }
    let (status, _, _) = http_get(server.addr, "/healthz").await;
    assert_eq!(status, 200);
    assert!(server.is_running());
    server.stop().await;
}

/// Sends `req` and reads the status code of the answer (`None`: no answer in time).
async fn raw_status(addr: SocketAddr, req: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let _ = s.write_all(req.as_bytes()).await;
    let mut buf = vec![0u8; 1024];
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), async {
        while !got.windows(2).any(|w| w == b"\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    String::from_utf8_lossy(&got)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------
// 4-6. Frames

/// Invalid UTF-8 in a text frame (whole, fragmented, or in a close frame's reason) gets
/// an `error` frame and close code 1007, not a silent drop.
#[tokio::test]
async fn invalid_utf8_gets_an_error_and_close_1007() {
    let server = Server::start(fast_config()).await;
    let frames: Vec<Vec<Frame>> = vec![
        vec![Frame::message(
            b"{\"type\":\"ping\",\"x\":\"\xff\xfe\"}".to_vec(),
            OpCode::Data(Data::Text),
            true,
        )],
        vec![
            Frame::message(
                b"{\"type\":\"ping\",\"x\":\"".to_vec(),
                OpCode::Data(Data::Text),
                false,
            ),
            Frame::message(b"\xc3\x28".to_vec(), OpCode::Data(Data::Continue), false),
            Frame::message(b"\"}".to_vec(), OpCode::Data(Data::Continue), true),
        ],
        vec![raw(
            OpCode::Control(Control::Close),
            true,
            b"\x03\xe8\xff\xff",
        )],
    ];
    for (i, frames) in frames.into_iter().enumerate() {
        let (mut c, _) = server.join("utf8").await;
        for f in frames {
            send_frame(&mut c, f).await;
        }
        let (error, close) = error_then_close(&mut c).await;
        assert_eq!(error, Some(ErrorCode::BadRequest), "case {i}");
        assert_eq!(close.map(|c| c.0), Some(1007), "case {i}");
    }
    // A character split across fragments is valid and accepted.
    let (mut c, _) = server.join("utf8").await;
    send_frame(
        &mut c,
        Frame::message(
            b"{\"type\":\"ping\",\"x\":\"\xc3".to_vec(),
            OpCode::Data(Data::Text),
            false,
        ),
    )
    .await;
    send_frame(
        &mut c,
        Frame::message(b"\xa9\"}".to_vec(), OpCode::Data(Data::Continue), true),
    )
    .await;
    assert_eq!(c.recv().await, ServerMsg::Pong);
    server.stop().await;
}

/// WebSocket protocol violations (reserved opcodes, fragmented or oversized control
/// frames, a continuation without a start, a malformed close frame) get an `error` frame
/// and close code 1002.
#[tokio::test]
async fn websocket_protocol_violations_get_an_error_and_close_1002() {
    let server = Server::start(fast_config()).await;
    let cases = vec![
        raw(OpCode::Data(Data::Reserved(3)), true, b"x"),
        raw(OpCode::Control(Control::Reserved(11)), true, b"x"),
        raw(OpCode::Control(Control::Ping), false, b"x"),
        raw(OpCode::Control(Control::Ping), true, &[0u8; 126]),
        raw(OpCode::Data(Data::Continue), true, b"x"),
        raw(OpCode::Control(Control::Close), true, b"\x03"),
    ];
    for (i, frame) in cases.into_iter().enumerate() {
        let (mut c, _) = server.join("proto").await;
        send_frame(&mut c, frame).await;
        let (error, close) = error_then_close(&mut c).await;
        assert_eq!(error, Some(ErrorCode::BadRequest), "case {i}");
        assert_eq!(close.map(|c| c.0), Some(1002), "case {i}");
    }
    assert!(healthz_sessions(server.addr, WAIT2).await.is_some());
    server.stop().await;
}

const WAIT2: Duration = Duration::from_secs(2);

/// Unknown fields are ignored whatever their value: numbers out of any float's range,
/// huge integers, deep (bounded) nesting, long strings, before or after `type`.
#[tokio::test]
async fn unknown_fields_are_ignored_whatever_their_value() {
    let server = Server::start(fast_config()).await;
    let deep_array = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(100), "}".repeat(100));
    let long = format!("\"{}\"", "s".repeat(30_000));
    let weird = [
        "1e999999999",
        "-1e999999999",
        "1e-999999999",
        "123456789012345678901234567890123456789012345678901234567890",
        "-0.000000000000000000000000000000000000000000000000000000001e-400",
        deep_array.as_str(),
        deep_object.as_str(),
        long.as_str(),
        "\"\\ud800\"",
        "{\"type\":\"join\"}",
        "null",
    ];
    // `before`: the unknown field comes first; otherwise it is appended.
    let with = |msg: &str, value: &str, before: bool| {
        let body = &msg[1..msg.len() - 1]; // without the outer braces
        if before {
            format!("{{\"x-unknown\":{value},{body}}}")
        } else {
            format!("{{{body},\"x-unknown\":{value}}}")
        }
    };
    let (mut b, _) = server.join("weird").await;
    for (i, value) in weird.iter().enumerate() {
        for before in [false, true] {
            let mut a = server.connect().await;
            let join = serde_json::to_string(&a.join_msg("weird")).unwrap();
            a.send_text(&with(&join, value, before)).await;
            match a.recv().await {
                ServerMsg::Welcome { .. } => {}
                other => panic!("join with unknown field {i} (before {before}): {other:?}"),
            }
            a.send_text(&with(r#"{"type":"ping"}"#, value, before))
                .await;
            assert_eq!(a.recv().await, ServerMsg::Pong, "ping with field {i}");
            let signal = serde_json::to_string(&ClientMsg::Signal {
                to: b.peer(),
                envelope: serde_json::json!({"n": i}),
            })
            .unwrap();
            a.send_text(&with(&signal, value, before)).await;
            match b.recv().await {
                ServerMsg::Signal { from, envelope } => {
                    assert_eq!(from, a.peer());
                    assert_eq!(envelope, serde_json::json!({"n": i}));
                }
                other => panic!("signal with unknown field {i}: {other:?}"),
            }
            b.ping().await; // b only listens: keep it from the idle timeout
        }
    }
    server.stop().await;
}

/// Binary frames, huge fragmented messages and many tiny fragments are refused without
/// the server holding more than its hard frame limit for them.
#[tokio::test]
async fn fragments_beyond_the_hard_limit_close_the_session_with_1009() {
    let server = Server::start(fast_config()).await;
    let (mut c, _) = server.join("frag").await;
    // Many tiny fragments adding up past the hard limit (4 x 64 KiB).
    send_frame(
        &mut c,
        Frame::message(b"{".to_vec(), OpCode::Data(Data::Text), false),
    )
    .await;
    let chunk = vec![b' '; 4096];
    for _ in 0..80 {
        if c.ws
            .send(Message::Frame(Frame::message(
                chunk.clone(),
                OpCode::Data(Data::Continue),
                false,
            )))
            .await
            .is_err()
        {
            break;
        }
    }
    let (error, close) = error_then_close(&mut c).await;
    assert_eq!(error, Some(ErrorCode::FrameTooLarge));
    if let Some((code, _)) = close {
        assert_eq!(code, CLOSE_TOO_BIG);
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Beyond the list

/// Many sessions from one client: beyond the session limit (here lowered by the
/// connection cap) upgrades are refused with 503, and `/healthz` still answers because
/// sessions never take the last connections.
#[tokio::test]
async fn sessions_never_take_the_last_connections() {
    let server = Server::start(rhizome_signaling::Config {
        max_connections: 32,
        max_sessions: 1000,
        ..fast_config()
    })
    .await;
    let mut sessions = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        match tokio_tungstenite::connect_async(server.url()).await {
            Ok((ws, _)) => sessions.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 503);
                refused += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    eprintln!("{} sessions open, {refused} refused", sessions.len());
    assert_eq!(sessions.len(), 30, "32 connections less a reserve of 2");
    let (status, _, body) = http_get(server.addr, "/healthz").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["sessions"], 30);
    drop(sessions);
    assert_eq!(wait_sessions(server.addr, 0, WAIT2).await, Some(0));
    server.stop().await;
}

/// A client that pipelines thousands of requests and reads no response: hyper stops
/// reading when its responses cannot be written, so the server holds a bounded amount.
#[tokio::test]
async fn pipelined_requests_from_a_non_reader_stay_bounded() {
    let server = Child::start(1024, &[("RHIZOME_HEADER_TIMEOUT", "1s")]);
    let (rss0, fds0) = (server.rss_kib(), server.fds());
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
    let start = Instant::now();
    let mut sent = 0usize;
    while start.elapsed() < Duration::from_secs(2) {
        match tokio::time::timeout(Duration::from_millis(200), s.write_all(&req)).await {
            Ok(Ok(())) => sent += 1000,
            Ok(Err(_)) => break,
            Err(_) => {} // back-pressure
        }
    }
    let peak = server.rss_kib();
    drop(s);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss1, fds1) = (server.rss_kib(), server.fds());
    eprintln!(
        "pipelining: ~{sent} requests written without reading; server RSS {rss0} KiB \
         before, {peak} KiB at the end, {rss1} KiB after; fds {fds0} -> {fds1}"
    );
    assert!(peak < rss0 + 8 * 1024, "RSS {rss0} -> {peak} KiB");
    assert!(fds1 <= fds0);
}

/// A request whose body never comes (a huge Content-Length, a few bytes sent) does not
/// hold its connection: it is answered and closed.
#[tokio::test]
async fn a_body_that_never_comes_does_not_hold_the_connection() {
    let server = Server::start(rhizome_signaling::Config {
        header_timeout: Duration::from_secs(1),
        ..fast_config()
    })
    .await;
    for path in ["/healthz", "/ws", "/metrics", "/nothing"] {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let req =
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\nab");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "{path}: the server closed the connection (answer: {:?})",
            String::from_utf8_lossy(&buf[..buf.len().min(40)])
        );
    }
    server.stop().await;
}
