/// <reference lib="esnext.disposable" />
// (wasm-bindgen classes implement `Symbol.dispose`; this keeps projects that target an
// older `lib` compiling without `skipLibCheck`.)
// Types of the rhizome npm package. The node, event and option types come from the
// wasm-bindgen module (generated from src/js.rs); this file types the thin entry layer.
import type {
  InitInput,
  JoinOptions,
  LinkStats,
  NodeStats,
  RhizomeError,
  RhizomeEvents,
  RhizomeMode,
  RhizomeNode,
  RequestOptions,
  SendErrorCode,
  SendResult,
  Topology,
  TopologyLink,
} from './wasm/rhizome.js';
import { Identity, version } from './wasm/rhizome.js';

export type {
  InitInput,
  JoinOptions,
  LinkStats,
  NodeStats,
  RhizomeError,
  RhizomeEvents,
  RhizomeMode,
  RhizomeNode,
  RequestOptions,
  SendErrorCode,
  SendResult,
  Topology,
  TopologyLink,
};
export { Identity, version };

/**
 * Loads and instantiates the WebAssembly module (once). `join` and `createIdentity` call
 * it for you; pass a URL or module to load it from a custom location.
 */
export function load(input?: InitInput | Promise<InitInput>): Promise<unknown>;

/**
 * Joins a room and resolves to a running node. Rejects with a `RhizomeError` whose `code`
 * is `bad-options`, `signaling-unreachable`, `signaling-timeout`, `signaling-refused` or
 * `no-signaling-servers`.
 */
export function join(options: JoinOptions): Promise<RhizomeNode>;

/** The same as `join`, for those who like `Rhizome.join(...)`. */
export const Rhizome: { readonly join: typeof join };

/** A fresh identity, or the one saved as `secret` (hex). */
export function createIdentity(secret?: string): Promise<Identity>;
