// The demo page's pure model (www/src/network.js): how it merges what this tab's nodes
// know into one graph, decides connectivity, and orders a broadcast's hop trace.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mergeTopologies, isConnected, orderTrace, linkKey, formatBytes } from '../../www/src/network.js';

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
