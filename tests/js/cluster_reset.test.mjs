// The browser client's subscription rides through a reset of its channel in the cluster's
// Redis (docs/protocol.md 8, "Reset ends"), against a real cluster: two `trio_stream serve`
// nodes share a private redis-server, which is killed with SIGKILL and started again empty
// on its port. The node that keeps the channel (a, its writer's) registers it again under a
// new epoch, and both nodes end their readers of the old epoch with a `sub_end` marked
// `again`: the JS readers (one on each node, and a dashboard panel on b) subscribe again
// since their position and read on, their first message of the new life with a reset gap;
// none ends. A delete after that still ends them at once. tests/test_cluster_reset_ride.py
// checks the same for the Python clients; reset_end.test.mjs the client's side against a
// fake server (the 30 s bound too). Needs what cluster.test.mjs needs: skipped without it
// (a missing redis-server fails in CI).

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../../trio_stream/web/trio_stream.js';
import { installFakeDom } from './fake_dom.mjs';
import {
  clusterSetup, startRedis, startServer, killChildren, freePort, within, waitFor, sleep,
} from './python.mjs';

installFakeDom();
const { Panel } = await import('../../trio_stream/web/panels.js');

const setup = clusterSetup();
const { python, skip } = setup;

const WAIT_MS = 20000; // any one step: generous, and still far below the test's timeout
const BEFORE = 10; // values read before the restart
const AFTER = 20; // values sent (and read) after it

after(killChildren);

/** A private Redis and nodes "a" and "b" of one cluster on it, with their WebSocket URLs. */
async function startCluster() {
  const redis = await startRedis(setup);
  const portA = await freePort();
  let portB;
  do portB = await freePort(); while (portB === portA);
  const node = (port, name) => startServer(python, port, ['--engine', redis.url, '--node-name', name,
    '--name', `reset-${name}`]);
  const [a, b] = await Promise.all([node(portA, 'a'), node(portB, 'b')]);
  return { redis, a, b, urlA: `ws://127.0.0.1:${portA}/ws`, urlB: `ws://127.0.0.1:${portB}/ws` };
}

/** A reader: its subscription, every message it took (in order), its ends. */
async function reader(client, channel) {
  const sub = await client.subscribe(channel, { policy: 'unbounded', size: null });
  const r = { sub, got: [], ends: [] };
  sub.on('end', (reason) => r.ends.push(reason));
  r.next = (what) => within(sub.next().then((x) => {
    assert.equal(x.done, false, `${what}: the subscription ended (${sub.endReason})`);
    r.got.push(x.value);
    return x.value;
  }), WAIT_MS, what);
  return r;
}

