// The browser side of `npm run bench`: every library in the same page, one after another.
//
// Bundled by esbuild (scripts/bench) with the release npm package of rhizome, simple-peer
// and PeerJS, and driven by benches/browser.mjs through Playwright: each scenario is one
// `window.bench.<name>(...)` call that resolves to plain numbers. Everything is bounded:
// fixed message counts, and a deadline on every wait.
//
// Libraries, and how each one reaches the other peer:
// - raw:        hand-wired RTCPeerConnection pairs with one negotiated data channel, the
//               offer/answer/candidates passed by function calls inside the page (no server);
// - raw-ws:     the same, the signals relayed through a WebSocket server (the local
//               PeerJS server's relay, the cheapest server round trip available);
// - simple-peer, simple-peer-ws: the same two ways, through simple-peer;
// - peerjs:     PeerJS with its own server (npm `peer`, started locally);
// - rhizome:    the npm package's `join` with the rhizome signaling server.
import { join as rhizomeJoin, load as rhizomeLoad } from '../../target/npm/rhizome/index.js';
import SimplePeer from 'simple-peer';
import { Peer } from 'peerjs';

const CFG = window.BENCH_CONFIG;
const ICE = { iceServers: [] };
/** Backpressure of every sender that uses a data channel directly (rhizome's transport had
 * it until 2026-11-26; it now hands the browser at most 256 KiB, refilling at 64 KiB). */
const HIGH = 1024 * 1024;
const LOW = 256 * 1024;

const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let uidCounter = 0;
const uid = (p) => `${p}-${Date.now().toString(36)}-${(uidCounter++).toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

function defer() {
  let resolve;
  let reject;
  const promise = new Promise((a, b) => { resolve = a; reject = b; });
  return { promise, resolve, reject };
}

function deadline(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms); }),
  ]);
}

const once = (target, event) => new Promise((r) => target.addEventListener(event, r, { once: true }));

let wasm;
async function loadWasm() {
  wasm ??= await rhizomeLoad('./rhizome_bg.wasm');
  return wasm;
}

// ---------------------------------------------------------------------------------------
// Raw RTCPeerConnection, wired by hand.

/** One end: a connection with a negotiated channel; `emit` carries its signals away. */
function rawPeer(emit) {
  const pc = new RTCPeerConnection(ICE);
  const dc = pc.createDataChannel('bench', { negotiated: true, id: 0 });
  dc.binaryType = 'arraybuffer';
  dc.bufferedAmountLowThreshold = LOW;
  const pending = [];
  let chain = Promise.resolve();
  pc.onicecandidate = (e) => { if (e.candidate) emit({ candidate: e.candidate.toJSON() }); };
  const handle = async (m) => {
    if (m.sdp) {
      await pc.setRemoteDescription(m.sdp);
      for (const c of pending.splice(0)) await pc.addIceCandidate(c);
      if (m.sdp.type === 'offer') {
        await pc.setLocalDescription();
        emit({ sdp: pc.localDescription.toJSON() });
      }
    } else if (m.candidate) {
      if (!pc.remoteDescription) pending.push(m.candidate);
      else await pc.addIceCandidate(m.candidate);
    }
  };
  return {
    pc,
    dc,
    offer: async () => {
      await pc.setLocalDescription();
      emit({ sdp: pc.localDescription.toJSON() });
    },
    signal: (m) => { chain = chain.then(() => handle(m)).catch(() => {}); },
    close: () => { dc.close(); pc.close(); },
  };
}

/** A pair of raw ends whose signals are function calls. */
function rawPairInPage() {
  let a;
  let b;
  a = rawPeer((m) => b.signal(m));
  b = rawPeer((m) => a.signal(m));
  a.offer();
  return [a, b];
}

/** A session on the PeerJS server used as a plain signal relay (OFFER/ANSWER/CANDIDATE). */
async function relaySession(id) {
  const { host, port } = CFG.peerjs;
  const ws = new WebSocket(`ws://${host}:${port}/peerjs?key=peerjs&id=${id}&token=${uid('t')}`);
  const session = { onsignal: null, ws };
  await new Promise((resolve, reject) => {
    ws.onerror = () => reject(new Error('relay socket failed'));
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.type === 'OPEN') resolve();
      else if (m.type === 'ERROR' || m.type === 'ID-TAKEN') reject(new Error(`relay: ${m.type}`));
    };
  });
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.payload !== undefined && session.onsignal) session.onsignal(m.src, m.payload);
  };
  session.send = (dst, payload) => {
    const kind = payload.sdp?.type ?? payload.type;
    const type = kind === 'offer' ? 'OFFER' : kind === 'answer' ? 'ANSWER' : 'CANDIDATE';
    ws.send(JSON.stringify({ type, dst, payload }));
  };
  session.close = () => ws.close();
  return session;
}

