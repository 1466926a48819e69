// The picture of the network this tab draws, merged from what its nodes know.
//
// Every rhizome node started with `announceTopology` broadcasts its active view (with the
// round-trip time of each link) and its DHT links now and then, and `node.topology()`
// returns the whole graph assembled from everyone's announcements (entries expire, so
// peers that vanish drop out). This tab may run
// several nodes; their pictures are merged here. Pure functions: no DOM, no wasm.

/** The key of an undirected link. */
export const linkKey = (a, b) => (a < b ? `${a}|${b}` : `${b}|${a}`);

/**
 * Merges the topologies of this tab's nodes into one graph.
 *
 * @param {{id: string, topology: object, stats?: object}[]} locals this tab's nodes, the
 *   primary one first, each with the result of its `topology()` (and `stats()`).
 * @returns {{nodes: Map<string, object>, links: Map<string, object>}} drawable nodes
 *   (kind `me`, `local` or `remote`) and links (kind `active`, `dht` or `passive`; an
 *   active or DHT link has `rttMs`, a number or null when unknown).
 */
export function mergeTopologies(locals) {
  const nodes = new Map();
  const links = new Map();
  const localIds = new Set(locals.map((l) => l.id));
  const primary = locals[0]?.id;

  const kindOf = (id) => (id === primary ? 'me' : localIds.has(id) ? 'local' : 'remote');
  const upsert = (peer, source) => {
    let n = nodes.get(peer.id);
    if (!n) {
      n = {
        id: peer.id, kind: kindOf(peer.id), neighbors: [], dht: [], delivered: 0, framesSent: 0, framesReceived: 0, views: {},
      };
      nodes.set(peer.id, n);
    }
    // Every local node holds the same announcements; take the first non-empty view.
    if (n.neighbors.length === 0 && (peer.neighbors?.length ?? 0) > 0) n.neighbors = [...peer.neighbors];
    if (n.dht.length === 0 && (peer.dht?.length ?? 0) > 0) n.dht = [...peer.dht];
    n.delivered = Math.max(n.delivered, peer.delivered ?? 0);
    n.framesSent = Math.max(n.framesSent, peer.frames_sent ?? 0);
    n.framesReceived = Math.max(n.framesReceived, peer.frames_received ?? 0);
    if (source) n.views[source] = peer.view;
    return n;
  };

  // Which peers are alive: ourselves, our open connections, and every peer with a live
  // announcement. A passive-view entry says only that a peer existed once: it is drawn
  // (as a dashed link) only when the peer is known to be alive some other way.
  for (const l of locals) {
    const t = l.topology;
    if (!t) continue;
    for (const p of t.peers) {
      const alive =
        p.view === 'self' || p.view === 'active' || p.view === 'announced' ||
        // a passive peer whose announcement we hold (it lists its neighbours)
        (p.view === 'passive' && (p.neighbors?.length ?? 0) > 0);
      if (alive || localIds.has(p.id)) upsert(p, l.id);
    }
  }
  for (const l of locals) {
    const n = nodes.get(l.id);
    if (n && l.stats) n.stats = l.stats;
    if (n) n.neighbors = l.neighbors ?? n.neighbors;
  }

  // Active and DHT links. A local node measures its own links' RTTs; every other RTT is
  // as an end announced it. A known value is kept over an unknown one.
  const addLink = (a, b, kind, rttMs) => {
    if (!nodes.has(a) || !nodes.has(b)) return;
    const key = linkKey(a, b);
    const old = links.get(key);
    if (old?.kind === 'active' && kind === 'dht') return; // one line per pair: active wins
    const rtt = Number.isFinite(rttMs) ? rttMs : null;
    links.set(key, { key, source: a, target: b, kind, rttMs: rtt ?? (old?.kind === kind ? old.rttMs : null) });
  };
  for (const l of locals) {
    const t = l.topology;
    if (!t) continue;
    for (const [a, b] of t.edges) addLink(a, b, 'active', null);
    for (const link of t.links ?? []) addLink(link.a, link.b, link.kind, link.rtt_ms);
  }
  // A local node's own measurement is the freshest.
  for (const l of locals) {
    for (const s of l.stats?.links ?? []) {
      const link = links.get(linkKey(l.id, s.peer));
      if (link && Number.isFinite(s.rtt_ms)) link.rttMs = s.rtt_ms;
    }
  }
  for (const l of locals) {
    const t = l.topology;
    if (!t) continue;
    for (const p of t.peers) {
      if (p.view !== 'passive' || !nodes.has(p.id)) continue;
      const key = linkKey(l.id, p.id);
      if (!links.has(key)) links.set(key, { key, source: l.id, target: p.id, kind: 'passive' });
    }
  }
  return { nodes, links };
}

