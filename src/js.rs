//! The JavaScript API, through wasm-bindgen: `await Rhizome.join({...})` gives a node
//! with `broadcast`, `send`, `neighbors`, `topology`, `stats`, `on/off` and `leave`.
//!
//! The shape follows what JS developers know from PeerJS and Trystero: one promise to
//! join, plain methods, string event names, `Uint8Array` data, and errors that are real
//! `Error` objects carrying a stable `code`. Options are read and results built field by
//! field through `Reflect` (no serde-wasm-bindgen: see the package size notes in
//! docs/BENCHMARKS.md); the TypeScript types below are written by hand so they say exactly
//! what the code accepts.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use futures_util::StreamExt;
use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{future_to_promise, spawn_local};

use crate::collections::BTreeMap;
use crate::id::{Identity as CoreIdentity, PeerId};
use crate::node::{
    LinkStats, Node, NodeConfig, NodeError, NodeEvent, NodeStats, SendError, Topology,
    TopologyLink, TopologyPeer,
};
use crate::overlay::dht::Mode;
use crate::transport::IceServer;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** Options of `Rhizome.join`. */
export interface JoinOptions {
  /** Signaling server WebSocket URLs (`ws://host/ws`), tried in order. */
  signaling: string | string[];
  /** The room: peers in the same room form one overlay. */
  room: string;
  /**
   * The room's secret: only peers that know it become neighbours, broadcasts and
   * messages are encrypted under keys derived from it, and the signaling server sees
   * neither it nor the room's name (only a hash of the name). A peer with another secret
   * is refused with an `error` event `bad-room-secret`. Use a long random string: a peer
   * the room connects to can test guesses of a weak one offline. Default: none.
   */
  secret?: string;
  /** STUN/TURN servers, as in `RTCConfiguration.iceServers`. Default: none. */
  iceServers?: { urls: string | string[]; username?: string; credential?: string }[];
  /**
   * Identity: an `Identity`, its `secret` (hex), or `true` to keep one in
   * `localStorage` (key `rhizome.identity`) so a reload keeps the same peer id.
   * Default: a fresh identity.
   */
  identity?: Identity | string | boolean;
  /**
   * Overlay mode. `"hybrid"` (default): broadcasts, and `send` reaches any peer (the DHT
   * keeps a few extra connections per peer for routing). `"unstructured"`: broadcasts
   * only, fewest connections; `send` reaches neighbours only (else code `mode`).
   * `"structured"`: `send` to anyone, no broadcasts of this node's own (code `mode`).
   */
  mode?: RhizomeMode;
  /** Active view size (open connections kept). Default 5. */
  activeViewSize?: number;
  /** Passive view size (peers remembered for repair). Default 30. */
  passiveViewSize?: number;
  /** Deadline to reach a signaling server and join, per URL, in ms. Default 10000. */
  joinTimeoutMs?: number;
  /**
   * Broadcast this node's active view every so many ms, so every node can draw the
   * whole network (`node.topology()`). One broadcast per peer per interval: for demos
   * and small rooms. Default: off.
   */
  announceTopology?: number;
}

/** Which halves of the overlay run: see `JoinOptions.mode`. */
export type RhizomeMode = "unstructured" | "structured" | "hybrid";

/**
 * Codes of a rejected `node.send(peer, data)`:
 * - `bad-peer-id`: not a peer id (64 hex characters), or this node's own;
 * - `bad-data`: data is neither a `Uint8Array` nor a string;
 * - `too-large`: over 16 MiB (a request or response: over 61,440 bytes);
 * - `mode`: the peer is not a neighbour and the node runs in `"unstructured"` mode;
 * - `unreachable`: no route to the peer (it left, or is not in the room), or the
 *   connection to it closed before it acknowledged;
 * - `timeout`: no acknowledgement in time (10 s, plus 1 s per 256 KB);
 * - `backpressure`: 1024 sends are waiting, or the connection's 32 MiB queue is full —
 *   wait for earlier sends to resolve, then retry;
 * - `left`: the node has left.
 */
export type SendErrorCode =
  | "bad-peer-id"
  | "bad-data"
  | "too-large"
  | "mode"
  | "unreachable"
  | "timeout"
  | "backpressure"
  | "left";

/** Options of `node.request`. */
export interface RequestOptions {
  /** Reject with `timeout` after this many ms. Default: ~8 s to arrive + 10 s to answer. */
  timeoutMs?: number;
}

/** What `node.send` resolves with, once the peer acknowledged the message. */
export interface SendResult {
  /** Overlay hops the message travelled (1 to a neighbour). */
  hops: number;
}

/** An error from rhizome: a real `Error` with a stable machine-readable `code`. */
export interface RhizomeError extends Error {
  /** E.g. a `SendErrorCode`, `bad-options`, `signaling-unreachable`, `left`, `mode`. */
  code: SendErrorCode | (string & {});
  peer?: string;
}