async function rawPairRelayed() {
  const [ia, ib] = [uid('a'), uid('b')];
  const [ra, rb] = await Promise.all([relaySession(ia), relaySession(ib)]);
  const a = rawPeer((m) => ra.send(ib, m));
  const b = rawPeer((m) => rb.send(ia, m));
  ra.onsignal = (_src, m) => a.signal(m);
  rb.onsignal = (_src, m) => b.signal(m);
  a.offer();
  return [a, b, () => { ra.close(); rb.close(); }];
}

// ---------------------------------------------------------------------------------------
// simple-peer and PeerJS.

function simplePairInPage() {
  const a = new SimplePeer({ initiator: true, config: ICE, trickle: true });
  const b = new SimplePeer({ config: ICE, trickle: true });
  a.on('signal', (d) => b.signal(d));
  b.on('signal', (d) => a.signal(d));
  return [a, b, () => {}];
}

async function simplePairRelayed() {
  const [ia, ib] = [uid('a'), uid('b')];
  const [ra, rb] = await Promise.all([relaySession(ia), relaySession(ib)]);
  const a = new SimplePeer({ initiator: true, config: ICE, trickle: true });
  const b = new SimplePeer({ config: ICE, trickle: true });
  a.on('signal', (d) => ra.send(ib, d));
  b.on('signal', (d) => rb.send(ia, d));
  ra.onsignal = (_src, d) => a.signal(d);
  rb.onsignal = (_src, d) => b.signal(d);
  return [a, b, () => { ra.close(); rb.close(); }];
}

function peerjsPeer(id) {
  const { host, port } = CFG.peerjs;
  return new Promise((resolve, reject) => {
    const p = new Peer(id, { host, port, path: '/', key: 'peerjs', secure: false, config: ICE, debug: 0 });
    p.on('open', () => resolve(p));
    p.on('error', reject);
  });
}

// ---------------------------------------------------------------------------------------
// rhizome.

const rhizomeOptions = (room, extra = {}) => ({ signaling: [CFG.signaling], room, iceServers: [], ...(CFG.rhizomeMode ? { mode: CFG.rhizomeMode } : {}), ...extra });

async function rhizomeNodes(n, room, { sequential = true } = {}) {
  await loadWasm();
  if (!sequential) return Promise.all(Array.from({ length: n }, () => rhizomeJoin(rhizomeOptions(room))));
  const nodes = [];
  for (let i = 0; i < n; i++) nodes.push(await rhizomeJoin(rhizomeOptions(room)));
  return nodes;
}

async function leaveAll(nodes) {
  await Promise.all(nodes.map((n) => n.leave().catch(() => {})));
}

// ---------------------------------------------------------------------------------------
// 1. Join → first delivered message.
//
// t0: before either peer starts (both start at once). Each side sends "hello" as soon as
// its library says the link is usable; the result is the time to the first delivery on
// either side. Includes, where the library has one, opening the server session.

const joinBench = {
  async raw() {
    const t0 = now();
    const first = defer();
    const [a, b] = rawPairInPage();
    for (const p of [a, b]) {
      p.dc.onopen = () => p.dc.send('hello');
      p.dc.onmessage = () => first.resolve(now());
    }
    try {
      return { ms: (await deadline(first.promise, 15_000, 'raw join')) - t0 };
    } finally { a.close(); b.close(); }
  },
  async 'raw-ws'() {
    const t0 = now();
    const first = defer();
    const [a, b, closeRelay] = await rawPairRelayed();
    const tServer = now();
    for (const p of [a, b]) {
      p.dc.onopen = () => p.dc.send('hello');
      p.dc.onmessage = () => first.resolve(now());
    }
    try {
      const t1 = await deadline(first.promise, 15_000, 'raw-ws join');
      return { ms: t1 - t0, serverMs: tServer - t0 };
    } finally { a.close(); b.close(); closeRelay(); }
  },
  async 'simple-peer'() { return simpleJoin(simplePairInPage, now()); },
  async 'simple-peer-ws'() { return simpleJoin(simplePairRelayed, now()); },
  async peerjs() {
    const t0 = now();
    const first = defer();
    const [ia, ib] = [uid('pa'), uid('pb')];
    const [pa, pb] = await Promise.all([peerjsPeer(ia), peerjsPeer(ib)]);
    const tServer = now();
    const hook = (c) => {
      c.on('open', () => c.send('hello'));
      c.on('data', () => first.resolve(now()));
      c.on('error', (e) => first.reject(e));
    };
    pa.on('connection', hook);
    hook(pb.connect(ia, { reliable: true }));
    try {
      const t1 = await deadline(first.promise, 15_000, 'peerjs join');
      return { ms: t1 - t0, serverMs: tServer - t0 };
    } finally { pa.destroy(); pb.destroy(); }
  },
  // rhizome: `node.send(peer, 'hello')` to the new neighbour on `neighbor-up` (one unsigned
  // Data frame on the DTLS channel, as the others send); rhizome-broadcast: a `broadcast`
  // instead (Ed25519-signed by the origin, verified by the receiver).
  rhizome: () => rhizomeJoinBench(false),
  'rhizome-broadcast': () => rhizomeJoinBench(true),
};

