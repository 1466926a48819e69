// A native peer (the rhizome-node binary, webrtc-rs) and a browser peer (the npm package's
// JS API in headless Chromium, or in Firefox) join one room through the real signaling
// server and form one overlay: each sees the other as a neighbour that stays up, and
// broadcasts and direct messages cross in both directions. Run by `npm test` inside its network namespace; it needs
// target/debug/rhizome-node (or $RHIZOME_NODE_BIN) and pkg/ (wasm-pack) built from the same
// tree: peers of different builds may not speak the same wire format.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import {
  startServer, launchBrowser, until, joinInPage, openPeerPage, NODE_BIN, startNative as startNativeNode,
} from './harness.mjs';
import { launchFirefox } from './firefox.mjs';

let server;
let browser;
/** Headless Firefox, started by the first test that needs it. */
let firefox;

before(async () => {
  if (!existsSync(NODE_BIN)) {
    throw new Error(`${NODE_BIN} is missing: run \`cargo test --workspace --no-run\` (npm test does) or \`cargo build -p rhizome-node\` first`);
  }
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await firefox?.close();
  await browser?.close();
  await server?.stop();
});

/** rhizome-node in `room`, through `via` (by default the suite's server). */
const startNative = (room, extraArgs = [], via = server) => startNativeNode(via.wsUrl, room, extraArgs);

/**
 * Opens a page, in Chromium or in Firefox (`engine`), that joins `room` through the JS API
 * and records what its node hears. The page has `evaluate(fn, arg)` and `close()`.
 */
async function openPage(room, engine = 'chromium') {
  if (engine !== 'firefox') return openPeerPage(browser, server, room);
  firefox ??= await launchFirefox();
  await firefox.goto(`${server.url}/healthz`);
  const page = {
    evaluate: (fn, arg) => firefox.executeAsync(fn, arg),
    close: () => firefox.goto('about:blank'),
  };
  const id = await page.evaluate(joinInPage, { wsUrl: server.wsUrl, room });
  return { page, id };
}

/**
 * The scenario, for one way of meeting: `first` joins the room before `second`, so the
 * second is introduced to the first and dials it (the other side answers).
 */
async function nativeAndBrowserFormOneOverlay(first, mdns, engine = 'chromium') {
  const room = `interop-${first}-${mdns}-${engine}-${Date.now()}`;
  let native;
  let page;
  let pageId;
  try {
    if (first === 'native') {
      native = await startNative(room, ['--mdns', mdns]);
      ({ page, id: pageId } = await openPage(room, engine));
    } else {
      ({ page, id: pageId } = await openPage(room, engine));
      native = await startNative(room, ['--mdns', mdns]);
    }

    // Both see each other as neighbours...
    await native.waitFor('the native node reports the page as a neighbour',
      (l) => l === `neighbor-up ${pageId}`);
    await until('the page reports the native node as a neighbour',
      async () => (await page.evaluate(() => window.node.neighbors())).includes(native.id)
        || await page.evaluate(() => ({ neighbors: window.node.neighbors(), errors: window.errors })));

    // ...and the link stays up (not just opened and dropped a moment later).
    await new Promise((r) => setTimeout(r, 3_000));
    assert.ok(!native.lines.includes(`neighbor-down ${pageId}`),
      `the native node dropped the page: ${native.lines.join(' | ')}\n${native.stderr()}`);
    assert.deepEqual(await page.evaluate(() => window.downs), [], 'the page lost no neighbour');
    assert.ok((await page.evaluate(() => window.node.neighbors())).includes(native.id));

    // A broadcast from the native side reaches the page, once, from the native peer...
    native.send('hello from webrtc-rs');
    await until('the page hears the native broadcast', async () =>
      (await page.evaluate(() => window.heard)).some((m) => m.text === 'hello from webrtc-rs')
        || await page.evaluate(() => window.heard));
    // ...and one from the page reaches the native side (escaped text, one line).
    await page.evaluate(() => window.node.broadcast('hello from\nthe browser'));
    await native.waitFor('the native node hears the page broadcast',
      (l) => l === `broadcast ${pageId} hello from\\nthe browser`);
    await new Promise((r) => setTimeout(r, 300));
    const heard = await page.evaluate(() => window.heard);
    assert.deepEqual(heard, [{ from: native.id, text: 'hello from webrtc-rs' }], 'exactly once');
    assert.equal(native.lines.filter((l) => l.startsWith('broadcast ')).length, 1, 'exactly once');

    // Direct messages, both ways: the CLI's `@<peer> text` and `node.send(peer, data)`.
    native.send(`@${pageId} direct from webrtc-rs`);
    await native.waitFor('the page acknowledges the direct message', (l) => l === `delivered ${pageId} 1`);
    await until('the page receives the direct message', async () => {
      const messages = await page.evaluate(() => window.messages);
      return messages.some((m) => m.text === 'direct from webrtc-rs') || messages;
    });
    assert.deepEqual(await page.evaluate(() => window.messages),
      [{ from: native.id, text: 'direct from webrtc-rs', hops: 1 }], 'exactly once, one hop');
    const sent = await page.evaluate((to) => window.node.send(to, 'direct from the browser'), native.id);
    assert.equal(sent.hops, 1);
    await native.waitFor('the native node receives the direct message',
      (l) => l === `message ${pageId} direct from the browser`);

    // A message larger than one transport chunk, both ways: the browser sends the
    // largest chunks webrtc-rs takes (64 KiB), webrtc-rs sends 16 KiB ones.
    const big = `big from the browser ${'b'.repeat(200_000)} end`;
    await page.evaluate(([to, text]) => window.node.send(to, text), [native.id, big]);
    await native.waitFor('the native node receives the 200 KB message', (l) => l === `message ${pageId} ${big}`);
    const bigBack = `big from webrtc-rs ${'n'.repeat(200_000)} end`;
    native.send(`@${pageId} ${bigBack}`);
    await until('the page receives the 200 KB message', async () =>
      (await page.evaluate(() => window.messages)).some((m) => m.text === bigBack) || 'not yet');

    // The native node leaves gracefully on SIGTERM and the page notices at once.
    assert.equal(await native.stop(), 0, native.stderr());
    await until('the page sees the native node leave', async () =>
      (await page.evaluate(() => window.downs)).includes(native.id)
        || await page.evaluate(() => window.downs), 10_000);
    await page.evaluate(() => window.node.leave());
  } finally {
    await native?.stop();
    await page?.close();
  }
}

