// Browser pages (headless Chromium, each browser inside a host namespace of the NAT lab)
// behind two symmetric NATs: through a signaling server that offers TURN, the pages
// connect over the relay with the credentials the server issued; through one that offers
// STUN only they cannot, and the page's node raises `ice-failed` naming the peer.
//
// Runs inside scripts/nat-lab (scripts/test does that) and needs pkg/ (wasm-pack);
// without a lab it is skipped.
import { test, after } from 'node:test';
import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, joinInPage, root, until } from '../e2e/harness.mjs';

const lab = process.env.RHIZOME_LAB_HOSTS !== undefined;
const skip = !lab ? 'needs the NAT lab: run under scripts/nat-lab'
  : !existsSync(join(root, 'pkg', 'rhizome.js')) ? 'needs pkg/ (wasm-pack build)' : false;
const ns = (host) => process.env[`RHIZOME_LAB_NS_${host.toUpperCase().replaceAll('-', '_')}`];

const NODE_BIN = process.env.RHIZOME_NODE_BIN
  ?? join(process.env.CARGO_TARGET_DIR ?? join(root, 'target'), 'debug', 'rhizome-node');
const browsers = [];
const children = new Set();
after(async () => {
  for (const c of children) c.kill('SIGKILL');
  for (const b of browsers) await b.close();
});

/** Headless Chromium inside `host`'s namespace (through a wrapper script). */
async function browserIn(host) {
  const dir = mkdtempSync(join(tmpdir(), `rhizome-nat-${host}-`));
  const wrapper = join(dir, 'chromium');
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns(host)} ${process.env.CHROMIUM ?? '/usr/bin/chromium'} "$@"\n`, { mode: 0o755 });
  const context = await chromium.launchPersistentContext(join(dir, 'profile'), {
    executablePath: wrapper, headless: true, args: CHROMIUM_ARGS,
  });
  const b = { context, close: async () => { await context.close(); rmSync(dir, { recursive: true, force: true }); } };
  browsers.push(b);
  return b;
}

/** A page of `browser` that joined `room` through the signaling server `wsUrl`. */
async function joinedPage(browser, wsUrl, room) {
  const page = await browser.context.newPage();
  await page.goto(wsUrl.replace(/^ws/, 'http').replace(/\/ws$/, '/healthz'));
  const id = await page.evaluate(joinInPage, { wsUrl, room });
  return { page, id };
}

const link = (page, peer) => page.evaluate((p) => window.node.stats().links.find((l) => l.peer === p) ?? null, peer);

let a;
let b;
async function browsers2() {
  if (!a) [a, b] = await Promise.all([browserIn('symmetric-a'), browserIn('symmetric-b')]);
}

test('Chromium pages behind two symmetric NATs connect through TURN with server-issued credentials', { skip, timeout: 90_000 }, async () => {
  await browsers2();
  const url = process.env.RHIZOME_LAB_SIGNALING_TURN;
  const room = `nat-browser-turn-${Date.now()}`;
  const first = await joinedPage(a, url, room);
  const second = await joinedPage(b, url, room);
  const t0 = performance.now();
  await until('both pages see each other as neighbours', async () =>
    (await first.page.evaluate(() => window.node.neighbors())).includes(second.id)
    && (await second.page.evaluate(() => window.node.neighbors())).includes(first.id), 45_000);
  const setupMs = performance.now() - t0;
  let pair = null;
  await until('the link reports its candidate pair', async () => {
    pair = (await link(second.page, first.id))?.candidate_pair ?? null;
    return pair !== null || pair;
  }, 20_000);
  console.log(`symmetric ↔ symmetric (Chromium, TURN offered): ${pair}, neighbours ${Math.round(setupMs)} ms after the second page joined`);
  assert.match(pair, /relay/, 'only a relay crosses two symmetric NATs');
  await Promise.all([first.page.close(), second.page.close()]);
});

test('Chromium pages behind two symmetric NATs without TURN report ice-failed, not a hang', { skip, timeout: 90_000 }, async () => {
  await browsers2();
  const url = process.env.RHIZOME_LAB_SIGNALING_STUN;
  const room = `nat-browser-stun-${Date.now()}`;
  const first = await joinedPage(a, url, room);
  const second = await joinedPage(b, url, room);
  await until('a page raises ice-failed', async () => {
    const errors = [...await first.page.evaluate(() => window.errors), ...await second.page.evaluate(() => window.errors)];
    return errors.some((e) => e.startsWith('ice-failed')) || errors;
  }, 45_000);
  assert.deepEqual(await first.page.evaluate(() => window.node.neighbors()), []);
  await Promise.all([first.page.close(), second.page.close()]);
});

test('a native peer and a Chromium page behind two symmetric NATs connect through a TURN relay', { skip, timeout: 90_000 }, async () => {
  await browsers2();
  const url = process.env.RHIZOME_LAB_SIGNALING_TURN;
  const room = `nat-browser-native-${Date.now()}`;
  const first = await joinedPage(a, url, room);
  const child = spawn('ip', ['netns', 'exec', ns('symmetric-b'), NODE_BIN,
    '--signaling', url, '--room', room, '--seed', '--mdns', 'off'], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  try {
    await until('the native node joins', () => /^peer [0-9a-f]+$/m.test(out) || { out, err }, 20_000);
    const nativeId = /^peer ([0-9a-f]+)$/m.exec(out)[1];
    await until('the page and the native node are neighbours', async () =>
      ((await first.page.evaluate(() => window.node.neighbors())).includes(nativeId)
        && out.includes(`neighbor-up ${first.id}`)) || { out, err }, 45_000);
    let pair = null;
    await until('the page reports the link\'s candidate pair', async () => {
      pair = (await link(first.page, nativeId))?.candidate_pair ?? null;
      return pair !== null;
    }, 20_000);
    console.log(`symmetric ↔ symmetric (Chromium ↔ rhizome-node, TURN offered): page sees ${pair}`);
    assert.match(pair, /relay/);
  } finally {
    child.kill('SIGTERM');
    await first.page.close();
  }
});