/** Set while joinSteps traces a join: marks a step of the library's own. */
let traceMark = () => {};

async function rhizomeJoinBench(broadcast) {
  await loadWasm();
  const room = uid('join');
  const t0 = now();
  const first = defer();
  let tUp;
  const nodes = await rhizomeNodes(2, room, { sequential: false });
  const tServer = now();
  traceMark('join() resolved (both)');
  for (const n of nodes) {
    n.on('neighbor-up', ({ peer }) => {
      tUp ??= now();
      traceMark('neighbor-up');
      try {
        if (broadcast) n.broadcast('hello');
        else n.send(peer, 'hello').catch(() => {});
      } catch (e) { first.reject(e); }
    });
    n.on(broadcast ? 'broadcast' : 'message', () => first.resolve(now()));
  }
  try {
    const t1 = await deadline(first.promise, 15_000, 'rhizome join');
    return { ms: t1 - t0, serverMs: tServer - t0, neighborUpMs: tUp - t0 };
  } finally { await leaveAll(nodes); }
}

async function simpleJoin(make, t0) {
  const first = defer();
  const [a, b, closeRelay] = await make();
  const tServer = now();
  for (const p of [a, b]) {
    p.on('connect', () => p.send('hello'));
    p.on('data', () => first.resolve(now()));
    p.on('error', (e) => first.reject(e));
  }
  try {
    const t1 = await deadline(first.promise, 15_000, 'simple-peer join');
    return { ms: t1 - t0, serverMs: tServer - t0 };
  } finally { a.destroy(); b.destroy(); closeRelay(); }
}

// ---------------------------------------------------------------------------------------
// A connected pair with one send interface, for the data-path scenarios.
//
// `sender.send(u8)`; `sender.full()` says the library (or our window) wants us to wait;
// `sender.drain()` resolves when we may go on. `receiver(fn)` calls fn(byteLength) per
// message delivered. `close()`.

