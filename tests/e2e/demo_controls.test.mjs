// The demo page's controls: "add 5 peers in this tab", the peer details on hover and
// click, and "leave" (the other tabs see the peers go).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, launchBrowser, requireDemoBundle, root } from './harness.mjs';

const shots = join(root, 'results', 'e2e');
const room = `controls-${Date.now().toString(36)}`;
let server;
let browser;
const pages = [];

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

async function until(what, fn, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const last = await fn();
    if (last === true) return;
    if (Date.now() > deadline) assert.fail(`${what} within ${ms} ms; last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

const snapshot = (page) => page.evaluate(() => window.rhizomeDemo.snapshot());

async function openDemo() {
  const page = await browser.context.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  await page.setViewportSize({ width: 1440, height: 900 });
  await page.goto(`${server.url}/?room=${room}`);
  await page.waitForFunction(() => window.rhizomeDemo?.snapshot().state === 'joined', null, { timeout: 20_000 });
  const p = { page, errors };
  pages.push(p);
  return p;
}

test('"add 5 peers in this tab" starts 5 more nodes, drawn in every tab', async () => {
  const a = await openDemo();
  const b = await openDemo();
  await openDemo();
  await a.page.click('#add-peers');
  await until('every tab draws 8 connected peers', async () => {
    const snaps = await Promise.all(pages.map((p) => snapshot(p.page)));
    return snaps.every((s) => s.nodes.length === 8 && s.connected) ||
      snaps.map((s) => ({ nodes: s.nodes.length, connected: s.connected }));
  }, 60_000);
  const s = await snapshot(a.page);
  assert.equal(s.local.length, 6, 'this tab runs 6 nodes');
  assert.equal(await a.page.locator('#graph g.node.local').count(), 5, 'the in-tab peers are marked');
  assert.equal(await a.page.locator('#graph g.node.me').count(), 1, 'one node is this peer');
  assert.match(await a.page.textContent('#st-local'), /^6/);
  assert.equal(await a.page.isEnabled('#add-peers'), true);

  await b.page.fill('#message', 'hi, eight peers');
  await b.page.click('#send');
  await until('tab A lists the message', async () =>
    (await snapshot(a.page)).messages.some((m) => m.text === 'hi, eight peers'), 15_000);
});

test('hovering and clicking a node shows its id, neighbours and traffic', async () => {
  const { page } = pages[0];
  const other = (await snapshot(pages[1].page)).me;
  await page.bringToFront();
  await until('the layout comes to rest', async () => (await snapshot(page)).settled, 20_000);
  const node = page.locator(`#graph g.node[data-id="${other}"] circle.body`);
  await node.hover();
  await page.waitForSelector('#tooltip:not([hidden])');
  assert.match(await page.textContent('#details'), new RegExp(other));
  await node.click();
  await page.mouse.move(5, 5); // off the node: the selection stays
  const details = await page.textContent('#details');
  assert.match(details, new RegExp(other));
  assert.match(details, /neighbours \(\d+\)/);
  assert.match(details, /frames sent \/ received/);
  assert.match(details, /RTT\s*not exposed by the rhizome API yet/);
  assert.equal(await page.locator('#graph g.node.selected').count(), 1);
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(shots, 'demo-add-peers.png') });
});

test('"leave" leaves the room: the other tabs stop drawing this tab\'s peers', async () => {
  const [a, ...others] = pages;
  await a.page.click('#leave');
  await a.page.waitForFunction(() => window.rhizomeDemo.snapshot().state === 'left', null, { timeout: 10_000 });
  assert.equal(await a.page.textContent('#leave'), 'rejoin');
  assert.equal(await a.page.getAttribute('#server-state', 'data-state'), 'left');
  await until('the other tabs draw only each other', async () => {
    const snaps = await Promise.all(others.map((p) => snapshot(p.page)));
    return snaps.every((s) => s.nodes.length === others.length && s.connected) || snaps.map((s) => s.nodes.length);
  }, 20_000);
});

test('a duplicated tab (same sessionStorage) takes a fresh peer id', async () => {
  const original = pages[1];
  const secret = await original.page.evaluate(() => sessionStorage.getItem('rhizome.demo.secret'));
  const page = await browser.context.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  await page.addInitScript((s) => sessionStorage.setItem('rhizome.demo.secret', s), secret);
  await page.goto(`${server.url}/?room=${room}`);
  await page.waitForFunction(() => window.rhizomeDemo?.snapshot().state === 'joined', null, { timeout: 20_000 });
  pages.push({ page, errors });
  const copy = (await page.textContent('#peer-id')).trim();
  const first = (await snapshot(original.page)).me;
  assert.match(copy, /^[0-9a-f]{64}$/);
  assert.notEqual(copy, first);
  await until('both tabs draw each other', async () => {
    const snaps = await Promise.all([original.page, page].map(snapshot));
    return snaps.every((s) => s.nodes.includes(copy) && s.nodes.includes(first)) || snaps.map((s) => s.nodes.length);
  }, 20_000);
});

test('no page of the controls test logged a console error', () => {
  for (const [i, p] of pages.entries()) assert.deepEqual(p.errors, [], `page ${i + 1}`);
});
