// A new user's first app: install `rhizome`, import it, join a room, send a message.
import { join, version } from 'rhizome';

const params = new URLSearchParams(location.search);
const room = params.get('room') ?? 'vite';
const signaling = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;

const node = await join({ signaling: [signaling], room, iceServers: [] });
document.getElementById('peer').textContent = node.id;

const heard = [];
node.on('broadcast', ({ from, data }) => heard.push({ from, text: new TextDecoder().decode(data) }));

// What the test reads and drives.
window.app = {
  id: node.id,
  version: version(),
  heard,
  neighbors: () => node.neighbors(),
  say: (text) => node.broadcast(text),
};