async function openPair(lib, { window: windowBytes = 8 << 20, limit = 1 << 20 } = {}) {
  if (lib === 'raw' || lib === 'raw-64k' || lib === 'raw-16k') {
    // raw: 1 MiB high water, refill at 256 KiB (rhizome's transport until 2026-11-26);
    // raw-64k: simple-peer's (64 KiB), as a second reference; raw-16k: like raw,
    // each message sent as 16 KiB pieces, as rhizome's transport chunks toward a peer whose
    // SCTP limit is unknown or small (chunk.rs; 64 KiB between browsers).
    const high = lib === 'raw-64k' ? 64 * 1024 : HIGH;
    const [a, b] = rawPairInPage();
    if (lib === 'raw-64k') { a.dc.bufferedAmountLowThreshold = 0; }
    await deadline(Promise.all([once(a.dc, 'open'), once(b.dc, 'open')]), 15_000, 'raw open');
    const piece = 16 * 1024;
    return {
      send: lib === 'raw-16k'
        ? (u8) => { for (let i = 0; i < u8.byteLength; i += piece) a.dc.send(u8.subarray(i, i + piece)); }
        : (u8) => a.dc.send(u8),
      full: () => a.dc.bufferedAmount > high,
      drain: () => once(a.dc, 'bufferedamountlow'),
      receiver: (fn) => { b.dc.onmessage = (e) => fn(e.data.byteLength ?? e.data.length); },
      close: () => { a.close(); b.close(); },
    };
  }
  if (lib === 'simple-peer') {
    // The stream API (`write` + `drain`) is simple-peer's way to send with backpressure.
    const [a, b] = simplePairInPage();
    await deadline(Promise.all([new Promise((r) => a.once('connect', r)), new Promise((r) => b.once('connect', r))]), 15_000, 'simple-peer open');
    let ok = true;
    return {
      send: (u8) => { ok = a.write(u8); },
      full: () => !ok,
      drain: () => new Promise((r) => a.once('drain', () => { ok = true; r(); })),
      receiver: (fn) => b.on('data', (d) => fn(d.length)),
      close: () => { a.destroy(); b.destroy(); },
    };
  }
  if (lib === 'peerjs') {
    const [ia, ib] = [uid('pa'), uid('pb')];
    const [pa, pb] = await Promise.all([peerjsPeer(ia), peerjsPeer(ib)]);
    const incoming = new Promise((r) => pa.on('connection', r));
    const ca = pb.connect(ia, { reliable: true });
    const cb = await deadline(incoming, 15_000, 'peerjs connection');
    await deadline(Promise.all([new Promise((r) => ca.on('open', r)), new Promise((r) => cb.on('open', r))]), 15_000, 'peerjs open');
    const dc = ca.dataChannel;
    dc.bufferedAmountLowThreshold = LOW;
    return {
      send: (u8) => ca.send(u8),
      // PeerJS queues internally when the channel's buffer is over 8 MiB; we stop earlier.
      full: () => dc.bufferedAmount > HIGH || ca.bufferSize > 0,
      drain: () => Promise.race([once(dc, 'bufferedamountlow'), sleep(20)]),
      receiver: (fn) => cb.on('data', (d) => fn(d.byteLength ?? d.length)),
      close: () => { pa.destroy(); pb.destroy(); },
    };
  }
  if (lib === 'rhizome' || lib === 'rhizome-drained' || lib === 'rhizome-broadcast') {
    // rhizome: `node.send(peerId, data)` to the neighbour (one unsigned Data frame over the
    // open channel, acknowledged by the receiver); the window of bytes in flight is
    // counted from those acknowledgements (the promise `send` returns), as an app would,
    // and kept under the node's 1,024 unacknowledged messages.
    // rhizome-drained (BENCH_EVAL only): paced by the library's backpressure instead, as
    // a streaming app with bounded memory would: send while `node.bufferedAmount(peer)` is
    // at most `limit` bytes, else `await node.drained(peer)` (like simple-peer's `drain`).
    // rhizome-broadcast: `broadcast` in the two-peer room (signed, verified, Plumtree);
    // the window is counted from the receiver's deliveries (read in this page).
    const room = uid('pair');
    const up = defer();
    const [a, b] = await rhizomeNodes(2, room);
    a.on('neighbor-up', () => up.resolve());
    if (a.neighbors().length > 0) up.resolve();
    await deadline(up.promise, 15_000, 'rhizome neighbor');
    let sent = 0;
    let done = 0;
    let inFlight = 0;
    let waiter = null;
    const errors = [];
    let firstError = null;
    a.on('error', (e) => errors.push(e.code));
    b.on('error', (e) => errors.push(e.code));
    let recv = () => {};
    const settle = (len) => {
      done += len;
      inFlight -= 1;
      if (waiter && (paced || sent - done <= windowBytes / 2) && inFlight <= 512) { const w = waiter; waiter = null; w(); }
    };
    const direct = lib !== 'rhizome-broadcast';
    const paced = lib === 'rhizome-drained';
    b.on(direct ? 'message' : 'broadcast', (e) => {
      recv(e.data.byteLength);
      if (!direct) settle(e.data.byteLength);
    });
    const to = b.id;
    return {
      send: direct
        ? (u8) => {
          const len = u8.byteLength;
          sent += len;
          inFlight += 1;
          a.send(to, u8).then(() => settle(len), (e) => {
            if (!errors.length) firstError = { at: sent, inFlight, buffered: a.bufferedAmount(to), message: e.message };
            errors.push(e.code);
            settle(len);
          });
        }
        : (u8) => { a.broadcast(u8); sent += u8.byteLength; inFlight += 1; },
      full: paced
        ? () => a.bufferedAmount(to) > limit || inFlight >= 1000
        : () => sent - done > windowBytes || inFlight >= 1000,
      drain: paced
        ? async () => {
          if (inFlight >= 1000) await new Promise((r) => { waiter = r; });
          await a.drained(to);
        }
        : () => new Promise((r) => { waiter = r; }),
      receiver: (fn) => { recv = fn; },
      close: () => leaveAll([a, b]),
      errors,
      stats: () => ({ a: a.stats(), b: b.stats() }),
      state: () => ({ sent, done, inFlight, waiting: !!waiter, buffered: direct ? a.bufferedAmount(to) : null, errors: [...new Set(errors)], nErrors: errors.length, firstError }),
    };
  }
  throw new Error(`unknown library ${lib}`);
}

