// Shared helpers for the end-to-end tests: a real signaling server and a real headless
// Chromium (Debian's, driven by playwright-core; Playwright never downloads a browser).
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Chromium flags that keep it quiet and working on a closed network, as root. */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

/**
 * Starts the signaling server (the debug build) on a free loopback port (or on `bind`, e.g.
 * the port of one that was stopped, to restart it), serving www/ and pkg/ (or
 * $RHIZOME_PKG_DIR, a wasm-pack build elsewhere). Resolves to { url, wsUrl, stop }.
 */
export function startServer(extraArgs = [], { staticDir = join(root, 'www'), bind = '127.0.0.1:0' } = {}) {
  const bin = process.env.RHIZOME_SIGNALING_BIN ?? join(root, 'target', 'debug', 'rhizome-signaling');
  const child = spawn(
    bin,
    ['--bind', bind, '--static-dir', staticDir, '--pkg-dir', process.env.RHIZOME_PKG_DIR ?? join(root, 'pkg'), ...extraArgs],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${log}`)), 15_000);
    child.stderr.on('data', (d) => { log += d; });
    child.stdout.on('data', (d) => {
      log += d;
      const m = /listening on (http:\/\/[^\s]+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        const url = m[1];
        resolve({
          url,
          wsUrl: url.replace(/^http/, 'ws') + '/ws',
          process: child,
          log: () => log,
          stop: () => new Promise((done) => {
            if (child.exitCode !== null) return done(child.exitCode);
            child.once('exit', (code) => done(code));
            child.kill('SIGTERM');
          }),
        });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${log}`));
    });
    // A missing binary: say so now, not as a start-up timeout plus an uncaught exception.
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`could not start ${bin} (set RHIZOME_SIGNALING_BIN or build it): ${e.message}`));
    });
  });
}

