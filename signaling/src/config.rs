//! Every knob of the server in one place, with its default and its flag.
//!
//! The signaling server is exposed to the open internet and trusts nobody, so each
//! resource a client can make it spend has a limit here: connections, time and bytes to
//! send a request head, frame size, rooms, room size, sessions, message rate, time to
//! join, time idle, errors tolerated, and queued relays.
//! The same struct is the library's configuration ([`Config::default`]) and the
//! binary's command line (`clap`, every flag also readable from a `RHIZOME_*` variable),
//! so the two can never disagree about a default.

use std::path::PathBuf;
use std::time::Duration;

/// Server configuration. [`Config::default`] gives the documented defaults; the binary
/// fills it from flags and environment variables.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct Config {
    /// Largest text frame a client may send, in bytes. A larger frame is refused with
    /// `frame-too-large` and the session survives; one beyond 4x this (the hard limit) closes
    /// the session with close code 1009.
    #[arg(long, env = "RHIZOME_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,

    /// Most rooms that may exist at once; a join that would create one more gets `too-many-rooms`.
    #[arg(long, env = "RHIZOME_MAX_ROOMS", default_value_t = 10_000)]
    pub max_rooms: usize,

    /// Most members of one room; a newcomer beyond it gets `room-full`.
    #[arg(long, env = "RHIZOME_MAX_PEERS_PER_ROOM", default_value_t = 10_000)]
    pub max_peers_per_room: usize,

    /// Most open WebSocket sessions; beyond it the upgrade is refused with HTTP 503, so a
    /// client moves on to its next server URL.
    #[arg(long, env = "RHIZOME_MAX_SESSIONS", default_value_t = 50_000)]
    pub max_sessions: usize,

    /// How many other members a `welcome` names at most (a random sample of the room).
    #[arg(long, env = "RHIZOME_SAMPLE_SIZE", default_value_t = 8)]
    pub sample_size: usize,

    /// Token bucket size per session: how many messages a client may send in a burst
    /// (WebSocket ping and pong frames take tokens too).
    #[arg(long, env = "RHIZOME_RATE_BURST", default_value_t = 50)]
    pub rate_burst: u32,

    /// Token bucket refill per session, in messages per second (sustained rate).
    #[arg(long, env = "RHIZOME_RATE_PER_SEC", default_value_t = 20.0)]
    pub rate_per_sec: f64,

    /// Time a new session has to join a room before it is closed with `join-timeout`
    /// (e.g. "10s", "500ms").
    #[arg(long, env = "RHIZOME_JOIN_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub join_deadline: Duration,

    /// Time without any message from the client (a JSON `ping` counts, WebSocket ping
    /// frames do not) before the session is closed with `idle-timeout`.
    #[arg(long, env = "RHIZOME_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Protocol errors a session may cause (malformed frames, bad proofs, rate limiting, ...);
    /// the next one closes it with `too-many-errors`.
    #[arg(long, env = "RHIZOME_MAX_ERRORS", default_value_t = 10)]
    pub max_errors: u32,

    /// Relayed signals queued for one session before further ones are refused to their
    /// senders with `peer-busy` (protects everyone from a client that stops reading).
    #[arg(long, env = "RHIZOME_SEND_QUEUE", default_value_t = 64)]
    pub send_queue: usize,

    /// Time one write to a client may take; a client that does not read for this long is
    /// disconnected.
    #[arg(long, env = "RHIZOME_WRITE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,

    /// Most open TCP connections, WebSocket sessions and plain HTTP connections together.
    /// Never more than the open-files limit allows (less a reserve; half of it when static
    /// files are served). At the cap, the oldest connection that is doing nothing (an
    /// unfinished request head, an idle keep-alive) is dropped to make room; if every one
    /// is busy, the new connection is closed at once.
    #[arg(long, env = "RHIZOME_MAX_CONNECTIONS", default_value_t = 60_000)]
    pub max_connections: usize,

    /// Time a client has to send a complete HTTP request head, from the moment it
    /// connects (or its previous response on a kept-alive connection); then the
    /// connection is closed.
    #[arg(long, env = "RHIZOME_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// Largest HTTP request head (request line and headers), in bytes; a larger one is
    /// refused with 431. At least 8192.
    #[arg(long, env = "RHIZOME_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// On shutdown, time given to sessions to exchange close frames and to requests to
    /// finish; then every connection still open is dropped and the server returns.
    #[arg(long, env = "RHIZOME_SHUTDOWN_GRACE", default_value = "3s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Origins allowed to open a WebSocket (e.g. `https://app.example`); repeat the flag
    /// or separate with commas. Empty: any origin. Requests without an Origin header
    /// (non-browser clients) are always allowed.
    #[arg(
        long = "allow-origin",
        env = "RHIZOME_ALLOW_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Directory served at `/` (with index.html for directories), e.g. the demo page.
    #[arg(long, env = "RHIZOME_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// Directory served at `/pkg/`: the wasm-pack output (`.wasm` as application/wasm).
    #[arg(long, env = "RHIZOME_PKG_DIR")]
    pub pkg_dir: Option<PathBuf>,

    /// Run as one of several servers sharing rooms through this Redis (e.g.
    /// `redis://127.0.0.1:6379`): samples cover the whole room, signals reach members
    /// held by other servers, a replaced session closes wherever it is. Without it the
    /// server is alone and needs nothing else.
    #[arg(long, env = "RHIZOME_CLUSTER", value_name = "REDIS_URL")]
    pub cluster: Option<String>,

    /// Start even if the cluster's Redis is unreachable (serving alone, degraded, and
    /// joining once it answers). Without it the server refuses to start.
    #[arg(long, env = "RHIZOME_CLUSTER_OPTIONAL")]
    pub cluster_optional: bool,

    /// How long a server's members stay visible to the others after its last heartbeat
    /// (it beats every quarter of this): a crashed server's members vanish within it.
    #[arg(long, env = "RHIZOME_CLUSTER_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub cluster_ttl: Duration,

    /// STUN server URL offered to clients in `welcome` (e.g. `stun:turn.example:3478`);
    /// repeat the flag or separate with commas.
    #[arg(long = "stun", env = "RHIZOME_STUN", value_delimiter = ',')]
    pub stun: Vec<String>,

    /// TURN server URL offered to clients with short-lived credentials (e.g.
    /// `turn:turn.example:3478?transport=udp`); repeat the flag or separate with commas.
    /// Needs `--turn-secret`.
    #[arg(
        long = "turn",
        env = "RHIZOME_TURN",
        value_delimiter = ',',
        requires = "turn_secret"
    )]
    pub turn: Vec<String>,

    /// The secret shared with the TURN server (coturn's `static-auth-secret`), from
    /// which each client's credentials are derived. Never sent to a client nor logged.
    #[arg(long, env = "RHIZOME_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<TurnSecret>,

    /// Lifetime of the TURN credentials in a `welcome`; joined sessions get fresh ones
    /// (an `ice-servers` message) every half of it (e.g. "1h", "10m").
    #[arg(long, env = "RHIZOME_TURN_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub turn_ttl: Duration,
}