/** Sends `count` messages of `size` bytes (the last one shorter if `total` says so). */
async function transfer(pair, { total, size, timeoutMs }) {
  const buf = new Uint8Array(size);
  crypto.getRandomValues(buf);
  const done = defer();
  let received = 0;
  let messages = 0;
  pair.receiver((len) => {
    received += len;
    messages += 1;
    if (received >= total) done.resolve(now());
  });
  // CPU time of the whole browser (every process), read by the runner from /proc.
  const cpu0 = window.benchCpu ? await window.benchCpu() : null;
  const t0 = now();
  const send = (async () => {
    let sent = 0;
    while (sent < total) {
      if (pair.full()) await pair.drain();
      const n = Math.min(size, total - sent);
      pair.send(n === size ? buf : buf.subarray(0, n));
      sent += n;
    }
  })();
  send.catch((e) => done.reject(e));
  const t1 = await deadline(done.promise, timeoutMs, 'transfer').catch((e) => {
    throw new Error(`${e.message} (${received} of ${total} bytes arrived; ${JSON.stringify(pair.state?.() ?? {})})`);
  });
  const cpuMs = cpu0 == null ? null : (await window.benchCpu()) - cpu0;
  return { ms: t1 - t0, bytes: received, messages, cpuMs };
}

// 2. Throughput of `total` bytes in 60 KiB messages (rhizome's broadcast limit is 63 KiB;
// its `send` takes up to 16 MiB, but every library gets the same messages here).
async function throughput(lib, total = 64 << 20, size = 60 * 1024, window = 8 << 20, limit = 1 << 20) {
  const pair = await openPair(lib, { window, limit });
  try {
    const r = await transfer(pair, { total, size, timeoutMs: 120_000 });
    return { ...r, mibps: total / (1 << 20) / (r.ms / 1000), errors: pair.errors?.length ?? 0 };
  } finally { await pair.close(); }
}

// 3. Rate of `count` messages of `size` bytes.
async function rate(lib, count = 10_000, size = 1024) {
  const pair = await openPair(lib, { window: 1 << 20 });
  try {
    const r = await transfer(pair, { total: count * size, size, timeoutMs: 120_000 });
    return { ...r, perSec: r.messages / (r.ms / 1000), errors: pair.errors?.length ?? 0 };
  } finally { await pair.close(); }
}

// ---------------------------------------------------------------------------------------
// 4 + 5. Broadcast latency in an n-peer group, and memory per peer.

async function memory() {
  if (typeof window.gc === 'function') {
    for (let i = 0; i < 3; i++) { window.gc(); await sleep(30); }
  }
  const m = {
    jsHeap: performance.memory ? performance.memory.usedJSHeapSize : null,
    wasm: wasm ? wasm.memory.buffer.byteLength : null,
    uasm: null,
  };
  if (self.crossOriginIsolated && performance.measureUserAgentSpecificMemory) {
    try {
      m.uasm = (await deadline(performance.measureUserAgentSpecificMemory(), 30_000, 'measureUserAgentSpecificMemory')).bytes;
    } catch { /* not available: say so in the results */ }
  }
  return m;
}

const pct = (sorted, p) => sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : null;

/**
 * A group of n peers where any one can broadcast: `send(origin, u8)`, `onDeliver(fn)`
 * called with (receiver, u8). rhizome: an overlay (HyParView + Plumtree, default views).
 * raw: a full mesh of n(n-1)/2 negotiated channels, a broadcast is a loop over them.
 */
async function openGroup(lib, n) {
  if (lib === 'rhizome') {
    const room = uid('group');
    const nodes = await rhizomeNodes(n, room);
    let deliver = () => {};
    nodes.forEach((node, i) => node.on('broadcast', (e) => deliver(i, e.data, e.hops)));
    // Formed: everyone has a neighbour and the neighbour counts stopped changing for 500 ms.
    const end = now() + 20_000;
    let last = '';
    let stableSince = now();
    while (now() < end) {
      const counts = nodes.map((x) => x.neighbors().length);
      const key = counts.join(',');
      if (key !== last) { last = key; stableSince = now(); }
      if (counts.every((c) => c > 0) && now() - stableSince > 500) break;
      await sleep(50);
    }
    return {
      send: (i, u8) => nodes[i].broadcast(u8),
      onDeliver: (fn) => { deliver = fn; },
      links: nodes.reduce((s, x) => s + x.neighbors().length, 0) / 2,
      close: () => leaveAll(nodes),
    };
  }
  if (lib === 'raw') {
    const peers = Array.from({ length: n }, () => []);
    const all = [];
    for (let i = 0; i < n; i++) {
      for (let j = i + 1; j < n; j++) {
        const [a, b] = rawPairInPage();
        peers[i].push(a.dc);
        peers[j].push(b.dc);
        all.push(a, b);
        a.dc.__to = j;
        b.dc.__to = i;
      }
    }
    await deadline(Promise.all(all.map((p) => p.dc.readyState === 'open' ? null : once(p.dc, 'open'))), 30_000, 'raw mesh open');
    let deliver = () => {};
    for (const [i, chans] of peers.entries()) {
      for (const dc of chans) dc.onmessage = (e) => deliver(i, new Uint8Array(e.data), 1);
    }
    return {
      send: (i, u8) => { for (const dc of peers[i]) dc.send(u8); },
      onDeliver: (fn) => { deliver = fn; },
      links: all.length / 2,
      close: () => all.forEach((p) => p.close()),
    };
  }
  throw new Error(`unknown library ${lib}`);
}

