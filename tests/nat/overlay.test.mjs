// An overlay of eight native peers (rhizome-node) behind the NAT lab's routers, through a
// signaling server that offers STUN only, so some pairs can never connect (symmetric ↔
// symmetric, symmetric ↔ port-restricted): every broadcast still reaches every peer
// exactly once, and a direct message from one symmetric peer reaches the other through
// the overlay.
//
// Runs inside scripts/nat-lab (scripts/test does that); without a lab it is skipped.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const NODE_BIN = process.env.RHIZOME_NODE_BIN
  ?? join(process.env.CARGO_TARGET_DIR ?? join(root, 'target'), 'debug', 'rhizome-node');
const skip = process.env.RHIZOME_LAB_HOSTS !== undefined ? false : 'needs the NAT lab: run under scripts/nat-lab';
const ns = (host) => process.env[`RHIZOME_LAB_NS_${host.toUpperCase().replaceAll('-', '_')}`];
const HOSTS = ['none-a', 'cone-a', 'restricted-a', 'symmetric-a', 'cone-b', 'restricted-b', 'symmetric-b', 'shared-1'];

const children = new Set();
after(() => { for (const c of children) c.kill('SIGKILL'); });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function startNode(host, url, room) {
  const child = spawn('ip', ['netns', 'exec', ns(host), NODE_BIN,
    '--signaling', url, '--room', room, '--seed', '--mdns', 'off'], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(child);
  const node = { host, child, lines: [], stderr: '' };
  let partial = '';
  child.stdout.on('data', (d) => {
    partial += d;
    const parts = partial.split('\n');
    partial = parts.pop();
    node.lines.push(...parts);
  });
  child.stderr.on('data', (d) => { node.stderr += d; });
  return new Promise((resolve, reject) => {
    const timer = setInterval(() => {
      const peer = node.lines.find((l) => l.startsWith('peer '));
      if (peer) {
        clearInterval(timer);
        node.id = peer.slice('peer '.length);
        resolve(node);
      } else if (child.exitCode !== null) {
        clearInterval(timer);
        reject(new Error(`rhizome-node in ${host} exited: ${node.stderr}`));
      }
    }, 20);
  });
}

async function waitFor(what, cond, ms) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(100);
  }
}

test('eight peers, some pairs unconnectable: broadcasts reach everyone exactly once, send crosses symmetric NATs through the overlay', { skip, timeout: 150_000 }, async () => {
  const room = `nat-overlay-${Date.now()}`;
  const nodes = [];
  for (const host of HOSTS) nodes.push(await startNode(host, process.env.RHIZOME_LAB_SIGNALING_STUN, room));
  const byHost = Object.fromEntries(nodes.map((n) => [n.host, n]));
  const neighbours = (n) => {
    const up = new Set();
    for (const l of n.lines) {
      if (l.startsWith('neighbor-up ')) up.add(l.slice(12));
      if (l.startsWith('neighbor-down ')) up.delete(l.slice(14));
    }
    return up;
  };
  await waitFor('every peer has a neighbour', () => nodes.every((n) => neighbours(n).size > 0), 60_000);
  const symA = byHost['symmetric-a'];
  const symB = byHost['symmetric-b'];
  assert.ok(!neighbours(symA).has(symB.id), 'the two symmetric peers are not linked directly');

  for (const n of nodes) n.child.stdin.write(`hello from ${n.host}\n`);
  const received = (n) => n.lines.filter((l) => l.startsWith('broadcast ') && l.includes(' hello from '));
  await waitFor('every peer heard every other one', () => nodes.every((n) => received(n).length >= nodes.length - 1), 60_000);
  await sleep(2_000); // duplicates would arrive by now
  for (const n of nodes) {
    const texts = received(n).map((l) => l.split(' ').slice(2).join(' ')).sort();
    const expected = nodes.filter((o) => o !== n).map((o) => `hello from ${o.host}`).sort();
    assert.deepEqual(texts, expected, `${n.host} hears each other peer's broadcast once`);
  }

  symA.child.stdin.write(`@${symB.id} across two symmetric NATs\n`);
  await waitFor('the direct message is delivered', () =>
    symB.lines.includes(`message ${symA.id} across two symmetric NATs`)
    && symA.lines.some((l) => l.startsWith(`delivered ${symB.id} `)), 45_000);
  const hops = Number(symA.lines.find((l) => l.startsWith(`delivered ${symB.id} `)).split(' ')[2]);
  console.log(`symmetric-a → symmetric-b: delivered in ${hops} hops; neighbours: ${nodes.map((n) => `${n.host} ${neighbours(n).size}`).join(', ')}`);
  assert.ok(hops >= 2, 'routed through at least one other peer');
  await Promise.all(nodes.map((n) => new Promise((done) => {
    if (n.child.exitCode !== null) return done();
    n.child.once('exit', done);
    n.child.kill('SIGTERM');
  })));
});
