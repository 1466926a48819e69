// The rhizome demo page: joins a room, draws the whole network live, carries messages.
//
// Every node of this page runs with `announceTopology`, so each one broadcasts its active
// view (with each link's round-trip time) and its DHT links once a second, and
// `node.topology()` returns the graph of the whole room. The page
// redraws on the node's `topology` event and on a timer; announcements expire after three
// intervals, so closed tabs vanish from the picture within a few seconds.
import init, { Rhizome, Identity, version } from '/pkg/rhizome.js';
import { Graph } from './graph.js';
import {
  mergeTopologies, orderTrace, shortId, formatBytes, formatRate, formatRtt, linksOf,
} from './network.js';

const params = new URLSearchParams(location.search);
const ROOM = params.get('room') || 'demo';
const ANNOUNCE_MS = Math.max(250, Number(params.get('announce')) || 1000);
// The overlay mode (`?mode=unstructured|hybrid|structured`); the node's default otherwise.
const MODE = params.get('mode') || undefined;
const WS_URL = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
const SECRET_KEY = 'rhizome.demo.secret'; // per tab (sessionStorage): a reload keeps the id
const MAX_LOCAL = 31; // this tab's own node plus 30 more (Chromium caps RTCPeerConnections per page)
const TRACE_POLL_MS = [900, 1600, 2600, 4000]; // when to look for a broadcast's hop trace

const TIME = { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' };
const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children.filter((c) => c != null));
  return e;
};

const app = {
  state: 'loading', // loading | joining | joined | left | error
  locals: [], // this tab's nodes: { node, id, primary }
  model: { nodes: new Map(), links: new Map() },
  messages: [], // { key, from, seq, text, hops, own, at, trace, traceState }
  server: 'connecting',
  samples: [], // [{ t, stats }] of the primary node, for rates
  chatTimes: [],
  graph: null,
  selected: null,
  hovered: null,
};

// ---------------------------------------------------------------- start-up

async function main() {
  $('room').textContent = ROOM;
  document.title = `rhizome · ${ROOM}`;
  await init();
  $('version').textContent = `v${version()}`;

  let identity;
  try {
    const saved = sessionStorage.getItem(SECRET_KEY);
    identity = saved ? Identity.fromSecret(saved) : new Identity();
  } catch {
    identity = new Identity();
  }
  if (!(await claimId(identity.id))) {
    // A duplicated tab inherits sessionStorage, so the same identity: take a fresh one.
    identity.free();
    identity = new Identity();
    await claimId(identity.id);
  }
  const secret = identity.secret;
  sessionStorage.setItem(SECRET_KEY, secret);
  const peerId = $('peer-id');
  peerId.textContent = identity.id;
  peerId.title = `this peer's id (short form ${identity.short}); kept for this tab across reloads`;
  peerId.dataset.state = 'ready';
  identity.free();

  app.graph = new Graph($('graph'), {
    onSelect: (id) => { app.selected = id; renderDetails(); },
    onHover: (id, event) => { app.hovered = id; renderTooltip(id, event); renderDetails(); },
  });
  wireControls();
  setState('joining');
  $('stage-hint').textContent = `joining room “${ROOM}” via ${WS_URL} …`;

  let node;
  try {
    node = await Rhizome.join({
      signaling: [WS_URL], room: ROOM, iceServers: [], announceTopology: ANNOUNCE_MS, identity: secret, mode: MODE,
    });
  } catch (e) {
    setState('error');
    setServer('unreachable');
    $('stage-hint').textContent = '';
    showBanner(`Could not join room “${ROOM}”: ${e.code ?? 'error'}: ${e.message}. ` +
      'Is the signaling server running (npm start)? Reload to try again.', 'bad');
    logEvent(`join failed: ${e.message}`, 'bad');
    return;
  }
  addLocal(node, true);
  showMode(node);
  setState('joined');
  $('stage-hint').textContent = 'waiting for other peers: open this page in another tab';
  logEvent(`joined room “${ROOM}” as ${shortId(node.id)}`, 'good');
  refresh();
  setInterval(tick, 1000);
  addEventListener('pagehide', () => {
    for (const l of app.locals) l.node.leave().catch(() => {});
  });
}

