//! Several servers as one: room membership and cross-server relay through Redis.
//!
//! Without `--cluster` none of this runs and the server is what it always was. With it,
//! each server keeps its own sessions in [`Rooms`] as before (local relay stays a local
//! mailbox push) and mirrors its memberships into Redis, so that:
//!
//! - a `welcome` samples the **whole** room, whichever server holds each member;
//! - a signal to a member held by another server goes to that server's own pub/sub
//!   channel, and the server holding the target pushes it into the target's mailbox;
//! - a join that replaces a session held by another server closes that session.
//!
//! # Data in Redis
//!
//! | key | type | content |
//! |---|---|---|
//! | `rhz:servers` | sorted set | server id → deadline (Redis clock, ms); a live server moves its deadline every `ttl / 4` |
//! | `rhz:room:{room}` | hash | peer id (hex) → `"{server}:{session}"` |
//! | `rhz:srv:{server}` | set | `{peer hex}{room}`: what that server published, so that its members can be removed after it dies |
//! | channel `rhz:ch:{server}` | pub/sub | JSON messages for that server ([`Wire`]) |
//!
//! Liveness is the sorted set alone, in Redis's own clock (scripts read `TIME`), so the
//! servers' clocks never need to agree. A member whose server's deadline has passed is
//! never sampled nor relayed to, from the instant the deadline passes: that is how the
//! members of a SIGKILLed server vanish within the expiry. Its entries are then deleted
//! by whichever live server notices first (the janitor, in batches, from the dead
//! server's set), and lazily by any sample or relay that meets one.
//!
//! Every operation that touches several keys is one Lua script (one round trip, atomic).
//!
//! # Faults
//!
//! Redis is never on the path of a local session's correctness. When a command fails or
//! times out, or the subscription drops, the server marks itself *degraded*: it serves
//! its own sessions alone (local samples, local relay), `/healthz` says `degraded`, and
//! a counter records the loss. A background loop keeps trying; once Redis answers and
//! the subscription is back, the server deletes whatever it had published (it may be
//! stale, leaves during the outage were not written) and publishes its current members
//! again: it has re-joined.
//!
//! Data read from Redis or from the channel is treated as hostile: anything malformed is
//! dropped and counted, never trusted to index, never a panic.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};
use rhizome::id::PeerId;
use rhizome::signal::{ErrorCode, ServerMsg};
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::rooms::{RelayError, Rooms, SessionId};
use crate::session::{encode_signal, signal_prefix};
use crate::telemetry;

/// Prefix of every key and channel.
const PREFIX: &str = "rhz:";
/// Entries handled per script call when cleaning up or re-publishing, so that no script
/// blocks Redis for long.
const BATCH: usize = 256;
/// How long one Redis round trip may take before the server calls Redis lost.
const OP_TIMEOUT: Duration = Duration::from_secs(1);
/// Retry period while degraded.
const RETRY: Duration = Duration::from_millis(300);
/// Largest channel message accepted (a signal of the hard frame limit and its header).
const MAX_WIRE_BYTES: usize = 1 << 20;
/// Dead servers cleaned up per heartbeat at most.
const DEAD_PER_BEAT: usize = 4;

/// Why a cross-server relay did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RemoteError {
    /// Nobody in the room answers for that peer id on a live server.
    UnknownPeer,
    /// Redis could not be asked.
    Unavailable,
}

/// Everything scripted in Redis.
struct Scripts {
    heartbeat: Script,
    join: Script,
    leave: Script,
    relay: Script,
    sweep: Script,
    republish: Script,
}

/// Lua: the current Redis time in milliseconds (shared by every script).
const NOW: &str = "local t = redis.call('TIME')\n\
     local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n\
     local function server_of(v) if type(v) ~= 'string' then return nil end return string.match(v, '^([^:]+):') end\n\
     local seen = {}\n\
     local function alive(sid)\n\
       if not sid then return false end\n\
       if seen[sid] ~= nil then return seen[sid] end\n\
       local s = tonumber(redis.call('ZSCORE', KEYS[1], sid))\n\
       seen[sid] = s ~= nil and s >= now\n\
       return seen[sid]\n\
     end\n";

