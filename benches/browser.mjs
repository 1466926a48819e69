// The browser benchmark: rhizome beside a raw RTCDataChannel, simple-peer and PeerJS, in
// one headless Chromium, one after another in the same run.
//
//   scripts/bench           (builds everything, then runs this inside the test namespace)
//   node benches/browser.mjs   (after scripts/bench has built and bundled once)
//
// Starts the rhizome signaling server, a PeerJS server (npm `peer`, in this process) and a
// small static server for the bench page (with the headers that make the page
// cross-origin isolated, so `performance.measureUserAgentSpecificMemory` works), then runs
// the scenarios of benches/browser/page.js. Several rounds; in every round each library
// runs in turn, and every ratio is taken to the raw baseline of the same round, then the
// median is reported. Writes results/bench.json and the table between
// `<!-- browser:begin -->` and `<!-- browser:end -->` in docs/BENCHMARKS.md.
//
// Bounds: fixed counts (BENCH_ROUNDS rounds, 64 MiB per transfer, 10,000 messages per
// rate, 100 broadcasts per latency run), a deadline on every page call, and a deadline
// on the whole run (BENCH_DEADLINE_S, default 1500 s).
import { createServer } from 'node:http';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { basename, dirname, extname, join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { chromium } from 'playwright-core';
import { PeerServer } from 'peer';
import { root, startServer, CHROMIUM_ARGS } from '../tests/e2e/harness.mjs';

const env = (k, d) => (process.env[k] === undefined ? d : Number(process.env[k]));
const ROUNDS = env('BENCH_ROUNDS', 5);
const JOIN_ROUNDS = env('BENCH_JOIN_ROUNDS', 9);
const LAT_ROUNDS = env('BENCH_LATENCY_ROUNDS', 3);
const TOTAL = env('BENCH_BYTES', 64 << 20);
// Broadcast latency groups: [peers, ms between broadcasts]. Origins rotate over all peers.
const LATENCY_GROUPS = [[8, 25], [16, 25], [16, 10]];
const RATE_COUNT = env('BENCH_RATE_COUNT', 10_000);
const ONLY = (process.env.BENCH_ONLY ?? 'join,throughput,rate,latency').split(',');
// BENCH_PROFILE=1: no table; profile rhizome's side of each scenario with the DevTools
// CPU profiler instead, on a build of the same wasm that keeps its function names
// (target/bench/www-prof, made by `scripts/bench --profile`).
const PROFILE = process.env.BENCH_PROFILE === '1';
const www = process.env.BENCH_WWW ?? join(root, 'target', 'bench', PROFILE ? 'www-prof' : 'www');
const started = Date.now();
const RUN_DEADLINE = started + env('BENCH_DEADLINE_S', 1500) * 1000;

if (!existsSync(join(www, 'bench.js')) || !existsSync(join(www, 'rhizome_bg.wasm'))) {
  console.error(`${www} has no bench page: run scripts/bench (it builds and bundles first)`);
  process.exit(1);
}

const log = (...a) => console.error(`[bench +${((Date.now() - started) / 1000).toFixed(0)}s]`, ...a);

// --- servers ----------------------------------------------------------------------------

// Cargo's output: $CARGO_TARGET_DIR when set (as scripts/bench's cargo build used it), else target/.
const cargoTarget = process.env.CARGO_TARGET_DIR ?? join(root, 'target');
const release = join(cargoTarget, 'release', 'rhizome-signaling');
process.env.RHIZOME_SIGNALING_BIN ??= existsSync(release) ? release : join(cargoTarget, 'debug', 'rhizome-signaling');
// The bench serves no /pkg/; the server only needs the directory to exist (a fresh tree
// has no pkg/ until a wasm-pack build).
process.env.RHIZOME_PKG_DIR ??= existsSync(join(root, 'pkg')) ? join(root, 'pkg') : www;
const signaling = await startServer([], { staticDir: www });
log(`signaling ${signaling.url} (${process.env.RHIZOME_SIGNALING_BIN})`);

const peerServer = await new Promise((resolve) => {
  PeerServer({ host: '127.0.0.1', port: 0, path: '/', concurrent_limit: 1000, alive_timeout: 600_000 }, resolve);
});
const peerjs = { host: '127.0.0.1', port: peerServer.address().port };
log(`peerjs server 127.0.0.1:${peerjs.port}`);

const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.map': 'application/json' };
// Serves target/bench/ (the page is in www/; experiments may load other builds beside it).
const served = dirname(www);
const pageServer = createServer((req, res) => {
  const path = new URL(req.url, 'http://x').pathname.replace(/^\/+/, '');
  const file = join(served, path);
  if (!file.startsWith(served + '/') || !existsSync(file) || !statSync(file).isFile()) { res.writeHead(404).end(); return; }
  res.writeHead(200, {
    'content-type': types[extname(file)] ?? 'application/octet-stream',
    'cross-origin-opener-policy': 'same-origin',
    'cross-origin-embedder-policy': 'require-corp',
    'cache-control': 'no-store',
  });
  res.end(readFileSync(file));
});
await new Promise((r) => pageServer.listen(0, '127.0.0.1', r));
const pageUrl = (dir = basename(www)) => `http://127.0.0.1:${pageServer.address().port}/${dir}/index.html`;

// --- browser ----------------------------------------------------------------------------

const profile = mkdtempSync(join(tmpdir(), 'rhizome-bench-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: [
    ...CHROMIUM_ARGS,
    '--enable-precise-memory-info',
    '--js-flags=--expose-gc',
    '--enable-blink-features=ForceEagerMeasureMemory',
  ],
});
// BENCH_RHIZOME_MODE=unstructured|structured|hybrid: rhizome's overlay mode (default: the
// package's default).
await context.addInitScript((cfg) => { window.BENCH_CONFIG = cfg; }, { signaling: signaling.wsUrl, peerjs, rhizomeMode: process.env.BENCH_RHIZOME_MODE ?? null });
// The page reads the browser's CPU time around a transfer (see browserCpuMs).
await context.exposeFunction('benchCpu', () => browserCpuMs());