// Tabs of this origin tell each other which peer ids they use: a duplicated tab copies
// sessionStorage, and two tabs with one id would keep replacing each other on the server.
const tabs = 'BroadcastChannel' in window ? new BroadcastChannel('rhizome-demo-ids') : null;
let claimedId = null;
let claimAnswered = null;
tabs?.addEventListener('message', ({ data }) => {
  if (data?.type === 'who' && data.id === claimedId) tabs.postMessage({ type: 'taken', id: data.id });
  if (data?.type === 'taken' && claimAnswered) claimAnswered(data.id);
});

/** Resolves to false when another open tab already uses peer id `id`. */
async function claimId(id) {
  if (!tabs) return true;
  const taken = await new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), 150);
    claimAnswered = (other) => {
      if (other === id) {
        clearTimeout(timer);
        resolve(true);
      }
    };
    tabs.postMessage({ type: 'who', id });
  });
  claimAnswered = null;
  if (!taken) claimedId = id;
  return !taken;
}

function addLocal(node, primary = false) {
  const local = { node, id: node.id, primary, delivered: 0 };
  app.locals.push(local);
  node.on('topology', scheduleRefresh);
  node.on('neighbor-up', (e) => {
    if (primary) logEvent(`neighbour up: ${shortId(e.peer)}`, 'good');
    scheduleRefresh();
  });
  node.on('neighbor-down', (e) => {
    if (primary) logEvent(`neighbour down: ${shortId(e.peer)} (repairing from the passive view)`);
    scheduleRefresh();
  });
  node.on('error', (e) => {
    const who = primary ? '' : `[${shortId(node.id)}] `;
    // The server going away is reported as an error; the page says what it means itself.
    logEvent(`${who}${e.code}: ${e.message}`, e.code.startsWith('signaling') ? '' : 'bad');
  });
  node.on('broadcast', (e) => {
    local.delivered += 1;
    if (primary) onMessage(e);
    else onLocalDelivery(local, e);
  });
  return local;
}

// ---------------------------------------------------------------- the graph

let refreshTimer = null;
function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    refresh();
  }, 150);
}

function refresh() {
  if (app.state !== 'joined') return;
  const views = app.locals.map((l) => ({
    id: l.id,
    topology: l.node.topology(),
    stats: l.node.stats(),
    neighbors: l.node.neighbors(),
  }));
  app.model = mergeTopologies(views);
  app.graph.update(app.model.nodes, app.model.links);
  const n = app.model.nodes.size;
  const active = [...app.model.links.values()].filter((l) => l.kind === 'active').length;
  const dht = [...app.model.links.values()].filter((l) => l.kind === 'dht').length;
  const connected = $('graph').dataset.connected === 'true';
  $('counts').textContent =
    `${n} peer${n === 1 ? '' : 's'} · ${active} active link${active === 1 ? '' : 's'}` +
    (dht ? ` · ${dht} DHT link${dht === 1 ? '' : 's'}` : '') +
    (n > 1 ? (connected ? ' · connected' : ' · not connected yet') : '');
  $('stage-hint').textContent = n <= 1 ? 'waiting for other peers: open this page in another tab' : '';
  renderDetails();
}

// ---------------------------------------------------------------- messages

function onMessage(e) {
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(e.data);
  } catch {
    text = `(${e.data.length} bytes of binary data)`;
  }
  // Our own message, heard back through one of this tab's other nodes, is already listed.
  const msg = {
    key: `${e.from}:${e.seq}`, from: e.from, seq: e.seq, text, hops: e.hops, own: false,
    at: new Date(), trace: null, traceState: 'waiting',
  };
  app.messages.unshift(msg);
  app.chatTimes.push(performance.now());
  renderMessage(msg, true);
  followTrace(msg);
}

function onLocalDelivery(local, e) {
  // Another node of this tab heard a broadcast. When it is the primary's own message we
  // learn its sequence number this way and can trace its path too.
  const primary = app.locals[0];
  if (e.from !== primary.id) return;
  let text = null;
  try { text = new TextDecoder().decode(e.data); } catch { /* not text */ }
  const mine = app.messages.findLast((m) => m.own && m.seq == null && m.text === text);
  if (mine) {
    mine.seq = e.seq;
    mine.key = `${mine.from}:${e.seq}`;
    mine.traceState = 'waiting';
    renderMessage(mine);
    followTrace(mine);
  }
}

