// Bundles the browser bench page (benches/browser/page.js with rhizome, simple-peer and
// PeerJS) into target/bench/www, with the release package's wasm beside it.
//
//   node benches/build-page.mjs            (after scripts/package)
//   node benches/build-page.mjs --profile  target/bench/www-prof: the same page over a
//       wasm-bindgen build of the same compiled module that keeps its function names (no
//       wasm-opt pass, which strips them), so the CPU profiler can name wasm functions.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const profile = process.argv.includes('--profile');
// --pkg DIR --out NAME: the same page over another build of the package (DIR holds
// index.js and wasm/), written to target/bench/NAME: for trying a change in the build.
const arg = (name) => { const i = process.argv.indexOf(name); return i > 0 ? process.argv[i + 1] : undefined; };
const out = join(root, 'target', 'bench', arg('--out') ?? (profile ? 'www-prof' : 'www'));
let pkg = arg('--pkg') ? resolve(arg('--pkg')) : join(root, 'target', 'npm', 'rhizome');
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

if (profile) {
  // The cargo output of `scripts/package` (profile wasm-release), through wasm-bindgen again.
  const named = join(root, 'target', 'bench', 'prof-pkg');
  rmSync(named, { recursive: true, force: true });
  mkdirSync(join(named, 'wasm'), { recursive: true });
  execFileSync('wasm-bindgen', ['--target', 'web', '--out-dir', join(named, 'wasm'), '--out-name', 'rhizome',
    join(process.env.CARGO_TARGET_DIR ?? join(root, 'target'), 'wasm32-unknown-unknown', 'wasm-release', 'rhizome.wasm')], { stdio: 'inherit' });
  copyFileSync(join(root, 'npm', 'index.js'), join(named, 'index.js'));
  pkg = named;
}

await build({
  entryPoints: [join(root, 'benches', 'browser', 'page.js')],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: !profile,
  sourcemap: true,
  logLevel: 'warning',
  define: { global: 'globalThis' },
  inject: [join(root, 'benches', 'browser', 'process-shim.js')],
  outfile: join(out, 'bench.js'),
  plugins: [{
    name: 'rhizome-package',
    setup(b) {
      b.onResolve({ filter: /target\/npm\/rhizome\/index\.js$/ }, () => ({ path: join(pkg, 'index.js') }));
    },
  }],
});
copyFileSync(join(root, 'benches', 'browser', 'index.html'), join(out, 'index.html'));
copyFileSync(join(pkg, 'wasm', 'rhizome_bg.wasm'), join(out, 'rhizome_bg.wasm'));
console.error(`bench page: ${out}`);