impl Scripts {
    fn new() -> Self {
        let script = |body: &str| Script::new(&format!("{NOW}{body}"));
        Scripts {
            // KEYS: servers, own set. ARGV: sid, ttl ms, set expiry ms, dead batch.
            // Returns {fresh (we were unknown or expired), live servers, dead servers}.
            heartbeat: script(
                "local prev = redis.call('ZSCORE', KEYS[1], ARGV[1])\n\
                 local fresh = 0\n\
                 if (not prev) or tonumber(prev) == nil or tonumber(prev) < now then fresh = 1 end\n\
                 redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])\n\
                 redis.call('PEXPIRE', KEYS[2], ARGV[3])\n\
                 local live = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')\n\
                 local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[4]))\n\
                 return {fresh, live, dead}",
            ),
            // KEYS: servers, room hash, own set. ARGV: sid, value, peer, room, k.
            // Returns {previous value or '', sampled peer...}.
            join: script(
                "local prev = redis.call('HGET', KEYS[2], ARGV[3])\n\
                 redis.call('HSET', KEYS[2], ARGV[3], ARGV[2])\n\
                 redis.call('SADD', KEYS[3], ARGV[3] .. ARGV[4])\n\
                 local k = tonumber(ARGV[5])\n\
                 local out = {}\n\
                 for round = 1, 3 do\n\
                   out = {}\n\
                   local purged = 0\n\
                   local got = redis.call('HRANDFIELD', KEYS[2], k + 1, 'WITHVALUES')\n\
                   for i = 1, #got - 1, 2 do\n\
                     local p, v = got[i], got[i + 1]\n\
                     if p ~= ARGV[3] then\n\
                       if alive(server_of(v)) then out[#out + 1] = p\n\
                       else redis.call('HDEL', KEYS[2], p) purged = purged + 1 end\n\
                     end\n\
                   end\n\
                   if purged == 0 or #out >= k then break end\n\
                 end\n\
                 local r = {prev or ''}\n\
                 for i = 1, math.min(k, #out) do r[#r + 1] = out[i] end\n\
                 return r",
            ),
            // KEYS: room hash, own set. ARGV: sid, value, peer, room.
            leave: Script::new(
                "local v = redis.call('HGET', KEYS[1], ARGV[3])\n\
                 if v == ARGV[2] then\n\
                   redis.call('HDEL', KEYS[1], ARGV[3])\n\
                   redis.call('SREM', KEYS[2], ARGV[3] .. ARGV[4])\n\
                 elseif (not v) or string.match(v, '^([^:]+):') ~= ARGV[1] then\n\
                   redis.call('SREM', KEYS[2], ARGV[3] .. ARGV[4])\n\
                 end\n\
                 return 0",
            ),
            // KEYS: servers, room hash. ARGV: target peer, own sid, message, channel prefix.
            // Returns receivers (>= 0), -1 unknown, -2 held here, -3 held by a dead server.
            relay: script(
                "local v = redis.call('HGET', KEYS[2], ARGV[1])\n\
                 local sid = server_of(v)\n\
                 if not sid then return -1 end\n\
                 if sid == ARGV[2] then return -2 end\n\
                 if not alive(sid) then redis.call('HDEL', KEYS[2], ARGV[1]) return -3 end\n\
                 return redis.call('PUBLISH', ARGV[4] .. sid, ARGV[3])",
            ),
            // KEYS: servers, the swept server's set. ARGV: its sid, batch, room prefix,
            // force (1: sweep even if it is alive: a server clearing its own entries).
            // Returns -1 if the server is alive again, else the entries left.
            sweep: script(
                "if ARGV[4] ~= '1' and alive(ARGV[1]) then return -1 end\n\
                 local entries = redis.call('SPOP', KEYS[2], tonumber(ARGV[2]))\n\
                 for _, e in ipairs(entries) do\n\
                   if #e > 64 then\n\
                     local peer = string.sub(e, 1, 64)\n\
                     local room = ARGV[3] .. string.sub(e, 65)\n\
                     if server_of(redis.call('HGET', room, peer)) == ARGV[1] then redis.call('HDEL', room, peer) end\n\
                   end\n\
                 end\n\
                 local left = redis.call('SCARD', KEYS[2])\n\
                 if left == 0 and ARGV[4] ~= '1' then redis.call('ZREM', KEYS[1], ARGV[1]) end\n\
                 return left",
            ),
            // KEYS: servers, own set. ARGV: sid, room prefix, then (peer, room, value)*.
            // Publishes each member unless a live server (another session) holds the id.
            republish: script(
                "local n = 0\n\
                 for i = 3, #ARGV - 2, 3 do\n\
                   local peer, room, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]\n\
                   local key = ARGV[2] .. room\n\
                   local cur = redis.call('HGET', key, peer)\n\
                   local owner = server_of(cur)\n\
                   if (not owner) or owner == ARGV[1] or not alive(owner) then\n\
                     redis.call('HSET', key, peer, value)\n\
                     redis.call('SADD', KEYS[2], peer .. room)\n\
                     n = n + 1\n\
                   end\n\
                 end\n\
                 return n",
            ),
        }
    }
}

