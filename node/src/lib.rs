//! rhizome-node: a native rhizome peer, for always-on seeds, bots and bridges.
//!
//! A Rust process joins the same rooms as the browsers, through the same signaling server
//! and the same WebRTC data channels (webrtc-rs, `rhizome::transport::native`), and runs
//! the very same overlay driver as a browser page ([`rhizome::node::Node`]). It prints one
//! line per thing that happens and broadcasts each line it reads — or, for a line
//! `@<peer id> <text>`, sends `<text>` to that one peer as a direct message.
//!
//! The library half holds everything but the process plumbing, so tests drive it without
//! spawning a binary: [`Args`] (the command line) and [`run`] (join, report, broadcast,
//! leave). Like every native node, [`run`] must be called inside a `tokio::task::LocalSet`.
//!
//! Output on stdout, one event per line, stable and machine-readable:
//!
//! ```text
//! peer <our id>
//! neighbor-up <id>
//! neighbor-down <id>
//! broadcast <origin id> <text>
//! message <sender id> <text>
//! delivered <peer id> <hops>
//! ```
//!
//! `message` is a direct message for us; `delivered` says a direct message we sent was
//! acknowledged (a failed one is reported on stderr with its code).
//!
//! The input line `/links` is not broadcast: it prints one line per connection and an end
//! marker, `<pair>` being the selected ICE candidate pair's types (`host/srflx`,
//! `relay/srflx`, ...; `-` until known) and `<rtt>` the round-trip time in ms (`-` until
//! measured). Both are re-read in the background at most every 2 s, so ask again for
//! fresh values:
//!
//! ```text
//! link <peer id> <active|dht|other> <open|opening> <pair> <rtt>
//! links-end
//! ```
//!
//! `<text>` is the payload as UTF-8 (invalid bytes replaced), with `\`, newlines and
//! carriage returns escaped as `\\`, `\n` and `\r` so each broadcast stays on one line.
//! Errors the node survives go to stderr.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;

use clap::{Parser, ValueEnum};
use futures_util::stream::FuturesUnordered;
use futures_util::{Stream, StreamExt};
use rhizome::id::PeerId;
use rhizome::id::{IdError, Identity};
use rhizome::node::{Node, NodeConfig, NodeEvent};
use rhizome::overlay::dht::Mode;
use rhizome::transport::native::{MdnsMode, NativeConfig};

pub use rhizome::node::NodeError as JoinError;

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

    /// The room's secret (JS `join({ secret })`): only peers that know it become
    /// neighbours, and traffic is encrypted under keys derived from it. (`--secret` is
    /// the identity's key.)
    #[arg(long, env = "RHIZOME_ROOM_SECRET", hide_env_values = true)]
    pub room_secret: Option<String>,

    /// How long to wait for the server to welcome us, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub join_timeout_ms: u32,

    /// Stay up as an always-on member: do not leave when stdin ends (only on Ctrl-C or
    /// SIGTERM).
    #[arg(long)]
    pub seed: bool,

    /// UDP address for WebRTC to bind; repeat for several. Default 0.0.0.0:0: every
    /// non-loopback interface, ephemeral ports.
    #[arg(long = "bind")]
    pub bind: Vec<SocketAddr>,

    /// What to do with browsers' mDNS (`….local`) host candidates.
    #[arg(long, value_enum, default_value_t = Mdns::Resolve)]
    pub mdns: Mdns,

    /// Overlay mode: `hybrid` (broadcasts, and `@peer` messages reach anyone),
    /// `unstructured` (broadcasts; `@peer` reaches neighbours only; fewest connections)
    /// or `structured` (`@peer` messages only, no broadcasts of our own).
    #[arg(long, value_enum, default_value_t = OverlayMode::Hybrid)]
    pub mode: OverlayMode,
}

/// The `--mode` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OverlayMode {
    /// Broadcasts and the DHT.
    Hybrid,
    /// Broadcasts only.
    Unstructured,
    /// The DHT only.
    Structured,
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

    /// The node's configuration: servers, room, identity and transport settings.
    pub fn node_config(&self) -> Result<NodeConfig, NodeError> {
        let identity = match &self.secret {
            Some(hex) => Identity::from_secret_hex(hex)?,
            None => Identity::generate()?,
        };
        let mut config = NodeConfig::new(self.signaling.clone(), self.room.clone());
        config.identity = Some(identity);
        config.secret = self.room_secret.clone();
        config.join_timeout_ms = self.join_timeout_ms;
        config.native = self.native_config();
        config.overlay.mode = match self.mode {
            OverlayMode::Hybrid => Mode::Hybrid,
            OverlayMode::Unstructured => Mode::Unstructured,
            OverlayMode::Structured => Mode::Structured,
        };
        Ok(config)
    }
}

