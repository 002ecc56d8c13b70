// The browser client's publisher moving between two nodes of one cluster (docs/protocol.md 8,
// "A writer that moves to another node"): two `trio_stream serve` processes share a private
// redis-server; the writer's node, A, is killed with SIGKILL and the writer's next connection
// reaches node B. Node B has no lease of the writer's connection to A, so it answers the
// publisher's reopen with `published` (Redis's count of the writer's frames), never `taken`:
// the client lets go of what Redis has and sends exactly the rest, and the reader on B gets
// every value once, in order. tests/test_cluster_writer_failover.py checks the same for the
// Python client; client.test.mjs checks the `published` arithmetic against a fake server only.
// Needs a WebSocket in Node (Node >= 22, or --experimental-websocket), Python with trio_stream
// and coredis, and redis-server: skipped without them, except that in CI ($CI set) a missing
// redis-server fails the test (as tests/redis_server.py does).

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../../trio_stream/web/trio_stream.js';
import { decode } from '../../trio_stream/web/cbor.js';
import { CONTROL, splitFrames } from './fake_server.mjs';
import {
  clusterSetup, startRedis, startServer, killChild, killChildren, freePort, within, waitFor, sleep,
} from './python.mjs';

const setup = clusterSetup();
const { python, skip } = setup;

const WAIT_MS = 15000; // any one step: generous, and still far below the test's timeout
const CHANNEL = 'cluster/ch';

after(killChildren);

/** A private Redis and nodes "a" and "b" of one cluster on it, with their WebSocket URLs. */
async function startCluster() {
  const redis = await startRedis(setup);
  const portA = await freePort();
  let portB;
  do portB = await freePort(); while (portB === portA);
  const node = (port, name) => startServer(python, port, ['--engine', redis.url, '--node-name', name,
    '--name', `cluster-${name}`]);
  const [a, b] = await Promise.all([node(portA, 'a'), node(portB, 'b')]);
  return { redis, a, b, urlA: `ws://127.0.0.1:${portA}/ws`, urlB: `ws://127.0.0.1:${portB}/ws` };
}

/** The CONTROL messages in one WebSocket message's bytes. */
function controls(bytes) {
  return splitFrames(bytes).filter((f) => f[0] === CONTROL).map((f) => decode(f.subarray(1)));
}

/**
 * The writer's WebSocket (the client's `WebSocket` option). The browser client takes one URL:
 * several nodes stand behind one address whose balancer sends each new connection to a live
 * node. This plays that balancer: every connection goes to `lb.target` at the time. It also
 * shows the test the wire: each connection's `open_publisher` requests and their replies (the
 * client keeps the reply to itself), and `lb.holdReplies()` keeps what the current node sends
 * from the client, as a node that dies before its PUB_ACKs leave: the frames are published,
 * and the client does not know it.
 */
