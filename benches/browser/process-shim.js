// What simple-peer's Node-stream dependencies expect of `process` in a browser: the same
// stub any app bundling simple-peer has to add (esbuild injects it for the bench page).
export const process = {
  browser: true,
  env: {},
  nextTick: (fn, ...args) => queueMicrotask(() => fn(...args)),
};
