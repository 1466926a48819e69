//! rhizome-node: a native rhizome peer, for always-on seeds, bots and bridges.
//!
//! A Rust process joins the same rooms as the browsers, through the same signaling server
//! and the same WebRTC data channels (webrtc-rs, `rhizome::transport::native`). Today it
//! joins a room and reports who it is and whom the server introduced it to; the overlay
//! driver that turns those introductions into neighbours comes with the node driver.
//!
//! With `--links` it also accepts WebRTC connections and echoes what arrives
//! ([`links`]), so browsers and other native peers can already reach it.
//!
//! The library half holds everything but the process plumbing, so tests drive it without
//! spawning a binary: [`Args`] (the command line), [`join`] and [`Joined::report`].

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use rhizome::id::{IdError, Identity, PeerId};
use rhizome::transport::native::{MdnsMode, NativeConfig};
use rhizome::transport::native_signaling::{SignalingClient, SignalingError};

pub mod links;

/// How often a node pings the signaling server. The server closes sessions silent for
/// its idle timeout (60 s by default); browsers ping every 20 s too.
pub const SERVER_PING: Duration = Duration::from_secs(20);

/// Command line of `rhizome-node`.
#[derive(Debug, Clone, Parser)]
#[command(name = "rhizome-node", version)]
pub struct Args {
    /// Signaling server WebSocket URL; repeat to give fallbacks, tried in order.
    #[arg(
        long,
        env = "RHIZOME_SIGNALING",
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    pub signaling: Vec<String>,

    /// Room to join: peers in the same room form one overlay.
    #[arg(long, env = "RHIZOME_ROOM", default_value = "demo")]
    pub room: String,

    /// Secret key as 64 hex digits, to keep one peer id across runs (default: a fresh one).
    #[arg(long, env = "RHIZOME_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// How long to wait for the server to welcome us, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub join_timeout_ms: u32,

    /// Accept WebRTC connections from peers that signal us and echo their messages (a
    /// stand-in until the overlay runs natively).
    #[arg(long)]
    pub links: bool,

    /// With --links: also offer a connection to every member we were introduced to.
    #[arg(long, requires = "links")]
    pub dial: bool,

    /// UDP address for WebRTC to bind; repeat for several. Default 0.0.0.0:0: every
    /// non-loopback interface, ephemeral ports.
    #[arg(long = "bind")]
    pub bind: Vec<SocketAddr>,

    /// What to do with browsers' mDNS (`….local`) host candidates.
    #[arg(long, value_enum, default_value_t = Mdns::Resolve)]
    pub mdns: Mdns,
}

/// The `--mdns` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mdns {
    /// Send no multicast; browsers reach us and we learn them as peer-reflexive candidates.
    Off,
    /// Resolve `.local` candidates with mDNS queries.
    Resolve,
}

impl Args {
    /// The transport settings these arguments ask for.
    pub fn native_config(&self) -> NativeConfig {
        let mut config = NativeConfig::default();
        if !self.bind.is_empty() {
            config.udp_addrs = self.bind.clone();
            config.include_loopback = self.bind.iter().any(|a| a.ip().is_loopback());
        }
        config.mdns = match self.mdns {
            Mdns::Off => MdnsMode::Disabled,
            Mdns::Resolve => MdnsMode::Resolve,
        };
        config
    }
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The secret key given is not a valid key.
    #[error("bad secret key: {0}")]
    Secret(#[from] IdError),
    /// No signaling server let us join.
    #[error(transparent)]
    Signaling(#[from] SignalingError),
    /// Writing the report failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// A node that has joined its room.
pub struct Joined {
    /// Our identity.
    pub identity: Identity,
    /// The session with the signaling server that let us in.
    pub signaling: SignalingClient,
    /// The members the server introduced us to (a random sample of the room).
    pub introduced: Vec<PeerId>,
}

impl Joined {
    /// Writes `peer <id>` and one `introduced <id>` line per member introduced to us,
    /// the stable, machine-readable part of the output.
    pub fn report(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "peer {}", self.identity.peer_id())?;
        for p in &self.introduced {
            writeln!(out, "introduced {p}")?;
        }
        out.flush()
    }
}

/// Loads or creates the identity and joins the room on the first server that answers.
pub async fn join(args: &Args) -> Result<Joined, NodeError> {
    let identity = match &args.secret {
        Some(hex) => Identity::from_secret_hex(hex)?,
        None => Identity::generate()?,
    };
    let (signaling, introduced) =
        SignalingClient::connect_any(&args.signaling, &identity, &args.room, args.join_timeout_ms)
            .await?;
    Ok(Joined {
        identity,
        signaling,
        introduced,
    })
}