let shuttingDown = false;
async function shutdown(code) {
  if (shuttingDown) return;
  shuttingDown = true;
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  await signaling.stop().catch(() => {});
  peerServer.close();
  pageServer.close();
  process.exit(code);
}
process.on('SIGINT', () => shutdown(130));
process.on('SIGTERM', () => shutdown(143));
setTimeout(() => { log('run deadline reached: stopping'); shutdown(2); }, RUN_DEADLINE - Date.now()).unref();

/** A fresh page (and so a fresh wasm instance and a fresh RTCPeerConnection budget). */
async function freshPage(dir) {
  const page = await context.newPage();
  page.on('pageerror', (e) => log('page error:', e.message));
  page.on('console', (m) => { if (m.type() === 'error') log('console:', m.text().slice(0, 300)); });
  await page.goto(pageUrl(dir));
  await page.waitForFunction(() => window.benchReady === true, null, { timeout: 15_000 });
  return page;
}

/**
 * CPU time (user + system, ms) used so far by every process of this browser (found by its
 * profile directory on the command line). Wall-clock numbers swing with the load of a
 * shared machine; the CPU a scenario costs the browser swings much less.
 */
const TICK_MS = 1000 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim() || 100);
function browserCpuMs() {
  let ticks = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes(profile)) continue;
      const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime
    } catch { /* the process ended meanwhile */ }
  }
  return ticks * TICK_MS;
}

