// Throughput between a native peer (rhizome-node, webrtc-rs) and a browser peer (headless
// Chromium, the JS API), one way at a time, as an application sees it: direct messages
// (`node.send` in the page, `@<peer> text` lines on the CLI's stdin), each acknowledged by
// the receiver. Two Chromium pages of one browser run the same measurement as a
// reference, in the same run.
//
//   scripts/netns-run node node/scripts/browser-throughput.mjs [MiB] [rounds]
//
// Needs the signaling server, rhizome-node and pkg/ built; RHIZOME_NODE_BIN picks the
// rhizome-node binary (use a release build: `cargo build --release -p rhizome-node`).
// Messages are 1 MiB of text; at most WINDOW are unacknowledged at a time. Prints each
// round and the medians.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { startServer, launchBrowser, root, sendMibFromPage } from '../../tests/e2e/harness.mjs';

const MIB = 1024 * 1024;
const WINDOW = 8;
const totalMib = Number(process.argv[2] ?? 64);
const rounds = Number(process.argv[3] ?? 3);
const nodeBin = process.env.RHIZOME_NODE_BIN ?? join(root, 'target', 'release', 'rhizome-node');

const server = await startServer();
const browser = await launchBrowser();
const results = { 'browser → native': [], 'native → browser': [], 'browser → browser': [] };
try {
  for (let round = 1; round <= rounds; round++) {
    const r = await oneRound(round);
    for (const [k, v] of Object.entries(r)) results[k].push(v);
    console.log(`round ${round}: ${Object.entries(r).map(([k, v]) => `${k} ${v.toFixed(1)} MiB/s`).join(', ')}`);
  }
  const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
  console.log(`median of ${rounds} rounds, ${totalMib} MiB each: ${
    Object.entries(results).map(([k, v]) => `${k} ${median(v).toFixed(1)} MiB/s`).join(', ')}`);
} finally {
  await browser.close();
  await server.stop();
}

async function oneRound(round) {
  const room = `throughput-${round}-${Date.now()}`;
  const native = await startNative(room);
  const [a, b] = [await openPage(room), await openPage(room)];
  try {
    await waitFor(async () => (await a.page.evaluate(() => window.node.neighbors())).includes(native.id)
      && (await a.page.evaluate(() => window.node.neighbors())).includes(b.id));
    const out = {};

    // browser → native: the page sends, timing until the last acknowledgement.
    out['browser → native'] = await a.page.evaluate(sendMibFromPage, { to: native.id, totalMib, inFlight: WINDOW });

    // native → browser: stdin lines `@<page> <1 MiB>`, timing until the last `delivered`.
    const line = `@${a.id} ${'n'.repeat(MIB)}\n`;
    const before = native.delivered;
    const t0 = performance.now();
    let written = 0;
    while (written < totalMib) {
      // Keep WINDOW messages outstanding, like the page does.
      while (written - (native.delivered - before) >= WINDOW) await native.nextDelivery();
      if (!native.child.stdin.write(line)) await new Promise((r) => native.child.stdin.once('drain', r));
      written++;
    }
    while (native.delivered - before < totalMib) await native.nextDelivery();
    out['native → browser'] = totalMib / ((performance.now() - t0) / 1000);

    // browser → browser, for reference: page a to page b in the same way.
    out['browser → browser'] = await a.page.evaluate(sendMibFromPage, { to: b.id, totalMib, inFlight: WINDOW });
    return out;
  } finally {
    native.child.kill('SIGTERM');
    await a.page.close();
    await b.page.close();
  }
}

function startNative(room) {
  const child = spawn(nodeBin, ['--signaling', server.wsUrl, '--room', room, '--seed'], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const native = { child, delivered: 0, waiters: [] };
  native.nextDelivery = () => new Promise((r) => native.waiters.push(r));
  let partial = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d) => {
    partial += d;
    let nl;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const l = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      if (l.startsWith('peer ')) native.id = l.slice(5);
      if (l.startsWith('delivered ')) {
        native.delivered++;
        native.waiters.splice(0).forEach((w) => w());
      }
    }
  });
  return waitFor(() => Boolean(native.id)).then(() => native);
}

async function openPage(room) {
  const page = await browser.context.newPage();
  await page.goto(`${server.url}/healthz`);
  const id = await page.evaluate(async ({ wsUrl, room }) => {
    const { default: init, Rhizome } = await import('/pkg/rhizome.js');
    await init();
    window.node = await Rhizome.join({ signaling: [wsUrl], room, iceServers: [] });
    return window.node.id;
  }, { wsUrl: server.wsUrl, room });
  return { page, id };
}

async function waitFor(fn, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${fn}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
