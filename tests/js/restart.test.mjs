// The browser client through a real server restart: a trio_stream server (`python -m trio_stream
// serve`) is killed with SIGKILL and a new one started on the same port. The client reconnects,
// creates its channel again, resends what its publisher kept and resubscribes (a 'reset' gap:
// the new server's channel has a new epoch).
// Needs a WebSocket in Node: Node >= 22, or Node 20 with --experimental-websocket
// (`node --experimental-websocket --test tests/js/`). Skipped otherwise, or without Python.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../../trio_stream/web/trio_stream.js';
import {
  liveSetup, within, waitFor, freePort, startServer as startPythonServer, killChild, killChildren,
} from './python.mjs';

const { python, skip } = liveSetup();

/** Start `trio-stream serve` on `httpPort`; resolve once the port accepts connections. */
const startServer = (httpPort) => startPythonServer(python, httpPort, ['--name', 'restart']);

after(killChildren);

test('a server killed and started again: the client reconnects, nothing sent meanwhile is lost or doubled',
  { skip, timeout: 60000 }, async () => {
    const port = await freePort();
    let server = await startServer(port);
    // The default connectTimeout (10 s): an attempt refused while no server listens must end
    // at its 'error' (Node 20's WebSocket fires no 'close' then), not at that timeout.
    const client = await connect(`ws://127.0.0.1:${port}/ws`, {
      name: `js-restart-${process.pid}-${Date.now()}`, reconnectDelay: 100, maxReconnectDelay: 500,
    });
    try {
      const states = [];
      client.on('state', (s) => states.push(s));
      const gaps = [];
      client.on('gap', (g) => gaps.push(g));

      await client.createChannel('restart/ch');
      const sub = await client.subscribe('restart/ch', { policy: 'block', size: 1000 });
      const it = sub[Symbol.asyncIterator]();
      const next = async (what) => {
        const r = await within(it.next(), 10000, what);
        assert.equal(r.done, false, `subscription ended while waiting for ${what}`);
        return r.value;
      };
      const pub = await client.publisher('restart/ch');
      await within(pub.waitForReaders(), 5000, 'the publisher to see its reader');

      // Before the fault: sent, read, and acknowledged (so that none of them is resent).
      for (let i = 0; i < 3; i++) assert.equal(await pub.send(i), true);
      for (let i = 0; i < 3; i++) {
        const msg = await next(`value ${i} before the kill`);
        assert.equal(msg.data, i);
        assert.equal(msg.gap, null);
      }
      await waitFor(() => pub.inFlight === 0, 5000, 'the first values to be acknowledged');

      // The fault: the server dies without a word.
      await killChild(server);
      await waitFor(() => client.state === 'reconnecting', 10000, "client.state === 'reconnecting'");

      // Sent while no server is there: they wait in the publisher's window.
      const during = [10, 11, 12, 13, 14];
      for (const v of during) {
        assert.equal(await within(pub.send(v), 5000, `send(${v}) during the outage`), true);
      }
      assert.equal(pub.inFlight, during.length, 'the outage values wait in the window');
      assert.equal(client.state, 'reconnecting');

      // A new server on the same port: a new channel epoch.
      server = await startServer(port);
      await waitFor(() => client.state === 'open', 5000, "client.state === 'open' after the restart");

      const first = await next('the first message after the restart');
      assert.equal(first.data, during[0]);
      assert.ok(first.gap, 'the first message after the restart carries a gap');
      assert.equal(first.gap.kind, 'reset');
      assert.equal(first.gap.afterCleanStop, undefined, 'a crash: what the old server held is unknown');
      const got = [first.data];
      for (let i = 1; i < during.length; i++) {
        const msg = await next(`outage value ${i}`);
        assert.equal(msg.gap, null);
        got.push(msg.data);
      }
      assert.deepStrictEqual(got, during, 'the outage values, in order, once each');

      // After the restart: sending works as before.
      await within(pub.waitForReaders(), 5000, 'the publisher to see its reader again');
      const afterwards = [20, 21, 22];
      for (const v of afterwards) assert.equal(await pub.send(v), true);
      await pub.send('end');
      const rest = [];
      for (;;) {
        const msg = await next('the values sent after the restart');
        assert.equal(msg.gap, null);
        if (msg.data === 'end') break;
        rest.push(msg.data);
      }
      assert.deepStrictEqual(rest, afterwards, 'nothing doubled, nothing lost after the restart');
      await waitFor(() => pub.inFlight === 0, 5000, 'every value to be acknowledged');

      assert.equal(client.state, 'open');
      assert.ok(states.includes('reconnecting'));
      assert.equal(gaps.length, 1, 'one gap, for the one restart');
      assert.equal(gaps[0].channel, 'restart/ch');
      assert.equal(gaps[0].kind, 'reset');
      assert.ok((await client.channels()).some((c) => c.name === 'restart/ch'), 'the channel is there again');
      await pub.close();
      await sub.close();
    } finally {
      await client.close();
      await killChild(server).catch(() => {});
    }
  });