test('JS readers on both nodes, and a dashboard panel, ride through a Redis restart (empty); a delete still ends them at once',
  { skip, timeout: 120000 }, async () => {
    const cluster = await startCluster();
    const clients = [];
    try {
      const daq = await connect(cluster.urlA, { name: 'daq' });
      const recB = await connect(cluster.urlB, { name: 'rec-b' });
      const recA = await connect(cluster.urlA, { name: 'rec-a' });
      const page = await connect(cluster.urlB, { name: 'page' });
      clients.push(daq, recB, recA, page);
      await daq.createChannel('c'); // kept on node a, where its writer is
      const readers = [await reader(recB, 'c'), await reader(recA, 'c')];
      const panel = new Panel({
        client: page, spec: { channels: ['c'], rate: 30, y: null }, onChange: () => {}, onFrame: () => {},
        metaOf: () => null,
      });
      panel.plotter.resize();
      panel.start();
      await waitFor(() => panel.subs.get('c')?.sub, WAIT_MS, "the panel's subscription");
      const panelSub = panel.subs.get('c').sub;
      const pub = await daq.publisher('c');
      await waitFor(() => pub.readers === 3, WAIT_MS, 'three readers');
      for (let i = 0; i < BEFORE; i++) assert.equal(await pub.send(i), true);
      for (const r of readers) {
        for (let i = 0; i < BEFORE; i++) assert.equal((await r.next(`value ${i}`)).data, i);
      }
      await waitFor(() => panel.lastMsg?.data === BEFORE - 1, WAIT_MS, 'the panel plotted the values');
      const epoch = readers[0].sub.position.epoch;

      // SIGKILL, then empty on the same port: every channel gone from Redis.
      await cluster.redis.stop();
      cluster.redis = await startRedis(setup, { port: cluster.redis.port });

      // "after" until every reader has read one (the channel is registered again, and each
      // reader rides through to it): sends return false (or fail) while no reader is back.
      const firsts = new Map();
      const pending = readers.map((r) => {
        const p = r.sub.next().then((x) => {
          if (!x.done) { r.got.push(x.value); firsts.set(r, x.value); }
          else firsts.set(r, null);
        });
        return p;
      });
      const deadline = Date.now() + WAIT_MS;
      while (firsts.size < readers.length || !panel.lastMsg?.gap) {
        if (Date.now() > deadline) {
          throw new Error(`no reader back after ${WAIT_MS} ms: ends ${JSON.stringify(readers.map((r) => r.ends))}, `
            + `panel: ${panel.info.textContent}`);
        }
        await pub.send('after').catch(() => {});
        await sleep(100);
      }
      await Promise.all(pending);
      for (const [i, r] of readers.entries()) {
        const first = firsts.get(r);
        assert.ok(first, `reader ${i} ended: ${r.sub.endReason}`);
        assert.equal(first.data, 'after');
        assert.equal(first.gap?.kind, 'reset', `reader ${i}: ${JSON.stringify(first.gap)}`);
        assert.equal(first.gap.lost, null);
        assert.match(first.gap.resetEnd.reason, /subscribe again$/);
        assert.notEqual(r.sub.position.epoch, epoch);
        assert.deepStrictEqual(r.ends, []);
        assert.equal(r.sub.ended, false);
      }
      // The dashboard's panel: the same subscription, read on, its info line saying the reset.
      assert.equal(panel.subs.get('c').sub, panelSub, 'the panel kept its subscription');
      assert.equal(panelSub.ended, false);
      assert.equal(panel.lastMsg.gap.kind, 'reset');
      assert.match(panel.info.textContent, /channel reset .*: reset/);

      // And on, in order (the writer's node may count no reader a moment: false, sent again).
      for (let i = 0; i < AFTER; i++) {
        while (!(await pub.send(i).catch(() => false))) await sleep(10); // eslint-disable-line no-await-in-loop
      }
      for (const [k, r] of readers.entries()) {
        let got = [];
        while (got.length < AFTER) got.push(await r.next(`reader ${k}: value ${got.length} after the reset`));
        // "after"s sent before the reader was back may come first (the new life's history).
        while (got[0].data === 'after') got = [...got.slice(1), await r.next(`reader ${k}: one more`)];
        assert.deepStrictEqual(got.map((m) => m.data), [...Array(AFTER).keys()]);
        assert.deepStrictEqual(got.map((m) => m.seq), got.map((_, j) => got[0].seq + j));
        assert.ok(got.every((m) => m.gap === null && m.lost === 0));
      }
      await waitFor(() => panel.lastMsg?.data === AFTER - 1, WAIT_MS, 'the panel plotted the new life');

      // A delete is no reset: the readers end at once (not after 30 s of waiting), as ever.
      const started = Date.now();
      await daq.deleteChannel('c');
      await waitFor(() => readers.every((r) => r.sub.ended) && panelSub.ended, WAIT_MS, 'ended by the delete');
      assert.ok(Date.now() - started < 5000, `ended after ${Date.now() - started} ms`);
      for (const r of readers) assert.deepStrictEqual(r.ends, ["channel 'c' was deleted"]);
      assert.match(panel.info.textContent, /subscription ended: channel 'c' was deleted/);
    } finally {
      for (const c of clients) await c.close().catch(() => {});
      await killChildren();
    }
  });