async function latency(lib, n = 8, count = 100, gapMs = 25, size = 64, origins = n) {
  if (lib === 'rhizome') await loadWasm();
  const before = await memory();
  const tForm = now();
  const group = await openGroup(lib, n);
  const formMs = now() - tForm;
  const sentAt = new Map();
  const samples = [];
  let warm = 0;
  let got = 0;
  const all = defer();
  const expected = count * (n - 1);
  const hops = {};
  const slowest = [];
  group.onDeliver((_i, u8, h) => {
    const k = new DataView(u8.buffer, u8.byteOffset, u8.byteLength).getUint32(0);
    const t = sentAt.get(k);
    if (t === undefined) return;
    if (k < 1_000_000) { warm += 1; return; }
    samples.push(now() - t);
    hops[h] = (hops[h] ?? 0) + 1;
    const j = k - 1_000_000;
    slowest[j] = Math.max(slowest[j] ?? 0, now() - t);
    got += 1;
    if (got >= expected) all.resolve();
  });
  const msg = (k) => { const u8 = new Uint8Array(size); new DataView(u8.buffer).setUint32(0, k); return u8; };
  try {
    // Warm-up: at least 10 broadcasts, one from every origin of the measured ones
    // (Plumtree keeps a tree per origin, built by its first broadcasts).
    const warmCount = Math.max(10, origins);
    for (let w = 0; w < warmCount; w++) {
      sentAt.set(w, now());
      group.send(w % n, msg(w));
      await sleep(gapMs);
    }
    const wEnd = now() + 5_000;
    while (warm < warmCount * (n - 1) && now() < wEnd) await sleep(20);
    const warmDelivered = warm;
    const mid = await memory();
    for (let k = 0; k < count; k++) {
      const key = 1_000_000 + k;
      const u8 = msg(key);
      sentAt.set(key, now());
      group.send(k % origins, u8);
      await sleep(gapMs);
    }
    await deadline(all.promise, 10_000, 'deliveries').catch(() => {});
    samples.sort((a, b) => a - b);
    return {
      n,
      links: group.links,
      formMs,
      p50: pct(samples, 50),
      p99: pct(samples, 99),
      max: samples.at(-1) ?? null,
      mean: samples.reduce((a, b) => a + b, 0) / (samples.length || 1),
      // Deliveries that took over 250 ms: in rhizome, those repaired by IHAVE → GRAFT
      // (graft timeout 500 ms) instead of the eager tree.
      over250: samples.filter((x) => x > 250).length,
      hops,
      slowest: slowest.map((x) => Math.round(x)),
      delivered: samples.length,
      expected,
      warmDelivered,
      memory: {
        jsHeapPerPeer: before.jsHeap != null ? (mid.jsHeap - before.jsHeap) / n : null,
        wasmPerPeer: before.wasm != null ? (mid.wasm - before.wasm) / n : null,
        uasmPerPeer: before.uasm != null && mid.uasm != null ? (mid.uasm - before.uasm) / n : null,
        wasmTotal: mid.wasm,
        before,
        after: mid,
      },
    };
  } finally { await group.close(); }
}

// ---------------------------------------------------------------------------------------

/**
 * Raw `RTCDataChannel.send` of `count` messages of `size` bytes, each a view into either an
 * ordinary ArrayBuffer or a WebAssembly.Memory of `pages` 64 KiB pages (what the
 * wasm-bindgen glue passes for a `&[u8]`), or ('wasm-copy') a copy of that view into a
 * fresh ArrayBuffer (`slice()`) sent instead; a `+ack` suffix ('ab+ack') makes the receiver
 * answer each message with 16 bytes (traffic both ways, as rhizome's acknowledgements).
 * For BENCH_EVAL experiments.
 */