function send(text) {
  const primary = app.locals[0];
  if (!primary || !text) return;
  let seq;
  try {
    seq = primary.node.broadcast(text); // its sequence number (older packages: undefined)
  } catch (e) {
    logEvent(`broadcast failed: ${e.code}: ${e.message}`, 'bad');
    return;
  }
  // With an older package that returns no sequence number, our own path can only be
  // traced when another node in this tab hears it (see onLocalDelivery).
  const msg = {
    key: `own:${Date.now()}:${Math.random()}`, from: primary.id, seq: seq ?? null, text, hops: 0, own: true,
    at: new Date(), trace: null, traceState: seq != null || app.locals.length > 1 ? 'waiting' : 'own',
  };
  app.messages.unshift(msg);
  app.chatTimes.push(performance.now());
  renderMessage(msg, true);
  if (seq != null) followTrace(msg);
}

/** Whether `seq` names one broadcast exactly (a float above 2^53 does not). */
const traceable = (seq) => typeof seq === 'bigint' || typeof seq === 'string' || Number.isSafeInteger(seq);

/** Looks up a broadcast's hop trace a few times as announcements arrive, then plays it. */
function followTrace(msg) {
  if (!traceable(msg.seq)) {
    msg.traceState = 'unsafe-seq';
    renderMessage(msg);
    return;
  }
  const primary = app.locals[0];
  let best = [];
  TRACE_POLL_MS.forEach((delay, i) => {
    setTimeout(() => {
      if (app.state !== 'joined' || msg.traceState === 'done') return;
      let hops = [];
      try {
        hops = primary.node.trace(msg.from, msg.seq);
      } catch (e) {
        logEvent(`trace failed: ${e.message}`, 'bad');
      }
      if (hops.length > best.length) best = hops;
      const everyone = best.length >= app.model.nodes.size - 1 && best.length > 0;
      const last = i === TRACE_POLL_MS.length - 1;
      if (everyone || (last && best.length > 0)) {
        msg.trace = orderTrace(msg.from, best);
        msg.traceState = 'done';
        renderMessage(msg);
        app.graph.animateTrace(msg.from, msg.trace);
      } else if (last) {
        msg.traceState = 'unknown';
        renderMessage(msg);
      }
    }, delay);
  });
}

const messageEls = new Map();
function renderMessage(msg, fresh = false) {
  const primary = app.locals[0];
  const kind = msg.from === primary?.id ? 'me' : app.locals.some((l) => l.id === msg.from) ? 'local' : 'remote';
  const who = el('span', { className: `who ${kind}`, textContent: kind === 'me' ? 'you' : shortId(msg.from), title: msg.from });
  const time = msg.at.toLocaleTimeString([], TIME);
  const meta = el('span', { className: 'meta', textContent: msg.own ? time : `${time} · ${msg.hops} hop${msg.hops === 1 ? '' : 's'}` });
  const path = el('button', { type: 'button', className: 'path' });
  const depth = msg.trace ? Math.max(0, ...msg.trace.map((h) => h.depth + 1)) : 0;
  switch (msg.traceState) {
    case 'done':
      path.textContent = `▸ replay its path: ${msg.trace.length} link${msg.trace.length === 1 ? '' : 's'}, ${depth} level${depth === 1 ? '' : 's'} deep`;
      path.onclick = () => app.graph.animateTrace(msg.from, msg.trace);
      break;
    case 'waiting':
      path.textContent = 'tracing its path through the announcements…';
      path.disabled = true;
      break;
    case 'unsafe-seq':
      path.textContent = 'path not traceable: its sequence number does not fit a JS number';
      path.title = `seq ${msg.seq} is above 2^53: node.trace() cannot look it up exactly (an API limitation)`;
      path.disabled = true;
      break;
    case 'own':
      path.textContent = 'path not traceable from here: broadcast() does not return its sequence number';
      path.disabled = true;
      break;
    default:
      path.textContent = 'path unknown: no announcement mentions it';
      path.disabled = true;
  }
  const li = el('li', {}, who, meta, el('span', { className: 'text', textContent: msg.text }), path);
  li.dataset.from = msg.from;
  if (msg.seq != null) li.dataset.seq = String(msg.seq);
  if (fresh) li.classList.add('fresh');
  const old = messageEls.get(msg);
  if (old) old.replaceWith(li);
  else $('messages').prepend(li);
  messageEls.set(msg, li);
  while ($('messages').children.length > 100) $('messages').lastElementChild.remove();
}

// ---------------------------------------------------------------- stats, server state

