// The NAT matrix: pairs of native peers (rhizome-node, webrtc-rs) behind every kind of NAT
// the lab builds, through a signaling server that offers TURN and one that offers STUN
// only: which pairs connect, and over which candidate pair. With TURN every pair
// connects; without, a pair of symmetric NATs (or symmetric and port-restricted) cannot,
// and says so with an `ice-failed` error naming the peer instead of hanging. A server
// whose TURN credentials coturn refuses (a wrong secret) leaves such a pair unconnected
// too.
//
// Runs inside scripts/nat-lab (scripts/test does that); without a lab it is skipped.
// Set RHIZOME_NAT_REPORT=path to write the measured table as JSON, and
// RHIZOME_NAT_SEQUENTIAL=1 to run the pairs one at a time (for timings).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const NODE_BIN = process.env.RHIZOME_NODE_BIN
  ?? join(process.env.CARGO_TARGET_DIR ?? join(root, 'target'), 'debug', 'rhizome-node');
const lab = process.env.RHIZOME_LAB_HOSTS !== undefined;
const skip = lab ? false : 'needs the NAT lab: run under scripts/nat-lab';

const ns = (host) => process.env[`RHIZOME_LAB_NS_${host.toUpperCase().replaceAll('-', '_')}`];
const KINDS = ['none', 'cone', 'restricted', 'symmetric'];
/** Pairs (without TURN) that cannot connect: no path through these NATs without a relay. */
const BLOCKED = new Set(['restricted-symmetric', 'symmetric-symmetric']);
/** How long a pair gets to connect or to fail (the overlay's handshake timeout is 15 s). */
const PAIR_MS = 40_000;

const children = new Set();
after(() => { for (const c of children) c.kill('SIGKILL'); });