/** Payloads of the node's events. */
export interface RhizomeEvents {
  "neighbor-up": { peer: string };
  "neighbor-down": { peer: string };
  broadcast: { from: string; seq: number; data: Uint8Array; hops: number };
  /** A direct message for this node (`node.send` at its sender), each at most once. */
  message: { from: string; data: Uint8Array; hops: number };
  /**
   * A request for this node (`node.request` at its sender), each at most once. Call
   * `respond` once with the answer (at most 61,440 bytes; throws `too-large`,
   * `bad-data` or `left`); unanswered requests time out at the requester.
   */
  request: { from: string; data: Uint8Array; respond(data: Uint8Array | string): void };
  /**
   * Something went wrong; the node goes on. `code` `incompatible-peer`: `peer` runs a
   * build of rhizome whose wire format (`theirVersion`) is not this one's (`ourVersion`);
   * it was disconnected and is not dialled again for a while (reported once per peer).
   * `bad-room-secret`: `peer` and this node do not share the room's `secret`; it was
   * disconnected and is not dialled again for a while.
   */
  error: {
    code: string;
    message: string;
    peer?: string;
    theirVersion?: number;
    ourVersion?: number;
  };
  /** The picture of the network changed: call `node.topology()`. */
  topology: {};
  left: {};
}

export interface RhizomeNode {
  /** Registers a handler for one of the node's events (typed by event name). */
  on<K extends keyof RhizomeEvents>(event: K, handler: (event: RhizomeEvents[K]) => void): void;
  /** Removes a handler registered with `on`. */
  off<K extends keyof RhizomeEvents>(event: K, handler: (event: RhizomeEvents[K]) => void): void;
}

/**
 * What `node.topology()` returns: this node, the peers it knows of and their links.
 * With `announceTopology` on, that is the whole network as the peers describe it.
 */
export interface Topology {
  me: string;
  peers: {
    id: string;
    /** How this node knows the peer. */
    view: "self" | "active" | "passive" | "announced";
    /** The peer's active view, as it announced it. */
    neighbors: string[];
    delivered: number;
    frames_sent: number;
    frames_received: number;
    /** The peer's DHT links (connections kept for routing), as it announced them. */
    dht: string[];
  }[];
  /** Active links, each listed once with the smaller id first. */
  edges: [string, string][];
  /** Active and DHT links with their round-trip times (`a` is the smaller id). */
  links: TopologyLink[];
}

/** A link in `Topology.links`. */
export interface TopologyLink {
  a: string;
  b: string;
  /** `"active"`: in both ends' active views; `"dht"`: a DHT link. */
  kind: "active" | "dht";
  /**
   * Round-trip time in ms: measured by this node for its own links, else as one end
   * announced it; `null` until measured.
   */
  rtt_ms: number | null;
}

/** One connection in `NodeStats.links`. */
export interface LinkStats {
  peer: string;
  /** `"other"`: being opened, or not yet placed by the overlay. */
  kind: "active" | "dht" | "other";
  open: boolean;
  /** Round-trip time in ms (ICE stats, re-read at most every 2 s); `null` until measured. */
  rtt_ms: number | null;
  /**
   * The selected ICE candidate pair's types, `"local/remote"` (`host`, `srflx`, `prflx`
   * or `relay` each; `relay` on a side: through a TURN server), read with `rtt_ms`;
   * `null` until known.
   */
  candidate_pair: string | null;
  bytes_sent: number;
  bytes_received: number;
}

/** What `node.stats()` returns. */
export interface NodeStats {
  neighbors: number;
  passive: number;
  connections: number;
  page_connections_created: number;
  /** RTCPeerConnections of the page not yet garbage-collected (Chromium allows 500). */
  page_connections_alive: number;
  /** Offers from unknown peers dropped before any connection was made. */
  offers_refused: number;
  /** Signals to the server dropped (their attempt ended while paced, or queue full). */
  signals_dropped: number;
  connects: number;
  delivered: number;
  duplicates: number;
  frames_sent: number;
  frames_received: number;
  relayed: number;
  bootstraps: number;
  /** Reconnections to the signaling server tried after its session was lost. */
  reconnects: number;
  server_connected: boolean;
  broadcasts_sent: number;
  /** Direct messages sent with `node.send`, and received. */
  messages_sent: number;
  messages_received: number;
  bytes_sent: number;
  bytes_received: number;
  /** Each connection of this node: role, round-trip time and traffic, sorted by peer. */
  links: LinkStats[];
}
"#;

#[wasm_bindgen]
extern "C" {
    /// `JoinOptions` in TypeScript.
    #[wasm_bindgen(typescript_type = "JoinOptions")]
    pub type JoinOptionsJs;
    /// `Topology` in TypeScript.
    #[wasm_bindgen(typescript_type = "Topology")]
    pub type TopologyJs;
    /// `NodeStats` in TypeScript.
    #[wasm_bindgen(typescript_type = "NodeStats")]
    pub type NodeStatsJs;
    /// `keyof RhizomeEvents` in TypeScript.
    #[wasm_bindgen(typescript_type = "keyof RhizomeEvents")]
    pub type EventNameJs;
    /// An event handler in TypeScript.
    #[wasm_bindgen(typescript_type = "(event: any) => void")]
    pub type HandlerJs;
    /// `string[]` in TypeScript.
    #[wasm_bindgen(typescript_type = "string[]")]
    pub type StringArrayJs;
    /// `[string, string][]` in TypeScript.
    #[wasm_bindgen(typescript_type = "[string, string][]")]
    pub type EdgeListJs;
    /// Data accepted by `broadcast`.
    #[wasm_bindgen(typescript_type = "Uint8Array | string")]
    pub type DataJs;
    /// `RequestOptions | undefined` in TypeScript.
    #[wasm_bindgen(typescript_type = "RequestOptions")]
    pub type RequestOptionsJs;
    /// `RhizomeMode` in TypeScript.
    #[wasm_bindgen(typescript_type = "RhizomeMode")]
    pub type ModeJs;
}

