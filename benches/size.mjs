// Package size, beside the libraries people would otherwise pick, measured in one run.
//
//   node benches/size.mjs        (after scripts/package; `npm run bench:size` does both)
//
// rhizome: the packed package's .wasm and JS (what a browser downloads). The others:
// their npm packages bundled for the browser by esbuild (minified, ESM), so each number is
// what an app ships for that library. Sizes raw and gzipped (level 9). Writes
// results/size.json and the "Package size" table in docs/BENCHMARKS.md.
import { build } from 'esbuild';
import { gzipSync } from 'node:zlib';
import { readFileSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = join(root, 'target/npm/rhizome');
if (!existsSync(join(pkg, 'wasm/rhizome_bg.wasm'))) {
  console.error('run scripts/package first');
  process.exit(1);
}

const sizes = (bytes) => ({ raw: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length });
const kib = (n) => (n / 1024).toFixed(1);
const version = (name) => JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'))).version;

async function bundle(entry) {
  const out = await build({
    stdin: { contents: entry, resolveDir: root, loader: 'js' },
    bundle: true,
    minify: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    write: false,
    logLevel: 'silent',
    // Node built-ins some of them reference: a browser app would stub them the same way.
    define: { global: 'globalThis', 'process.env.NODE_DEBUG': 'false' },
  });
  return Buffer.from(out.outputFiles[0].contents);
}

const rows = [];
const wasm = readFileSync(join(pkg, 'wasm/rhizome_bg.wasm'));
const js = Buffer.concat([readFileSync(join(pkg, 'wasm/rhizome.js')), readFileSync(join(pkg, 'index.js'))]);
const rhizomeJs = await bundle(`export * from ${JSON.stringify(join(pkg, 'index.js'))};`);
rows.push({ name: 'rhizome (wasm)', version: JSON.parse(readFileSync(join(pkg, 'package.json'))).version, ...sizes(wasm) });
rows.push({ name: 'rhizome (JS glue, bundled)', version: '', ...sizes(rhizomeJs) });
rows.push({ name: 'rhizome (total)', version: '', raw: wasm.length + rhizomeJs.length, gzip: sizes(wasm).gzip + sizes(rhizomeJs).gzip });
for (const [name, entry] of [
  // simple-peer needs Node's `events`; its npm polyfill is what any app must add.
  ['simple-peer (+ events polyfill)', "export { default } from 'simple-peer';"],
  ['peerjs', "export { Peer } from 'peerjs';"],
  ['trystero', "export { joinRoom } from 'trystero';"],
]) {
  try {
    rows.push({ name, version: version(name.split(' ')[0]), ...sizes(await bundle(entry)) });
  } catch (e) {
    rows.push({ name, version: version(name.split(' ')[0]), error: String(e.message ?? e).split('\n')[0] });
  }
}
void js;

mkdirSync(join(root, 'results'), { recursive: true });
writeFileSync(join(root, 'results/size.json'), JSON.stringify({ date: new Date().toISOString(), rows }, null, 2) + '\n');

const table = [
  '| package | version | raw KiB | gzip KiB |',
  '|---|---|---:|---:|',
  ...rows.map((r) => r.error
    ? `| ${r.name} | ${r.version} | — | — (${r.error}) |`
    : `| ${r.name} | ${r.version} | ${kib(r.raw)} | ${kib(r.gzip)} |`),
].join('\n');
console.log(table);

// Replace the table between the markers in docs/BENCHMARKS.md (the prose around it is kept).
const doc = join(root, 'docs/BENCHMARKS.md');
const begin = '<!-- size:begin -->';
const end = '<!-- size:end -->';
if (existsSync(doc)) {
  const text = readFileSync(doc, 'utf8');
  const i = text.indexOf(begin);
  const j = text.indexOf(end);
  if (i >= 0 && j > i) {
    writeFileSync(doc, text.slice(0, i + begin.length) + '\n' + table + '\n' + text.slice(j));
  }
}
