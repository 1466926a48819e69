// A signaling server that browser tests may stop and start, to prove the overlay lives
// on without it. Used by scripts/browser-tests; listens on loopback only.
//
//   node scripts/signaling-control.mjs <server-binary> <server-port> <control-port>
//
// GET /stop  → SIGTERM to the server, answers once it has exited
// GET /start → starts it again, answers once it is listening
// Every answer carries `Access-Control-Allow-Origin: *` (the test page has another origin).
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';

const [bin, serverPort, controlPort] = process.argv.slice(2);
let child = null;

function start() {
  return new Promise((resolve, reject) => {
    if (child) return resolve('already running');
    const c = spawn(bin, ['--bind', `127.0.0.1:${serverPort}`, '--log', 'warn'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    child = c;
    let out = '';
    c.stdout.on('data', (d) => {
      out += d;
      if (out.includes('listening on')) resolve('started');
    });
    c.once('exit', (code) => {
      if (child === c) child = null;
      reject(new Error(`server exited with ${code}`));
    });
  });
}

function stop() {
  return new Promise((resolve) => {
    const c = child;
    if (!c) return resolve('not running');
    c.once('exit', () => resolve('stopped'));
    c.kill('SIGTERM');
  });
}

const control = createServer(async (req, res) => {
  res.setHeader('Access-Control-Allow-Origin', '*');
  try {
    const result = req.url === '/stop' ? await stop() : req.url === '/start' ? await start() : null;
    res.writeHead(result ? 200 : 404).end(result ?? 'unknown command');
  } catch (e) {
    res.writeHead(500).end(String(e));
  }
});

await start();
control.listen(+controlPort, '127.0.0.1', () => {
  console.log(`signaling-control listening on http://127.0.0.1:${controlPort}`);
});
const quit = async () => { await stop(); process.exit(0); };
process.on('SIGTERM', quit);
process.on('SIGINT', quit);