/// A JS `Error` with a `code` (and optionally a `peer`).
fn js_error(code: &str, message: &str, peer: Option<PeerId>) -> JsValue {
    let err = js_sys::Error::new(message);
    err.set_name("RhizomeError");
    let _ = Reflect::set(&err, &"code".into(), &code.into());
    if let Some(p) = peer {
        let _ = Reflect::set(&err, &"peer".into(), &p.to_string().into());
    }
    err.into()
}

fn node_error(e: NodeError) -> JsValue {
    use crate::transport::web_signaling::SignalingError as S;
    let code = match &e {
        NodeError::Identity(_) => "identity",
        NodeError::Signaling(S::Timeout { .. }) => "signaling-timeout",
        NodeError::Signaling(S::Refused { .. }) => "signaling-refused",
        NodeError::Signaling(S::NoServers) => "no-signaling-servers",
        NodeError::Signaling(_) => "signaling-unreachable",
        NodeError::Left => "left",
        NodeError::Overlay(_) => "overlay",
        NodeError::Mode(_) => "mode",
    };
    js_error(code, &e.to_string(), None)
}

enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

type Urls = OneOrMany;

struct IceServerOpt {
    urls: Urls,
    username: Option<String>,
    credential: Option<String>,
}

/// `JoinOptions` as read from the page. Read by hand through `Reflect`: serde-wasm-bindgen's
/// deserializer, with the error formatting it brings (float printing), cost several KiB of
/// the gzipped package.
/// `identity` is read separately ([`identity_option`]): it may be an `Identity` object.
struct JoinOptions {
    signaling: OneOrMany,
    room: String,
    secret: Option<String>,
    ice_servers: Vec<IceServerOpt>,
    mode: Option<String>,
    active_view_size: Option<usize>,
    passive_view_size: Option<usize>,
    join_timeout_ms: Option<u32>,
    announce_topology: Option<u32>,
}

impl JoinOptions {
    const FIELDS: [&'static str; 10] = [
        "signaling",
        "room",
        "secret",
        "iceServers",
        "identity",
        "mode",
        "activeViewSize",
        "passiveViewSize",
        "joinTimeoutMs",
        "announceTopology",
    ];