async function sendView(kind = 'wasm', count = 5000, size = 1024, pages = 32) {
  const backing = !kind.startsWith('ab') ? new WebAssembly.Memory({ initial: pages }).buffer : new ArrayBuffer(pages * 65536);
  const u8 = new Uint8Array(backing, 4096, size);
  const [a, b] = rawPairInPage();
  await deadline(Promise.all([once(a.dc, 'open'), once(b.dc, 'open')]), 15_000, 'open');
  try {
    const done = defer();
    let got = 0;
    // kind '…+ack': the receiver answers every message with 16 bytes, as rhizome's
    // acknowledgements make its channels carry traffic both ways.
    const ack = kind.endsWith('+ack') ? new Uint8Array(16) : null;
    b.dc.onmessage = () => { if (ack) b.dc.send(ack); if (++got === count) done.resolve(now()); };
    const cpu0 = window.benchCpu ? await window.benchCpu() : null;
    const t0 = now();
    let inSend = 0;
    for (let i = 0; i < count; i++) {
      if (a.dc.bufferedAmount > HIGH) await once(a.dc, 'bufferedamountlow');
      const s0 = now();
      a.dc.send(kind.startsWith('wasm-copy') ? u8.slice() : u8);
      inSend += now() - s0;
    }
    const t1 = await deadline(done.promise, 60_000, 'sendView');
    const cpu1 = window.benchCpu ? await window.benchCpu() : null;
    return { kind, ms: t1 - t0, usPerSend: (inSend * 1000) / count, cpuUsPerMsg: cpu0 == null ? null : ((cpu1 - cpu0) * 1000) / count };
  } finally { a.close(); b.close(); }
}

// ---------------------------------------------------------------------------------------
// Join steps, for profiling the join (BENCH_EVAL='[["joinSteps",["rhizome",9]]]').
//
// Wraps the page's WebSocket and RTCPeerConnection (every library looks them up at call
// time) and records when each step first happens, relative to the join's start: WebSocket
// open, the server's hello/welcome (rhizome) or OPEN (PeerJS relay), the first offer
// created and set, sent, received and set remotely, the answer the same, the first ICE
// candidate, ICE checking/connected, the connection connected, the data channel open and
// the first message on it. Returns, per step, the median over `runs` joins.

function installTracer() {
  const marks = new Map();
  const mark = (tag) => { if (!marks.has(tag)) marks.set(tag, now()); };
  const NativeWS = window.WebSocket;
  const NativePC = window.RTCPeerConnection;
  const kindOf = (text) => {
    if (typeof text !== 'string') return 'binary';
    try {
      const m = JSON.parse(text);
      const k = m.payload?.sdp?.type ?? m.payload?.type ?? '';
      // rhizome's signal envelopes carry a JSON body with the payload's kind.
      const body = m.envelope?.body ?? '';
      const rk = /"(offer|answer|candidate)"/i.exec(body)?.[1]?.toLowerCase() ?? '';
      return `${m.type}${k || rk ? `:${(k || rk).toLowerCase()}` : ''}`;
    } catch { return 'text'; }
  };
  class TracedWS extends NativeWS {
    constructor(...a) {
      super(...a);
      mark('ws new');
      this.addEventListener('open', () => mark('ws open'));
      this.addEventListener('message', (e) => mark(`ws recv ${kindOf(e.data)}`));
    }
    send(d) { mark(`ws send ${kindOf(d)}`); return super.send(d); }
  }
  class TracedPC extends NativePC {
    constructor(...a) {
      super(...a);
      mark('pc new');
      this.addEventListener('icecandidate', (e) => { if (e.candidate) mark('ice candidate gathered'); });
      this.addEventListener('iceconnectionstatechange', () => mark(`ice ${this.iceConnectionState}`));
      this.addEventListener('connectionstatechange', () => mark(`pc ${this.connectionState}`));
    }
    createDataChannel(...a) {
      const dc = super.createDataChannel(...a);
      dc.addEventListener('open', () => mark('dc open'));
      dc.addEventListener('message', () => mark('dc first message'));
      return dc;
    }
  }
  for (const f of ['createOffer', 'createAnswer', 'setLocalDescription', 'setRemoteDescription', 'addIceCandidate']) {
    const orig = NativePC.prototype[f];
    TracedPC.prototype[f] = function (...a) {
      const kind = a[0]?.type ?? (f === 'setLocalDescription' ? 'implicit' : '');
      const tag = `${f}${kind ? `(${kind})` : ''}`;
      mark(`${tag} called`);
      const r = orig.apply(this, a);
      r?.then?.(() => mark(`${tag} done`), () => mark(`${tag} failed`));
      return r;
    };
  }
  window.WebSocket = TracedWS;
  window.RTCPeerConnection = TracedPC;
  traceMark = mark;
  return {
    marks,
    mark,
    restore: () => { window.WebSocket = NativeWS; window.RTCPeerConnection = NativePC; traceMark = () => {}; },
  };
}

async function joinSteps(lib = 'rhizome', runs = 9) {
  const all = [];
  for (let i = 0; i < runs; i++) {
    const t = installTracer();
    let r;
    const t0 = now();
    try {
      r = await joinBench[lib]();
    } finally { t.restore(); }
    all.push(Object.fromEntries([...t.marks].map(([k, v]) => [k, v - t0])));
    all[all.length - 1].total = r.ms;
    await sleep(50);
  }
  const tags = [...new Set(all.flatMap((x) => Object.keys(x)))];
  const steps = tags.map((tag) => {
    const v = all.map((x) => x[tag]).filter((x) => x != null).sort((a, b) => a - b);
    return { tag, median: v[v.length >> 1], n: v.length };
  }).sort((a, b) => a.median - b.median);
  return { lib, runs, steps };
}