function tick() {
  if (app.state !== 'joined') return;
  refresh();
  const primary = app.locals[0];
  const stats = primary.node.stats();
  const now = performance.now();
  app.samples.push({ t: now, stats });
  while (app.samples.length > 1 && now - app.samples[0].t > 3500) app.samples.shift();
  const first = app.samples[0];
  const dt = (now - first.t) / 1000;
  const rate = (f) => (dt > 0.5 ? (f(stats) - f(first.stats)) / dt : NaN);

  while (app.chatTimes.length && now - app.chatTimes[0] > 10_000) app.chatTimes.shift();
  const chat = app.chatTimes.length / 10;
  setStat('st-neighbors', String(stats.neighbors), `${stats.passive} passive`);
  setStat('st-rate', formatRate(rate((s) => s.delivered + s.broadcasts_sent)), `chat ${chat.toFixed(1)}/s`);
  setStat('st-frames', formatRate(rate((s) => s.frames_received + s.frames_sent)),
    `${formatRate(rate((s) => s.frames_received))} in · ${formatRate(rate((s) => s.frames_sent))} out`);
  setStat('st-bytes-in', formatBytes(stats.bytes_received), `${formatBytes(rate((s) => s.bytes_received))}/s`);
  setStat('st-bytes-out', formatBytes(stats.bytes_sent), `${formatBytes(rate((s) => s.bytes_sent))}/s`);
  setStat('st-pcs', `${stats.page_connections_created}`, `created · ${stats.connections} open`);
  setStat('st-local', String(app.locals.length));

  if (stats.server_connected) setServer('connected');
  else if (stats.neighbors > 0) setServer('not-needed');
  else setServer('unreachable');
}

function setStat(id, main, sub = null) {
  const dd = $(id);
  dd.replaceChildren(main);
  if (sub) dd.append(el('span', { className: 'sub', textContent: sub }));
}

const SERVER_TEXT = {
  connecting: 'connecting…',
  connected: 'connected',
  'not-needed': 'not needed (gone; the overlay carries on)',
  unreachable: 'unreachable, and no neighbours yet',
  left: 'left the room',
};

function setServer(next) {
  const prev = app.server;
  app.server = next;
  const st = $('st-server');
  st.textContent = SERVER_TEXT[next];
  st.dataset.state = next;
  const pill = $('server-state');
  pill.dataset.state = next;
  pill.textContent = `signaling: ${next === 'not-needed' ? 'not needed' : SERVER_TEXT[next].split(',')[0]}`;
  pill.title = `signaling server ${WS_URL}: ${SERVER_TEXT[next]}`;
  updateButtons();
  if (prev === next) return;
  if (next === 'not-needed') {
    showBanner('The signaling server is gone, and this peer does not need it: broadcasts, topology ' +
      'announcements and repairs all travel peer to peer over WebRTC. Only brand-new peers need ' +
      'a server to get in.');
    logEvent('signaling server gone: carrying on peer to peer');
  } else if (next === 'unreachable' && prev !== 'connecting') {
    showBanner('The signaling server is gone and this peer has no neighbours left: it waits for one to reconnect.', 'bad');
    logEvent('signaling server unreachable and no neighbours', 'bad');
  } else if (next === 'connected') {
    showBanner(null);
    if (prev !== 'connecting') logEvent('signaling server connected', 'good');
  }
}

// ---------------------------------------------------------------- details, tooltip

function describe(id) {
  const n = app.model.nodes.get(id);
  if (!n) return null;
  const primary = app.locals[0];
  const local = app.locals.find((l) => l.id === id);
  const view = n.views?.[primary.id];
  const kindText = n.kind === 'me' ? 'this peer (you)' : n.kind === 'local' ? 'another peer in this tab' : 'a peer in another tab or browser';
  const relation = n.kind === 'me' ? null
    : view === 'active' ? 'an active neighbour of yours (open WebRTC link)'
      : view === 'passive' ? 'in your passive view (known, not connected)'
        : 'known from its topology announcements';
  return { n, local, kindText, relation };
}