    /// Reads the options object; unknown fields are refused (a misspelt option should not
    /// be silently ignored). `undefined` and `null` mean "not given".
    fn read(v: &JsValue) -> Result<Self, String> {
        if !v.is_object() {
            return Err("expected an object".into());
        }
        for key in Object::keys(v.unchecked_ref::<Object>()).iter() {
            let key = key.as_string().unwrap_or_default();
            if !Self::FIELDS.contains(&key.as_str()) {
                return Err(format!("unknown field `{key}`"));
            }
        }
        let ice_servers = match opt_field(v, "iceServers") {
            None => Vec::new(),
            Some(list) if Array::is_array(&list) => Array::from(&list)
                .iter()
                .map(|s| {
                    if !s.is_object() {
                        return Err("iceServers: each entry must be an object".to_string());
                    }
                    Ok(IceServerOpt {
                        urls: one_or_many(opt_field(&s, "urls"), "iceServers.urls")?,
                        username: opt_string(&s, "username")?,
                        credential: opt_string(&s, "credential")?,
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("iceServers must be an array".into()),
        };
        Ok(JoinOptions {
            signaling: one_or_many(opt_field(v, "signaling"), "signaling")?,
            room: opt_string(v, "room")?.ok_or("missing field `room`")?,
            secret: opt_string(v, "secret")?,
            ice_servers,
            mode: opt_string(v, "mode")?,
            active_view_size: opt_count(v, "activeViewSize", u32::MAX)?.map(|n| n as usize),
            passive_view_size: opt_count(v, "passiveViewSize", u32::MAX)?.map(|n| n as usize),
            join_timeout_ms: opt_count(v, "joinTimeoutMs", u32::MAX)?,
            announce_topology: opt_count(v, "announceTopology", u32::MAX)?,
        })
    }
}

/// `v[key]`, or `None` if it is `undefined` or `null`.
fn opt_field(v: &JsValue, key: &str) -> Option<JsValue> {
    Reflect::get(v, &key.into())
        .ok()
        .filter(|x| !x.is_undefined() && !x.is_null())
}

fn opt_string(v: &JsValue, key: &str) -> Result<Option<String>, String> {
    match opt_field(v, key) {
        None => Ok(None),
        Some(x) => x
            .as_string()
            .map(Some)
            .ok_or_else(|| format!("{key} must be a string")),
    }
}

/// A non-negative whole number no larger than `max`.
fn opt_count(v: &JsValue, key: &str, max: u32) -> Result<Option<u32>, String> {
    match opt_field(v, key) {
        None => Ok(None),
        Some(x) => match x.as_f64() {
            Some(n) if n >= 0.0 && n <= f64::from(max) && n.fract() == 0.0 => Ok(Some(n as u32)),
            _ => Err(format!("{key} must be a whole number from 0 to {max}")),
        },
    }
}

/// A string or an array of strings (required).
fn one_or_many(x: Option<JsValue>, what: &str) -> Result<OneOrMany, String> {
    let err = || format!("{what} must be a string or an array of strings");
    let x = x.ok_or_else(|| format!("missing field `{what}`"))?;
    if let Some(s) = x.as_string() {
        return Ok(OneOrMany::One(s));
    }
    if !Array::is_array(&x) {
        return Err(err());
    }
    Array::from(&x)
        .iter()
        .map(|u| u.as_string().ok_or_else(err))
        .collect::<Result<_, _>>()
        .map(OneOrMany::Many)
}

const IDENTITY_KEY: &str = "rhizome.identity";

fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// Resolves the `identity` option.
fn identity_option(options: &JsValue) -> Result<Option<CoreIdentity>, JsValue> {
    let value = Reflect::get(options, &"identity".into()).unwrap_or(JsValue::UNDEFINED);
    if value.is_undefined() || value.is_null() || value == JsValue::FALSE {
        return Ok(None);
    }
    if let Some(secret) = value.as_string() {
        return CoreIdentity::from_secret_hex(&secret)
            .map(Some)
            .map_err(|e| js_error("bad-options", &format!("identity: {e}"), None));
    }
    if value == JsValue::TRUE {
        let storage = local_storage();
        if let Some(saved) = storage
            .as_ref()
            .and_then(|s| s.get_item(IDENTITY_KEY).ok().flatten())
        {
            if let Ok(id) = CoreIdentity::from_secret_hex(&saved) {
                return Ok(Some(id));
            }
        }
        let id =
            CoreIdentity::generate().map_err(|e| js_error("identity", &e.to_string(), None))?;
        if let Some(s) = storage {
            let _ = s.set_item(IDENTITY_KEY, &id.secret_hex());
        }
        return Ok(Some(id));
    }
    // An `Identity` object made by this module: read its secret through its getter.
    if let Some(secret) = Reflect::get(&value, &"secret".into())
        .ok()
        .and_then(|s| s.as_string())
    {
        return CoreIdentity::from_secret_hex(&secret)
            .map(Some)
            .map_err(|e| js_error("bad-options", &format!("identity: {e}"), None));
    }
    Err(js_error(
        "bad-options",
        "identity must be an Identity, a secret hex string or true",
        None,
    ))
}

fn parse_options(options: &JsValue) -> Result<NodeConfig, JsValue> {
    let opts = JoinOptions::read(options)
        .map_err(|e| js_error("bad-options", &format!("invalid join options: {e}"), None))?;
    let signaling = match opts.signaling {
        OneOrMany::One(u) => vec![u],
        OneOrMany::Many(us) => us,
    };
    if signaling.is_empty() {
        return Err(js_error(
            "bad-options",
            "signaling needs at least one URL",
            None,
        ));
    }
    let mut config = NodeConfig::new(signaling, opts.room);
    config.secret = opts.secret;
    if let Some(mode) = opts.mode.as_deref() {
        config.overlay.mode = match mode {
            "unstructured" => Mode::Unstructured,
            "structured" => Mode::Structured,
            "hybrid" => Mode::Hybrid,
            other => {
                return Err(js_error(
                    "bad-options",
                    &format!(
                        "mode \"{other}\" does not exist: use \"hybrid\", \"unstructured\" or \"structured\""
                    ),
                    None,
                ))
            }
        };
    }
    config.ice_servers = opts
        .ice_servers
        .into_iter()
        .map(|s| IceServer {
            urls: match s.urls {
                Urls::One(u) => vec![u],
                Urls::Many(us) => us,
            },
            username: s.username,
            credential: s.credential,
        })
        .collect();
    if let Some(n) = opts.active_view_size {
        if n == 0 || n > 32 {
            return Err(js_error(
                "bad-options",
                "activeViewSize must be 1..=32",
                None,
            ));
        }
        config.overlay.active_view_capacity = n;
    }
    if let Some(n) = opts.passive_view_size {
        config.overlay.passive_view_capacity = n.min(1024);
    }
    if let Some(ms) = opts.join_timeout_ms {
        config.join_timeout_ms = ms.max(100);
    }
    if let Some(ms) = opts.announce_topology {
        config.announce_topology_ms = Some(ms.max(250));
    }
    config.identity = identity_option(options)?;
    Ok(config)
}

/// Entry point: `await Rhizome.join(options)`.
#[wasm_bindgen]
pub struct Rhizome;

#[wasm_bindgen]
impl Rhizome {
    /// Joins a room and resolves to a running node. Rejects with a `RhizomeError` whose
    /// `code` is `bad-options`, `signaling-unreachable`, `signaling-timeout`,
    /// `signaling-refused` or `no-signaling-servers`.
    #[wasm_bindgen(unchecked_return_type = "Promise<RhizomeNode>")]
    pub fn join(options: JoinOptionsJs) -> Promise {
        promise(join(options.into()))
    }
}

/// A promise of `f`'s result. Every async method goes through this one boxed future type,
/// so wasm-bindgen's promise glue is compiled once (an exported `async fn` compiles a copy
/// per method).
fn promise(f: impl Future<Output = Result<JsValue, JsValue>> + 'static) -> Promise {
    let f: Pin<Box<dyn Future<Output = Result<JsValue, JsValue>>>> = Box::pin(f);
    future_to_promise(f)
}

/// `Rhizome.join`.
async fn join(options: JsValue) -> Result<JsValue, JsValue> {
    let config = parse_options(&options)?;
    let (node, mut events) = Node::join(config).await.map_err(node_error)?;
    let handlers: Rc<RefCell<BTreeMap<String, Vec<Function>>>> = Rc::default();
    let dispatch = handlers.clone();
    let responder = node.clone();
    spawn_local(async move {
        while let Some(ev) = events.next().await {
            let name = event_kind(&ev);
            let list = dispatch.borrow().get(name).cloned().unwrap_or_default();
            // Nobody listens (a sender's own `message` events, say): no object to
            // build, no data to copy into JS.
            if list.is_empty() {
                continue;
            }
            let payload = event_to_js(&ev);
            if let NodeEvent::Request { from, id, .. } = ev {
                set_respond(&payload, responder.clone(), from, id);
            }
            for f in list {
                // A throwing handler must not stop the others or the node.
                let _ = f.call1(&JsValue::NULL, &payload);
            }
        }
    });
    Ok(RhizomeNode { node, handlers }.into())
}

/// Gives a `request` event its `respond(data)` function.
fn set_respond(event: &JsValue, node: Node, from: PeerId, id: u64) {
    let respond = Closure::<dyn Fn(JsValue) -> Result<(), JsValue>>::new(move |data: JsValue| {
        let bytes = data_bytes(data.unchecked_into(), "respond")?;
        node.respond(from, id, bytes).map_err(|e| {
            js_error(
                e.code(),
                &format!("respond to {}: {e}", from.short()),
                Some(from),
            )
        })
    });
    let _ = Reflect::set(event, &"respond".into(), &respond.into_js_value());
}

/// JS strings made once per page: property names, and the ids of the peers events came
/// from lately. Every `message` event would otherwise decode its three keys and the
/// sender's 64-character id from UTF-8 again (a tenth of the browser's CPU time per
/// 1 KiB message in the bench's profile).
#[derive(Default)]
struct JsStrings {
    keys: Vec<(&'static str, JsValue)>,
    peers: Vec<(PeerId, JsValue)>,
    /// Where the next peer id replaces an old one once `peers` is full.
    next: usize,
}

/// Peer ids kept as JS strings; beyond, the oldest is replaced.
const CACHED_PEER_IDS: usize = 64;

thread_local! {
    static JS_STRINGS: RefCell<JsStrings> = RefCell::new(JsStrings::default());
}

/// The JS string of a property name (made once).
fn js_key(k: &'static str) -> JsValue {
    JS_STRINGS.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((_, v)) = c.keys.iter().find(|(n, _)| *n == k) {
            return v.clone();
        }
        let v = JsValue::from_str(k);
        c.keys.push((k, v.clone()));
        v
    })
}

/// A peer id as a JS string of 64 hex characters (the last few are cached).
fn js_peer(p: &PeerId) -> JsValue {
    JS_STRINGS.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((_, v)) = c.peers.iter().find(|(q, _)| q == p) {
            return v.clone();
        }
        let v = JsValue::from_str(&p.to_string());
        if c.peers.len() < CACHED_PEER_IDS {
            c.peers.push((*p, v.clone()));
        } else {
            let i = c.next % CACHED_PEER_IDS;
            c.peers[i] = (*p, v.clone());
            c.next = i + 1;
        }
        v
    })
}

fn set(o: &Object, k: &'static str, v: &JsValue) {
    let _ = Reflect::set(o, &js_key(k), v);
}

fn event_kind(ev: &NodeEvent) -> &'static str {
    match ev {
        NodeEvent::NeighborUp(_) => "neighbor-up",
        NodeEvent::NeighborDown(_) => "neighbor-down",
        NodeEvent::Broadcast { .. } => "broadcast",
        NodeEvent::Error { .. } | NodeEvent::IncompatiblePeer { .. } => "error",
        NodeEvent::Message { .. } => "message",
        NodeEvent::Request { .. } => "request",
        NodeEvent::TopologyChanged => "topology",
        NodeEvent::Left => "left",
    }
}

