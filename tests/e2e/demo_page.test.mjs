// The page `npm start` serves: it must load the wasm module and show this peer's id.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, openDemoPage } from './harness.mjs';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  assert.equal(await server?.stop(), 0, 'the server shuts down cleanly on SIGTERM');
});

async function peerIdShownBy(page) {
  await page.goto(server.url);
  await page.waitForSelector('#peer-id[data-state="ready"]', { timeout: 20_000 });
  return (await page.textContent('#peer-id')).trim();
}

test('the demo page loads the wasm module and shows this peer id', async () => {
  const page = await browser.context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  const id = await peerIdShownBy(page);
  assert.match(id, /^[0-9a-f]{64}$/);
  assert.deepEqual(errors, []);
  const wasm = await page.evaluate(() =>
    performance.getEntriesByType('resource').some((r) => r.name.endsWith('.wasm')));
  assert.ok(wasm, 'the page fetched a .wasm module');
  await page.close();
});

test('a reload keeps the same peer id', async () => {
  const page = await browser.context.newPage();
  const first = await peerIdShownBy(page);
  const second = await peerIdShownBy(page);
  assert.equal(second, first);
  await page.close();
});

test('?mode= picks the overlay mode, and the legend says whether DHT links exist', async () => {
  const room = `mode-${Date.now().toString(36)}`;
  const legend = async (mode) => {
    const { page, errors } = await openDemoPage(browser, `${server.url}/?room=${room}-${mode}&mode=${mode}`);
    const text = await page.textContent('#legend-dht');
    const title = await page.getAttribute('#legend-dht', 'title');
    await page.close();
    assert.deepEqual(errors, []);
    return { text, title };
  };
  const flat = await legend('unstructured');
  assert.match(flat.text, /none: this peer runs unstructured/);
  assert.match(flat.title, /"unstructured" mode/);
  const hybrid = await legend('hybrid');
  assert.match(hybrid.text, /kept for routing/);
  assert.match(hybrid.title, /"hybrid" mode/);
});

test('the server answers health checks next to the page', async () => {
  const res = await fetch(`${server.url}/healthz`);
  assert.equal(res.status, 200);
});