/**
 * The links of node `id` in a merged model, for its card: each with the peer at the
 * other end, its kind, its RTT and, when `stats` (the node's own `stats()`, for a node of
 * this tab) is given, the bytes sent and received on it. Active links first, then DHT.
 */
export function linksOf(model, id, stats = null) {
  const perPeer = new Map((stats?.links ?? []).map((s) => [s.peer, s]));
  const out = [];
  for (const l of model.links.values()) {
    if (l.kind === 'passive') continue;
    const s = typeof l.source === 'object' ? l.source.id : l.source;
    const t = typeof l.target === 'object' ? l.target.id : l.target;
    if (s !== id && t !== id) continue;
    const peer = s === id ? t : s;
    const own = perPeer.get(peer);
    out.push({
      peer,
      kind: l.kind,
      rttMs: Number.isFinite(own?.rtt_ms) ? own.rtt_ms : l.rttMs ?? null,
      bytesSent: own?.bytes_sent ?? null,
      bytesReceived: own?.bytes_received ?? null,
    });
  }
  const order = { active: 0, dht: 1 };
  return out.sort((a, b) => order[a.kind] - order[b.kind] || (a.peer < b.peer ? -1 : 1));
}

/**
 * A round-trip time for people: "0.4 ms", "12 ms", "<0.1 ms" (browsers report whole
 * milliseconds, so a same-machine link often reads 0), or "–" when unknown.
 */
export function formatRtt(ms) {
  if (!Number.isFinite(ms)) return '–';
  if (ms < 0.05) return '<0.1 ms';
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  return `${Math.round(ms)} ms`;
}

/** Whether `ids` form one connected component over the active links. */
export function isConnected(ids, links) {
  const list = [...ids];
  if (list.length <= 1) return true;
  const adj = new Map(list.map((id) => [id, []]));
  for (const l of links) {
    if (l.kind !== 'active') continue;
    const s = typeof l.source === 'object' ? l.source.id : l.source;
    const t = typeof l.target === 'object' ? l.target.id : l.target;
    if (adj.has(s) && adj.has(t)) {
      adj.get(s).push(t);
      adj.get(t).push(s);
    }
  }
  const seen = new Set([list[0]]);
  const stack = [list[0]];
  while (stack.length) {
    for (const next of adj.get(stack.pop())) {
      if (!seen.has(next)) {
        seen.add(next);
        stack.push(next);
      }
    }
  }
  return seen.size === list.length;
}

/**
 * Orders the hops of a broadcast trace by their distance from the origin: each hop gets
 * `depth`, the number of hops before it (0 for the origin's own sends).
 */
export function orderTrace(origin, hops) {
  const depth = new Map([[origin, 0]]);
  const out = [];
  let pending = hops.map(([from, to]) => ({ from, to }));
  for (let round = 0; pending.length && round < 64; round++) {
    const rest = [];
    for (const h of pending) {
      if (depth.has(h.from)) {
        out.push({ ...h, depth: depth.get(h.from) });
        if (!depth.has(h.to)) depth.set(h.to, depth.get(h.from) + 1);
      } else rest.push(h);
    }
    if (rest.length === pending.length) {
      // Hops whose sender we never reached (its announcement is missing): keep them, last.
      const max = Math.max(0, ...out.map((h) => h.depth + 1));
      for (const h of rest) out.push({ ...h, depth: max });
      break;
    }
    pending = rest;
  }
  return out.sort((a, b) => a.depth - b.depth);
}

export const shortId = (id) => (id ? id.slice(0, 8) : '');

export function formatBytes(n) {
  if (!Number.isFinite(n)) return '–';
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

export function formatRate(n) {
  if (!Number.isFinite(n)) return '–';
  return n < 10 ? n.toFixed(1) : String(Math.round(n));
}