fn event_to_js(ev: &NodeEvent) -> JsValue {
    let o = Object::new();
    match ev {
        NodeEvent::NeighborUp(p) | NodeEvent::NeighborDown(p) => set(&o, "peer", &js_peer(p)),
        NodeEvent::Broadcast {
            from,
            seq,
            data,
            hops,
        } => {
            set(&o, "from", &js_peer(from));
            set(&o, "seq", &(*seq as f64).into());
            set(&o, "data", &Uint8Array::from(data.as_slice()).into());
            set(&o, "hops", &(*hops as f64).into());
        }
        NodeEvent::Error {
            code,
            message,
            peer,
        } => {
            set(&o, "code", &(*code).into());
            set(&o, "message", &message.as_str().into());
            if let Some(p) = peer {
                set(&o, "peer", &js_peer(p));
            }
        }
        NodeEvent::IncompatiblePeer {
            peer,
            their_version,
            our_version,
        } => {
            set(&o, "code", &"incompatible-peer".into());
            let message = format!(
                "peer speaks wire version {their_version}, this build {our_version}: \
                 disconnected (update one side)"
            );
            set(&o, "message", &message.into());
            set(&o, "peer", &peer.to_string().into());
            set(&o, "theirVersion", &f64::from(*their_version).into());
            set(&o, "ourVersion", &f64::from(*our_version).into());
        }
        NodeEvent::Message { from, data, hops } => {
            set(&o, "from", &js_peer(from));
            set(&o, "data", &Uint8Array::from(data.as_slice()).into());
            set(&o, "hops", &(*hops as f64).into());
        }
        NodeEvent::Request { from, data, .. } => {
            set(&o, "from", &js_peer(from));
            set(&o, "data", &Uint8Array::from(data.as_slice()).into());
        }
        NodeEvent::TopologyChanged | NodeEvent::Left => {}
    }
    o.into()
}

