// The live force-directed graph: layout by d3-force, drawn as SVG.
//
// One render loop (requestAnimationFrame) ticks the simulation, eases the view so the
// whole network stays in sight (until the user pans or zooms; double-click resets), and
// plays broadcast paths. It stops when nothing moves, so idle tabs cost nothing.
import {
  forceSimulation, forceLink, forceManyBody, forceCollide, forceX, forceY,
} from 'd3-force';
import { select } from 'd3-selection';
import { zoom, zoomIdentity } from 'd3-zoom';
import { drag } from 'd3-drag';
import { isConnected, shortId } from './network.js';

const SVG_NS = 'http://www.w3.org/2000/svg';
const RADIUS = { me: 13, local: 9.5, remote: 9.5 };
const HOP_MS = 520; // time between the hop levels of a broadcast path
const TRAVEL_MS = 440; // time a packet takes along one link
const LINGER_MS = 1600; // how long a traced link stays lit

const idOf = (end) => (typeof end === 'object' ? end.id : end);
const ease = (t) => (t < 0.5 ? 2 * t * t : 1 - (-2 * t + 2) ** 2 / 2);

export class Graph {
  constructor(svg, { onSelect = () => {}, onHover = () => {} } = {}) {
    this.svg = select(svg);
    this.el = svg;
    this.onSelect = onSelect;
    this.onHover = onHover;
    this.nodes = [];
    this.links = [];
    this.byId = new Map();
    this.selected = null;
    this.hovered = null;
    this.animations = [];
    this.tracesPlayed = 0;
    this.autoFit = true;
    this.view = { k: 1, x: 0, y: 0 };
    this.running = false;

    this.root = this.svg.append('g').attr('class', 'viewport');
    this.linkLayer = this.root.append('g').attr('class', 'links');
    this.traceLayer = this.root.append('g').attr('class', 'traces');
    this.nodeLayer = this.root.append('g').attr('class', 'nodes');

    this.sim = forceSimulation([])
      .force('link', forceLink([]).id((d) => d.id)
        .distance((l) => (l.kind === 'active' ? 120 : l.kind === 'dht' ? 150 : 170))
        .strength((l) => (l.kind === 'active' ? 0.5 : l.kind === 'dht' ? 0.08 : 0.03)))
      .force('charge', forceManyBody().strength(-650).distanceMax(700))
      .force('collide', forceCollide(30))
      .force('x', forceX(0).strength(0.055))
      .force('y', forceY(0).strength(0.075))
      .alphaDecay(0.04)
      .stop();

    this.zoom = zoom()
      .scaleExtent([0.2, 4])
      .on('zoom', (event) => {
        if (event.sourceEvent) this.autoFit = false; // the user took over the view
        this.view = { k: event.transform.k, x: event.transform.x, y: event.transform.y };
        this.root.attr('transform', event.transform.toString());
        this.placeNodes(); // glyphs keep their size on screen: zooming spreads the layout
      });
    this.svg.call(this.zoom).on('dblclick.zoom', null);
    this.svg.on('dblclick', () => {
      this.autoFit = true;
      this.kick();
    });
    this.svg.on('click', (event) => {
      if (event.target === this.el) this.select(null, true);
    });

    this.dragBehavior = drag()
      .on('start', (event, d) => {
        if (!event.active) this.sim.alphaTarget(0.2);
        d.fx = d.x;
        d.fy = d.y;
        this.kick();
      })
      .on('drag', (event, d) => {
        d.fx = event.x;
        d.fy = event.y;
        this.kick();
      })
      .on('end', (event, d) => {
        this.sim.alphaTarget(0);
        d.fx = null;
        d.fy = null;
      });

    new ResizeObserver(() => this.kick()).observe(svg);
  }

  /**
   * Replaces the graph's content: `nodes` and `links` are Maps from `mergeTopologies`.
   * Known nodes keep their positions; new ones appear next to a neighbour.
   */
  update(nodeMap, linkMap) {
    let changed = false;
    const next = [];
    for (const [id, info] of nodeMap) {
      let n = this.byId.get(id);
      if (!n) {
        changed = true;
        n = { id };
        const anchor = [...linkMap.values()]
          .map((l) => (l.source === id ? l.target : l.target === id ? l.source : null))
          .map((other) => other && this.byId.get(other))
          .find((o) => o && Number.isFinite(o.x));
        const a = Math.random() * Math.PI * 2;
        n.x = (anchor?.x ?? 0) + Math.cos(a) * 30;
        n.y = (anchor?.y ?? 0) + Math.sin(a) * 30;
      }
      if (n.kind !== info.kind) changed = true;
      Object.assign(n, { kind: info.kind, info });
      next.push(n);
    }
    if (next.length !== this.nodes.length) changed = true;
    this.nodes = next;
    this.byId = new Map(next.map((n) => [n.id, n]));

    const oldKeys = new Set(this.links.map((l) => `${l.key}:${l.kind}`));
    const links = [...linkMap.values()].map((l) => ({ ...l }));
    if (links.length !== this.links.length || links.some((l) => !oldKeys.has(`${l.key}:${l.kind}`))) changed = true;
    this.links = links;

    if (this.selected && !this.byId.has(this.selected)) this.select(null, true);

    this.sim.nodes(this.nodes);
    this.sim.force('link').links(this.links);
    if (changed) this.sim.alpha(Math.max(this.sim.alpha(), 0.45));
    this.drawStructure();
    this.kick();

    const ids = this.nodes.map((n) => n.id);
    const count = (kind) => String(this.links.filter((l) => l.kind === kind).length);
    this.el.dataset.nodes = String(ids.length);
    this.el.dataset.activeLinks = count('active');
    this.el.dataset.dhtLinks = count('dht');
    this.el.dataset.passiveLinks = count('passive');
    this.el.dataset.connected = String(ids.length > 0 && isConnected(ids, this.links));
    return changed;
  }

