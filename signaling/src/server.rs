//! The HTTP side: routes, layers, and the serve loop with graceful shutdown.
//!
//! Routes: `/ws` (the signaling WebSocket), `/healthz`, `/metrics`, and optionally the
//! demo page at `/` and the wasm-pack output at `/pkg/`. Handlers stay small; per-request
//! limits (tracing, a request timeout) are tower layers. The WebSocket limits that need a
//! protocol answer (`error {code}` frames) live in [`crate::session`], because a browser
//! cannot read an HTTP error body from a failed WebSocket upgrade.
//!
//! The accept loop is the server's own (not `axum::serve`), because every connection
//! needs limits before it is a session: a cap on open connections (see
//! [`crate::connections`]), and HTTP/1.1 served by hyper with a header-read timeout and a
//! bound on the request head, so a client that never finishes its request cannot hold a
//! descriptor for long. HTTP/2 is not served (browsers only speak it over TLS, which a
//! reverse proxy in front of this server terminates).
//!
//! Connections and sessions outlive any single request, so the server tracks them
//! itself: on shutdown it stops accepting, tells every session to say `shutting-down`
//! and close, lets plain HTTP connections finish their request, and waits for all of
//! them up to `shutdown_grace`. Whatever is still open then is dropped: shutdown ends
//! within the grace period whatever the clients do.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::services::ServeDir;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::{debug, info, warn};

use crate::cluster::{Cluster, ClusterError};
use crate::config::Config;
use crate::connections::{connection_cap, Conn, Connections};
use crate::rooms::{Rooms, SessionId};
use crate::{session, telemetry};

/// Time limit on a plain HTTP request (static files, health, metrics).
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of the read buffer of each WebSocket. It is allocated (and zero-filled) for
/// every session, and idle sessions dominate, so it is small; larger frames grow it as
/// needed, and 2 KiB still takes several typical signals (300-500 bytes) per read.
const WS_READ_BUFFER: usize = 2048;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A directory to serve does not exist.
    #[error("{flag} {path:?} is not a directory")]
    NotADirectory {
        /// The flag that named it.
        flag: &'static str,
        /// The path given.
        path: std::path::PathBuf,
    },
    /// Accepting or serving connections failed.
    #[error("serving failed: {0}")]
    Io(#[from] std::io::Error),
    /// `--cluster` names a Redis that does not answer (and `--cluster-optional` is off).
    #[error("{0}; refusing to start (pass --cluster-optional to serve alone until it answers)")]
    Cluster(#[from] ClusterError),
}

/// Bytes of relayed frames gathered before a write (see `Session::send_relayed`); single
/// replies are flushed at once anyway. Nothing is allocated until something is written.
const WS_WRITE_BATCH: usize = 8192;

/// Largest write buffer of a WebSocket beyond the batch size: one frame of the hard size
/// limit and some room (tungstenite refuses to buffer more, so a client that does not
/// read cannot make the server hold more than this for it, pongs included).
fn ws_max_write_buffer(config: &Config) -> usize {
    config
        .hard_frame_bytes()
        .saturating_add(WS_WRITE_BATCH + 4096)
}

/// Pause after a failed accept (e.g. out of descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Accept-queue length asked of the kernel (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener for [`serve`] with a deep accept queue.
///
/// The standard library (and tokio) listen with a backlog of 128; a burst of newcomers
/// (say, a page with many readers reloading at once) overflows it, and the kernel drops
/// their SYNs, which clients retry only after a second. `addr` may be a host name.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        if let Err(e) = socket.bind(a) {
            last = Some(e);
            continue;
        }
        match socket.listen(LISTEN_BACKLOG) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr} resolves to no address"),
        )
    }))
}

/// State shared by every handler and session of one server.
pub(crate) struct Shared {
    pub config: Config,
    pub rooms: Arc<Rooms>,
    /// Present with `--cluster`.
    pub cluster: Option<Arc<Cluster>>,
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown grace has run out: whatever is still open is dropped.
    pub force: CancellationToken,
    /// Connection tasks and session tasks.
    pub tasks: TaskTracker,
    pub conns: Connections,
    slots: Arc<Semaphore>,
    /// `max_sessions`, or less if the connection cap is lower.
    session_cap: usize,
    next_id: AtomicU64,
}