/** rhizome-node in host `host`'s namespace; resolves once it joined (printed its id). */
function startNode(host, url, room) {
  const child = spawn('ip', ['netns', 'exec', ns(host), NODE_BIN,
    '--signaling', url, '--room', room, '--seed', '--mdns', 'off'], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(child);
  const node = { host, lines: [], stderr: '', child };
  let partial = '';
  child.stdout.on('data', (d) => {
    partial += d;
    const parts = partial.split('\n');
    partial = parts.pop();
    for (const l of parts) node.lines.push({ at: performance.now(), line: l });
  });
  child.stderr.on('data', (d) => { node.stderr += d; });
  child.once('exit', () => children.delete(child));
  node.stop = () => new Promise((done) => {
    if (child.exitCode !== null || child.signalCode !== null) return done();
    child.once('exit', () => done());
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 3_000);
  });
  node.find = (pred) => node.lines.find((l) => pred(l.line));
  return new Promise((resolve, reject) => {
    const timer = setInterval(() => {
      const peer = node.find((l) => l.startsWith('peer '));
      if (peer) {
        clearInterval(timer);
        node.id = peer.line.slice('peer '.length);
        node.joinedAt = peer.at;
        resolve(node);
      } else if (child.exitCode !== null) {
        clearInterval(timer);
        reject(new Error(`rhizome-node in ${host} exited: ${node.stderr}`));
      }
    }, 20);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The selected candidate pair of `node`'s link to `peer`, asked for with `/links`. */
async function candidatePair(node, peer, ms = 10_000) {
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    const from = node.lines.length;
    node.child.stdin.write('/links\n');
    await sleep(500);
    const line = node.lines.slice(from).map((l) => l.line)
      .find((l) => l.startsWith(`link ${peer} `));
    const pair = line?.split(' ')[4];
    if (pair && pair !== '-') return pair;
  }
  return null;
}

/**
 * Runs one pair: `a` joins, then `b` (introduced to `a`, it dials). Resolves to
 * { connected, setupMs, pair, iceFailed, ms }.
 */
async function runPair(hostA, hostB, url, tag) {
  const room = `nat-${tag}-${hostA}-${hostB}-${Date.now()}`;
  const a = await startNode(hostA, url, room);
  const b = await startNode(hostB, url, room);
  const t0 = b.joinedAt;
  const result = { a: hostA, b: hostB, connected: false, setupMs: null, pair: null, iceFailed: false };
  try {
    const deadline = performance.now() + PAIR_MS;
    while (performance.now() < deadline) {
      const upA = a.find((l) => l === `neighbor-up ${b.id}`);
      const upB = b.find((l) => l === `neighbor-up ${a.id}`);
      if (upA && upB) {
        result.connected = true;
        result.setupMs = Math.round(Math.max(upA.at, upB.at) - t0);
        break;
      }
      const failed = (n, other) => n.stderr.includes(`ice-failed (${other.id})`);
      if (failed(a, b) || failed(b, a)) {
        result.iceFailed = true;
        result.failedAfterMs = Math.round(performance.now() - t0);
        break;
      }
      await sleep(50);
    }
    if (result.connected) result.pair = await candidatePair(b, a.id);
    result.stderr = { [hostA]: a.stderr, [hostB]: b.stderr };
  } finally {
    await Promise.all([a.stop(), b.stop()]);
  }
  return result;
}

/** Every unordered pair of NAT kinds (site a of the first, site b of the second), and
 * the two hosts behind one NAT. */
function pairs() {
  const out = [];
  for (let i = 0; i < KINDS.length; i++) {
    for (let j = i; j < KINDS.length; j++) out.push([`${KINDS[i]}-a`, `${KINDS[j]}-b`, `${KINDS[i]}-${KINDS[j]}`]);
  }
  out.push(['shared-1', 'shared-2', 'same-nat']);
  return out;
}

const relayed = (pair) => pair?.includes('relay') ?? false;
const results = { turn: [], stun: [] };

test('NAT matrix (native peers): without a relay, all but symmetric-involving pairs connect directly; the rest report ice-failed', { skip, timeout: process.env.RHIZOME_NAT_SEQUENTIAL ? 600_000 : 150_000 }, async () => {
  const all = pairs();
  const started = performance.now();
  const run = (url, tag) => ([a, b, kind]) => runPair(a, b, url, tag).then((r) => ({ kind, ...r }));
  const turnRun = run(process.env.RHIZOME_LAB_SIGNALING_TURN, 'turn');
  const stunRun = run(process.env.RHIZOME_LAB_SIGNALING_STUN, 'stun');
  let turn;
  let stun;
  if (process.env.RHIZOME_NAT_SEQUENTIAL) {
    // One pair at a time, for set-up times not inflated by 43 other processes (~3 min).
    turn = [];
    stun = [];
    for (const p of all) turn.push(await turnRun(p));
    for (const p of all) stun.push(await stunRun(p));
  } else {
    [turn, stun] = await Promise.all([Promise.all(all.map(turnRun)), Promise.all(all.map(stunRun))]);
  }
  // A pair that should connect directly and did not gets one more attempt, reported: with
  // 44 processes starting at once on 2 cores, about one run in five loses one such pair
  // (seen: none ↔ restricted); the overlay would simply try again too.
  for (const [list, runOne] of [[stun, stunRun]]) {
    for (let i = 0; i < list.length; i++) {
      const r = list[i];
      if (!r.connected && !BLOCKED.has(r.kind)) {
        console.log(`${r.kind} did not connect (${r.iceFailed ? 'ice-failed' : 'no outcome'}); one more attempt`);
        list[i] = { ...(await runOne([r.a, r.b, r.kind])), retried: true };
      }
    }
  }
  results.turn = turn;
  results.stun = stun;
  const row = (r) => `${r.kind.padEnd(22)} ${r.connected ? `connected ${String(r.setupMs).padStart(5)} ms  ${r.pair ?? '?'}` : (r.iceFailed ? `ice-failed after ${r.failedAfterMs} ms` : 'no connection, no ice-failed')}${r.retried ? ' (2nd attempt)' : ''}`;
  console.log(`\nwith TURN offered:\n  ${turn.map(row).join('\n  ')}`);
  console.log(`STUN only:\n  ${stun.map(row).join('\n  ')}`);
  console.log(`(${Math.round((performance.now() - started) / 1000)} s for ${turn.length + stun.length} pairs)`);
  if (process.env.RHIZOME_NAT_REPORT) writeFileSync(process.env.RHIZOME_NAT_REPORT, JSON.stringify({ turn, stun }, null, 2));

  // Without a relay: exactly the pairs with a path through their NATs connect, directly;
  // the others fail cleanly.
  for (const r of stun) {
    if (BLOCKED.has(r.kind)) {
      assert.ok(!r.connected, `${r.kind} cannot connect without a relay`);
      assert.ok(r.iceFailed, `${r.kind} reports ice-failed instead of hanging:\n${JSON.stringify(r.stderr, null, 1)}`);
    } else {
      assert.ok(r.connected, `${r.kind} connects directly:\n${JSON.stringify(r.stderr, null, 1)}`);
      assert.ok(r.pair && !relayed(r.pair), `${r.kind} connects without a relay: ${r.pair}`);
    }
  }
  // With TURN offered, native peers gather relay candidates and coturn relays their checks
  // (see turn.log), but webrtc-rs 0.21 does not complete ICE over a relayed pair (see
  // docs/NAT.md): what needs the relay still fails, cleanly. Every pair ends one way or the
  // other, never hangs; the browser test below shows the relay carrying a link.
  for (const r of turn) {
    assert.ok(r.connected || r.iceFailed, `${r.kind} connects or reports ice-failed:\n${JSON.stringify(r.stderr, null, 1)}`);
    if (r.connected) assert.ok(r.pair, `${r.kind}: the link reports its candidate pair`);
  }
  const sameNat = stun.find((r) => r.kind === 'same-nat');
  // On their LAN: the peer's host candidate, or its LAN address learned from its check
  // before that candidate arrived (prflx); never through the NAT's public address.
  assert.match(sameNat.pair, /^host\/(host|prflx)$/, 'two hosts behind one NAT use their LAN addresses');
});

test('TURN credentials under a wrong secret are refused by coturn: a symmetric pair stays unconnected and says ice-failed', { skip, timeout: 60_000 }, async () => {
  const r = await runPair('symmetric-a', 'symmetric-b', process.env.RHIZOME_LAB_SIGNALING_FORGED, 'forged');
  assert.ok(!r.connected, 'no relay with refused credentials');
  assert.ok(r.iceFailed, `ice-failed is reported:\n${JSON.stringify(r.stderr, null, 1)}`);
});
