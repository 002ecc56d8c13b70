// A loopback TCP proxy in front of a server, for tests that cut a client's connection the way
// a network does (no close handshake) or keep it away for a while: cut() drops every connection
// through it, refuse() closes new ones at once until accept().

import { createServer, connect } from 'node:net';

/** Resolves with {port, url(path), cut(), refuse(), accept(), close()} once listening. */
export async function startTcpProxy(targetPort) {
  const sockets = new Set();
  let refusing = false;
  const server = createServer((down) => {
    if (refusing) {
      down.destroy();
      return;
    }
    const up = connect({ host: '127.0.0.1', port: targetPort });
    sockets.add(down);
    sockets.add(up);
    const drop = () => {
      down.destroy();
      up.destroy();
      sockets.delete(down);
      sockets.delete(up);
    };
    for (const socket of [down, up]) {
      socket.on('error', drop);
      socket.on('close', drop);
    }
    down.pipe(up);
    up.pipe(down);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  const cut = () => {
    for (const socket of sockets) socket.destroy();
    sockets.clear();
  };
  return {
    port,
    url: (path = '/ws') => `ws://127.0.0.1:${port}${path}`,
    cut,
    refuse() { refusing = true; },
    accept() { refusing = false; },
    close() {
      cut();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