// ---------------------------------------------------------------------------------------
// Where a slow transfer waits (BENCH_EVAL='[["stallProbe",["rhizome",4194304]]]'): counts
// every data channel's sends, `bufferedamountlow` events and deliveries, and samples them
// with each channel's bufferedAmount every 20 ms during one transfer. Returns the samples
// around the longest gap between deliveries.
async function stallProbe(lib = 'rhizome', total = 4 << 20, size = 60 * 1024) {
  const chans = [];
  const origCreate = RTCPeerConnection.prototype.createDataChannel;
  RTCPeerConnection.prototype.createDataChannel = function (...a) {
    const dc = origCreate.apply(this, a);
    const c = { dc, sends: 0, low: 0, recv: 0 };
    chans.push(c);
    dc.addEventListener('bufferedamountlow', () => { c.low += 1; });
    dc.addEventListener('message', () => { c.recv += 1; });
    return dc;
  };
  const origSend = RTCDataChannel.prototype.send;
  RTCDataChannel.prototype.send = function (d) {
    const c = chans.find((x) => x.dc === this);
    if (c) c.sends += 1;
    return origSend.call(this, d);
  };
  const samples = [];
  let timer;
  try {
    const pair = await openPair(lib);
    const t0 = now();
    timer = setInterval(() => samples.push({ t: Math.round(now() - t0), c: chans.map((c) => [c.sends, c.low, c.recv, c.dc.bufferedAmount, c.dc.readyState[0]]) }), 20);
    const r = await transfer(pair, { total, size, timeoutMs: 60_000 });
    await pair.close();
    // The longest gap: the first sample after which nothing was received for longest.
    let worst = 0;
    let at = 0;
    for (let i = 1; i < samples.length; i++) {
      const recv = (x) => x.c.reduce((n, c) => n + c[2], 0);
      let j = i;
      while (j < samples.length && recv(samples[j]) === recv(samples[i - 1])) j++;
      if (samples[Math.min(j, samples.length - 1)].t - samples[i - 1].t > worst) { worst = samples[Math.min(j, samples.length - 1)].t - samples[i - 1].t; at = i - 1; }
    }
    return { ms: r.ms, worstGapMs: worst, around: samples.slice(Math.max(0, at - 3), at + 6) };
  } finally {
    clearInterval(timer);
    RTCPeerConnection.prototype.createDataChannel = origCreate;
    RTCDataChannel.prototype.send = origSend;
  }
}

// How often a page call uses the browser's timers, microtasks and data channels
// (BENCH_EVAL='[["callCounts",["throughput",["rhizome",33554432,61440]]]]'): the browser
// functions are wrapped with counters for the duration of the call.
async function callCounts(fn, args) {
  const counts = {};
  const wrap = (obj, name, key = name) => {
    const orig = obj[name];
    obj[name] = function (...a) { counts[key] = (counts[key] ?? 0) + 1; return orig.apply(this, a); };
    return () => { obj[name] = orig; };
  };
  const undo = [
    wrap(window, 'setTimeout'), wrap(window, 'clearTimeout'), wrap(window, 'queueMicrotask'),
    wrap(RTCDataChannel.prototype, 'send', 'dc.send'),
    wrap(Promise.prototype, 'then', 'promise.then'),
    wrap(performance, 'now', 'performance.now'),
  ];
  try {
    return { result: await window.bench[fn](...args), counts };
  } finally { undo.forEach((u) => u()); }
}

window.bench = {
  stallProbe,
  callCounts,
  sendView,
  joinSteps,
  join: (lib) => joinBench[lib](),
  /** Runs `window.bench[fn](...args)` n times in a row (for the profiler). */
  repeat: async (n, fn, ...args) => {
    const out = [];
    for (let i = 0; i < n; i++) out.push(await window.bench[fn](...args));
    return out;
  },
  throughput,
  rate,
  latency,
  memory,
  loadWasm: async () => { await loadWasm(); return wasm.memory.buffer.byteLength; },
  info: () => ({
    userAgent: navigator.userAgent,
    crossOriginIsolated: self.crossOriginIsolated,
    performanceMemory: !!performance.memory,
    measureUserAgentSpecificMemory: typeof performance.measureUserAgentSpecificMemory === 'function',
    gc: typeof window.gc === 'function',
    hardwareConcurrency: navigator.hardwareConcurrency,
  }),
};
window.benchReady = true;
