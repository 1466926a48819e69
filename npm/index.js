// rhizome: the npm entry point. A thin layer over the wasm-bindgen module that loads the
// WebAssembly once, on first use, so applications never call an init function.
import init, { Rhizome as WasmRhizome, Identity, version } from './wasm/rhizome.js';

let loading;

/**
 * Loads and instantiates the WebAssembly module (once). `join` and `createIdentity`
 * call it for you; call it yourself to load early or from a custom location.
 */
export function load(input) {
  if (!loading) {
    loading = init(input === undefined ? undefined : { module_or_path: input }).catch((e) => {
      loading = undefined;
      throw e;
    });
  }
  return loading;
}

/** Joins a room: `const node = await join({ signaling: ['wss://host/ws'], room: 'lobby' })`. */
export async function join(options) {
  await load();
  return WasmRhizome.join(options);
}

/** The same, as `Rhizome.join(...)`. */
export const Rhizome = Object.freeze({ join });

/** A fresh identity, or the one saved as `secret` (hex). */
export async function createIdentity(secret) {
  await load();
  return secret === undefined ? new Identity() : Identity.fromSecret(secret);
}

export { Identity, version };