  drawStructure() {
    this.linkSel = this.linkLayer.selectAll('line.link')
      .data(this.links, (l) => `${l.key}:${l.kind}`)
      .join('line')
      .attr('class', (l) => `link ${l.kind}`)
      .attr('data-rtt', (l) => (Number.isFinite(l.rttMs) ? l.rttMs.toFixed(2) : null));

    this.nodeSel = this.nodeLayer.selectAll('g.node')
      .data(this.nodes, (n) => n.id)
      .join((enter) => {
        const g = enter.append('g').attr('class', 'node');
        g.append('circle').attr('class', 'halo');
        g.append('circle').attr('class', 'ring');
        g.append('circle').attr('class', 'body');
        g.append('text').attr('text-anchor', 'middle');
        g.on('mouseenter', (event, d) => {
          this.hovered = d.id;
          this.applyHighlight();
          this.onHover(d.id, event);
        })
          .on('mousemove', (event, d) => this.onHover(d.id, event))
          .on('mouseleave', () => {
            this.hovered = null;
            this.applyHighlight();
            this.onHover(null);
          })
          .on('click', (event, d) => {
            event.stopPropagation();
            this.select(d.id, true);
          })
          .call(this.dragBehavior);
        return g;
      })
      .attr('class', (d) => `node ${d.kind}`)
      .attr('data-id', (d) => d.id);
    this.nodeSel.select('circle.halo').attr('r', (d) => (d.kind === 'me' ? RADIUS.me + 9 : 0));
    this.nodeSel.select('circle.ring').attr('r', (d) => RADIUS[d.kind] + 4.5);
    this.nodeSel.select('circle.body').attr('r', (d) => RADIUS[d.kind]);
    this.nodeSel.select('text')
      .attr('dy', (d) => RADIUS[d.kind] + 14)
      .text((d) => (d.kind === 'me' ? `${shortId(d.id)} (you)` : shortId(d.id)));
    this.applyHighlight();
  }

  /** Dims everything but the hovered (or selected) node and its links. */
  applyHighlight() {
    if (!this.nodeSel) return;
    const focus = this.hovered ?? this.selected;
    const near = new Set();
    if (focus) {
      near.add(focus);
      for (const l of this.links) {
        const s = idOf(l.source);
        const t = idOf(l.target);
        if (s === focus) near.add(t);
        if (t === focus) near.add(s);
      }
    }
    this.nodeSel
      .classed('selected', (d) => d.id === this.selected)
      .classed('dim', (d) => focus != null && !near.has(d.id));
    this.linkSel
      .classed('hi', (l) => focus != null && (idOf(l.source) === focus || idOf(l.target) === focus))
      .classed('dim', (l) => focus != null && idOf(l.source) !== focus && idOf(l.target) !== focus);
  }

  select(id, fromUser = false) {
    this.selected = id;
    this.applyHighlight();
    if (fromUser) this.onSelect(id);
  }

  /**
   * Plays the path a broadcast took: `hops` from `orderTrace`, each `{from, to, depth}`.
   * Packets leave the origin and travel level by level along the links they used.
   */
  animateTrace(origin, hops) {
    const t0 = performance.now() + 50;
    // With reduced motion the whole path lights up at once, without travelling packets.
    const still = matchMedia('(prefers-reduced-motion: reduce)').matches;
    if (still) hops = hops.map((h) => ({ ...h, depth: 0 }));
    this.tracesPlayed += 1;
    this.el.dataset.traces = String(this.tracesPlayed);
    this.animations.push({ type: 'pulse', at: origin, start: t0, dur: 800 });
    for (const h of hops) {
      const start = t0 + h.depth * HOP_MS;
      const dur = still ? 1 : TRAVEL_MS;
      this.animations.push({ type: 'hop', from: h.from, to: h.to, start, dur });
      if (!still) this.animations.push({ type: 'pulse', at: h.to, start: start + dur, dur: 800 });
    }
    this.kick();
  }

  /** What the graph shows, for tests and for the page. */
  snapshot() {
    return {
      nodes: this.nodes.map((n) => ({ id: n.id, kind: n.kind })),
      links: this.links.map((l) => ({
        source: idOf(l.source), target: idOf(l.target), kind: l.kind, rttMs: l.rttMs ?? null,
      })),
      connected: this.el.dataset.connected === 'true',
      traces: this.tracesPlayed,
    };
  }