/// Why the node could not run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The secret key given is not a valid key.
    #[error("bad secret key: {0}")]
    Secret(#[from] IdError),
    /// The node could not join (no signaling server let us in).
    #[error(transparent)]
    Join(#[from] JoinError),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// Joins the overlay and runs until `shutdown` completes, the node is told to leave, or
/// (without `--seed`) `lines` ends; then leaves gracefully. Each item of `lines` is
/// broadcast; events are written to `out` (see the crate docs for the format).
pub async fn run(
    args: &Args,
    lines: impl Stream<Item = String>,
    shutdown: impl Future<Output = ()>,
    out: &mut impl Write,
) -> Result<(), NodeError> {
    let (node, mut events) = Node::join(args.node_config()?).await?;
    writeln!(out, "peer {}", node.id())?;
    out.flush()?;
    let lines = lines.fuse();
    tokio::pin!(shutdown, lines);
    let mut reading = true;
    let mut sending = FuturesUnordered::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            line = lines.next(), if reading => match line {
                Some(line) if line.trim() == "/links" => {
                    for l in node.stats().links {
                        writeln!(
                            out,
                            "link {} {} {} {} {}",
                            l.peer,
                            l.kind,
                            if l.open { "open" } else { "opening" },
                            l.candidate_pair.as_deref().unwrap_or("-"),
                            l.rtt_ms.map_or("-".to_string(), |ms| format!("{ms:.1}")),
                        )?;
                    }
                    writeln!(out, "links-end")?;
                    out.flush()?;
                }
                Some(line) => match direct_line(&line) {
                    Some(Ok((to, text))) => {
                        let sent = node.send(to, text.as_bytes().to_vec());
                        sending.push(async move { (to, sent.await) });
                    }
                    Some(Err(why)) => eprintln!("rhizome-node: cannot send: {why}"),
                    None => {
                        if let Err(e) = node.broadcast(line.into_bytes()) {
                            eprintln!("rhizome-node: cannot broadcast: {e}");
                        }
                    }
                },
                None if args.seed => reading = false,
                None => break,
            },
            Some((to, result)) = sending.next(), if !sending.is_empty() => {
                match result {
                    Ok(hops) => writeln!(out, "delivered {to} {hops}")?,
                    Err(e) => eprintln!("rhizome-node: send to {to} failed: {}: {e}", e.code()),
                }
                out.flush()?;
            }
            event = events.next() => match event {
                Some(NodeEvent::Left) | None => return Ok(()),
                Some(event) => {
                    report(&event, out)?;
                    out.flush()?;
                }
            },
        }
    }
    node.leave().await;
    Ok(())
}

/// Writes one event: a stdout line for what a user or script follows, stderr for errors.
fn report(event: &NodeEvent, out: &mut impl Write) -> std::io::Result<()> {
    match event {
        NodeEvent::NeighborUp(p) => writeln!(out, "neighbor-up {p}"),
        NodeEvent::NeighborDown(p) => writeln!(out, "neighbor-down {p}"),
        NodeEvent::Broadcast { from, data, .. } => {
            writeln!(out, "broadcast {from} {}", one_line(data))
        }
        NodeEvent::Message { from, data, .. } => {
            writeln!(out, "message {from} {}", one_line(data))
        }
        NodeEvent::Error {
            code,
            message,
            peer,
        } => {
            match peer {
                Some(p) => eprintln!("rhizome-node: {code} ({p}): {message}"),
                None => eprintln!("rhizome-node: {code}: {message}"),
            }
            Ok(())
        }
        NodeEvent::IncompatiblePeer {
            peer,
            their_version,
            our_version,
        } => {
            eprintln!(
                "rhizome-node: incompatible-peer ({peer}): speaks wire version \
                 {their_version}, this build speaks {our_version}; disconnected"
            );
            Ok(())
        }
        // No request API on the command line: a request to this node times out.
        NodeEvent::Request { .. } | NodeEvent::TopologyChanged | NodeEvent::Left => Ok(()),
    }
}

/// A line `@<peer id> <text>`: a direct message for that peer (`None` for any other
/// line, which is broadcast).
pub fn direct_line(line: &str) -> Option<Result<(PeerId, &str), String>> {
    let rest = line.strip_prefix('@')?;
    let (id, text) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(
        id.parse::<PeerId>()
            .map(|to| (to, text))
            .map_err(|e| format!("{id:?} is not a peer id: {e}")),
    )
}

/// A payload as one line of text: lossy UTF-8 with `\`, `\n` and `\r` escaped.
pub fn one_line(data: &[u8]) -> String {
    String::from_utf8_lossy(data)
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}