/** Launches headless Chromium with a fresh profile. Resolves to { browser, close }. */
export async function launchBrowser() {
  const profile = mkdtempSync(join(tmpdir(), 'rhizome-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_ARGS,
  });
  return {
    context,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Fails early, and says how to fix it, when the demo page's bundle has not been built. */
export function requireDemoBundle() {
  const bundle = join(root, 'www', 'dist', 'demo.js');
  if (!existsSync(bundle)) {
    throw new Error(`${bundle} is missing: run \`npm run build:demo\` (npm test does) before the e2e tests`);
  }
}

/**
 * Runs in a page (Chromium or Firefox, passed to `evaluate`): joins `room` through the
 * package's JS API, as an application would, and records what the node hears in
 * `window.heard` (broadcasts), `window.messages` (direct), `window.downs` (neighbours
 * lost) and `window.errors`; the node is `window.node`. Resolves to the node's id.
 */
export async function joinInPage({ wsUrl, room }) {
  const { default: init, Rhizome } = await import('/pkg/rhizome.js');
  await init();
  const node = await Rhizome.join({ signaling: [wsUrl], room, iceServers: [] });
  const text = (d) => new TextDecoder().decode(d);
  Object.assign(window, { node, heard: [], messages: [], downs: [], errors: [] });
  node.on('broadcast', (e) => window.heard.push({ from: e.from, text: text(e.data) }));
  node.on('message', (e) => window.messages.push({ from: e.from, text: text(e.data), hops: e.hops }));
  node.on('neighbor-down', (e) => window.downs.push(e.peer));
  node.on('error', (e) => window.errors.push(`${e.code}: ${e.message}`));
  return node.id;
}

/**
 * Opens a Chromium tab (of `browser`, from `launchBrowser`) on `server`'s origin and joins
 * `room` there with `joinInPage`. Resolves to { page, id }.
 */
export async function openPeerPage(browser, server, room) {
  const page = await browser.context.newPage();
  page.on('pageerror', (e) => console.error('page error:', e));
  // Any page of the server's origin can import the package; /healthz is a cheap one.
  await page.goto(`${server.url}/healthz`);
  const id = await page.evaluate(joinInPage, { wsUrl: server.wsUrl, room });
  return { page, id };
}

/** Polls `fn` until it returns true; fails with its last value after `ms`. */
export async function until(what, fn, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const last = await fn();
    if (last === true) return;
    if (Date.now() > deadline) throw new Error(`expected ${what} within ${ms} ms; last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

/**
 * Opens the demo page at `url` in a new tab of `browser` (from `launchBrowser`) and waits
 * until it has joined its room. Resolves to { page, errors }: `errors` collects the page's
 * console errors and uncaught exceptions. `initScript(arg)` runs before the page's own.
 */
export async function openDemoPage(browser, url, { viewport = { width: 1440, height: 900 }, initScript, arg } = {}) {
  const page = await browser.context.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  if (initScript) await page.addInitScript(initScript, arg);
  await page.setViewportSize(viewport);
  await page.goto(url);
  await page.waitForSelector('#peer-id[data-state="ready"]', { timeout: 20_000 });
  await page.waitForFunction(() => window.rhizomeDemo?.snapshot().state === 'joined', null, { timeout: 20_000 });
  return { page, errors };
}

/** What a demo page shows, as plain data (`window.rhizomeDemo.snapshot()`). */
export const demoSnapshot = (page) => page.evaluate(() => window.rhizomeDemo.snapshot());

/** The rhizome-node binary the e2e tests run (built by `cargo test --workspace --no-run`). */
export const NODE_BIN = process.env.RHIZOME_NODE_BIN
  ?? join(process.env.CARGO_TARGET_DIR ?? join(root, 'target'), 'debug', 'rhizome-node');

/**
 * Starts rhizome-node in `room` through the signaling endpoint `wsUrl` and follows its
 * stdout. Resolves once it printed its id, to { id, process, lines, stderr(), send(line),
 * waitFor(what, predicate, ms), neighbors(), heard(text), received(text), stop() }.
 */
export function startNative(wsUrl, room, extraArgs = []) {
  const child = spawn(NODE_BIN, ['--signaling', wsUrl, '--room', room, '--seed', ...extraArgs], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const lines = [];
  let partial = '';
  let stderr = '';
  child.stdout.on('data', (d) => {
    partial += d;
    const parts = partial.split('\n');
    partial = parts.pop();
    lines.push(...parts);
  });
  child.stderr.on('data', (d) => { stderr += d; });
  const native = {
    process: child,
    lines,
    stderr: () => stderr,
    send: (line) => child.stdin.write(`${line}\n`),
    async waitFor(what, predicate, ms = 30_000) {
      await until(what, () => lines.some(predicate) || { lines, stderr }, ms);
    },
    /** Its neighbours now, from its neighbor-up / neighbor-down lines. */
    neighbors: async () => {
      const up = new Set();
      for (const l of lines) {
        if (l.startsWith('neighbor-up ')) up.add(l.slice(12));
        if (l.startsWith('neighbor-down ')) up.delete(l.slice(14));
      }
      return up;
    },
    /** How many times it heard the broadcast `text`. */
    heard: async (text) => lines.filter((l) => l.startsWith('broadcast ') && l.endsWith(` ${text}`)).length,
    /** Whether it received the direct message `text`. */
    received: async (text) => lines.some((l) => l.startsWith('message ') && l.endsWith(` ${text}`)),
    stop: () => new Promise((done) => {
      if (child.exitCode !== null || child.signalCode !== null) return done(child.exitCode);
      child.once('exit', (code) => done(code));
      child.kill('SIGTERM');
    }),
  };
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`rhizome-node exited with ${code}:\n${stderr}`)));
    const timer = setInterval(() => {
      const peer = lines.find((l) => l.startsWith('peer '));
      if (peer) {
        clearInterval(timer);
        native.id = peer.slice('peer '.length);
        resolve(native);
      }
    }, 50);
  });
}

/** A TCP port free on loopback now (for a server a test starts). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * Runs in a page joined with `joinInPage`: sends `totalMib` messages of 1 MiB to `to`
 * with `node.send`, `inFlight` at a time. Resolves to MiB/s.
 */
export async function sendMibFromPage({ to, totalMib, inFlight }) {
  const data = new Uint8Array(1024 * 1024).fill(98);
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < totalMib) {
      next++;
      await window.node.send(to, data);
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return totalMib / ((performance.now() - t0) / 1000);
}