/// One server's membership of the cluster.
pub(crate) struct Cluster {
    /// This server's id: random, fresh at every start.
    sid: String,
    /// The Redis URL without credentials, for logs.
    shown: String,
    client: redis::Client,
    conn: ConnectionManager,
    scripts: Scripts,
    ttl: Duration,
    sample_size: usize,
    max_frame_bytes: usize,
    /// Redis answers and our members are published.
    healthy: AtomicBool,
    /// The subscription to our channel is up.
    subscribed: AtomicBool,
    /// An outage was logged and counted (and not yet its end).
    reported: AtomicBool,
    /// Live servers at the last heartbeat (this one included).
    servers: AtomicUsize,
    /// Wakes the maintenance loop (Redis was lost by a session's command).
    wake: Notify,
    /// Makes the subscriber reconnect (the heartbeat found it unsubscribed).
    resubscribe: Notify,
    /// Cancelled when the maintenance loop has left the cluster.
    done: CancellationToken,
}

/// A message on a server's channel. One flat shape, because signals carry their
/// envelope as raw JSON (serde cannot buffer that through a tagged enum).
#[derive(serde::Serialize, serde::Deserialize)]
struct Wire<'a> {
    /// `s` signal, `r` replace, `b` bounce (a signal that could not be delivered).
    #[serde(borrow)]
    t: Cow<'a, str>,
    #[serde(borrow)]
    r: Cow<'a, str>,
    /// The peer the message is about: signal target, replaced peer, or the target of
    /// the bounced signal.
    p: PeerId,
    /// Signal sender (also the bounce's addressee).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    f: Option<PeerId>,
    /// Origin server (where to bounce to).
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    o: Option<Cow<'a, str>>,
    /// The envelope of a signal, as the sender sent it.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    e: Option<&'a RawValue>,
    /// Error code of a bounce.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    c: Option<Cow<'a, str>>,
}

fn room_key(room: &str) -> String {
    format!("{PREFIX}room:{room}")
}

fn set_key(sid: &str) -> String {
    format!("{PREFIX}srv:{sid}")
}

fn servers_key() -> String {
    format!("{PREFIX}servers")
}

fn channel(sid: &str) -> String {
    format!("{PREFIX}ch:{sid}")
}

/// The value stored for a member: which server and which session answer for it.
fn member_value(sid: &str, session: SessionId) -> String {
    format!("{sid}:{session}")
}

/// `redis://user:secret@host` → `redis://host`, for logs and messages.
fn without_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// Why the cluster could not be joined at start.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the cluster at {url}: {reason}")]
pub struct ClusterError {
    url: String,
    reason: String,
}