function balancer(target) {
  const lb = {
    target,
    connections: [], // {url, held, opens: Map(request id -> fields), replies: Map(request id -> result)}
    holdReplies() { lb.connections.at(-1).held = true; },
    /** The answered reopens (`resume_pub` given) on connections to `url`: {request, result}. */
    reopens(url) {
      return lb.connections.filter((c) => c.url === url).flatMap((c) => [...c.opens]
        .filter(([id, request]) => request.resume_pub != null && c.replies.has(id))
        .map(([id, request]) => ({ request, result: c.replies.get(id) })));
    },
  };
  lb.WebSocket = class extends WebSocket {
    #wire;

    constructor(_url, protocols) {
      super(lb.target, protocols);
      this.#wire = { url: lb.target, held: false, opens: new Map(), replies: new Map() };
      lb.connections.push(this.#wire);
    }

    send(data) {
      for (const msg of controls(data)) if (msg.op === 'open_publisher') this.#wire.opens.set(msg.id, msg);
      super.send(data);
    }

    get onmessage() { return super.onmessage; }

    set onmessage(fn) {
      const wire = this.#wire;
      super.onmessage = fn && ((ev) => {
        for (const msg of controls(new Uint8Array(ev.data))) {
          if (msg.op === 'reply' && wire.opens.has(msg.id)) wire.replies.set(msg.id, msg.result);
        }
        if (!wire.held) fn(ev);
      });
    }
  };
  return lb;
}

/**
 * Nodes a and b; a reader on b that owns the channel (so the channel lives on the node that
 * survives: what moves is the writer alone); a writer reaching a through the balancer, its
 * publisher seeing the reader. `run` gets them all; everything is stopped afterwards.
 */
async function withWriterOnA(run) {
  const cluster = await startCluster();
  const lb = balancer(cluster.urlA);
  let reader, writer;
  try {
    reader = await connect(cluster.urlB, { name: 'reader' });
    await reader.createChannel(CHANNEL);
    const gaps = [];
    reader.on('gap', (g) => gaps.push(g));
    const sub = await reader.subscribe(CHANNEL, { policy: 'unbounded', size: null });
    const it = sub[Symbol.asyncIterator]();
    const next = async (what) => {
      const r = await within(it.next(), WAIT_MS, what);
      assert.equal(r.done, false, `subscription ended while waiting for ${what}`);
      return r.value;
    };
    // A short backoff: the move to node b is what is tested, not the wait before it.
    writer = await connect(cluster.urlA, {
      name: 'writer', WebSocket: lb.WebSocket, reconnectDelay: 50, maxReconnectDelay: 250,
    });
    const pub = await writer.publisher(CHANNEL);
    await within(pub.waitForReaders(), WAIT_MS, 'the publisher on a to see the reader on b');
    await run({ ...cluster, lb, pub, next, gaps });
  } finally {
    for (const client of [writer, reader]) await within(client?.close(), 5000, 'close').catch(() => {});
    for (const child of [cluster.a, cluster.b]) await killChild(child).catch(() => {});
    await cluster.redis.stop().catch(() => {});
  }
}

/**
 * Node a dies (SIGKILL) with the balancer already sending new connections to node b. (Not
 * waiting for the writer to see it: its reconnect may be done before a poll would see it
 * reconnecting; reopenedOnB waits for what matters, node b's answer.)
 */
async function killNodeA({ lb, a, urlB }) {
  lb.target = urlB;
  await killChild(a);
}

/**
 * Once node b has answered the publisher's reopen (the welcome comes first, then the channel
 * and the publishers come back): Redis's count, `published`, of each reopen answered there.
 */
async function reopenedOnB({ lb, urlB }) {
  await waitFor(() => lb.reopens(urlB).length > 0, WAIT_MS, 'node b to answer the reopen');
  const reopens = lb.reopens(urlB);
  for (const { request, result } of reopens) {
    assert.equal(typeof request.writer, 'string', 'the reopen names its writer key');
    assert.ok(Number.isInteger(request.claim), 'the reopen gives its claim');
    assert.ok(Number.isInteger(result.published), `the reopen's answer carries published: ${JSON.stringify(result)}`);
    assert.equal(result.taken, undefined, 'a node of several answers published, not taken');
  }
  return reopens.map((r) => r.result.published);
}

/**
 * `messages` carry 0..n-1, each once, in order, with seqs 1..n and nothing lost; the message
 * says what is wrong (the values received twice, the first out of place) rather than diffing
 * thousands of values.
 */
function assertOnceInOrder(messages, n) {
  const values = messages.map((m) => m.data);
  const seen = new Set();
  const twice = values.filter((v) => seen.has(v) || !seen.add(v));
  const wrong = values.findIndex((v, i) => v !== i);
  assert.ok(values.length === n && wrong === -1,
    `${values.length} values for ${n}; received twice: [${twice.slice(0, 20)}]; first out of place: `
    + `index ${wrong} holds ${values[wrong]}`);
  const badSeq = messages.findIndex((m, i) => m.seq !== i + 1);
  assert.equal(badSeq, -1, `seq ${messages[badSeq]?.seq} at index ${badSeq}: the channel's seqs skip or repeat`);
  assert.ok(messages.every((m) => m.lost === 0 && m.gap === null), 'nothing lost, no gap');
}

test('frames node a published but never acknowledged are not sent again from node b',
  { skip, timeout: 90000 }, () => withWriterOnA(async (c) => {
    const { pub, next } = c;
    const got = [];
    const read = async (n, what) => { for (let i = 0; i < n; i++) got.push(await next(`${what} (${i + 1} of ${n})`)); };

    // Before the fault: sent, read, acknowledged.
    for (let i = 0; i < 10; i++) assert.equal(await pub.send(i), true);
    await read(10, 'the values before the fault');
    await waitFor(() => pub.inFlight === 0, WAIT_MS, 'values 0-9 to be acknowledged');

    // 10-19 reach Redis (the reader on b gets them) but node a's PUB_ACKs never reach the
    // writer: they stay in its window, as they do when a node dies before its answers leave.
    c.lb.holdReplies();
    for (let i = 10; i < 20; i++) assert.equal(await pub.send(i), true);
    await read(10, 'the values whose acknowledgements are held');
    assert.equal(pub.inFlight, 10, 'the writer still holds 10-19 as unacknowledged');

    await killNodeA(c);
    // Redis has 20 of the writer's frames; the client let go of 10 on PUB_ACKs, so it lets go
    // of the other 10 now (ignoring `published`, it would send 10-19 again). Each answer of
    // node b's says 20 (one answer, unless the reopen had to be sent again).
    assert.deepStrictEqual([...new Set(await reopenedOnB(c))], [20]);
    await waitFor(() => pub.inFlight === 0, WAIT_MS, 'nothing left to send again');

    for (let i = 20; i < 30; i++) assert.equal(await pub.send(i), true);
    await read(10, 'the values sent through node b');
    // Anything sent twice would come before 20-29 (the window goes out first): it would be in
    // `got` in place of them.
    assertOnceInOrder(got, 30);
    assert.ok(got.every((m) => m.sender === 'writer'));
    // A last value shows that nothing came after 29 either.
    assert.equal(await pub.send('end'), true);
    const last = await next('the last value');
    assert.deepStrictEqual([last.data, last.seq], ['end', 31]);
    assert.deepStrictEqual(c.gaps, [], 'the reader on b saw no gap');
    await waitFor(() => pub.inFlight === 0, WAIT_MS, 'every value to be acknowledged');
  }));

test('a stream whose node is killed mid-stream goes on through node b: every value once, in order',
  { skip, timeout: 90000 }, () => withWriterOnA(async (c) => {
    const { pub, next } = c;
    const total = 3000;
    let sent = 0;
    let killed = null; // {received, sent}: the counts when node a died

    // Sends as fast as the window allows, with a pause now and then so that node a dies with
    // frames on the wire, in Redis and in the window alike (not all sent already).
    const sending = (async () => {
      for (let i = 0; i < total; i++) {
        assert.equal(await pub.send(i), true, `send(${i})`);
        sent = i + 1;
        if (i % 7 === 0) await sleep(1);
      }
    })();
    // Should reading fail first, nobody awaits `sending`: its failure is not to surface as an
    // unhandled rejection on top of the one reported.
    sending.catch(() => {});

    const got = [];
    while (got.length === 0 || got.at(-1).data !== total - 1) {
      got.push(await next(`value ${got.length} of ${total}`));
      if (got.length === total / 3) {
        killed = { received: got.length, sent };
        await killNodeA(c);
      }
      if (got.length > total) break; // duplicates: the assertion below names them
    }
    await within(sending, WAIT_MS, 'every send to resolve');
    assertOnceInOrder(got, total);
    assert.deepStrictEqual(c.gaps, [], 'the reader on b saw no gap');
    // Redis had at least what the reader had got when node a died, and at most what had been
    // sent by then (whatever was sent later waited in the window for node b).
    const [published] = (await reopenedOnB(c)).slice(-1);
    assert.ok(killed.received <= published && published <= killed.sent,
      `published ${published} within [${killed.received}, ${killed.sent}]`);
    await waitFor(() => pub.inFlight === 0, WAIT_MS, 'every value to be acknowledged');
  }));
