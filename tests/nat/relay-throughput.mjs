// Throughput of a relayed link against a direct one, in one run of the NAT lab: two
// Chromium pages behind two symmetric NATs (only coturn can carry their link) and two
// behind two port-restricted NATs (direct, server-reflexive), each pair sending 1 MiB
// direct messages one way (`node.send`, 8 unacknowledged at a time). A benchmark, not a
// test:
//
//   scripts/nat-lab node tests/nat/relay-throughput.mjs [MiB] [rounds]
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, joinInPage, root, sendMibFromPage, until } from '../e2e/harness.mjs';

const totalMib = Number(process.argv[2] ?? 16);
const rounds = Number(process.argv[3] ?? 3);
if (!process.env.RHIZOME_LAB_HOSTS) throw new Error('run under scripts/nat-lab');
if (!existsSync(join(root, 'pkg', 'rhizome.js'))) throw new Error('build pkg/ first (wasm-pack)');
const ns = (host) => process.env[`RHIZOME_LAB_NS_${host.toUpperCase().replaceAll('-', '_')}`];
const url = process.env.RHIZOME_LAB_SIGNALING_TURN;

const closers = [];
async function pageIn(host, room) {
  const dir = mkdtempSync(join(tmpdir(), `rhizome-nat-${host}-`));
  const wrapper = join(dir, 'chromium');
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns(host)} ${process.env.CHROMIUM ?? '/usr/bin/chromium'} "$@"\n`, { mode: 0o755 });
  const context = await chromium.launchPersistentContext(join(dir, 'profile'), { executablePath: wrapper, headless: true, args: CHROMIUM_ARGS });
  closers.push(async () => { await context.close(); rmSync(dir, { recursive: true, force: true }); });
  const page = await context.newPage();
  await page.goto(url.replace(/^ws/, 'http').replace(/\/ws$/, '/healthz'));
  const id = await page.evaluate(joinInPage, { wsUrl: url, room });
  return { page, id };
}

async function pair(hostA, hostB) {
  const room = `tp-${hostA}-${hostB}-${Date.now()}`;
  const a = await pageIn(hostA, room);
  const b = await pageIn(hostB, room);
  await until(`${hostA} and ${hostB} are neighbours`, async () =>
    (await a.page.evaluate(() => window.node.neighbors())).includes(b.id), 45_000);
  let linkPair = null;
  await until('the candidate pair is known', async () => {
    linkPair = await a.page.evaluate((p) => window.node.stats().links.find((l) => l.peer === p)?.candidate_pair ?? null, b.id);
    return linkPair !== null;
  }, 20_000);
  return { a, b, linkPair };
}

const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
try {
  const relayed = await pair('symmetric-a', 'symmetric-b');
  const direct = await pair('restricted-a', 'restricted-b');
  const results = { relayed: [], direct: [] };
  for (let round = 1; round <= rounds; round++) {
    for (const [name, p] of [['relayed', relayed], ['direct', direct]]) {
      const mibs = await p.a.page.evaluate(sendMibFromPage, { to: p.b.id, totalMib, inFlight: 8 });
      results[name].push(mibs);
    }
    console.log(`round ${round}: relayed ${results.relayed.at(-1).toFixed(1)} MiB/s (${relayed.linkPair}), direct ${results.direct.at(-1).toFixed(1)} MiB/s (${direct.linkPair})`);
  }
  console.log(`median of ${rounds} rounds of ${totalMib} MiB: relayed ${median(results.relayed).toFixed(1)} MiB/s, direct ${median(results.direct).toFixed(1)} MiB/s`);
} finally {
  for (const close of closers) await close();
}
