// Compiled with `tsc --noEmit` against the packed package: the types must describe the
// API exactly (a wrong event payload or option name fails the build).
import {
  join,
  Rhizome,
  createIdentity,
  type RhizomeMode,
  type RhizomeNode,
  type RhizomeError,
  type SendErrorCode,
  type SendResult,
  type Topology,
} from 'rhizome';

async function main(): Promise<void> {
  const node: RhizomeNode = await join({ signaling: ['ws://localhost/ws'], room: 'r', announceTopology: 1000 });
  node.on('broadcast', (e) => {
    const bytes: Uint8Array = e.data;
    const from: string = e.from;
    const hops: number = e.hops;
    console.log(bytes.length, from, hops);
  });
  node.on('neighbor-up', (e) => console.log(e.peer.toUpperCase()));
  node.on('error', (e) => console.log(e.code, e.message, e.peer ?? ''));
  node.broadcast('text');
  node.broadcast(new Uint8Array([1, 2, 3]));
  node.on('message', (e) => {
    const bytes: Uint8Array = e.data;
    const from: string = e.from;
    const hops: number = e.hops;
    console.log(bytes.length, from, hops);
  });
  const sent: SendResult = await node.send(node.id, 'to one peer');
  const hops: number = (await node.send(node.id, new Uint8Array(4))).hops;
  console.log(sent.hops, hops);
  node.on('request', (e) => {
    const asked: Uint8Array = e.data;
    e.respond(asked.slice().reverse());
    e.respond('or text');
  });
  const answer: Uint8Array = await node.request(node.id, 'question', { timeoutMs: 500 });
  const answer2: Uint8Array = await node.request(node.id, new Uint8Array(1));
  console.log(answer.length, answer2.length);
  // Handlers are typed by the event name, and modes are a closed set:
  // @ts-expect-error a message event has no `seq`
  node.on('message', (e) => e.seq);
  // @ts-expect-error not a mode
  void join({ signaling: 'ws://localhost/ws', room: 'r', mode: 'banana' });
  const mode: RhizomeMode = node.mode;
  console.log(mode === 'hybrid' || mode === 'structured' || mode === 'unstructured');
  try {
    await node.send('peer', 'x');
  } catch (e) {
    const code: SendErrorCode | string = (e as RhizomeError).code;
    if (code === 'backpressure' || code === 'timeout') console.log('retry later');
  }
  const t: Topology = node.topology();
  const ids: string[] = t.peers.map((p) => p.id);
  const neighbors: string[] = node.neighbors();
  console.log(ids, neighbors, node.stats().neighbors);
  await node.leave();
  const other = await Rhizome.join({ signaling: 'ws://localhost/ws', room: 'r', identity: true, mode: 'unstructured', secret: 's3cret' });
  const id = await createIdentity();
  console.log(other.id, id.id);
  try {
    await join({ signaling: [], room: 'r' });
  } catch (e) {
    console.log((e as RhizomeError).code);
  }
}

void main;