async function call(page, fn, args, timeoutMs) {
  let timer;
  const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${fn}(${args}) timed out`)), timeoutMs); });
  const cpu0 = browserCpuMs();
  try {
    const result = await Promise.race([page.evaluate(([f, a]) => window.bench[f](...a), [fn, args]), timeout]);
    if (result && typeof result === 'object' && !Array.isArray(result)) result.callCpuMs = browserCpuMs() - cpu0;
    return result;
  } finally { clearTimeout(timer); }
}

const median = (xs) => {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};
const rotate = (list, k) => list.map((_, i) => list[(i + k) % list.length]);

const raw = { rounds: {} };
const failures = [];

async function scenario(name, rounds, libs, fn, timeoutMs, extra = [], warmup = null) {
  raw.rounds[name] = [];
  const page = await freshPage();
  try {
    // One untimed run of each library first (JIT, wasm instantiation, first connections).
    for (const lib of libs) await call(page, fn, [lib, ...(warmup ?? extra)], timeoutMs).catch(() => {});
    for (let r = 0; r < rounds; r++) {
      const row = {};
      // Rotate the order each round, so no library always runs first (or last).
      for (const lib of rotate(libs, r)) {
        try {
          row[lib] = await call(page, fn, [lib, ...extra], timeoutMs);
        } catch (e) {
          row[lib] = { error: String(e.message ?? e).split('\n')[0] };
          failures.push(`${name}/${lib}/round ${r}: ${row[lib].error}`);
        }
      }
      raw.rounds[name].push(row);
      log(name, `round ${r + 1}/${rounds}`, JSON.stringify(Object.fromEntries(Object.entries(row).map(([k, v]) => [k, v.error ?? short(v)]))));
    }
  } finally { await page.close(); }
}
const short = (v) => Object.fromEntries(Object.entries(v).filter(([, x]) => typeof x === 'number').map(([k, x]) => [k, Math.round(x * 100) / 100]));

// --- profiling (BENCH_PROFILE=1) ----------------------------------------------------------

/** Runs `fn(args)` in a fresh page under the CPU profiler; returns self time by function. */
async function profiled(fn, args, timeoutMs) {
  // BENCH_PROFILE_DIR=www-x profiles the page built into target/bench/www-x.
  const page = await freshPage(process.env.BENCH_PROFILE_DIR);
  const cdp = await context.newCDPSession(page);
  try {
    await cdp.send('Profiler.enable');
    await cdp.send('Profiler.setSamplingInterval', { interval: 200 });
    await cdp.send('Profiler.start');
    const result = await call(page, fn, args, timeoutMs);
    const { profile } = await cdp.send('Profiler.stop');
    // BENCH_PROFILE_RAW=dir keeps each .cpuprofile (Chrome DevTools opens them).
    if (process.env.BENCH_PROFILE_RAW) {
      mkdirSync(process.env.BENCH_PROFILE_RAW, { recursive: true });
      writeFileSync(join(process.env.BENCH_PROFILE_RAW, `${fn}-${args[0]}-${Date.now()}.cpuprofile`), JSON.stringify(profile));
    }
    const dt = profile.timeDeltas;
    const self = new Map();
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    let total = 0;
    profile.samples.forEach((id, i) => {
      const node = byId.get(id);
      const name = node.callFrame.functionName || `(anonymous ${node.callFrame.url.split('/').pop()}:${node.callFrame.lineNumber})`;
      const us = dt[i] ?? 0;
      total += us;
      self.set(name, (self.get(name) ?? 0) + us);
    });
    // Where the heaviest frames are called from (url:line and the caller's name).
    const parent = new Map();
    for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n);
    // BENCH_PROFILE_DEPTH=n names n callers of each site (1 by default).
    const depth = Number(process.env.BENCH_PROFILE_DEPTH ?? 1);
    const short = (name) => (name || '?').replace(/::h[0-9a-f]{16}$/, '').slice(0, 90);
    const sites = new Map();
    profile.samples.forEach((id, i) => {
      const node = byId.get(id);
      const cf = node.callFrame;
      let key = `${cf.functionName || '(anonymous)'} @ ${cf.url.split('/').pop()}:${cf.lineNumber}`;
      for (let p = parent.get(id), k = 0; k < depth; p = p && parent.get(p.id), k++) key += ` ← ${short(p?.callFrame.functionName)}`;
      sites.set(key, (sites.get(key) ?? 0) + (dt[i] ?? 0));
    });
    const topSites = [...sites.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15)
      .map(([site, us]) => ({ site: site.slice(0, 160 * depth), ms: Math.round(us / 100) / 10 }));
    const top = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 30)
      .map(([name, us]) => ({ name: name.slice(0, 120), ms: Math.round(us / 100) / 10, share: Math.round((us / total) * 1000) / 10 }));
    return { result, totalMs: Math.round(total / 1000), top, topSites };
  } finally { await page.close(); }
}

// BENCH_EVAL='[["latency", ["rhizome", 16]], …]': run these page calls (each in a fresh
// page), print their results and stop. For experiments; no table.
if (process.env.BENCH_EVAL) {
  for (const [fn, args, dir] of JSON.parse(process.env.BENCH_EVAL)) {
    const page = await freshPage(dir);
    try {
      console.log(JSON.stringify({ fn, args, dir, result: await call(page, fn, args, 130_000) }));
    } catch (e) {
      console.log(JSON.stringify({ fn, args, error: String(e.message ?? e) }));
    } finally { await page.close(); }
  }
  await shutdown(0);
}

if (PROFILE) {
  const out = {};
  const runs = process.env.BENCH_PROFILE_RUNS ? JSON.parse(process.env.BENCH_PROFILE_RUNS) : [
    ['rate', ['rhizome', RATE_COUNT, 1024]],
    ['rate', ['raw', RATE_COUNT, 1024]],
    ['throughput', ['rhizome', TOTAL, 60 * 1024]],
    ['rate', ['rhizome-broadcast', RATE_COUNT, 1024]],
    ['latency', ['rhizome', 16]],
    ['repeat', [9, 'join', 'rhizome']],
    ['repeat', [9, 'join', 'raw-ws']],
  ];
  for (const [fn, args] of runs) {
    const key = fn === 'repeat' ? `${args[1]}-${args[2]}` : `${fn}-${args[0]}`;
    out[key] = await profiled(fn, args, 130_000);
    log(key, JSON.stringify(Array.isArray(out[key].result) ? out[key].result.map(short) : short(out[key].result)));
    for (const t of out[key].top.slice(0, 20)) log(`  ${String(t.share).padStart(5)} %  ${String(t.ms).padStart(8)} ms  ${t.name}`);
    for (const t of out[key].topSites.slice(0, Number(process.env.BENCH_PROFILE_SITES ?? 8))) log(`  site ${String(t.ms).padStart(8)} ms  ${t.site}`);
  }
  mkdirSync(join(root, 'results'), { recursive: true });
  writeFileSync(join(root, 'results', 'profile.json'), JSON.stringify({ date: new Date().toISOString(), ...out }, null, 2) + '\n');
  log('wrote results/profile.json');
  await shutdown(0);
}

// --- scenarios --------------------------------------------------------------------------

const info = await (async () => { const p = await freshPage(); const i = await call(p, 'info', [], 10_000); await p.close(); return i; })();
log('browser', info.userAgent);

if (ONLY.includes('join')) {
  await scenario('join', JOIN_ROUNDS, ['raw', 'raw-ws', 'simple-peer', 'simple-peer-ws', 'peerjs', 'rhizome', 'rhizome-broadcast'], 'join', 20_000);
}
if (ONLY.includes('throughput')) {
  await scenario('throughput', ROUNDS, ['raw', 'raw-64k', 'raw-16k', 'simple-peer', 'peerjs', 'rhizome', 'rhizome-broadcast'], 'throughput', 130_000, [TOTAL, 60 * 1024], [4 << 20, 60 * 1024]);
}
if (ONLY.includes('rate')) {
  await scenario('rate', ROUNDS, ['raw', 'simple-peer', 'peerjs', 'rhizome', 'rhizome-broadcast'], 'rate', 130_000, [RATE_COUNT, 1024], [1000, 1024]);
}

if (ONLY.includes('latency')) {
  raw.rounds.latency = [];
  for (const [n, gap] of LATENCY_GROUPS) {
    for (let r = 0; r < LAT_ROUNDS; r++) {
      const row = { n, gap };
      for (const lib of rotate(['raw', 'rhizome'], r)) {
        // One fresh page per group: a fresh wasm instance (its memory only grows) and a fresh
        // budget of RTCPeerConnections (a 16-peer mesh alone takes 240).
        const page = await freshPage();
        try {
          row[lib] = await call(page, 'latency', [lib, n, 100, gap], 90_000);
        } catch (e) {
          row[lib] = { error: String(e.message ?? e).split('\n')[0] };
          failures.push(`latency-${n}/${lib}/round ${r}: ${row[lib].error}`);
        } finally { await page.close(); }
      }
      raw.rounds.latency.push(row);
      log(`latency n=${n} gap=${gap}`, `round ${r + 1}/${LAT_ROUNDS}`, JSON.stringify(Object.fromEntries(['raw', 'rhizome'].map((k) => [k, row[k].error ?? short(row[k])]))));
    }
  }
}

// --- summary ----------------------------------------------------------------------------

const ok = (v) => v && !v.error;
function summarize(name, metric, libs, { higherIsBetter }) {
  const rounds = raw.rounds[name] ?? [];
  const out = {};
  for (const lib of libs) {
    const values = rounds.map((row) => (ok(row[lib]) ? row[lib][metric] : null));
    const ratios = rounds.map((row) => (ok(row[lib]) && ok(row.raw) ? row[lib][metric] / row.raw[metric] : null));
    out[lib] = { median: median(values), ratioToRaw: median(ratios), runs: values.filter((x) => x != null).length, of: rounds.length };
  }
  out.higherIsBetter = higherIsBetter;
  return out;
}

const summary = {};
if (raw.rounds.join) {
  const libs = ['raw', 'raw-ws', 'simple-peer', 'simple-peer-ws', 'peerjs', 'rhizome', 'rhizome-broadcast'];
  summary.join = summarize('join', 'ms', libs, { higherIsBetter: false });
  // The fair baseline for libraries that go through a server is raw-ws (same round).
  for (const lib of libs) {
    const ratios = raw.rounds.join.map((row) => (ok(row[lib]) && ok(row['raw-ws']) ? row[lib].ms / row['raw-ws'].ms : null));
    summary.join[lib].ratioToRawWs = median(ratios);
  }
  summary.join.rhizomeBreakdown = {
    serverMs: median(raw.rounds.join.map((r) => (ok(r.rhizome) ? r.rhizome.serverMs : null))),
    neighborUpMs: median(raw.rounds.join.map((r) => (ok(r.rhizome) ? r.rhizome.neighborUpMs : null))),
  };
}
// CPU per unit (whole browser, both peers): ms per MiB moved, µs per message.
for (const row of raw.rounds.throughput ?? []) for (const v of Object.values(row)) if (ok(v) && v.cpuMs != null) v.cpuMsPerMiB = v.cpuMs / (v.bytes / (1 << 20));
for (const row of raw.rounds.rate ?? []) for (const v of Object.values(row)) if (ok(v) && v.cpuMs != null) v.cpuUsPerMsg = (v.cpuMs * 1000) / v.messages;
if (raw.rounds.throughput?.length) {
  const libs = ['raw', 'raw-64k', 'raw-16k', 'simple-peer', 'peerjs', 'rhizome', 'rhizome-broadcast'];
  summary.throughput = summarize('throughput', 'mibps', libs, { higherIsBetter: true });
  summary.throughputCpu = summarize('throughput', 'cpuMsPerMiB', libs, { higherIsBetter: false });
}
if (raw.rounds.rate?.length) {
  const libs = ['raw', 'simple-peer', 'peerjs', 'rhizome', 'rhizome-broadcast'];
  summary.rate = summarize('rate', 'perSec', libs, { higherIsBetter: true });
  summary.rateCpu = summarize('rate', 'cpuUsPerMsg', libs, { higherIsBetter: false });
}
if (raw.rounds.latency?.length) {
  summary.latency = {};
  for (const [n, gap] of LATENCY_GROUPS) {
    const rows = raw.rounds.latency.filter((r) => r.n === n && r.gap === gap);
    const s = {};
    for (const lib of ['raw', 'rhizome']) {
      const pick = (f) => median(rows.map((r) => (ok(r[lib]) ? f(r[lib]) : null)));
      s[lib] = {
        p50: pick((x) => x.p50),
        p99: pick((x) => x.p99),
        mean: pick((x) => x.mean),
        over250: pick((x) => x.over250 / x.expected),
        deliveredRatio: pick((x) => x.delivered / x.expected),
        links: pick((x) => x.links),
        formMs: pick((x) => x.formMs),
        jsHeapPerPeer: pick((x) => x.memory.jsHeapPerPeer),
        wasmPerPeer: pick((x) => x.memory.wasmPerPeer),
        uasmPerPeer: pick((x) => x.memory.uasmPerPeer),
        wasmTotal: pick((x) => x.memory.wasmTotal),
        runs: rows.filter((r) => ok(r[lib])).length,
      };
      s[lib].p50RatioToRaw = lib === 'raw' ? 1 : median(rows.map((r) => (ok(r[lib]) && ok(r.raw) ? r[lib].p50 / r.raw.p50 : null)));
      s[lib].p99RatioToRaw = lib === 'raw' ? 1 : median(rows.map((r) => (ok(r[lib]) && ok(r.raw) ? r[lib].p99 / r.raw.p99 : null)));
    }
    summary.latency[`${n}@${gap}ms`] = { n, gap, ...s };
  }
}

const chromiumVersion = (() => {
  try { return execFileSync(process.env.CHROMIUM ?? '/usr/bin/chromium', ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim(); } catch { return info.userAgent; }
})();
const machine = {
  nproc: cpus().length,
  cpu: cpus()[0]?.model ?? '',
  chromium: chromiumVersion.replace(/ built on.*/, ''),
  node: process.version,
  date: new Date().toISOString(),
  pageFeatures: info,
  signalingBinary: process.env.RHIZOME_SIGNALING_BIN.replace(root + '/', ''),
};
const result = {
  machine,
  config: { latencyGroups: LATENCY_GROUPS, rounds: ROUNDS, joinRounds: JOIN_ROUNDS, latencyRounds: LAT_ROUNDS, bytes: TOTAL, messageSize: 60 * 1024, rateCount: RATE_COUNT, rateSize: 1024 },
  summary,
  failures,
  rounds: raw.rounds,
  seconds: Math.round((Date.now() - started) / 1000),
};
mkdirSync(join(root, 'results'), { recursive: true });
writeFileSync(join(root, 'results', 'bench.json'), JSON.stringify(result, null, 2) + '\n');
// A dated copy too, so the run a document quotes survives the next run.
const dated = `bench-${machine.date.replace(/[:.]/g, '-')}.json`;
writeFileSync(join(root, 'results', dated), JSON.stringify(result, null, 2) + '\n');
log(`wrote results/bench.json and results/${dated}`);

// --- the table in docs/BENCHMARKS.md -----------------------------------------------------

const f = (x, d = 1) => (x == null ? '—' : x.toFixed(d));
const kib = (x) => (x == null ? '—' : (x / 1024).toFixed(1));
const pctOf = (x) => (x == null ? '—' : `${(x * 100).toFixed(0)} %`);
const lines = [];
lines.push(`Machine: ${machine.nproc} cores (${machine.cpu}), ${machine.chromium} headless, ${machine.date.slice(0, 10)}; ` +
  `medians of ${JOIN_ROUNDS} (join), ${ROUNDS} (throughput, rate) and ${LAT_ROUNDS} (latency) rounds; ` +
  'each ratio is the median of per-round ratios to the raw baseline of the same round.');
lines.push('');
if (summary.join) {
  const j = summary.join;
  lines.push('**1. Join → first delivered message** (ms, lower is better)', '');
  lines.push('| library | signals via | median ms | × raw (in-page) | × raw (WebSocket relay) |', '|---|---|---:|---:|---:|');
  const via = { raw: 'function calls in the page', 'raw-ws': 'WebSocket relay (PeerJS server)', 'simple-peer': 'function calls in the page', 'simple-peer-ws': 'WebSocket relay (PeerJS server)', peerjs: 'PeerJS server', rhizome: 'rhizome signaling server', 'rhizome-broadcast': 'rhizome signaling server' };
  const name = { raw: 'raw RTCPeerConnection', 'raw-ws': 'raw RTCPeerConnection', 'simple-peer': 'simple-peer', 'simple-peer-ws': 'simple-peer', peerjs: 'PeerJS', rhizome: '**rhizome** (`send` to the neighbour)', 'rhizome-broadcast': 'rhizome (`broadcast`, signed)' };
  for (const lib of ['raw', 'raw-ws', 'simple-peer', 'simple-peer-ws', 'peerjs', 'rhizome', 'rhizome-broadcast']) {
    lines.push(`| ${name[lib]} | ${via[lib]} | ${f(j[lib].median)} | ${f(j[lib].ratioToRaw, 2)} | ${f(j[lib].ratioToRawWs, 2)} |`);
  }
  lines.push('', `rhizome's part: server session up (join resolved) ${f(j.rhizomeBreakdown.serverMs)} ms, first \`neighbor-up\` ${f(j.rhizomeBreakdown.neighborUpMs)} ms.`, '');
}
const pairTable = (title, s, unit, d, cpu, cpuUnit) => {
  lines.push(title, '');
  lines.push(`| library | median ${unit} | × raw | browser CPU ${cpuUnit} | CPU × raw |`, '|---|---:|---:|---:|---:|');
  const name = {
    raw: 'raw RTCDataChannel (1 MiB high water)',
    'raw-64k': 'raw RTCDataChannel (64 KiB high water, as simple-peer)',
    'raw-16k': 'raw RTCDataChannel, each message sent as 16 KiB pieces (rhizome\'s chunk size before 64 KiB chunks)',
    'simple-peer': 'simple-peer (stream `write`/`drain`)',
    peerjs: 'PeerJS (binary serialization)',
    rhizome: '**rhizome** (`node.send` to the neighbour, window counted from its acknowledgements)',
    'rhizome-broadcast': 'rhizome `broadcast` in a 2-peer room (Ed25519-signed, verified)',
  };
  for (const lib of ['raw', 'raw-64k', 'raw-16k', 'simple-peer', 'peerjs', 'rhizome', 'rhizome-broadcast']) {
    if (s[lib]) lines.push(`| ${name[lib]} | ${f(s[lib].median, d)} | ${pctOf(s[lib].ratioToRaw)} | ${f(cpu?.[lib]?.median, 0)} | ${f(cpu?.[lib]?.ratioToRaw, 2)} |`);
  }
  lines.push('');
};
if (summary.throughput) pairTable(`**2. Throughput**, ${TOTAL >> 20} MiB in 60 KiB messages between two peers of one page (MiB/s, higher is better; CPU: ms of the whole browser's CPU time per MiB, lower is better)`, summary.throughput, 'MiB/s', 1, summary.throughputCpu, 'ms/MiB');
if (summary.rate) pairTable(`**3. 1 KiB messages**, ${RATE_COUNT.toLocaleString('en')} between two peers (messages/s, higher is better; CPU: µs of the whole browser's CPU time per message, lower is better)`, summary.rate, 'msg/s', 0, summary.rateCpu, 'µs/msg');
if (summary.latency) {
  lines.push('**4. Broadcast latency** (ms from the send call to each delivery, all peers in one page; 100 broadcasts of 64 B, the origin rotating over all peers) and **5. memory per peer**', '');
  lines.push('| peers | one broadcast every | group | links | p50 ms | p99 ms | p50 × raw | p99 × raw | delivered | over 250 ms | JS heap KiB/peer | wasm KiB/peer |', '|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const [n, gap] of LATENCY_GROUPS) {
    const s = summary.latency[`${n}@${gap}ms`];
    if (!s) continue;
    for (const lib of ['raw', 'rhizome']) {
      const x = s[lib];
      lines.push(`| ${n} | ${gap} ms | ${lib === 'raw' ? 'raw full mesh, send loop' : '**rhizome** overlay'} | ${f(x.links, 0)} | ${f(x.p50, 2)} | ${f(x.p99, 2)} | ${f(x.p50RatioToRaw, 2)} | ${f(x.p99RatioToRaw, 2)} | ${pctOf(x.deliveredRatio)} | ${x.over250 == null ? '—' : `${(x.over250 * 100).toFixed(1)} %`} | ${kib(x.jsHeapPerPeer)} | ${kib(x.wasmPerPeer)} |`);
    }
  }
  lines.push('');
}
if (failures.length) lines.push(`Failed runs (left out of the medians): ${failures.length} — see \`results/bench.json\`.`, '');
const table = lines.join('\n');
console.log(table);

const doc = join(root, 'docs', 'BENCHMARKS.md');
const begin = '<!-- browser:begin -->';
const end = '<!-- browser:end -->';
if (process.env.BENCH_NO_DOC !== '1' && existsSync(doc)) {
  const text = readFileSync(doc, 'utf8');
  const i = text.indexOf(begin);
  const k = text.indexOf(end);
  if (i >= 0 && k > i) {
    writeFileSync(doc, text.slice(0, i + begin.length) + '\n' + table + '\n' + text.slice(k));
    log('updated docs/BENCHMARKS.md');
  } else {
    log(`docs/BENCHMARKS.md has no ${begin} … ${end} markers: table not written`);
  }
}
await shutdown(failures.length > 0 && process.env.BENCH_STRICT === '1' ? 1 : 0);
