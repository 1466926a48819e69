// Loads the rhizome wasm package and shows this peer's id. The identity is kept in
// localStorage, so a reload keeps the same peer id.
import init, { Identity, version } from '/pkg/rhizome.js';

const $ = (id) => document.getElementById(id);

async function main() {
  await init();
  let identity;
  const saved = localStorage.getItem('rhizome.secret');
  try {
    identity = saved ? Identity.fromSecret(saved) : new Identity();
  } catch (e) {
    identity = new Identity();
  }
  localStorage.setItem('rhizome.secret', identity.secret);
  const el = $('peer-id');
  el.textContent = identity.id;
  el.title = `short form: ${identity.short}`;
  el.dataset.state = 'ready';
  $('version').textContent = `(rhizome ${version()})`;

  try {
    const res = await fetch('/healthz');
    $('server').textContent = res.ok
      ? `signaling server: up (${new URL('/ws', location.href.replace(/^http/, 'ws'))})`
      : `signaling server: HTTP ${res.status}`;
  } catch (e) {
    $('server').textContent = `signaling server: unreachable (${e})`;
  }
}

main().catch((e) => {
  const el = $('peer-id');
  el.textContent = `failed to load rhizome: ${e}`;
  el.className = 'error';
  el.dataset.state = 'error';
});
