// A Firefox peer and a Chromium peer (two browser engines, two WebRTC stacks) join one
// room through the real signaling server with the npm package's JS API: each sees the
// other as a neighbour, broadcasts and direct messages cross both ways. Firefox
// (firefox-esr) runs headless under geckodriver (tests/e2e/firefox.mjs); Chromium under
// Playwright. Run by `npm test` inside its network namespace.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, until, joinInPage, openPeerPage } from './harness.mjs';
import { launchFirefox } from './firefox.mjs';

let server;
let chromium;
let firefox;

before(async () => {
  server = await startServer();
  chromium = await launchBrowser();
  firefox = await launchFirefox();
});

after(async () => {
  await firefox?.close();
  await chromium?.close();
  await server?.stop();
});

/** What a page's node has seen so far, as plain data. */
function pageState() {
  const { node, heard, messages, downs, errors } = window;
  return { neighbors: node.neighbors(), heard, messages, downs, errors };
}

test('a Firefox peer and a Chromium peer form one overlay: broadcasts and direct messages both ways', async () => {
  const room = `firefox-${Date.now()}`;
  const { page, id: chromiumId } = await openPeerPage(chromium, server, room);

  await firefox.goto(`${server.url}/healthz`);
  const firefoxId = await firefox.executeAsync(joinInPage, { wsUrl: server.wsUrl, room });
  assert.match(firefoxId, /^[0-9a-f]{64}$/);

  const chromiumState = () => page.evaluate(pageState);
  const firefoxState = () => firefox.execute(pageState);
  await until('Chromium and Firefox are neighbours', async () => {
    const [c, f] = [await chromiumState(), await firefoxState()];
    return (c.neighbors.includes(firefoxId) && f.neighbors.includes(chromiumId)) || { c, f };
  });

  await page.evaluate(() => window.node.broadcast('from Chromium'));
  await firefox.execute(() => window.node.broadcast('from Firefox'));
  await until('each hears the other broadcast', async () => {
    const [c, f] = [await chromiumState(), await firefoxState()];
    return (c.heard.some((m) => m.text === 'from Firefox') && f.heard.some((m) => m.text === 'from Chromium'))
      || { c, f };
  });

  const toFirefox = await page.evaluate((to) => window.node.send(to, 'direct from Chromium'), firefoxId);
  const toChromium = await firefox.executeAsync((to) => window.node.send(to, 'direct from Firefox'), chromiumId);
  assert.deepEqual([toFirefox.hops, toChromium.hops], [1, 1], 'neighbours are one hop apart');

  const [c, f] = [await chromiumState(), await firefoxState()];
  assert.deepEqual(c.heard, [{ from: firefoxId, text: 'from Firefox' }]);
  assert.deepEqual(f.heard, [{ from: chromiumId, text: 'from Chromium' }]);
  assert.deepEqual(c.messages, [{ from: firefoxId, text: 'direct from Firefox', hops: 1 }]);
  assert.deepEqual(f.messages, [{ from: chromiumId, text: 'direct from Chromium', hops: 1 }]);
  assert.deepEqual([c.downs, f.downs], [[], []], 'the link stayed up');

  await firefox.executeAsync(() => window.node.leave());
  await until('Chromium sees Firefox leave', async () =>
    (await chromiumState()).downs.includes(firefoxId) || await chromiumState(), 10_000);
  await page.evaluate(() => window.node.leave());
  await page.close();
});
