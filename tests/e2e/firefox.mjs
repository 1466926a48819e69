// Headless Firefox (Debian's firefox-esr) driven through geckodriver's WebDriver HTTP API
// with plain fetch: Playwright only drives its own patched Firefox build, which cannot be
// downloaded here. Just enough WebDriver for the e2e tests: open a URL, run a script.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './harness.mjs';

/**
 * Preferences that keep Firefox quiet on a closed network: no proxy, no background
 * traffic. WebRTC keeps Firefox's defaults, as users have them: host candidates hidden
 * behind `….local` mDNS names, like Chromium's; the two still connect inside the test
 * namespace.
 */
export const FIREFOX_PREFS = {
  'network.proxy.type': 0,
  // JSON responses (the server's /healthz, where tests import /pkg) as plain documents of
  // the server's origin, not the JSON viewer's.
  'devtools.jsonview.enabled': false,
  'app.update.enabled': false,
  'app.normandy.enabled': false,
  'browser.shell.checkDefaultBrowser': false,
  'browser.safebrowsing.malware.enabled': false,
  'browser.safebrowsing.phishing.enabled': false,
  'datareporting.policy.dataSubmissionEnabled': false,
  'toolkit.telemetry.enabled': false,
  'network.captive-portal-service.enabled': false,
  'network.connectivity-service.enabled': false,
  'extensions.update.enabled': false,
  'browser.region.network.url': '',
  'browser.search.update': false,
};

/**
 * The geckodriver and Firefox binaries to use: $GECKODRIVER / $FIREFOX, else geckodriver
 * on PATH, which finds Firefox itself (Debian's firefox-esr installs /usr/bin/firefox).
 */
export function firefoxBinaries() {
  return {
    geckodriver: process.env.GECKODRIVER ?? 'geckodriver',
    firefox: process.env.FIREFOX,
  };
}

/**
 * Starts geckodriver and a headless Firefox session with a fresh profile. Resolves to
 * { goto(url), execute(fn, ...args), executeAsync(fn, ...args), close() }; `fn` is a
 * function whose source runs in the page (like Playwright's `page.evaluate`).
 */
export async function launchFirefox() {
  const { geckodriver, firefox } = firefoxBinaries();
  const port = await freePort();
  const profile = mkdtempSync(join(tmpdir(), 'rhizome-firefox-'));
  const driver = spawn(geckodriver, ['--port', String(port), '--host', '127.0.0.1'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  driver.stdout.on('data', (d) => { log += d; });
  driver.stderr.on('data', (d) => { log += d; });
  const base = `http://127.0.0.1:${port}`;
  const call = async (method, path, body) => {
    const res = await fetch(base + path, {
      method,
      headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await res.json();
    if (!res.ok) throw new Error(`WebDriver ${method} ${path}: ${JSON.stringify(json.value ?? json)}`);
    return json.value;
  };
  const stopDriver = () => new Promise((done) => {
    if (driver.exitCode !== null) return done();
    driver.once('exit', () => done());
    driver.kill('SIGTERM');
  });

  // geckodriver takes a moment to listen.
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      await call('GET', '/status');
      break;
    } catch (e) {
      if (Date.now() > deadline || driver.exitCode !== null) {
        await stopDriver();
        rmSync(profile, { recursive: true, force: true });
        throw new Error(`geckodriver did not start: ${e.message}\n${log}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  let session;
  try {
    session = await call('POST', '/session', {
      capabilities: {
        alwaysMatch: {
          browserName: 'firefox',
          'moz:firefoxOptions': {
            ...(firefox ? { binary: firefox } : {}),
            args: ['-headless', '-profile', profile],
            prefs: FIREFOX_PREFS,
          },
        },
      },
    });
  } catch (e) {
    await stopDriver();
    rmSync(profile, { recursive: true, force: true });
    throw new Error(`${e.message}\n${log}`);
  }
  const sid = session.sessionId;
  const script = (fn, args) => ({ script: `return (${fn}).apply(null, arguments)`, args });
  return {
    version: session.capabilities?.browserVersion,
    goto: (url) => call('POST', `/session/${sid}/url`, { url }),
    execute: (fn, ...args) => call('POST', `/session/${sid}/execute/sync`, script(fn, args)),
    /** Runs an async function in the page and resolves to its result. */
    executeAsync: (fn, ...args) => call('POST', `/session/${sid}/execute/async`, {
      script: `const done = arguments[arguments.length - 1];
        Promise.resolve((${fn}).apply(null, Array.from(arguments).slice(0, -1)))
          .then((v) => done({ ok: v }), (e) => done({ err: String(e && (e.stack || e.message) || e) }));`,
      args,
    }).then((r) => {
      if (r && 'err' in r) throw new Error(`in Firefox: ${r.err}`);
      return r?.ok;
    }),
    log: () => log,
    close: async () => {
      await call('DELETE', `/session/${sid}`).catch(() => {});
      await stopDriver();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
