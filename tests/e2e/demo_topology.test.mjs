// The demo page draws the whole network, carries broadcasts to every tab, drops closed tabs
// from the picture, and keeps working when the signaling server is gone.
//
// Six pages of one browser each run the demo (www/, bundled into www/dist/ by
// `npm run build:demo`) in one room. The pages are read through `window.rhizomeDemo.snapshot()`
// and the `data-` attributes of the graph, and driven through the page's own controls.
// Screenshots go to results/e2e/ (one of them is docs/img/demo.png in the README).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  startServer, launchBrowser, requireDemoBundle, root, until, openDemoPage, demoSnapshot,
} from './harness.mjs';

const PAGES = 6;
const FORM_DEADLINE_MS = 60_000; // six tabs find each other and announce their views
const EXPIRY_DEADLINE_MS = 20_000; // announcements expire after 3 x 1 s
const DELIVERY_DEADLINE_MS = 15_000;
const shots = join(root, 'results', 'e2e');

let server;
let browser;
let serverStopped = false;
const room = `demo-${Date.now().toString(36)}`;
const pages = []; // { page, id, errors }

before(async () => {
  requireDemoBundle();
  mkdirSync(shots, { recursive: true });
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const snapshot = (p) => demoSnapshot(p.page);
const open = () => pages.filter((p) => !p.closed);

async function openDemo(i) {
  const { page, errors } = await openDemoPage(browser, `${server.url}/?room=${room}`);
  const id = (await page.textContent('#peer-id')).trim();
  return { i, page, id, errors, closed: false };
}

/** Every open page draws exactly the open pages' peers, connected by active links. */
async function everyPageShowsTheOpenPeers(deadline) {
  const want = open().map((p) => p.id).sort();
  await until(`every page draws the ${want.length} open peers, connected`, async () => {
    const snaps = await Promise.all(open().map(snapshot));
    const ok = snaps.every((s) => s.connected && JSON.stringify([...s.nodes].sort()) === JSON.stringify(want));
    return ok || snaps.map((s) => ({ me: s.me.slice(0, 8), nodes: s.nodes.length, links: s.activeLinks.length, connected: s.connected }));
  }, deadline);
  // What the tests read is what the page draws.
  for (const p of open()) {
    const drawn = await p.page.$$eval('#graph g.node', (gs) => gs.map((g) => g.dataset.id).sort());
    assert.deepEqual(drawn, want, `page ${p.i + 1} draws one circle per peer`);
    assert.equal(await p.page.getAttribute('#graph', 'data-connected'), 'true');
    assert.equal(await p.page.getAttribute('#graph', 'data-nodes'), String(want.length));
  }
}

/** Types `text` into page `from`'s broadcast box and waits until every open page lists it. */
async function broadcastReachesEveryPage(from, text) {
  await from.page.fill('#message', text);
  await from.page.click('#send');
  await until(`"${text}" reaches every open page`, async () => {
    const snaps = await Promise.all(open().map(snapshot));
    const missing = snaps.filter((s) => !s.messages.some((m) => m.text === text && m.from === from.id));
    return missing.length === 0 || missing.map((s) => s.me.slice(0, 8));
  }, DELIVERY_DEADLINE_MS);
  for (const p of open()) {
    const shown = await p.page.$$eval('#messages li .text', (els) => els.map((e) => e.textContent));
    assert.equal(shown.filter((t) => t === text).length, 1, `page ${p.i + 1} shows "${text}" once`);
  }
}

test(`${PAGES} pages each draw ${PAGES} peers and a connected graph`, async () => {
  for (let i = 0; i < PAGES; i++) pages.push(await openDemo(i));
  assert.equal(new Set(pages.map((p) => p.id)).size, PAGES, 'every tab has its own peer id');
  await everyPageShowsTheOpenPeers(FORM_DEADLINE_MS);
  const s = await snapshot(pages[0]);
  assert.equal(s.server, 'connected');
  assert.ok(s.stats.neighbors > 0 && s.stats.page_connections_created >= s.stats.neighbors);
  assert.match(await pages[0].page.textContent('#st-server'), /connected/);
});

test('a message sent from page 1 appears in every page', async () => {
  await broadcastReachesEveryPage(pages[0], 'hello from page 1');
  for (const s of await Promise.all(pages.slice(1).map(snapshot))) {
    const m = s.messages.find((x) => x.text === 'hello from page 1');
    assert.ok(m.hops >= 1 && m.hops < PAGES, `hops ${m.hops}`);
  }
});

test('the receivers find the path of that message in the announcements and animate it', async () => {
  await until('the receivers are done tracing', async () => {
    const now = await Promise.all(pages.slice(1).map(snapshot));
    const states = now.map((s) => s.messages.find((x) => x.text === 'hello from page 1').trace);
    return states.every((st) => st !== 'waiting') || states;
  }, 10_000);
  const s = await snapshot(pages[1]);
  const m = s.messages.find((x) => x.text === 'hello from page 1');
  await pages[1].page.waitForTimeout(700); // mid-animation, for the screenshot
  await pages[1].page.screenshot({ path: join(shots, 'demo-6-pages.png') });
  assert.ok(Number.isSafeInteger(m.seq), `sequence numbers are exact in JS: ${m.seq}`);
  assert.equal(m.trace, 'done', 'the path was found in the announcements');
  assert.equal(m.pathLinks, PAGES - 1, 'the path reaches every other peer');
  assert.ok(s.traces >= 1, 'the path was animated');
});

test('closing 2 pages leaves 4 connected peers on the others', async () => {
  for (const p of pages.slice(4)) {
    await p.page.close();
    p.closed = true;
  }
  await everyPageShowsTheOpenPeers(EXPIRY_DEADLINE_MS);
});

test('with the signaling server stopped, a new message still reaches every open page', async () => {
  assert.equal(await server.stop(), 0, 'the server shuts down cleanly');
  serverStopped = true;
  await until('every page says the server is not needed', async () => {
    const snaps = await Promise.all(open().map(snapshot));
    return snaps.every((s) => s.server === 'not-needed') || snaps.map((s) => s.server);
  }, 15_000);
  for (const p of open()) {
    assert.match(await p.page.textContent('#server-state'), /not needed/);
    assert.equal(await p.page.isVisible('#banner'), true, 'the page says it carries on without the server');
  }
  await broadcastReachesEveryPage(pages[1], 'still here without a server');
  await everyPageShowsTheOpenPeers(5_000);
  await pages[0].page.screenshot({ path: join(shots, 'demo-no-server.png') });
  await pages[0].page.emulateMedia({ colorScheme: 'dark' });
  await pages[0].page.waitForTimeout(300);
  await pages[0].page.screenshot({ path: join(shots, 'demo-dark.png') });
});

test('no page logged a console error', () => {
  // Once the server is stopped (above), each node tries to reconnect in the background;
  // the browser itself logs each refused WebSocket, which is expected and not ours.
  const reconnecting = (e) => serverStopped && /^console: WebSocket connection to '[^']*\/ws' failed/.test(e);
  for (const p of pages) assert.deepEqual(p.errors.filter((e) => !reconnecting(e)), [], `page ${p.i + 1}`);
});
