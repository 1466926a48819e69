// The page `npm start` serves: it must load the wasm module and show this peer's id.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser } from './harness.mjs';

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

test('the server answers health checks next to the page', async () => {
  const res = await fetch(`${server.url}/healthz`);
  assert.equal(res.status, 200);
});
