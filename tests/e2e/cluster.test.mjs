// Two signaling servers over one Redis (`--cluster`), native peers (rhizome-node,
// webrtc-rs) and Chromium pages spread round-robin over them: they form ONE overlay (a
// broadcast reaches every peer exactly once), although no peer ever talks to both
// servers. Then server B is
// SIGKILLed: its peers carry on peer to peer, and a newcomer on A joins the same overlay.
// Without the cluster, the peers of A and of B would be two islands that never meet.
//
// Run by `npm test` inside its network namespace; needs redis-server (scripts/setup
// installs it), target/debug/rhizome-node (or $RHIZOME_NODE_BIN) and pkg/ (wasm-pack) from
// the same tree.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  startServer, launchBrowser, openPeerPage, root, until, NODE_BIN, startNative as startNativeNode, freePort,
} from './harness.mjs';

const HAVE_REDIS = spawnSync('redis-server', ['--version']).status === 0;
const PKG = process.env.RHIZOME_PKG_DIR ?? join(root, 'pkg');
const NATIVES = 4;

let redis;
let browser;
let servers = [];
const natives = [];

async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' });
  const url = `redis://127.0.0.1:${port}`;
  await until('redis-server answers', () => spawnSync('redis-cli', ['-p', String(port), 'ping']).stdout?.toString().trim() === 'PONG'
    || 'no PONG yet', 10_000);
  return { url, child, stop: () => child.kill('SIGKILL') };
}

/** rhizome-node in `room` through `server`; resolves once it printed its id. */
async function startNative(server, room) {
  const native = await startNativeNode(server.wsUrl, room);
  natives.push(native);
  return native;
}

/** A Chromium page in `room` through `server`, with the same interface as a native peer. */
async function startPage(server, room) {
  const { page, id } = await openPeerPage(browser, server, room);
  return {
    id,
    page,
    send: (text) => page.evaluate((t) => window.node.broadcast(t), text),
    neighbors: async () => new Set(await page.evaluate(() => window.node.neighbors())),
    heard: async (text) => (await page.evaluate(() => window.heard)).filter((m) => m.text === text).length,
    received: async (text) => (await page.evaluate(() => window.messages)).some((m) => m.text === text),
    stop: () => page.close(),
  };
}

const counts = (peers, text) => Promise.all(peers.map((p) => p.heard(text)));

/** Broadcasts from `from` and checks that every peer in `to` hears it exactly once. */
async function broadcastReachesAllOnce(from, to, text) {
  await from.send(text);
  await until(`"${text}" reaches all ${to.length} peers`, async () => {
    const heard = await counts(to, text);
    return heard.every((n) => n >= 1) || heard;
  }, 20_000);
  await new Promise((r) => setTimeout(r, 500));
  assert.deepEqual(await counts(to, text), to.map(() => 1), 'exactly once each');
}

before(async () => {
  if (!HAVE_REDIS || !existsSync(NODE_BIN) || !existsSync(PKG)) return;
  redis = await startRedis();
  const args = ['--cluster', redis.url, '--cluster-ttl', '2s'];
  servers = [await startServer(args), await startServer(args)];
  browser = await launchBrowser();
});

after(async () => {
  await Promise.all(natives.map((n) => n.stop()));
  await browser?.close();
  await Promise.all(servers.filter((s) => s.process.exitCode === null && s.process.signalCode === null)
    .map((s) => s.stop()));
  redis?.stop();
});

test('peers spread over two clustered servers form one overlay; it survives a server kill', {
  skip: !HAVE_REDIS ? 'redis-server is not installed (scripts/setup installs it)'
    : !existsSync(NODE_BIN) ? `${NODE_BIN} is missing (cargo build -p rhizome-node)`
      : !existsSync(PKG) ? `${PKG} is missing (wasm-pack build)` : false,
  timeout: 90_000,
}, async () => {
  const room = `cluster-${Date.now()}`;
  const [a, b] = servers;
  const onA = [];
  const onB = [];
  for (let i = 0; i < NATIVES; i += 1) {
    (i % 2 === 0 ? onA : onB).push(await startNative(servers[i % 2], room));
  }
  onA.push(await startPage(a, room));
  onB.push(await startPage(b, room));
  const peers = [...onA, ...onB];
  // Every peer has neighbours, and some links join a peer of A to a peer of B.
  await until('every peer has a neighbour', async () => {
    const sizes = await Promise.all(peers.map(async (p) => (await p.neighbors()).size));
    return sizes.every((n) => n > 0) || sizes;
  }, 30_000);
  const idsB = new Set(onB.map((p) => p.id));
  await until('a link crosses the servers', async () => {
    for (const p of onA) if ([...await p.neighbors()].some((n) => idsB.has(n))) return true;
    return 'none yet';
  }, 20_000);
  // One overlay: a broadcast from a peer of A reaches every other peer once.
  await broadcastReachesAllOnce(onA[0], peers.filter((p) => p !== onA[0]), 'one-overlay');
  const pageA = onA[onA.length - 1];
  await broadcastReachesAllOnce(pageA, peers.filter((p) => p !== pageA), 'from-a-page');
  // The DHT finds every peer: a direct message from the page on A to each, acknowledged.
  for (const p of peers.filter((x) => x !== pageA)) {
    const sent = await pageA.page.evaluate(([to, t]) => window.node.send(to, t), [p.id, `direct-${p.id}`]);
    assert.ok(sent.hops >= 1, `a direct message to ${p.id}`);
  }
  await until('every peer received its direct message', async () => {
    const got = await Promise.all(peers.filter((x) => x !== pageA).map((p) => p.received(`direct-${p.id}`)));
    return got.every(Boolean) || got;
  }, 10_000);

  // Kill server B: its peers keep their links and still hear the overlay...
  b.process.kill('SIGKILL');
  await broadcastReachesAllOnce(onB[0], peers.filter((p) => p !== onB[0]), 'after-kill');
  // ...and a newcomer on A (once B's members have expired) joins the same overlay.
  await new Promise((r) => setTimeout(r, 2_500));
  const late = await startNative(a, room);
  await until('the newcomer has a neighbour', async () => (await late.neighbors()).size > 0 || 'none yet', 20_000);
  // From the page that was on B, to everyone including the newcomer.
  const pageB = onB[onB.length - 1];
  await broadcastReachesAllOnce(pageB, [...peers.filter((p) => p !== pageB), late], 'newcomer');
});
