// The npm package as a new user meets it: `scripts/npm-app` packed it, installed the
// tarball into a fresh Vite app, type-checked and built it (RHIZOME_NPM_APP is the built
// app). Here two pages of that app join a room and exchange a message.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser } from './harness.mjs';

const app = process.env.RHIZOME_NPM_APP;
let server;
let browser;

before(async () => {
  if (!app) return;
  server = await startServer([], { staticDir: app });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('two pages of a Vite app that installed the package exchange a message', { skip: !app && 'set RHIZOME_NPM_APP (npm test does: scripts/npm-app builds it)' }, async () => {
  const room = `vite-${Date.now()}`;
  const errors = [];
  const open = async () => {
    const page = await browser.context.newPage();
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    await page.goto(`${server.url}/?room=${room}`);
    await page.waitForFunction(() => window.app?.id, null, { timeout: 20_000 });
    return page;
  };
  const a = await open();
  const b = await open();
  await b.waitForFunction(() => window.app.neighbors().length > 0, null, { timeout: 30_000 });
  await a.waitForFunction(() => window.app.neighbors().length > 0, null, { timeout: 30_000 });
  await a.evaluate(() => window.app.say('hello from a Vite app'));
  await b.waitForFunction(() => window.app.heard.some((m) => m.text === 'hello from a Vite app'), null, { timeout: 15_000 });
  const [aId, heard] = await Promise.all([a.evaluate(() => window.app.id), b.evaluate(() => window.app.heard)]);
  assert.equal(heard[0].from, aId);
  assert.match(await a.evaluate(() => window.app.version), /^\d+\.\d+\.\d+/);
  assert.deepEqual(errors, []);
});