function renderDetails() {
  const id = app.hovered ?? app.selected;
  const box = $('details');
  box.replaceChildren();
  const d = id && describe(id);
  if (!d) {
    box.append(el('p', { className: 'muted', textContent: app.state === 'joined' ? 'Hover over or click a node.' : 'Nothing selected.' }));
    return;
  }
  const { n, local, kindText, relation } = d;
  box.append(
    el('p', {}, el('strong', { textContent: shortId(n.id) }), ` · ${kindText}`),
    el('code', { className: 'id', textContent: n.id }),
  );
  if (relation) box.append(el('p', { className: 'muted', textContent: `It is ${relation}.` }));
  const stats = local ? local.node.stats() : null;
  const links = linksOf(app.model, n.id, stats);
  // A neighbour whose own announcement has not arrived yet has no drawn link: list it too.
  for (const p of n.neighbors) {
    if (!links.some((l) => l.peer === p && l.kind === 'active')) {
      links.push({ peer: p, kind: 'active', rttMs: null, bytesSent: null, bytesReceived: null });
    }
  }
  const active = links.filter((l) => l.kind === 'active');
  const dht = links.filter((l) => l.kind === 'dht');
  const kv = el('dl', { className: 'kv' });
  const row = (k, v) => kv.append(el('dt', { textContent: k }), el('dd', {}, v));
  row(`neighbours (${active.length})`, linkTable(active, !!local, 'none announced'));
  if (dht.length || n.dht.length) row(`DHT links (${dht.length})`, linkTable(dht, !!local, 'none drawn yet'));
  row('broadcasts delivered', String(n.delivered));
  row('frames sent / received', `${n.framesSent} / ${n.framesReceived}`);
  if (stats) row('bytes sent / received', `${formatBytes(stats.bytes_sent)} / ${formatBytes(stats.bytes_received)}`);
  kv.title = local
    ? 'RTT: the ICE round-trip time this node measures (getStats), re-read every 2 s'
    : `RTTs and traffic as the peer last announced them (every ${ANNOUNCE_MS / 1000} s)`;
  box.append(kv);
}

/** The links of a peer card: the peer, its RTT and, for a node of this tab, its traffic. */
function linkTable(links, withTraffic, empty) {
  if (links.length === 0) return el('span', { className: 'na', textContent: empty });
  const list = el('ul', { className: 'links' });
  for (const l of links) {
    const b = el('button', { type: 'button', textContent: shortId(l.peer), title: l.peer });
    b.onclick = () => { app.selected = l.peer; app.graph.select(l.peer); renderDetails(); };
    const rtt = el('span', {
      className: Number.isFinite(l.rttMs) ? 'rtt' : 'rtt na',
      textContent: Number.isFinite(l.rttMs) ? formatRtt(l.rttMs) : 'RTT –',
      title: Number.isFinite(l.rttMs) ? `round-trip time ${l.rttMs.toFixed(2)} ms` : 'round-trip time not measured yet',
    });
    const li = el('li', { className: `link-row ${l.kind}` }, b, rtt);
    li.dataset.peer = l.peer;
    li.dataset.kind = l.kind;
    if (withTraffic && l.bytesSent != null) {
      li.append(el('span', {
        className: 'traffic',
        textContent: `↑${formatBytes(l.bytesSent)} ↓${formatBytes(l.bytesReceived)}`,
        title: 'bytes sent / received on this link',
      }));
    }
    list.append(li);
  }
  return list;
}

/** Says in the legend whether this room's nodes keep DHT links. */
function showMode(node) {
  let mode = null;
  try {
    mode = typeof node.mode === 'function' ? node.mode() : node.mode; // not in older packages
  } catch { /* unknown */ }
  if (typeof mode !== 'string') mode = null;
  const item = $('legend-dht');
  if (!item || !mode) return;
  item.lastChild.textContent = mode === 'unstructured'
    ? 'DHT link (none: this peer runs unstructured)'
    : 'DHT link (kept for routing, not in the active view)';
  item.title = `this peer runs in "${mode}" mode`;
}

function renderTooltip(id, event) {
  const tip = $('tooltip');
  const d = id && describe(id);
  if (!d || !event) {
    tip.hidden = true;
    return;
  }
  tip.replaceChildren(
    el('strong', { className: 'mono', textContent: shortId(id) }),
    ` · ${d.kindText} · ${d.n.neighbors.length} neighbour${d.n.neighbors.length === 1 ? '' : 's'}`,
  );
  const box = tip.parentElement.getBoundingClientRect();
  tip.style.left = `${Math.min(event.clientX - box.left + 14, box.width - 260)}px`;
  tip.style.top = `${event.clientY - box.top + 14}px`;
  tip.hidden = false;
}

// ---------------------------------------------------------------- controls

function wireControls() {
  $('send-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('message');
    const text = input.value.trim();
    if (!text) return;
    send(text);
    input.value = '';
  });
  $('add-peers').addEventListener('click', addPeers);
  $('leave').addEventListener('click', () => {
    if (app.state === 'left') location.reload();
    else leave();
  });
}