/// The TURN shared secret. Its `Debug` form is redacted, so a logged [`Config`] does not
/// show it.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnSecret(String);

impl TurnSecret {
    /// A secret from its text.
    pub fn new(secret: impl Into<String>) -> Self {
        TurnSecret(secret.into())
    }

    /// The secret's bytes, the HMAC key.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TurnSecret(<redacted>)")
    }
}

impl std::str::FromStr for TurnSecret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("the TURN secret is empty".into());
        }
        Ok(TurnSecret(s.to_string()))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_bytes: 64 * 1024,
            max_rooms: 10_000,
            max_peers_per_room: 10_000,
            max_sessions: 50_000,
            sample_size: 8,
            rate_burst: 50,
            rate_per_sec: 20.0,
            join_deadline: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_errors: 10,
            send_queue: 64,
            write_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(3),
            max_connections: 60_000,
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            allowed_origins: Vec::new(),
            static_dir: None,
            pkg_dir: None,
            cluster: None,
            cluster_optional: false,
            cluster_ttl: Duration::from_secs(10),
            stun: Vec::new(),
            turn: Vec::new(),
            turn_secret: None,
            turn_ttl: Duration::from_secs(3600),
        }
    }
}

impl Config {
    /// The hard frame limit: beyond it the WebSocket layer stops reading and the session
    /// is closed (1009), because the rest of such a frame cannot be skipped cheaply.
    pub fn hard_frame_bytes(&self) -> usize {
        self.max_frame_bytes.saturating_mul(4).max(1024)
    }

    /// Whether a WebSocket upgrade with this `Origin` header may proceed.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(_) if self.allowed_origins.is_empty() => true,
            Some(o) => {
                let o = o.trim_end_matches('/');
                self.allowed_origins
                    .iter()
                    .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(o))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn the_command_line_defaults_are_the_library_defaults() {
        let cli = Cli::try_parse_from(["rhizome-signaling"]).unwrap();
        assert_eq!(cli.config, Config::default());
    }

    #[test]
    fn ice_flags_parse_and_the_secret_is_redacted() {
        let cli = Cli::try_parse_from([
            "rhizome-signaling",
            "--stun",
            "stun:a:3478",
            "--turn",
            "turn:a:3478?transport=udp,turn:a:3478?transport=tcp",
            "--turn-secret",
            "s3cr3t-value",
            "--turn-ttl",
            "10m",
        ])
        .unwrap();
        assert_eq!(cli.config.stun, ["stun:a:3478"]);
        assert_eq!(cli.config.turn.len(), 2);
        assert_eq!(cli.config.turn_ttl, Duration::from_secs(600));
        let shown = format!("{:?}", cli.config);
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(shown.contains("redacted"));
        // TURN without a secret is refused: credentials could not be made.
        assert!(Cli::try_parse_from(["rhizome-signaling", "--turn", "turn:a"]).is_err());
        assert!(Cli::try_parse_from(["rhizome-signaling", "--turn-secret", ""]).is_err());
    }

    #[test]
    fn origins_are_compared_without_case_or_trailing_slash() {
        let c = Config {
            allowed_origins: vec!["https://App.example/".into()],
            ..Config::default()
        };
        assert!(c.origin_allowed(Some("https://app.example")));
        assert!(!c.origin_allowed(Some("https://evil.example")));
        assert!(c.origin_allowed(None));
        assert!(Config::default().origin_allowed(Some("https://any.example")));
    }
}