test('a server stopped gracefully and started again: the reset says the old one stopped cleanly',
  { skip, timeout: 60000 }, async () => {
    // A control room's dashboard said "frames the old server held are lost" after a clean
    // restart (SIGTERM), in which the server drains what it holds before it closes.
    const port = await freePort();
    let server = await startServer(port);
    const client = await connect(`ws://127.0.0.1:${port}/ws`, {
      name: `js-graceful-${process.pid}-${Date.now()}`, reconnectDelay: 100, maxReconnectDelay: 500,
    });
    try {
      await client.createChannel('graceful/ch');
      const sub = await client.subscribe('graceful/ch', { policy: 'block', size: 1000 });
      const it = sub[Symbol.asyncIterator]();
      const pub = await client.publisher('graceful/ch');
      await within(pub.waitForReaders(), 5000, 'the publisher to see its reader');
      await pub.send(1);
      assert.equal((await within(it.next(), 10000, 'the value before the stop')).value.data, 1);
      server.kill('SIGTERM');
      await within(server.exited, 15000, 'the server to stop after SIGTERM');
      server = await startServer(port);
      await waitFor(() => client.state === 'open', 10000, "client.state === 'open' after the restart");
      await within(pub.waitForReaders(), 5000, 'the publisher to see its reader again');
      await pub.send(2);
      const first = (await within(it.next(), 10000, 'the value after the restart')).value;
      assert.equal(first.data, 2);
      assert.equal(first.gap.kind, 'reset');
      assert.equal(first.gap.afterCleanStop, true);
      await pub.close();
      await sub.close();
    } finally {
      await client.close();
      await killChild(server).catch(() => {});
    }
  });

test('an unnamed client takes a new name from a restarted server, not the one a newcomer has now',
  { skip, timeout: 60000 }, async () => {
    const port = await freePort();
    let server = await startServer(port);
    // Its way back is slow enough that a newcomer reaches the new server first.
    const old = await connect(`ws://127.0.0.1:${port}/ws`, { reconnectDelay: 1500, maxReconnectDelay: 1500 });
    let newcomer = null;
    try {
      const oldName = old.name;
      assert.match(oldName, /^client-\d+$/);
      await killChild(server);
      await waitFor(() => old.state === 'reconnecting', 10000, "old.state === 'reconnecting'");
      server = await startServer(port);
      newcomer = await connect(`ws://127.0.0.1:${port}/ws`, { reconnect: false });
      assert.equal(newcomer.name, oldName, 'the new server counts its unnamed clients from 1 again');
      await waitFor(() => old.state === 'open', 15000, "old.state === 'open' after the restart");
      assert.notEqual(old.name, oldName);
      assert.match(old.name, /^client-\d+$/);
      const names = (await newcomer.clients()).map((c) => c.name).sort();
      assert.deepStrictEqual(names, [oldName, old.name].sort());
    } finally {
      await old.close();
      await newcomer?.close();
      await killChild(server).catch(() => {});
    }
  });
