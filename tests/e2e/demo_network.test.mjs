// The demo page's pure model (www/src/network.js): how it merges what this tab's nodes
// know into one graph, decides connectivity, and orders a broadcast's hop trace.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  mergeTopologies, isConnected, orderTrace, linkKey, formatBytes, formatRtt, linksOf,
} from '../../www/src/network.js';

const peer = (id, view, neighbors = [], extra = {}) => ({
  id, view, neighbors, delivered: 0, frames_sent: 0, frames_received: 0, ...extra,
});

test('the merged graph holds live peers only, with active and passive links', () => {
  const topology = {
    me: 'a',
    peers: [
      peer('a', 'self', ['b']),
      peer('b', 'active', ['a', 'c']),
      peer('c', 'announced', ['b'], { delivered: 7 }),
      peer('d', 'passive', ['c']), // passive, but it announces: alive
      peer('e', 'passive', []), // passive and silent: maybe long gone, not drawn
    ],
    edges: [['a', 'b'], ['b', 'c'], ['c', 'd'], ['a', 'e']],
  };
  const { nodes, links } = mergeTopologies([{ id: 'a', topology, neighbors: ['b'] }]);
  assert.deepEqual([...nodes.keys()].sort(), ['a', 'b', 'c', 'd']);
  assert.equal(nodes.get('a').kind, 'me');
  assert.equal(nodes.get('c').kind, 'remote');
  assert.equal(nodes.get('c').delivered, 7);
  assert.deepEqual(nodes.get('a').neighbors, ['b']);
  const kinds = Object.fromEntries([...links.values()].map((l) => [l.key, l.kind]));
  assert.deepEqual(kinds, {
    [linkKey('a', 'b')]: 'active',
    [linkKey('b', 'c')]: 'active',
    [linkKey('c', 'd')]: 'active',
    [linkKey('a', 'd')]: 'passive',
  });
});

test('the nodes of one tab are merged, and marked as local', () => {
  const t1 = { me: 'a', peers: [peer('a', 'self', ['b']), peer('b', 'active', ['a'])], edges: [['a', 'b']] };
  const t2 = { me: 'x', peers: [peer('x', 'self', ['b']), peer('b', 'active', ['x']), peer('a', 'passive', ['b'])], edges: [['b', 'x']] };
  const { nodes, links } = mergeTopologies([
    { id: 'a', topology: t1, neighbors: ['b'] },
    { id: 'x', topology: t2, neighbors: ['b'] },
  ]);
  assert.equal(nodes.get('a').kind, 'me');
  assert.equal(nodes.get('x').kind, 'local');
  assert.equal(links.get(linkKey('a', 'x')).kind, 'passive');
  assert.ok(isConnected(nodes.keys(), links.values()));
});

test('DHT links are drawn apart from active ones, with the RTTs the peers measured', () => {
  const topology = {
    me: 'a',
    peers: [
      peer('a', 'self', ['b'], { dht: ['c'] }),
      peer('b', 'active', ['a', 'c']),
      peer('c', 'announced', ['b'], { dht: ['a'] }),
    ],
    edges: [['a', 'b'], ['b', 'c']],
    links: [
      { a: 'a', b: 'b', kind: 'active', rtt_ms: 0.8 },
      { a: 'b', b: 'c', kind: 'active', rtt_ms: null },
      { a: 'a', b: 'c', kind: 'dht', rtt_ms: 3.5 },
    ],
  };
  // The node's own stats are fresher than its topology and carry per-link traffic.
  const stats = {
    links: [
      { peer: 'b', kind: 'active', open: true, rtt_ms: 0.6, bytes_sent: 2048, bytes_received: 100 },
      { peer: 'c', kind: 'dht', open: true, rtt_ms: null, bytes_sent: 10, bytes_received: 20 },
    ],
  };
  const model = mergeTopologies([{ id: 'a', topology, stats, neighbors: ['b'] }]);
  const kinds = Object.fromEntries([...model.links.values()].map((l) => [l.key, [l.kind, l.rttMs]]));
  assert.deepEqual(kinds, {
    [linkKey('a', 'b')]: ['active', 0.6],
    [linkKey('b', 'c')]: ['active', null],
    [linkKey('a', 'c')]: ['dht', 3.5],
  });
  assert.deepEqual(model.nodes.get('c').dht, ['a']);
  // A DHT link does not make the overlay connected.
  assert.ok(isConnected(['a', 'b', 'c'], model.links.values()));
  assert.equal(isConnected(['a', 'c'], [...model.links.values()].filter((l) => l.kind === 'dht')), false);

  assert.deepEqual(linksOf(model, 'a', stats), [
    { peer: 'b', kind: 'active', rttMs: 0.6, bytesSent: 2048, bytesReceived: 100 },
    { peer: 'c', kind: 'dht', rttMs: 3.5, bytesSent: 10, bytesReceived: 20 },
  ]);
  assert.deepEqual(linksOf(model, 'c').map((l) => [l.peer, l.kind, l.rttMs, l.bytesSent]), [
    ['b', 'active', null, null],
    ['a', 'dht', 3.5, null],
  ]);
});

test('a topology from an older package (no links, no dht) still draws', () => {
  const topology = { me: 'a', peers: [peer('a', 'self', ['b']), peer('b', 'active', ['a'])], edges: [['a', 'b']] };
  const { nodes, links } = mergeTopologies([{ id: 'a', topology, neighbors: ['b'] }]);
  assert.deepEqual(nodes.get('b').dht, []);
  assert.deepEqual([...links.values()].map((l) => [l.kind, l.rttMs]), [['active', null]]);
});

test('round-trip times read well', () => {
  assert.equal(formatRtt(0.43), '0.4 ms');
  assert.equal(formatRtt(0), '<0.1 ms');
  assert.equal(formatRtt(12.6), '13 ms');
  assert.equal(formatRtt(null), '–');
  assert.equal(formatRtt(undefined), '–');
});

test('connectivity counts active links only', () => {
  const links = [
    { source: 'a', target: 'b', kind: 'active' },
    { source: 'b', target: 'c', kind: 'passive' },
  ];
  assert.equal(isConnected(['a', 'b', 'c'], links), false);
  assert.equal(isConnected(['a', 'b'], links), true);
  assert.equal(isConnected(['a'], []), true);
});

test('a hop trace is ordered level by level from the origin', () => {
  const hops = [['c', 'd'], ['a', 'b'], ['b', 'c'], ['a', 'e'], ['x', 'y']];
  const ordered = orderTrace('a', hops).map((h) => `${h.from}>${h.to}@${h.depth}`);
  assert.deepEqual(ordered, ['a>b@0', 'a>e@0', 'b>c@1', 'c>d@2', 'x>y@3']);
});

test('byte counts read well', () => {
  assert.equal(formatBytes(512), '512 B');
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.equal(formatBytes(50 * 1024 * 1024), '50 MiB');
});