impl Shared {
    fn new(config: Config, cluster: Option<Arc<Cluster>>) -> Self {
        let serves_files = config.static_dir.is_some() || config.pkg_dir.is_some();
        let cap = connection_cap(config.max_connections, serves_files);
        // Sessions never take the last connections: plain HTTP (health checks, the demo
        // page) always has room, and idle HTTP connections can always be evicted.
        let session_cap = config
            .max_sessions
            .min(cap.saturating_sub((cap / 16).max(1)))
            .clamp(1, Semaphore::MAX_PERMITS);
        Shared {
            conns: Connections::new(cap),
            force: CancellationToken::new(),
            session_cap,
            rooms: Arc::new(Rooms::new(
                config.max_rooms,
                config.max_peers_per_room,
                config.sample_size,
            )),
            cluster,
            slots: Arc::new(Semaphore::new(session_cap)),
            config,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            next_id: AtomicU64::new(1),
        }
    }

    pub fn next_session_id(&self) -> SessionId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Serves the signaling protocol (and the configured static directories) on `listener`
/// until `shutdown` completes, then closes every session with `shutting-down` and
/// returns once they are gone (or `shutdown_grace` has passed).
pub async fn serve<F>(config: Config, listener: TcpListener, shutdown: F) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve_ready(config, listener, shutdown, || {}).await
}

/// [`serve`], calling `ready` once the server is about to accept connections: after the
/// directories were checked and, with `--cluster`, Redis answered (or was found missing
/// with `--cluster-optional`). The binary prints its "listening" line there, so a
/// server that refuses to start never announces itself.
pub async fn serve_ready<F, R>(
    config: Config,
    listener: TcpListener,
    shutdown: F,
    ready: R,
) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send + 'static,
    R: FnOnce(),
{
    for (flag, dir) in [
        ("--static-dir", &config.static_dir),
        ("--pkg-dir", &config.pkg_dir),
    ] {
        if let Some(path) = dir {
            if !path.is_dir() {
                return Err(ServeError::NotADirectory {
                    flag,
                    path: path.clone(),
                });
            }
        }
    }
    telemetry::handle();
    let cluster = match &config.cluster {
        None => None,
        Some(url) => {
            let cluster = Cluster::new(
                url,
                config.cluster_ttl,
                config.sample_size,
                config.max_frame_bytes,
            )?;
            match cluster.probe().await {
                Ok(()) => {}
                Err(e) if config.cluster_optional => {
                    warn!("{e}; serving alone (degraded) until it answers");
                }
                Err(e) => return Err(e.into()),
            }
            Some(cluster)
        }
    };
    let grace = config.shutdown_grace;
    let shared = Arc::new(Shared::new(config, cluster));
    let cluster_stop = CancellationToken::new();
    if let Some(cluster) = &shared.cluster {
        cluster.start(shared.rooms.clone(), cluster_stop.clone());
        // Give the first heartbeat and the subscription a moment, so the first
        // sessions already get samples of the whole room.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !cluster.is_healthy() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    ready();
    let app = router(shared.clone());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of descriptors or memory, or a connection reset before it was
                    // accepted: none of these stops the server.
                    debug!("accept failed: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Some(conn) = shared.conns.admit().await else {
            telemetry::connection_dropped("full");
            debug!("connection cap reached and every connection busy; closing a new one");
            continue;
        };
        shared
            .tasks
            .spawn(connection(shared.clone(), app.clone(), tcp, conn));
    }
    drop(listener);
    info!("shutting down");
    shared.shutdown.cancel();
    shared.tasks.close();
    if timeout(grace, shared.tasks.wait()).await.is_err() {
        warn!(
            tasks = shared.tasks.len(),
            "connections still open after the shutdown grace; dropping them"
        );
        shared.force.cancel();
        let _ = timeout(Duration::from_millis(200), shared.tasks.wait()).await;
    }
    // The cluster's loop withdraws this server's members from Redis as it ends.
    cluster_stop.cancel();
    if let Some(cluster) = &shared.cluster {
        cluster.stopped().await;
    }
    Ok(())
}

