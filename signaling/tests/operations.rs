//! The operator's side: health, metrics, static files, and the binary's command line
//! (the "listening" line other tools parse, and a clean exit on SIGTERM).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{fast_config, header, http_get, Server};
use rhizome::signal::{ErrorCode, CLOSE_GOING_AWAY};
use rhizome_signaling::Config;
use serde_json::json;

#[tokio::test]
async fn healthz_answers_ok_with_counts() {
    let server = Server::start(fast_config()).await;
    let (_a, _) = server.join("r").await;
    let (status, headers, body) = http_get(server.addr, "/healthz").await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type").unwrap().contains("json"));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["rooms"], 1);
    assert_eq!(v["members"], 1);
    assert_eq!(v["sessions"], 1);
    server.stop().await;
}

#[tokio::test]
async fn metrics_expose_sessions_rooms_joins_relays_and_errors_by_code() {
    let server = Server::start(fast_config()).await;
    let (mut a, _) = server.join("metrics-room").await;
    let (mut b, _) = server.join("metrics-room").await;
    a.signal(b.peer(), json!(1)).await;
    b.recv().await;
    a.send_text("garbage").await;
    a.expect_error(ErrorCode::BadRequest).await;
    let (status, headers, body) = http_get(server.addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8(body).unwrap();
    for name in [
        "rhizome_signaling_sessions",
        "rhizome_signaling_rooms",
        "rhizome_signaling_members",
        "rhizome_signaling_connections_total",
        "rhizome_signaling_joins_total",
        "rhizome_signaling_signals_relayed_total",
        "rhizome_signaling_errors_total{code=\"bad-request\"}",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    server.stop().await;
}

#[tokio::test]
async fn static_files_and_the_wasm_package_are_served_with_the_right_types() {
    let dir = std::env::temp_dir().join(format!("rhizome-signaling-static-{}", std::process::id()));
    let www = dir.join("www");
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(www.join("index.html"), "<h1>demo</h1>").unwrap();
    std::fs::write(pkg.join("rhizome_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(pkg.join("rhizome.js"), "export default 1;").unwrap();
    let server = Server::start(Config {
        static_dir: Some(www.clone()),
        pkg_dir: Some(pkg.clone()),
        ..fast_config()
    })
    .await;
    let (status, headers, body) = http_get(server.addr, "/").await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type")
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(body, b"<h1>demo</h1>");
    let (status, headers, body) = http_get(server.addr, "/pkg/rhizome_bg.wasm").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("application/wasm"));
    assert_eq!(body, b"\0asm\x01\0\0\0");
    let (status, headers, _) = http_get(server.addr, "/pkg/rhizome.js").await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type")
        .unwrap()
        .contains("javascript"));
    let (status, _, _) = http_get(server.addr, "/nope.txt").await;
    assert_eq!(status, 404);
    // The API routes still win over the static fallback.
    let (status, _, _) = http_get(server.addr, "/healthz").await;
    assert_eq!(status, 200);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_missing_static_directory_is_refused_at_start() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let result = rhizome_signaling::serve(
        Config {
            static_dir: Some("/definitely/not/here".into()),
            ..fast_config()
        },
        listener,
        async {},
    )
    .await;
    assert!(matches!(
        result,
        Err(rhizome_signaling::ServeError::NotADirectory { .. })
    ));
}

#[tokio::test]
async fn the_binary_prints_its_address_and_exits_cleanly_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rhizome-signaling"))
        .args(["--bind", "127.0.0.1:0", "--log", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let addr = line
        .trim()
        .strip_prefix("rhizome-signaling listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    assert_ne!(addr.port(), 0);
    let mut c = common::Client::connect(&format!("ws://{addr}/ws"), None).await;
    c.join("r").await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    c.expect_error_and_close(ErrorCode::ShuttingDown, CLOSE_GOING_AWAY)
        .await;
    let exit = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("the server did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}