impl Cluster {
    /// A cluster client for `url` (nothing is connected yet).
    pub fn new(
        url: &str,
        ttl: Duration,
        sample_size: usize,
        max_frame_bytes: usize,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let shown = without_credentials(url);
        let fail = |e: redis::RedisError| ClusterError {
            url: shown.clone(),
            reason: e.to_string(),
        };
        let client = redis::Client::open(url).map_err(fail)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(fail)?;
        let bytes: [u8; 8] = rand::random();
        let sid = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Arc::new(Cluster {
            sid,
            shown,
            client,
            conn,
            scripts: Scripts::new(),
            ttl: ttl.max(Duration::from_millis(400)),
            sample_size,
            max_frame_bytes,
            healthy: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            reported: AtomicBool::new(false),
            servers: AtomicUsize::new(0),
            wake: Notify::new(),
            resubscribe: Notify::new(),
            done: CancellationToken::new(),
        }))
    }

    /// This server's id in the cluster.
    pub fn id(&self) -> &str {
        &self.sid
    }

    /// Whether samples and relays go through Redis right now.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Live servers seen at the last heartbeat.
    pub fn servers(&self) -> usize {
        self.servers.load(Ordering::Relaxed)
    }

    /// Checks that Redis answers (at start, before serving anyone).
    pub async fn probe(&self) -> Result<(), ClusterError> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        match tokio::time::timeout(OP_TIMEOUT * 3, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ClusterError {
                url: self.shown.clone(),
                reason: e.to_string(),
            }),
            Err(_) => Err(ClusterError {
                url: self.shown.clone(),
                reason: "no answer within 3 s".into(),
            }),
        }
    }

    /// Starts the subscriber and the maintenance loop; both end with `stop`.
    pub fn start(self: &Arc<Self>, rooms: Arc<Rooms>, stop: CancellationToken) {
        tokio::spawn(self.clone().subscriber(rooms.clone(), stop.clone()));
        tokio::spawn(self.clone().maintain(rooms, stop));
    }

    /// Marks Redis lost (once per outage: logged and counted).
    fn degrade(&self, why: &str) {
        let was = self.healthy.swap(false, Ordering::AcqRel);
        if was {
            self.wake.notify_one();
        }
        if !self.reported.swap(true, Ordering::AcqRel) {
            warn!(url = %self.shown, "cluster degraded, serving local sessions only: {why}");
            telemetry::cluster_degraded(true);
        }
    }

    async fn call<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, String> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(OP_TIMEOUT, invocation.invoke_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("Redis did not answer in time".into()),
        }
    }

    /// Publishes a join and samples the whole room. `Err` when Redis is unavailable
    /// (the caller keeps its local sample). The previous holder of the id on another
    /// server is told to close its session.
    pub async fn join(
        &self,
        room: &str,
        peer: &PeerId,
        session: SessionId,
    ) -> Result<Vec<PeerId>, RemoteError> {
        if !self.is_healthy() {
            return Err(RemoteError::Unavailable);
        }
        let hex = peer.to_string();
        let mut inv = self.scripts.join.prepare_invoke();
        inv.key(servers_key())
            .key(room_key(room))
            .key(set_key(&self.sid))
            .arg(&self.sid)
            .arg(member_value(&self.sid, session))
            .arg(&hex)
            .arg(room)
            .arg(self.sample_size);
        let reply: Vec<Value> = match self.call(&inv).await {
            Ok(v) => v,
            Err(e) => {
                self.degrade(&e);
                return Err(RemoteError::Unavailable);
            }
        };
        let mut items = reply.iter().map(value_str);
        let prev = items.next().flatten().unwrap_or_default();
        let sample: Vec<PeerId> = items
            .flatten()
            .filter_map(|s| s.parse::<PeerId>().ok())
            .filter(|p| p != peer)
            .take(self.sample_size)
            .collect();
        if let Some((owner, _)) = prev.split_once(':') {
            if owner != self.sid && !owner.is_empty() {
                let msg = Wire {
                    t: "r".into(),
                    r: room.into(),
                    p: *peer,
                    f: None,
                    o: None,
                    e: None,
                    c: None,
                };
                self.publish(owner, &msg).await;
            }
        }
        Ok(sample)
    }

    /// Withdraws a member this server published (if it still answers for it).
    pub async fn leave(&self, room: &str, peer: &PeerId, session: SessionId) {
        if !self.is_healthy() {
            // Re-joining deletes everything this server published and starts over.
            return;
        }
        let mut inv = self.scripts.leave.prepare_invoke();
        inv.key(room_key(room))
            .key(set_key(&self.sid))
            .arg(&self.sid)
            .arg(member_value(&self.sid, session))
            .arg(peer.to_string())
            .arg(room);
        if let Err(e) = self.call::<Value>(&inv).await {
            self.degrade(&e);
        }
    }

    /// Relays a signal to a member held by another server.
    pub async fn relay(
        &self,
        room: &str,
        from: &PeerId,
        to: &PeerId,
        envelope: &RawValue,
    ) -> Result<(), RemoteError> {
        if !self.is_healthy() {
            return Err(RemoteError::Unavailable);
        }
        let msg = Wire {
            t: "s".into(),
            r: room.into(),
            p: *to,
            f: Some(*from),
            o: Some(self.sid.as_str().into()),
            e: Some(envelope),
            c: None,
        };
        let Ok(text) = serde_json::to_string(&msg) else {
            return Err(RemoteError::UnknownPeer);
        };
        let mut inv = self.scripts.relay.prepare_invoke();
        inv.key(servers_key())
            .key(room_key(room))
            .arg(to.to_string())
            .arg(&self.sid)
            .arg(text)
            .arg(format!("{PREFIX}ch:"));
        match self.call::<i64>(&inv).await {
            Ok(n) if n > 0 => {
                telemetry::cluster_relayed("out");
                Ok(())
            }
            Ok(_) => Err(RemoteError::UnknownPeer),
            Err(e) => {
                self.degrade(&e);
                Err(RemoteError::Unavailable)
            }
        }
    }

    async fn publish(&self, sid: &str, msg: &Wire<'_>) {
        let Ok(text) = serde_json::to_string(msg) else {
            return;
        };
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel(sid)).arg(text);
        let publish = cmd.query_async::<i64>(&mut conn);
        match tokio::time::timeout(OP_TIMEOUT, publish).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => self.degrade(&e.to_string()),
            Err(_) => self.degrade("Redis did not answer in time"),
        }
    }

    /// Reads this server's channel for as long as the server runs, reconnecting when
    /// the subscription drops.
    async fn subscriber(self: Arc<Self>, rooms: Arc<Rooms>, stop: CancellationToken) {
        let name = channel(&self.sid);
        loop {
            let connect = async {
                let mut ps = self.client.get_async_pubsub().await?;
                ps.subscribe(&name).await?;
                Ok::<_, redis::RedisError>(ps)
            };
            let ps = tokio::select! {
                () = stop.cancelled() => return,
                r = tokio::time::timeout(OP_TIMEOUT * 2, connect) => r,
            };
            let mut ps = match ps {
                Ok(Ok(ps)) => ps,
                Ok(Err(e)) => {
                    debug!("cluster subscription failed: {e}");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(RETRY) => continue,
                    }
                }
                Err(_) => continue,
            };
            self.subscribed.store(true, Ordering::Release);
            self.wake.notify_one();
            debug!(channel = name, "cluster subscription up");
            {
                let mut messages = ps.on_message();
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = self.resubscribe.notified() => break,
                        msg = messages.next() => match msg {
                            Some(msg) => self.on_wire(&rooms, msg.get_payload_bytes()).await,
                            None => break,
                        },
                    }
                }
            }
            self.subscribed.store(false, Ordering::Release);
            self.degrade("the subscription to this server's channel dropped");
        }
    }

    /// Handles one message from the channel. Hostile input: anything malformed is
    /// dropped and counted.
    async fn on_wire(&self, rooms: &Rooms, bytes: &[u8]) {
        if bytes.len() > MAX_WIRE_BYTES {
            telemetry::cluster_malformed();
            return;
        }
        let Ok(msg) = serde_json::from_slice::<Wire>(bytes) else {
            telemetry::cluster_malformed();
            return;
        };
        let room = msg.r.as_ref();
        if room.is_empty() || room.len() > rhizome::signal::MAX_ROOM_LEN {
            telemetry::cluster_malformed();
            return;
        }
        match (msg.t.as_ref(), msg.f, msg.e) {
            ("s", Some(from), Some(envelope)) => {
                if envelope.get().len() > self.max_frame_bytes.saturating_mul(4) {
                    telemetry::cluster_malformed();
                    return;
                }
                let frame = encode_signal(&signal_prefix(&from), envelope);
                let code = match rooms.deliver(room, &msg.p, frame) {
                    Ok(()) => {
                        telemetry::relayed();
                        telemetry::cluster_relayed("in");
                        return;
                    }
                    Err(RelayError::PeerBusy) => ErrorCode::PeerBusy,
                    Err(_) => ErrorCode::UnknownPeer,
                };
                let Some(origin) = msg.o.as_deref() else {
                    return;
                };
                if origin.is_empty() || origin.len() > 64 || origin.contains(['{', '}']) {
                    telemetry::cluster_malformed();
                    return;
                }
                let bounce = Wire {
                    t: "b".into(),
                    r: room.into(),
                    p: msg.p,
                    f: Some(from),
                    o: None,
                    e: None,
                    c: Some(code.as_str().into()),
                };
                self.publish(origin, &bounce).await;
            }
            ("r", _, _) => {
                if rooms.replace_remote(room, &msg.p) {
                    debug!(peer = %msg.p.short(), room, "replaced by a session on another server");
                }
            }
            ("b", Some(from), _) => {
                let code = match msg.c.as_deref() {
                    Some("peer-busy") => ErrorCode::PeerBusy,
                    _ => ErrorCode::UnknownPeer,
                };
                let to = msg.p;
                let message = match code {
                    ErrorCode::PeerBusy => format!("{to} is not reading; signal not delivered"),
                    _ => format!("{to} is not another member of this room"),
                };
                let error = ServerMsg::Error {
                    code,
                    message,
                    peer: Some(to),
                };
                if let Ok(text) = serde_json::to_string(&error) {
                    if rooms.deliver(room, &from, Utf8Bytes::from(text)).is_ok() {
                        telemetry::error(code);
                    }
                }
            }
            _ => telemetry::cluster_malformed(),
        }
    }

    /// Heartbeats, janitor work, and re-joining after an outage, until `stop`.
    async fn maintain(self: Arc<Self>, rooms: Arc<Rooms>, stop: CancellationToken) {
        let beat = self.ttl / 4;
        // The subscription comes up in parallel; give it a moment before the first
        // heartbeat, so a normal start is not reported as an outage.
        let first = tokio::time::Instant::now() + OP_TIMEOUT * 2;
        while !self.subscribed.load(Ordering::Acquire) && tokio::time::Instant::now() < first {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
        loop {
            let healthy = self.is_healthy();
            match self.heartbeat().await {
                Ok((fresh, live, dead)) => {
                    self.servers.store(live, Ordering::Relaxed);
                    if !self.subscribed.load(Ordering::Acquire) {
                        self.degrade("not subscribed to this server's channel");
                    } else if fresh || !healthy {
                        match self.rejoin(&rooms).await {
                            Ok(n) => {
                                if self.reported.swap(false, Ordering::AcqRel) {
                                    telemetry::cluster_degraded(false);
                                    telemetry::cluster_rejoined();
                                }
                                info!(
                                    server = self.sid,
                                    servers = live,
                                    members = n,
                                    "joined the cluster at {}",
                                    self.shown
                                );
                            }
                            Err(e) => self.degrade(&e),
                        }
                    } else if let Err(e) = self.check_subscription().await {
                        self.degrade(&e);
                    }
                    if self.is_healthy() {
                        for sid in dead.iter().take(DEAD_PER_BEAT) {
                            self.sweep(sid, false).await;
                        }
                    }
                }
                Err(e) => self.degrade(&e),
            }
            let wait = if self.is_healthy() { beat } else { RETRY };
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
            }
        }
        // Leave the cluster: our members vanish now, not after the expiry.
        if self.is_healthy() {
            let leaving = async {
                self.sweep(&self.sid.clone(), true).await;
                let mut conn = self.conn.clone();
                let _ = redis::cmd("ZREM")
                    .arg(servers_key())
                    .arg(&self.sid)
                    .query_async::<Value>(&mut conn)
                    .await;
            };
            let _ = tokio::time::timeout(OP_TIMEOUT, leaving).await;
        }
        self.done.cancel();
    }

    /// Waits (a little) for the maintenance loop to withdraw this server's members.
    pub async fn stopped(&self) {
        let _ = tokio::time::timeout(OP_TIMEOUT * 2, self.done.cancelled()).await;
    }

    /// Returns (fresh, live servers, dead servers).
    async fn heartbeat(&self) -> Result<(bool, usize, Vec<String>), String> {
        let ttl = self.ttl.as_millis() as u64;
        let mut inv = self.scripts.heartbeat.prepare_invoke();
        inv.key(servers_key())
            .key(set_key(&self.sid))
            .arg(&self.sid)
            .arg(ttl)
            .arg(ttl.saturating_mul(10).max(60_000))
            .arg(DEAD_PER_BEAT);
        let reply: Vec<Value> = self.call(&inv).await?;
        let fresh = matches!(reply.first(), Some(Value::Int(1)));
        let live = match reply.get(1) {
            Some(Value::Array(a)) => a.len(),
            _ => 0,
        };
        let dead = match reply.get(2) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(value_str)
                .filter(|s| *s != self.sid && !s.is_empty() && s.len() <= 64)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        Ok((fresh, live, dead))
    }

    /// Whether Redis still counts a subscriber on our channel (a half-open connection
    /// would otherwise swallow relays).
    async fn check_subscription(&self) -> Result<(), String> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("PUBSUB");
        cmd.arg("NUMSUB").arg(channel(&self.sid));
        let numsub = cmd.query_async::<Vec<Value>>(&mut conn);
        let reply = match tokio::time::timeout(OP_TIMEOUT, numsub).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("Redis did not answer in time".into()),
        };
        if matches!(reply.get(1), Some(Value::Int(n)) if *n > 0) {
            Ok(())
        } else {
            self.subscribed.store(false, Ordering::Release);
            self.resubscribe.notify_one();
            Err("Redis lost this server's subscription".into())
        }
    }

    /// Deletes the entries published by server `sid` (a dead one, or this one with
    /// `force`), in batches.
    async fn sweep(&self, sid: &str, force: bool) {
        for _ in 0..10_000 {
            let mut inv = self.scripts.sweep.prepare_invoke();
            inv.key(servers_key())
                .key(set_key(sid))
                .arg(sid)
                .arg(BATCH)
                .arg(format!("{PREFIX}room:"))
                .arg(if force { "1" } else { "0" });
            match self.call::<i64>(&inv).await {
                Ok(left) if left > 0 => continue,
                Ok(_) => {
                    if !force {
                        debug!(server = sid, "swept a dead server's members");
                    }
                    return;
                }
                Err(e) => {
                    self.degrade(&e);
                    return;
                }
            }
        }
    }

    /// Re-joins: deletes what this server had published and publishes its members now.
    async fn rejoin(&self, rooms: &Rooms) -> Result<usize, String> {
        // Nothing may be published while the old entries are being swept.
        self.healthy.store(false, Ordering::Release);
        self.sweep(&self.sid.clone(), true).await;
        // Healthy from here on, so joins and leaves from now are written as they happen;
        // the snapshot below covers those before.
        self.healthy.store(true, Ordering::Release);
        let members = rooms.members();
        let mut published = 0;
        for chunk in members.chunks(BATCH) {
            let mut inv = self.scripts.republish.prepare_invoke();
            inv.key(servers_key())
                .key(set_key(&self.sid))
                .arg(&self.sid)
                .arg(format!("{PREFIX}room:"));
            for (room, peer, session) in chunk {
                inv.arg(peer.to_string())
                    .arg(room.as_ref())
                    .arg(member_value(&self.sid, *session));
            }
            let n: i64 = self.call(&inv).await.inspect_err(|_| {
                self.healthy.store(false, Ordering::Release);
            })?;
            published += n.max(0) as usize;
        }
        // Members that left while the snapshot was published must not stay visible.
        for (room, peer, session) in &members {
            if !rooms.holds(room, peer, *session) {
                self.leave(room, peer, *session).await;
            }
        }
        Ok(published)
    }
}

