//! Test harness: an in-process server on 127.0.0.1 port 0 and a small WebSocket client
//! that speaks the protocol through the shared `rhizome::signal` types.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rhizome::id::{Identity, PeerId};
use rhizome::signal::{sign_join_proof, ClientMsg, ErrorCode, ServerMsg};
use rhizome_signaling::{serve, Config};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for any one expected frame.
pub const WAIT: Duration = Duration::from_secs(5);

/// A configuration with short timeouts, so tests run fast.
pub fn fast_config() -> Config {
    Config {
        join_deadline: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(2),
        // Clients in tests often stop reading before the server stops; do not wait long
        // for their close replies.
        shutdown_grace: Duration::from_millis(300),
        ..Config::default()
    }
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), rhizome_signaling::ServeError>>,
}

impl Server {
    pub async fn start(config: Config) -> Server {
        let listener = rhizome_signaling::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(config, listener, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Connects a raw client and reads its hello.
    pub async fn connect(&self) -> Client {
        Client::connect(&self.url(), None).await
    }

    /// Connects, joins `room` with a fresh identity and returns the client and its welcome.
    pub async fn join(&self, room: &str) -> (Client, Vec<PeerId>) {
        let mut c = self.connect().await;
        let peers = c.join(room).await;
        (c, peers)
    }

    /// Stops the server and waits for it to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("server stops in time")
            .expect("server task did not panic")
            .expect("server returns Ok");
    }

    /// Whether the server task is still running (it has not panicked or returned).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

/// One WebSocket client.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub identity: Identity,
    pub nonce: String,
}

impl Client {
    /// Opens the WebSocket without reading anything.
    pub async fn connect_raw(url: &str, origin: Option<&str>) -> Client {
        let mut req = url.into_client_request().unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("connects in time")
            .expect("the upgrade succeeds");
        Client {
            ws,
            identity: Identity::generate().unwrap(),
            nonce: String::new(),
        }
    }

    /// Opens the WebSocket and reads the hello.
    pub async fn connect(url: &str, origin: Option<&str>) -> Client {
        let mut c = Self::connect_raw(url, origin).await;
        match c.recv().await {
            ServerMsg::Hello { nonce, version } => {
                assert_eq!(version, rhizome::signal::PROTOCOL_VERSION);
                c.nonce = nonce;
            }
            other => panic!("expected hello, got {other:?}"),
        }
        c
    }

    pub fn peer(&self) -> PeerId {
        self.identity.peer_id()
    }

    pub fn join_msg(&self, room: &str) -> ClientMsg {
        ClientMsg::Join {
            room: room.into(),
            peer: self.peer(),
            proof: sign_join_proof(&self.identity, &self.nonce, room),
        }
    }

    /// Joins `room` and returns the welcome sample.
    pub async fn join(&mut self, room: &str) -> Vec<PeerId> {
        let msg = self.join_msg(room);
        self.send(&msg).await;
        match self.recv().await {
            ServerMsg::Welcome { peers, .. } => peers,
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub async fn send(&mut self, msg: &ClientMsg) {
        self.send_text(&serde_json::to_string(msg).unwrap()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub async fn signal(&mut self, to: PeerId, envelope: serde_json::Value) {
        self.send(&ClientMsg::Signal { to, envelope }).await;
    }

    /// The next protocol message (skipping control frames); panics on close or timeout.
    pub async fn recv(&mut self) -> ServerMsg {
        match self.next_event().await {
            Event::Msg(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Expects an error frame with `code`; returns its message.
    pub async fn expect_error(&mut self, code: ErrorCode) -> String {
        self.expect_error_about(code).await.0
    }

    /// Expects an error frame with `code`; returns its message and the peer it names.
    pub async fn expect_error_about(&mut self, code: ErrorCode) -> (String, Option<PeerId>) {
        match self.recv().await {
            ServerMsg::Error {
                code: c,
                message,
                peer,
            } if c == code => (message, peer),
            other => panic!("expected error {code}, got {other:?}"),
        }
    }

    /// Expects the connection to be closed with `close` and reason `code`.
    pub async fn expect_close(&mut self, code: ErrorCode, close: u16) {
        match self.next_event().await {
            Event::Closed(Some((c, reason))) => {
                assert_eq!(c, close, "close code");
                assert_eq!(reason, code.as_str(), "close reason");
            }
            other => panic!("expected close {close}, got {other:?}"),
        }
    }

    /// Expects the error frame `code`, then the close frame that goes with it.
    pub async fn expect_error_and_close(&mut self, code: ErrorCode, close: u16) {
        self.expect_error(code).await;
        self.expect_close(code, close).await;
    }

    /// Sends a ping and waits for the pong: proves the session is alive and everything
    /// sent before has been processed.
    pub async fn ping(&mut self) {
        self.send(&ClientMsg::Ping).await;
        match self.recv().await {
            ServerMsg::Pong => {}
            other => panic!("expected pong, got {other:?}"),
        }
    }

    pub async fn next_event(&mut self) -> Event {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame arrives in time");
            match next {
                None => return Event::Closed(None),
                Some(Err(e)) => return Event::Broken(e.to_string()),
                Some(Ok(Message::Text(t))) => {
                    return Event::Msg(serde_json::from_str(t.as_str()).expect("valid server JSON"))
                }
                Some(Ok(Message::Close(frame))) => {
                    return Event::Closed(
                        frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())),
                    )
                }
                Some(Ok(_)) => continue,
            }
        }
    }
}

/// What a client observed.
#[derive(Debug)]
pub enum Event {
    Msg(ServerMsg),
    Closed(Option<(u16, String)>),
    Broken(String),
}

/// Converts a tungstenite close code (for readability in assertions).
pub fn code(c: CloseCode) -> u16 {
    u16::from(c)
}

/// A minimal HTTP/1.1 GET (no client crate needed): returns status, headers (lowercase
/// names) and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut body = buf[split + 4..].to_vec();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

/// The value of header `name` in a response.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