const EVENT_NAMES: [&str; 8] = [
    "neighbor-up",
    "neighbor-down",
    "broadcast",
    "message",
    "request",
    "error",
    "topology",
    "left",
];

fn parse_peer(id: &str) -> Result<PeerId, JsValue> {
    id.parse::<PeerId>()
        .map_err(|e| js_error("bad-peer-id", &e.to_string(), None))
}

/// A running rhizome node.
#[wasm_bindgen]
pub struct RhizomeNode {
    node: Node,
    handlers: Rc<RefCell<BTreeMap<String, Vec<Function>>>>,
}

#[wasm_bindgen]
impl RhizomeNode {
    /// This node's peer id (64 hex characters).
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> String {
        self.node.id().to_string()
    }

    /// Broadcasts `data` (bytes, or a string sent as UTF-8) to every peer of the room.
    /// Each peer receives it once, as a `broadcast` event. Returns its sequence number
    /// (`node.trace(node.id, seq)` shows the path it took).
    pub fn broadcast(&self, data: DataJs) -> Result<f64, JsValue> {
        let bytes = data_bytes(data, "broadcast")?;
        self.node
            .broadcast(bytes)
            .map(|seq| seq as f64)
            .map_err(node_error)
    }

    /// Sends `data` (bytes, or a string sent as UTF-8) to the peer `peerId`, anywhere in
    /// the room; it arrives there once, as a `message` event. Resolves with `{ hops }`
    /// when the peer acknowledged it; rejects with a `RhizomeError` whose `code` is a
    /// `SendErrorCode`. The message leaves when `send` is called (messages over one
    /// connection arrive in call order). Up to 16 MiB: straight over the connection to a
    /// neighbour or DHT link, else routed through the DHT (in fragments above ~60 KiB).
    #[wasm_bindgen(unchecked_return_type = "Promise<SendResult>")]
    pub fn send(&self, #[wasm_bindgen(js_name = peerId)] peer_id: String, data: DataJs) -> Promise {
        // Handed to the node now, not when the promise's task first runs: so messages
        // leave in call order, and `bufferedAmount` counts them right after the call.
        let started = parse_peer(&peer_id)
            .and_then(|to| Ok((to, data_bytes(data, "send")?)))
            .map(|(to, bytes)| (to, self.node.send(to, bytes)));
        promise(async move {
            let (to, sending) = started?;
            match sending.await {
                Ok(hops) => {
                    let o = Object::new();
                    set(&o, "hops", &(hops as f64).into());
                    Ok(o.into())
                }
                Err(e) => Err(send_error(&e, to)),
            }
        })
    }

    /// Bytes sent to `peerId` over this node's connection with it that have not left yet:
    /// this node's queue plus the data channel's buffer; 0 without a connection (routed
    /// messages queue on other peers' connections). With `drained`, the backpressure
    /// signal for streaming: send while this is under a limit of your choice (above
    /// ~320 KiB, the data channel's own share), then `await node.drained(peerId)`.
    #[wasm_bindgen(js_name = bufferedAmount)]
    pub fn buffered_amount(
        &self,
        #[wasm_bindgen(js_name = peerId)] peer_id: &str,
    ) -> Result<f64, JsValue> {
        Ok(self.node.buffered_amount(parse_peer(peer_id)?) as f64)
    }

