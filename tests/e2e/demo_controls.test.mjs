// The demo page's controls: "add 5 peers in this tab", the peer details on hover and
// click (with each link's round-trip time and traffic), and "leave" (the other tabs see
// the peers go).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  startServer, launchBrowser, requireDemoBundle, root, until, openDemoPage, demoSnapshot as snapshot,
} from './harness.mjs';

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

async function openDemo() {
  const p = await openDemoPage(browser, `${server.url}/?room=${room}`);
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
  // Announcements carry each link's RTT: within a few intervals every active link drawn
  // has one, whichever tab it belongs to.
  await until('every active link drawn has a measured RTT', async () => {
    const links = (await snapshot(page)).linkRtts.filter((l) => l.kind === 'active');
    return (links.length > 0 && links.every((l) => Number.isFinite(l.rttMs))) || links;
  }, 15_000);
  await page.bringToFront();
  await until('the layout comes to rest', async () => (await snapshot(page)).settled, 20_000);
  const node = page.locator(`#graph g.node[data-id="${other}"] circle.body`);
  await node.hover();
  await page.waitForSelector('#tooltip:not([hidden])');
  // The card is filled on the hover too, not necessarily in the same frame as the tooltip.
  await until('the card shows the hovered peer', async () =>
    new RegExp(other).test(await page.textContent('#details')) || (await page.textContent('#details')), 5_000);
  await node.click();
  await page.mouse.move(5, 5); // off the node: the selection stays
  const details = await page.textContent('#details');
  assert.match(details, new RegExp(other));
  assert.match(details, /neighbours \(\d+\)/);
  assert.match(details, /frames sent \/ received/);
  // Another tab's peer: each neighbour link with the RTT it announced.
  const rtts = await page.$$eval('#details li.link-row.active .rtt', (els) => els.map((e) => e.textContent));
  assert.ok(rtts.length > 0, 'the card lists the neighbour links');
  assert.ok(rtts.some((t) => /^<?\d+(\.\d)? ms$/.test(t)), `a neighbour link shows a numeric RTT: ${rtts}`);
  assert.equal(await page.locator('#graph g.node.selected').count(), 1);
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(shots, 'demo-add-peers.png') });

  // A peer of this tab: its own measurements, with the traffic of each link.
  const s = await snapshot(page);
  const mine = page.locator(`#graph g.node[data-id="${s.me}"] circle.body`);
  await mine.click();
  await page.mouse.move(5, 5);
  await until('this peer\'s card shows an RTT and the traffic of each neighbour link', async () => {
    const rows = await page.$$eval('#details li.link-row.active', (els) => els.map((e) => ({
      rtt: e.querySelector('.rtt')?.textContent, traffic: e.querySelector('.traffic')?.textContent,
    })));
    return (rows.length === s.stats.neighbors && rows.every((r) => /^<?\d+(\.\d)? ms$/.test(r.rtt) && /↑.+ ↓.+/.test(r.traffic ?? ''))) || rows;
  }, 10_000);
  const own = (await snapshot(page)).stats.links.filter((l) => l.kind === 'active');
  assert.ok(own.length > 0 && own.every((l) => l.open && l.rtt_ms >= 0 && l.bytes_sent > 0 && l.bytes_received > 0),
    `node.stats().links: ${JSON.stringify(own)}`);
});

test('DHT links (hybrid mode, the default) are drawn dotted, apart from the active links, and on the card', async () => {
  const { page } = pages[0];
  // 8 peers with 5 neighbours each: a peer whose non-neighbours fall in a routing slot no
  // neighbour covers opens a DHT link to one (checked every 5 s).
  await until('the page draws a DHT link', async () => (await snapshot(page)).dhtLinks.length > 0, 30_000);
  const s = await snapshot(page);
  const key = ([a, b]) => (a < b ? `${a}|${b}` : `${b}|${a}`);
  const active = new Set(s.activeLinks.map(key));
  assert.ok(s.dhtLinks.every((l) => !active.has(key(l))), 'a pair is drawn once, as active or as DHT');
  assert.equal(await page.getAttribute('#graph', 'data-dht-links'), String(s.dhtLinks.length));
  assert.equal(await page.locator('#graph line.link.dht').count(), s.dhtLinks.length);
  assert.equal(s.connected, true, 'connectivity is judged on active links');
  assert.match(await page.textContent('#legend-dht'), /kept for routing/);
  assert.match(await page.textContent('#counts'), /\d+ DHT links?/);

  const [end] = s.dhtLinks[0];
  await page.locator(`#graph g.node[data-id="${end}"] circle.body`).click();
  await page.mouse.move(5, 5);
  await until('the card lists the DHT link', async () =>
    (await page.locator('#details li.link-row.dht').count()) > 0, 5_000);
  assert.match(await page.textContent('#details'), /DHT links \(\d+\)/);
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
  const { page, errors } = await openDemoPage(browser, `${server.url}/?room=${room}`, {
    initScript: (s) => sessionStorage.setItem('rhizome.demo.secret', s), arg: secret,
  });
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