  /** Starts the render loop if it is not running. */
  kick() {
    if (this.running) return;
    this.running = true;
    requestAnimationFrame((t) => this.frame(t));
  }

  frame(now) {
    let busy = false;
    if (this.sim.alpha() > this.sim.alphaMin() || this.sim.alphaTarget() > 0) {
      this.sim.tick();
      busy = true;
    }
    if (this.nodeSel) {
      this.linkSel
        .attr('x1', (l) => l.source.x).attr('y1', (l) => l.source.y)
        .attr('x2', (l) => l.target.x).attr('y2', (l) => l.target.y);
      this.placeNodes();
    }
    if (this.autoFit && this.fitStep()) busy = true;
    if (this.playAnimations(performance.now())) busy = true;
    if (busy) requestAnimationFrame((t) => this.frame(t));
    else this.running = false;
  }

  placeNodes() {
    if (!this.nodeSel) return;
    const s = (1 / this.view.k).toFixed(4);
    this.nodeSel.attr('transform', (d) => `translate(${d.x.toFixed(1)},${d.y.toFixed(1)}) scale(${s})`);
  }

  /** Whether the layout and every animation have come to rest. */
  get settled() {
    return !this.running;
  }

  /** Eases the view towards one that shows every node; true while it still moves. */
  fitStep() {
    const w = this.el.clientWidth;
    const h = this.el.clientHeight;
    if (!w || !h || this.nodes.length === 0) return false;
    let x0 = Infinity; let y0 = Infinity; let x1 = -Infinity; let y1 = -Infinity;
    for (const n of this.nodes) {
      x0 = Math.min(x0, n.x); y0 = Math.min(y0, n.y);
      x1 = Math.max(x1, n.x); y1 = Math.max(y1, n.y);
    }
    const pad = 60;
    const k = Math.max(0.25, Math.min(2.4, (w - 2 * pad) / Math.max(1, x1 - x0), (h - 2 * pad) / Math.max(1, y1 - y0)));
    const tx = w / 2 - k * (x0 + x1) / 2;
    const ty = h / 2 - 8 - k * (y0 + y1) / 2; // a little higher: labels hang below the nodes
    const v = this.view;
    const f = 0.14;
    const next = { k: v.k + (k - v.k) * f, x: v.x + (tx - v.x) * f, y: v.y + (ty - v.y) * f };
    const moving = Math.abs(next.k - v.k) > 0.0005 || Math.abs(next.x - v.x) > 0.2 || Math.abs(next.y - v.y) > 0.2;
    const target = moving ? next : { k, x: tx, y: ty };
    this.svg.call(this.zoom.transform, zoomIdentity.translate(target.x, target.y).scale(target.k));
    return moving;
  }

  playAnimations(now) {
    if (this.animations.length === 0) return false;
    const keep = [];
    for (const a of this.animations) {
      const t = (now - a.start) / a.dur;
      if (a.type === 'hop') {
        const from = this.byId.get(a.from);
        const to = this.byId.get(a.to);
        const end = a.start + a.dur + LINGER_MS;
        if (now > end || !from || !to) {
          a.line?.remove();
          a.dot?.remove();
          continue;
        }
        if (t >= 0) {
          if (!a.line) {
            a.line = document.createElementNS(SVG_NS, 'line');
            a.line.setAttribute('class', 'link traced');
            a.dot = document.createElementNS(SVG_NS, 'circle');
            a.dot.setAttribute('class', 'packet');
            this.traceLayer.node().append(a.line, a.dot);
          }
          const p = ease(Math.min(1, t));
          a.dot.setAttribute('r', String(5 / this.view.k));
          const x = from.x + (to.x - from.x) * p;
          const y = from.y + (to.y - from.y) * p;
          a.line.setAttribute('x1', from.x); a.line.setAttribute('y1', from.y);
          a.line.setAttribute('x2', x); a.line.setAttribute('y2', y);
          a.dot.setAttribute('cx', x); a.dot.setAttribute('cy', y);
          a.dot.style.opacity = t >= 1 || a.dur < 10 ? '0' : '1';
          const fade = now - (a.start + a.dur);
          a.line.style.opacity = fade > 0 ? String(Math.max(0, 1 - fade / LINGER_MS)) : '1';
        }
        keep.push(a);
      } else {
        const node = this.byId.get(a.at);
        if (t > 1 || !node) {
          a.el?.remove();
          continue;
        }
        if (t >= 0) {
          if (!a.el) {
            a.el = document.createElementNS(SVG_NS, 'circle');
            a.el.setAttribute('class', 'pulse');
            this.traceLayer.node().append(a.el);
          }
          const r0 = RADIUS[node.kind];
          a.el.setAttribute('cx', node.x);
          a.el.setAttribute('cy', node.y);
          a.el.setAttribute('r', String((r0 + 18 * t) / this.view.k));
          a.el.style.strokeWidth = String(3 * (1 - t) + 0.5);
          a.el.style.opacity = String(1 - t);
        }
        keep.push(a);
      }
    }
    this.animations = keep;
    return keep.length > 0;
  }
}