    /// Resolves once nothing sent to `peerId` waits in this node's own queue: all of it
    /// is with the data channel, whose buffer holds at most ~320 KiB (its 256 KiB high
    /// water and the chunk that crossed it). At once when the queue is empty or there is
    /// no connection; also when the connection goes.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn drained(&self, #[wasm_bindgen(js_name = peerId)] peer_id: &str) -> Promise {
        let waiting = parse_peer(peer_id).map(|p| self.node.drained(p));
        promise(async move {
            waiting?.await;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Sends a request to the peer `peerId` and resolves with its response (the peer gets a
    /// `request` event and calls `respond`). Requests are routed through the DHT, so they
    /// need mode `"hybrid"` or `"structured"` (else code `mode`) and carry at most 61,440
    /// bytes each way; rejects with a `SendErrorCode` (`timeout` after
    /// `options.timeoutMs`, or the DHT's deadlines).
    #[wasm_bindgen(unchecked_return_type = "Promise<Uint8Array>")]
    pub fn request(
        &self,
        #[wasm_bindgen(js_name = peerId)] peer_id: String,
        data: DataJs,
        options: Option<RequestOptionsJs>,
    ) -> Promise {
        let node = self.node.clone();
        promise(async move {
            let to = parse_peer(&peer_id)?;
            let bytes = data_bytes(data, "request")?;
            let timeout = options
                .map(JsValue::from)
                .and_then(|o| Reflect::get(&o, &"timeoutMs".into()).ok())
                .and_then(|t| t.as_f64())
                .map(|t| t.clamp(0.0, u32::MAX as f64) as u32);
            match node.request(to, bytes, timeout).await {
                Ok(data) => Ok(Uint8Array::from(data.as_slice()).into()),
                Err(e) => Err(send_error(&e, to)),
            }
        })
    }

    /// The overlay mode this node runs in.
    #[wasm_bindgen(getter)]
    pub fn mode(&self) -> ModeJs {
        JsValue::from_str(match self.node.mode() {
            Mode::Unstructured => "unstructured",
            Mode::Structured => "structured",
            Mode::Hybrid => "hybrid",
        })
        .unchecked_into()
    }

    /// Peer ids of the active view (open connections).
    pub fn neighbors(&self) -> StringArrayJs {
        let list: Array = self
            .node
            .neighbors()
            .iter()
            .map(|p| JsValue::from_str(&p.to_string()))
            .collect();
        JsValue::from(list).unchecked_into()
    }

    /// This node, the peers it knows and their links (see `announceTopology`).
    pub fn topology(&self) -> Result<TopologyJs, JsValue> {
        Ok(topology_to_js(&self.node.topology()).unchecked_into())
    }

    /// The hops the broadcast `(origin, seq)` took, as `[from, to]` pairs, as far as the
    /// peers' topology announcements tell (needs `announceTopology`).
    pub fn trace(&self, origin: &str, seq: f64) -> Result<EdgeListJs, JsValue> {
        let origin = parse_peer(origin)?;
        Ok(js_pairs(&self.node.trace(origin, seq.max(0.0) as u64)).unchecked_into())
    }

    /// Counters: views, connections, frames, deliveries.
    pub fn stats(&self) -> Result<NodeStatsJs, JsValue> {
        Ok(stats_to_js(&self.node.stats()).unchecked_into())
    }

    /// Registers `handler` for `event` (`neighbor-up`, `neighbor-down`, `broadcast`,
    /// `message`, `request`, `topology`, `error`, `left`).
    // Typed per event by the `RhizomeNode` interface in `TS_TYPES`; a generated
    // signature would be an overload that accepts any handler.
    #[wasm_bindgen(skip_typescript)]
    pub fn on(&self, event: EventNameJs, handler: HandlerJs) -> Result<(), JsValue> {
        let name = event_name(event)?;
        let f: Function = JsValue::from(handler)
            .dyn_into()
            .map_err(|_| js_error("bad-handler", "handler must be a function", None))?;
        self.handlers.borrow_mut().entry(name).or_default().push(f);
        Ok(())
    }

    /// Removes a handler registered with `on`.
    // Typed per event by the `RhizomeNode` interface in `TS_TYPES`; a generated
    // signature would be an overload that accepts any handler.
    #[wasm_bindgen(skip_typescript)]
    pub fn off(&self, event: EventNameJs, handler: HandlerJs) -> Result<(), JsValue> {
        let name = event_name(event)?;
        let handler: JsValue = handler.into();
        if let Some(list) = self.handlers.borrow_mut().get_mut(&name) {
            list.retain(|f| JsValue::from(f.clone()) != handler);
        }
        Ok(())
    }

    /// Leaves the room: tells the neighbours, closes every connection. Resolves when done.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn leave(&self) -> Promise {
        let node = self.node.clone();
        promise(async move {
            node.leave().await;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Closes the signaling session for good: the node carries on through the overlay and
    /// does not reconnect (unless it ends up isolated). A session the server or the
    /// network closes is reopened in the background instead.
    #[wasm_bindgen(js_name = disconnectSignaling)]
    pub fn disconnect_signaling(&self) {
        self.node.disconnect_server();
    }

    /// Drops the connection to `peer` as a network failure would; the overlay repairs it.
    #[wasm_bindgen(js_name = dropConnection)]
    pub fn drop_connection(&self, peer: &str) -> Result<bool, JsValue> {
        Ok(self.node.drop_connection(parse_peer(peer)?))
    }
}

/// The bytes of a `Uint8Array | string` argument of `what`.
fn data_bytes(data: DataJs, what: &str) -> Result<Vec<u8>, JsValue> {
    let data: JsValue = data.into();
    if let Some(s) = data.as_string() {
        Ok(s.into_bytes())
    } else if let Some(u) = data.dyn_ref::<Uint8Array>() {
        Ok(u.to_vec())
    } else {
        Err(js_error(
            "bad-data",
            &format!("{what} takes a Uint8Array or a string"),
            None,
        ))
    }
}

fn send_error(e: &SendError, to: PeerId) -> JsValue {
    js_error(e.code(), &format!("send to {}: {e}", to.short()), Some(to))
}

// Results of `topology`, `trace` and `stats` as plain JS objects, built by hand:
// serde-wasm-bindgen's serializer cost ~4 KiB of the gzipped package. The shapes are the
// ones it produced: snake_case field names, peer ids as hex strings, numbers as numbers,
// `null` for a missing one, id pairs as two-element arrays. The structs are destructured
// without `..`, so a field added to them fails to compile here until it is exported.

fn js_obj(fields: &[(&'static str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in fields {
        set(&o, k, v);
    }
    o.into()
}

fn js_id(p: &PeerId) -> JsValue {
    p.to_string().into()
}

fn js_ids(ps: &[PeerId]) -> JsValue {
    ps.iter().map(js_id).collect::<Array>().into()
}

fn js_num(n: u64) -> JsValue {
    (n as f64).into()
}

fn js_opt(x: Option<f64>) -> JsValue {
    x.map_or(JsValue::NULL, JsValue::from)
}

fn js_pairs(pairs: &[(PeerId, PeerId)]) -> JsValue {
    pairs
        .iter()
        .map(|(a, b)| Array::of2(&js_id(a), &js_id(b)))
        .collect::<Array>()
        .into()
}

fn topology_to_js(t: &Topology) -> JsValue {
    let Topology {
        me,
        peers,
        edges,
        links,
    } = t;
    let peers = peers.iter().map(|p| {
        let TopologyPeer {
            id,
            view,
            neighbors,
            delivered,
            frames_sent,
            frames_received,
            dht,
        } = p;
        js_obj(&[
            ("id", js_id(id)),
            ("view", (*view).into()),
            ("neighbors", js_ids(neighbors)),
            ("delivered", js_num(*delivered)),
            ("frames_sent", js_num(*frames_sent)),
            ("frames_received", js_num(*frames_received)),
            ("dht", js_ids(dht)),
        ])
    });
    let links = links.iter().map(|l| {
        let TopologyLink { a, b, kind, rtt_ms } = l;
        js_obj(&[
            ("a", js_id(a)),
            ("b", js_id(b)),
            ("kind", (*kind).into()),
            ("rtt_ms", js_opt(*rtt_ms)),
        ])
    });
    js_obj(&[
        ("me", js_id(me)),
        ("peers", peers.collect::<Array>().into()),
        ("edges", js_pairs(edges)),
        ("links", links.collect::<Array>().into()),
    ])
}

fn stats_to_js(s: &NodeStats) -> JsValue {
    let NodeStats {
        neighbors,
        passive,
        connections,
        page_connections_created,
        page_connections_alive,
        offers_refused,
        signals_dropped,
        connects,
        delivered,
        duplicates,
        frames_sent,
        frames_received,
        relayed,
        bootstraps,
        reconnects,
        server_connected,
        broadcasts_sent,
        messages_sent,
        messages_received,
        bytes_sent,
        bytes_received,
        links,
    } = s;
    let links = links.iter().map(|l| {
        let LinkStats {
            peer,
            kind,
            open,
            rtt_ms,
            candidate_pair,
            bytes_sent,
            bytes_received,
        } = l;
        js_obj(&[
            ("peer", js_id(peer)),
            ("kind", (*kind).into()),
            ("open", (*open).into()),
            ("rtt_ms", js_opt(*rtt_ms)),
            (
                "candidate_pair",
                candidate_pair
                    .as_deref()
                    .map_or(JsValue::NULL, JsValue::from_str),
            ),
            ("bytes_sent", js_num(*bytes_sent)),
            ("bytes_received", js_num(*bytes_received)),
        ])
    });
    js_obj(&[
        ("neighbors", js_num(*neighbors as u64)),
        ("passive", js_num(*passive as u64)),
        ("connections", js_num(*connections as u64)),
        (
            "page_connections_created",
            js_num(u64::from(*page_connections_created)),
        ),
        (
            "page_connections_alive",
            js_num(u64::from(*page_connections_alive)),
        ),
        ("offers_refused", js_num(*offers_refused)),
        ("signals_dropped", js_num(*signals_dropped)),
        ("connects", js_num(*connects)),
        ("delivered", js_num(*delivered)),
        ("duplicates", js_num(*duplicates)),
        ("frames_sent", js_num(*frames_sent)),
        ("frames_received", js_num(*frames_received)),
        ("relayed", js_num(*relayed)),
        ("bootstraps", js_num(*bootstraps)),
        ("reconnects", js_num(*reconnects)),
        ("server_connected", (*server_connected).into()),
        ("broadcasts_sent", js_num(*broadcasts_sent)),
        ("messages_sent", js_num(*messages_sent)),
        ("messages_received", js_num(*messages_received)),
        ("bytes_sent", js_num(*bytes_sent)),
        ("bytes_received", js_num(*bytes_received)),
        ("links", links.collect::<Array>().into()),
    ])
}

fn event_name(event: EventNameJs) -> Result<String, JsValue> {
    let name = JsValue::from(event).as_string().unwrap_or_default();
    if EVENT_NAMES.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(js_error(
            "bad-event",
            &format!(
                "unknown event \"{name}\"; events are {}",
                EVENT_NAMES.join(", ")
            ),
            None,
        ))
    }
}

/// An Ed25519 identity; its `id` is the peer id other peers know this page by.
#[wasm_bindgen]
pub struct Identity(CoreIdentity);

#[wasm_bindgen]
impl Identity {
    /// A fresh identity from `crypto.getRandomValues`.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Result<Identity, JsValue> {
        CoreIdentity::generate()
            .map(Identity)
            .map_err(|e| js_error("identity", &e.to_string(), None))
    }

    /// Restores an identity saved with `secret`.
    #[wasm_bindgen(js_name = fromSecret)]
    pub fn from_secret(secret: &str) -> Result<Identity, JsValue> {
        CoreIdentity::from_secret_hex(secret)
            .map(Identity)
            .map_err(|e| js_error("bad-identity", &e.to_string(), None))
    }

    /// The peer id: 64 hex characters.
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> String {
        self.0.peer_id().to_string()
    }

    /// The first 8 hex characters of the id, for display.
    #[wasm_bindgen(getter)]
    pub fn short(&self) -> String {
        self.0.peer_id().short()
    }

    /// The secret key as hex, to persist the identity (e.g. in `localStorage`).
    #[wasm_bindgen(getter)]
    pub fn secret(&self) -> String {
        self.0.secret_hex()
    }
}

/// The version of the rhizome package.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