async function addPeers() {
  const button = $('add-peers');
  button.disabled = true;
  const count = Math.min(5, MAX_LOCAL - app.locals.length);
  button.textContent = `adding ${count} peers…`;
  const results = await Promise.allSettled(Array.from({ length: count }, () => Rhizome.join({
    signaling: [WS_URL], room: ROOM, iceServers: [], announceTopology: ANNOUNCE_MS, mode: MODE,
  })));
  let added = 0;
  for (const r of results) {
    if (r.status === 'fulfilled') {
      if (app.state === 'joined') {
        addLocal(r.value, false);
        added += 1;
      } else r.value.leave().catch(() => {});
    } else logEvent(`a new in-tab peer could not join: ${r.reason?.message ?? r.reason}`, 'bad');
  }
  if (added) logEvent(`started ${added} more peer${added === 1 ? '' : 's'} in this tab`, 'good');
  button.textContent = 'add 5 peers in this tab';
  updateButtons();
  scheduleRefresh();
}

async function leave() {
  setState('leaving');
  const nodes = app.locals.map((l) => l.node);
  await Promise.allSettled(nodes.map((n) => n.leave()));
  app.locals = [];
  setState('left');
  setServer('left');
  app.graph.update(new Map(), new Map());
  $('counts').textContent = '';
  $('stage-hint').textContent = 'You left the room. “rejoin” reloads the page.';
  showBanner(null);
  logEvent('left the room');
}

function setState(state) {
  app.state = state;
  document.body.dataset.state = state;
  updateButtons();
}

function updateButtons() {
  const joined = app.state === 'joined';
  const add = $('add-peers');
  const serverUp = app.server === 'connected';
  if (add.textContent.startsWith('add')) {
    add.disabled = !joined || !serverUp || app.locals.length >= MAX_LOCAL;
    add.title = !serverUp && joined
      ? 'new peers need the signaling server to join'
      : app.locals.length >= MAX_LOCAL ? `at most ${MAX_LOCAL} peers per tab` : 'start 5 more rhizome nodes inside this tab';
  }
  const leaveBtn = $('leave');
  leaveBtn.disabled = !(joined || app.state === 'left');
  leaveBtn.textContent = app.state === 'left' ? 'rejoin' : 'leave';
  $('message').disabled = !joined;
  $('send').disabled = !joined;
}

function showBanner(text, kind = 'warn') {
  const b = $('banner');
  b.hidden = !text;
  b.textContent = text ?? '';
  b.dataset.kind = kind;
}

function logEvent(text, kind = '') {
  const t = new Date().toLocaleTimeString([], TIME);
  const li = el('li', { className: kind, title: text }, el('span', { className: 't', textContent: t }), text);
  const list = $('events');
  list.prepend(li);
  while (list.children.length > 60) list.lastElementChild.remove();
}

// ---------------------------------------------------------------- for tests and the curious

window.rhizomeDemo = {
  app,
  /** What the page shows, as plain data. */
  snapshot() {
    const g = app.graph?.snapshot() ?? { nodes: [], links: [], connected: false, traces: 0 };
    return {
      state: app.state,
      room: ROOM,
      me: app.locals[0]?.id ?? null,
      local: app.locals.map((l) => l.id),
      server: app.server,
      nodes: g.nodes.map((n) => n.id),
      activeLinks: g.links.filter((l) => l.kind === 'active').map((l) => [l.source, l.target]),
      dhtLinks: g.links.filter((l) => l.kind === 'dht').map((l) => [l.source, l.target]),
      passiveLinks: g.links.filter((l) => l.kind === 'passive').map((l) => [l.source, l.target]),
      linkRtts: g.links.filter((l) => l.kind !== 'passive').map((l) => ({
        source: l.source, target: l.target, kind: l.kind, rttMs: l.rttMs,
      })),
      connected: g.connected,
      traces: g.traces,
      settled: app.graph?.settled ?? true,
      messages: app.messages.map((m) => ({
        from: m.from, seq: m.seq, text: m.text, hops: m.hops, own: m.own,
        trace: m.traceState, pathLinks: m.trace?.length ?? 0,
      })),
      stats: app.locals[0]?.node.stats() ?? null,
    };
  },
};

main().catch((e) => {
  const idEl = $('peer-id');
  idEl.textContent = `failed to start: ${e?.message ?? e}`;
  idEl.dataset.state = 'error';
  setState('error');
  showBanner(`The demo failed to start: ${e?.message ?? e}`, 'bad');
});
