//! What the signaling benchmarks (`bench`, `cluster_bench`) share: a rhizome client's
//! join, reading JSON frames, and a server process's CPU time and memory from /proc.

use std::process::Command;

use futures_util::{SinkExt, StreamExt};
use rhizome::id::Identity;
use rhizome::signal::{sign_join_proof, ClientMsg, ServerMsg};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to `ws://{addr}/ws` (with `config`, or tungstenite's defaults), proves a fresh
/// identity and joins `room`. Returns the session and its peer id (hex), or `None` on any
/// failure.
pub async fn join_rhizome(
    addr: &str,
    room: &str,
    config: Option<WebSocketConfig>,
) -> Option<(Ws, String)> {
    let url = format!("ws://{addr}/ws");
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, config, true)
        .await
        .ok()?;
    let nonce = match next_json::<ServerMsg>(&mut ws).await? {
        ServerMsg::Hello { nonce, .. } => nonce,
        _ => return None,
    };
    let identity = Identity::generate().ok()?;
    let join = ClientMsg::Join {
        room: room.into(),
        peer: identity.peer_id(),
        proof: sign_join_proof(&identity, &nonce, room),
    };
    ws.send(Message::text(serde_json::to_string(&join).ok()?))
        .await
        .ok()?;
    match next_json::<ServerMsg>(&mut ws).await? {
        ServerMsg::Welcome { .. } => Some((ws, identity.peer_id().to_string())),
        _ => None,
    }
}

/// The next text frame, parsed; `None` once the session closes or a frame does not parse.
pub async fn next_json<T: serde::de::DeserializeOwned>(ws: &mut Ws) -> Option<T> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// User + system CPU seconds a process has used (from /proc/PID/stat).
pub fn cpu_secs(pid: u32) -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / ticks
}

/// Resident memory of a process in KiB (VmRSS from /proc/PID/status); 0 if unknown.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}