/// Serves one TCP connection: HTTP/1.1 requests until it closes, is evicted, or is
/// upgraded to a WebSocket (the session then runs in its own task).
async fn connection(shared: Arc<Shared>, app: Router, tcp: TcpStream, conn: Arc<Conn>) {
    // Signals are small frames that someone waits for: send them at once (no Nagle).
    if let Err(e) = tcp.set_nodelay(true) {
        debug!("could not set TCP_NODELAY: {e}");
    }
    let app = TowerToHyperService::new(app);
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |mut req: Request<Incoming>| {
            // A connection handling a request is not evicted; the handler of `/ws` takes
            // the connection's permit for the session.
            let busy = conn.busy();
            req.extensions_mut().insert(conn.clone());
            let response = app.call(req);
            async move {
                let response = response.await;
                drop(busy);
                response
            }
        })
    };
    let config = &shared.config;
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_buf_size(config.max_header_bytes.max(MIN_HEADER_BYTES));
    let served = http
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    let mut served = std::pin::pin!(served);
    tokio::select! {
        result = served.as_mut() => {
            if let Err(e) = result {
                debug!("connection ended: {e}");
            }
        }
        () = conn.evict.cancelled() => debug!("connection evicted to make room"),
        () = shared.shutdown.cancelled() => {
            // Let a request in progress finish; close idle connections at once.
            served.as_mut().graceful_shutdown();
            tokio::select! {
                _ = served.as_mut() => {}
                () = conn.evict.cancelled() => {}
                () = shared.force.cancelled() => {}
            }
        }
    }
    shared.conns.remove(&conn);
}

/// hyper's smallest allowed read buffer.
const MIN_HEADER_BYTES: usize = 8192;

fn router(shared: Arc<Shared>) -> Router {
    let mut app = Router::new()
        .route("/ws", get(websocket))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(shared.clone());
    if let Some(pkg) = &shared.config.pkg_dir {
        app = app.nest_service("/pkg", ServeDir::new(pkg));
    }
    if let Some(dir) = &shared.config.static_dir {
        app = app.fallback_service(ServeDir::new(dir).append_index_html_on_directories(true));
    }
    app.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        HTTP_TIMEOUT,
    ))
    .layer(TraceLayer::new_for_http())
}

async fn websocket(
    State(shared): State<Arc<Shared>>,
    conn: Option<Extension<Arc<Conn>>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Ok(slot) = shared.slots.clone().try_acquire_owned() else {
        telemetry::session_refused();
        return (StatusCode::SERVICE_UNAVAILABLE, "server full\n").into_response();
    };
    // The session keeps the connection's place under the connection cap, and the
    // connection, about to be upgraded, is no longer one to evict.
    let conn_permit = conn.and_then(|Extension(c)| {
        shared.conns.remove(&c);
        c.take_permit()
    });
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("(not text)"));
    let origin_ok = shared.config.origin_allowed(origin);
    let hard = shared.config.hard_frame_bytes();
    let tasks = shared.tasks.clone();
    upgrade
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BATCH)
        .max_write_buffer_size(ws_max_write_buffer(&shared.config))
        .max_message_size(hard)
        .max_frame_size(hard)
        .on_failed_upgrade(|e| debug!("websocket upgrade failed: {e}"))
        .on_upgrade(move |ws| {
            tasks.track_future(session::run(ws, shared, origin_ok, (slot, conn_permit)))
        })
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let (rooms, members) = shared.rooms.counts();
    let sessions = shared.session_cap - shared.slots.available_permits();
    let mut body = serde_json::json!({
        "status": "ok",
        "connections": shared.conns.count(),
        "sessions": sessions,
        "rooms": rooms,
        "members": members,
    });
    if let Some(cluster) = &shared.cluster {
        let healthy = cluster.is_healthy();
        if !healthy {
            body["status"] = "degraded".into();
        }
        body["cluster"] = serde_json::json!({
            "server": cluster.id(),
            "state": if healthy { "ok" } else { "degraded" },
            "servers": cluster.servers(),
        });
    }
    Json(body)
}

async fn metrics() -> Response {
    match telemetry::handle() {
        Some(handle) => {
            handle.run_upkeep();
            (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                handle.render(),
            )
                .into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "another metrics recorder is installed in this process\n",
        )
            .into_response(),
    }
}