/// A Redis bulk or simple string as `&str`, if it is one and is UTF-8.
fn value_str(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_the_logs() {
        assert_eq!(
            without_credentials("redis://user:secret@10.0.0.1:6379/0"),
            "redis://10.0.0.1:6379/0"
        );
        assert_eq!(
            without_credentials("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn wire_messages_round_trip_and_garbage_is_refused() {
        let p = rhizome::id::Identity::from_secret_bytes([3; 32]).peer_id();
        let env = RawValue::from_string(r#"{"x":[1,2]}"#.into()).unwrap();
        let msg = Wire {
            t: "s".into(),
            r: "room \"x\"\n".into(),
            p,
            f: Some(p),
            o: Some("abc".into()),
            e: Some(&env),
            c: None,
        };
        let text = serde_json::to_string(&msg).unwrap();
        let back: Wire = serde_json::from_str(&text).unwrap();
        assert_eq!(back.r, "room \"x\"\n");
        assert_eq!(back.e.unwrap().get(), r#"{"x":[1,2]}"#);
        for bad in [
            "",
            "{",
            "[]",
            r#"{"t":"s"}"#,
            r#"{"t":"s","r":"x","p":"zz"}"#,
        ] {
            assert!(serde_json::from_str::<Wire>(bad).is_err(), "{bad}");
        }
    }
}