test('a native peer and a browser peer that dials it form one overlay and talk both ways', async () => {
  await nativeAndBrowserFormOneOverlay('native', 'resolve');
});

test('a native peer dials a browser peer and they talk both ways', async () => {
  await nativeAndBrowserFormOneOverlay('browser', 'resolve');
});

test('a native peer that sends no mDNS still meets a browser peer (peer-reflexive candidates)', async () => {
  await nativeAndBrowserFormOneOverlay('native', 'off');
});

test('a native peer and a Firefox peer form one overlay and talk both ways, whichever dials', async () => {
  await nativeAndBrowserFormOneOverlay('native', 'resolve', 'firefox');
  await nativeAndBrowserFormOneOverlay('browser', 'resolve', 'firefox');
});

test('a native peer and a page that outlived a server restart merge with a page that joined after it', async () => {
  // The server restarts (same port, empty room): the native node and the first page lost
  // their sessions and reconnect in the background; the newcomer, joining at once, is
  // introduced to nobody (or to them, if they were quick), and the survivors' first
  // sample after reconnecting makes them probe it. One overlay again.
  const room = `restart-${Date.now()}`;
  let restartable = await startServer();
  let native;
  let first;
  let newcomer;
  try {
    native = await startNative(room, [], restartable);
    first = await openPeerPage(browser, restartable, room);
    await native.waitFor('the native node and the page are neighbours', (l) => l === `neighbor-up ${first.id}`);

    const { port } = new URL(restartable.url);
    await restartable.stop();
    restartable = await startServer([], { bind: `127.0.0.1:${port}` });
    newcomer = await openPeerPage(browser, restartable, room);

    await until('the newcomer and the survivors form one overlay', async () => {
      const ns = await newcomer.page.evaluate(() => window.node.neighbors());
      const fs = await first.page.evaluate(() => window.node.neighbors());
      const linked = ns.length > 0 && fs.includes(native.id);
      const touches = ns.includes(native.id) || ns.includes(first.id);
      return (linked && touches) || { newcomer: ns, first: fs };
    }, 60_000);
    native.send('after the restart');
    await until('the newcomer hears the native peer', async () =>
      (await newcomer.page.evaluate(() => window.heard)).some((m) => m.text === 'after the restart')
        || await newcomer.page.evaluate(() => window.heard));
    await newcomer.page.evaluate(() => window.node.broadcast('from the newcomer'));
    await native.waitFor('the native peer hears the newcomer', (l) => l === `broadcast ${newcomer.id} from the newcomer`);
    await until('the first page hears the newcomer', async () =>
      (await first.page.evaluate(() => window.heard)).some((m) => m.text === 'from the newcomer') || 'not yet');
    // The first page registers again too (within its reconnection window, 5 s at first).
    await until('the first page reconnected to the restarted server', async () => {
      const stats = await first.page.evaluate(() => window.node.stats());
      return (stats.server_connected && stats.reconnects >= 1) || stats;
    }, 40_000);
  } finally {
    await native?.stop();
    await first?.page.close();
    await newcomer?.page.close();
    await restartable.stop();
  }
});
