// Peers in separate pages of one browser join one overlay through the JS API, the way
// an application uses the npm package: `await Rhizome.join({...})`, `on('broadcast')`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, until, openPeerPage } from './harness.mjs';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Opens a page that joins `room` and records what its node hears. */
const openPeer = (room) => openPeerPage(browser, server, room);

test('peers in separate pages of one browser join one overlay and hear each broadcast once', async () => {
  const room = `pages-${Date.now()}`;
  const peers = [];
  for (let i = 0; i < 4; i++) peers.push(await openPeer(room));

  // One connected overlay, not only a neighbour each: a broadcast reaches the peers
  // connected when it is sent (two pages that still form a pair of their own would miss it).
  await until('the pages form one connected overlay', async () => {
    const lists = await Promise.all(peers.map((p) => p.page.evaluate(() => window.node.neighbors())));
    const neighbours = new Map(peers.map((p, i) => [p.id, lists[i]]));
    const reached = new Set([peers[0].id]);
    for (const frontier = [peers[0].id]; frontier.length > 0; ) {
      for (const n of neighbours.get(frontier.pop()) ?? []) {
        if (!reached.has(n)) reached.add(n), frontier.push(n);
      }
    }
    return reached.size === peers.length || lists;
  });

  await peers[0].page.evaluate(() => window.node.broadcast('hello, pages'));
  await until('every other page hears the broadcast', async () => {
    const heard = await Promise.all(peers.slice(1).map((p) => p.page.evaluate(() => window.heard)));
    return heard.every((h) => h.some((m) => m.text === 'hello, pages' && m.from)) || heard;
  });
  await new Promise((r) => setTimeout(r, 500));
  for (const p of peers.slice(1)) {
    const heard = await p.page.evaluate(() => window.heard);
    assert.equal(heard.filter((m) => m.text === 'hello, pages').length, 1, 'exactly once');
    assert.equal(heard[0].from, peers[0].id);
  }

  const topo = await peers[1].page.evaluate(() => window.node.topology());
  assert.equal(topo.me, peers[1].id);
  assert.ok(topo.edges.length > 0);
  const stats = await peers[1].page.evaluate(() => window.node.stats());
  assert.ok(stats.neighbors > 0 && stats.server_connected);

  for (const p of peers) await p.page.evaluate(() => window.node.leave());
  for (const p of peers) await p.page.close();
});

test('bad options and unreachable servers reject with typed errors', async () => {
  const page = await browser.context.newPage();
  await page.goto(`${server.url}/healthz`);
  const codes = await page.evaluate(async () => {
    const { default: init, Rhizome } = await import('/pkg/rhizome.js');
    await init();
    const codeOf = async (opts) => {
      try {
        await Rhizome.join(opts);
        return 'resolved';
      } catch (e) {
        return `${e instanceof Error}:${e.code}`;
      }
    };
    return [
      await codeOf({ room: 'r' }),
      await codeOf({ signaling: [], room: 'r' }),
      await codeOf({ signaling: 'ws://127.0.0.1:9/ws', room: 'r', joinTimeoutMs: 2000 }),
      await codeOf({ signaling: 'ws://127.0.0.1:9/ws', room: 'r', mode: 'banana' }),
    ];
  });
  assert.deepEqual(codes, [
    'true:bad-options',
    'true:bad-options',
    'true:signaling-unreachable',
    'true:bad-options',
  ]);
  await page.close();
});
