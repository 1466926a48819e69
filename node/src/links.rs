//! A stop-gap link manager: one [`NativeConnection`] per peer, set up through the
//! signaling server, with every message echoed back.
//!
//! It exists until the overlay driver runs natively, so that a native peer can already be
//! reached by browsers and by other native peers, and interop can be tried by hand (see
//! `rhizome-node --links`). It makes the same choices the browser driver does where they
//! meet on the wire (`src/node.rs`): each side seals its envelopes with an attempt id of
//! its own; a fresh offer with a new remote attempt on an open connection means the peer
//! restarted and replaces the connection; an offer from an unknown peer creates a
//! connection that answers it, other signals from unknown peers are leftovers and are
//! dropped; and with `dial` we offer to every member the server introduced us to.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rhizome::id::PeerId;
use rhizome::signal::{SignalPayload, SignedEnvelope};
use rhizome::transport::native::{NativeConfig, NativeConnection};
use rhizome::transport::native_signaling::SignalingEvent;
use rhizome::transport::{ConnEvent, ConnLimits};
use tokio::sync::mpsc;

use crate::{Joined, NodeError, SERVER_PING};

/// How the link manager behaves.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// Where connections bind and how they gather candidates.
    pub config: NativeConfig,
    /// Offer a connection to every member the server introduced us to.
    pub dial: bool,
    /// Interval of pings that keep the signaling session from idling out (default
    /// [`SERVER_PING`]).
    pub server_ping: Duration,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            config: NativeConfig::default(),
            dial: false,
            server_ping: SERVER_PING,
        }
    }
}

struct Link {
    conn: Arc<NativeConnection>,
    /// Ours, sealed into every envelope we send on this connection.
    attempt: u64,
    /// The remote side's, once it has sent something.
    remote_attempt: Option<u64>,
    /// Tells this connection's events from those of the one it replaced.
    generation: u64,
    open: bool,
}

/// Runs links until `shutdown` completes or the signaling session ends, writing one line
/// per event to `out`: `open <peer>`, `message <peer> <bytes>`, `corrupt <peer> <why>`,
/// `closed <peer> <why>`, `error <peer> <why>`.
pub async fn serve_links(
    joined: &mut Joined,
    options: &LinkOptions,
    shutdown: impl Future<Output = ()>,
    out: &mut impl Write,
) -> Result<(), NodeError> {
    let me = joined.identity.clone();
    let sender = joined.signaling.sender();
    let (events_tx, mut events) = mpsc::unbounded_channel::<(PeerId, u64, ConnEvent)>();
    let mut links: HashMap<PeerId, Link> = HashMap::new();
    let mut generations = 0u64;

    let open = |peer: PeerId, initiate: bool, generation: u64| {
        let events_tx = events_tx.clone();
        let config = options.config.clone();
        let local = me.peer_id();
        async move {
            let (conn, mut rx) = NativeConnection::with_config(
                local,
                peer,
                &[],
                ConnLimits::default(),
                initiate,
                &config,
            )
            .await?;
            tokio::spawn(async move {
                use futures_util::StreamExt;
                while let Some(ev) = rx.next().await {
                    if events_tx.send((peer, generation, ev)).is_err() {
                        break;
                    }
                }
            });
            Ok::<_, rhizome::transport::TransportError>(Link {
                conn: Arc::new(conn),
                attempt: fresh_attempt(),
                remote_attempt: None,
                generation,
                open: false,
            })
        }
    };

    if options.dial {
        for peer in joined.introduced.clone() {
            generations += 1;
            match open(peer, true, generations).await {
                Ok(link) => {
                    links.insert(peer, link);
                }
                Err(e) => writeln!(out, "error {peer} {e}")?,
            }
        }
    }

    tokio::pin!(shutdown);
    let mut ping = tokio::time::interval(options.server_ping.max(Duration::from_millis(100)));
    ping.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = ping.tick() => {
                if let Err(e) = joined.signaling.ping() {
                    writeln!(out, "error server {e}")?;
                }
            }
            Some((peer, generation, event)) = events.recv() => {
                let Some(link) = links.get_mut(&peer) else { continue };
                if link.generation != generation {
                    continue; // from a connection that was replaced
                }
                match event {
                    ConnEvent::Signal(payload) => {
                        let env = SignedEnvelope::seal(&me, peer, link.attempt, &payload);
                        if let Err(e) = sender.send_signal(&env) {
                            writeln!(out, "error {peer} {e}")?;
                        }
                    }
                    ConnEvent::Open => {
                        link.open = true;
                        writeln!(out, "open {peer}")?;
                    }
                    ConnEvent::Message(m) => {
                        writeln!(out, "message {peer} {}", m.len())?;
                        let _ = link.conn.send(&m);
                    }
                    ConnEvent::Corrupt(why) => writeln!(out, "corrupt {peer} {why}")?,
                    ConnEvent::Closed(why) => {
                        writeln!(out, "closed {peer} {why}")?;
                        links.remove(&peer);
                    }
                }
                out.flush()?;
            }
            event = joined.signaling.next_event() => match event {
                Some(SignalingEvent::Signal { envelope, .. }) => {
                    let Ok(env) = SignedEnvelope::from_json(&envelope) else { continue };
                    let Ok(payload) = env.open(&me.peer_id()) else { continue };
                    let peer = env.from;
                    let is_offer = matches!(payload, SignalPayload::Offer { .. });
                    // A fresh offer on an open connection means the remote side restarted.
                    let restarted = links.get(&peer).is_some_and(|l| {
                        is_offer && l.open && l.remote_attempt.is_some_and(|a| a != env.attempt)
                    });
                    if restarted {
                        links.remove(&peer);
                    }
                    if let Entry::Vacant(slot) = links.entry(peer) {
                        if !is_offer {
                            continue; // leftovers of an attempt we no longer have
                        }
                        generations += 1;
                        match open(peer, false, generations).await {
                            Ok(link) => {
                                slot.insert(link);
                            }
                            Err(e) => {
                                writeln!(out, "error {peer} {e}")?;
                                continue;
                            }
                        }
                    }
                    if let Some(link) = links.get_mut(&peer) {
                        link.remote_attempt = Some(env.attempt);
                        if let Err(e) = link.conn.handle_signal(payload).await {
                            writeln!(out, "error {peer} {e}")?;
                        }
                    }
                }
                Some(SignalingEvent::Error { code, message }) => {
                    writeln!(out, "error server {code:?} {message}")?;
                }
                Some(SignalingEvent::Closed(_)) | None => break,
            },
        }
    }
    // Say goodbye properly, so peers notice at once rather than by ICE timeout.
    for link in links.values() {
        link.conn.close_and_wait().await;
    }
    Ok(())
}

/// An attempt id for a connection of ours: distinct across connections and restarts.
fn fresh_attempt() -> u64 {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos.wrapping_add(COUNT.fetch_add(1, Ordering::Relaxed))
}
