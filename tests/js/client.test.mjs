// Tests of trio_stream/web/trio_stream.js against the in-process fake server.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  connect, createClient, AuthError, ChannelNotFound, ChannelExists, ConnectionClosed, FrameTooLarge,
  TrioStreamError, ClusterUnavailable, ResourceClosed, RpcError, UnknownMethod, RpcProxy, RequestTimeout,
  NDArray as ReexportedNDArray, Tag as ReexportedTag, CBORError as ReexportedCBORError,
} from '../../trio_stream/web/trio_stream.js';
import { FakeServer, CONTROL, PUBLISH, CREDIT, controlFrame, until, tick } from './fake_server.mjs';
import { decode, NDArray, Tag, CBORError } from '../../trio_stream/web/cbor.js';

const URL = 'ws://fake/ws';
const fast = { reconnectDelay: 5, maxReconnectDelay: 20 };

async function setup(opts = {}) {
  const server = new FakeServer();
  const client = await connect(URL, { WebSocket: server.WebSocket, name: 'test', ...fast, ...opts });
  return { server, client };
}

test('handshake: hello then welcome, fields exposed', async () => {
  const { server, client } = await setup({ token: 't0k' });
  const [hello] = server.controls('hello');
  // resume: the client reconnects, so it asks for a resume token (none to present yet)
  assert.deepStrictEqual(hello, { op: 'hello', v: 1, name: 'test', token: 't0k', resume: true, resume_token: null });
  assert.equal(client.state, 'open');
  assert.equal(client.connected, true);
  assert.equal(client.serverName, 'fake');
  assert.equal(client.name, 'test');
  assert.equal(client.limits.publish_window_frames, 4);
  await client.close();
  assert.equal(client.state, 'closed');
  assert.equal(server.controls('goodbye').length, 1);
});

test('connect rejects on a wrong token and when the server is down', async () => {
  const server = new FakeServer();
  server.token = 'secret';
  await assert.rejects(connect(URL, { WebSocket: server.WebSocket, token: 'nope' }), AuthError);
  server.refuse = true;
  await assert.rejects(connect(URL, { WebSocket: server.WebSocket }), ConnectionClosed);
});

test('requests: replies, typed errors, pipelining', async () => {
  const { client } = await setup();
  const results = await Promise.all([
    client.createChannel('a'), client.createChannel('b'), client.stats(),
  ]);
  assert.deepStrictEqual(results, [null, null, { connections: 1 }]);
  await assert.rejects(client.createChannel('a'), ChannelExists);
  await assert.rejects(client.subscribe('nope'), ChannelNotFound);
  const chans = await client.channels();
  assert.deepStrictEqual(chans.map((c) => c.name), ['a', 'b']);
  await client.close();
});

test('frames queued in the same tick go out as one WebSocket message', async () => {
  const { server, client } = await setup();
  const before = server.messages.length;
  await Promise.all([client.createChannel('x'), client.createChannel('y'), client.stats()]);
  const batch = server.messages.slice(before)[0];
  assert.equal(batch.length, 3);
  assert.deepStrictEqual(batch.map((f) => f.msg.op), ['create_channel', 'create_channel', 'stats']);
  await client.close();
});

test('subscribe: async iteration, message fields, CREDIT as consumed', async () => {
  const { server, client } = await setup();
  await client.createChannel('ai');
  server.window = 8;
  const sub = await client.subscribe('ai', { policy: 'drop_oldest', size: 10, maxRate: 5 });
  const req = server.controls('subscribe')[0];
  assert.equal(req.policy, 'drop_oldest');
  assert.equal(req.size, 10);
  assert.equal(req.every, 1);
  assert.equal(req.max_rate, 5);
  assert.equal(sub.window, 8);

  for (let i = 0; i < 10; i++) server.inject('ai', { i, arr: new Float64Array([i, i + 0.5]) }, { sender: 'daq', time: 100 + i });
  const got = [];
  for await (const msg of sub) {
    got.push(msg);
    if (got.length === 10) break; // leaving the loop unsubscribes
  }
  assert.deepStrictEqual(got.map((m) => m.data.i), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepStrictEqual(got[3], {
    data: { i: 3, arr: new Float64Array([3, 3.5]) }, seq: 4, channel: 'ai', sender: 'daq', time: 103, lost: 0, gap: null,
  });
  // credit goes back a quarter of the window at a time (2 frames), or sooner when the
  // reader catches up and waits
  const credits = server.messages.flat().filter((f) => f.type === CREDIT);
  const credited = credits.reduce((sum, c) => sum + c.frames, 0);
  assert.ok(credited >= 8, `credits: ${JSON.stringify(credits)}`);
  assert.ok(credits.every((c) => c.frames >= 1 && c.frames <= 2), JSON.stringify(credits));
  await until(() => server.controls('unsubscribe').length === 1, 1000, 'unsubscribe');
  assert.equal(sub.ended, true);
  await client.close();
});

test('credit also goes back by bytes: large frames never wait for a quarter window of frames', async () => {
  const { server, client } = await setup();
  await client.createChannel('big');
  server.window = 100;
  server.windowBytes = 8000; // a quarter: 2000 bytes, two of these frames
  const sub = await client.subscribe('big', { policy: 'block', size: 100 });
  assert.equal(sub.windowBytes, 8000);
  for (let i = 0; i < 20; i++) server.inject('big', new Uint8Array(1000).fill(i));
  await readCreditedInPairs(server, sub, 20, (msg, i) => assert.equal(msg.data[0], i));
  await client.close();
});

// Reads `count` messages (the i-th checked by `check(msg, i)`), then asserts that credit
// went back for all but the last pair of them, at most two frames at a time.
async function readCreditedInPairs(server, sub, count, check) {
  let got = 0;
  for await (const msg of sub) {
    check(msg, got);
    if (++got === count) break;
  }
  const credits = server.messages.flat().filter((f) => f.type === CREDIT);
  const credited = credits.reduce((sum, c) => sum + c.frames, 0);
  assert.ok(credited >= count - 2, `credits: ${JSON.stringify(credits)}`);
  assert.ok(credits.every((c) => c.frames <= 2), JSON.stringify(credits));
}

for (const [counted, credited] of [[null, 0], [4, 4], [2, 2]]) {
  test(`frames held through a resume return credit only if the server counts them (${counted})`, async () => {
    // The resubscription says what the client got and did not credit (`held`); the server
    // that continues it says how many it counts in the window (the newest): credit goes
    // back for those as they are taken (two of them taken while away), for no others.
    const { server, client } = await setup();
    server.epochs = true;
    server.window = 4;
    server.heldCounted = counted;
    await client.createChannel('h');
    const sub = await client.subscribe('h', { policy: 'block', size: 100 });
    for (let i = 0; i < 4; i++) server.inject('h', i);
    await until(() => sub.received === 4, 1000, 'a window');
    await server.goDown(client);
    const got = [(await sub.next()).value.data, (await sub.next()).value.data];
    server.refuse = false;
    await until(() => client.state === 'open' && sub.id !== null, 2000, 'resumed');
    got.push((await sub.next()).value.data, (await sub.next()).value.data);
    await client.channels(); // a round trip: any credit sent is there
    const subscribes = server.controls('subscribe');
    assert.equal(subscribes.at(-1).held, 4);
    const credit = server.messages.flat().filter((f) => f.type === CREDIT && f.sub === sub.id);
    assert.equal(credit.reduce((n, c) => n + c.frames, 0), credited, JSON.stringify(credit));
    assert.deepStrictEqual(got, [0, 1, 2, 3]);
    await client.close();
  });
}

test('credit counts each frame as the server does, heads and sender name too', async () => {
  // Payload bytes alone were counted: with small values and a long sender name the client
  // held credit the server judged due, and a frame that did not fit waited for it for good.
  const { server, client } = await setup();
  await client.createChannel('names');
  server.window = 100;
  server.windowBytes = 2000; // a quarter: 500 bytes, two frames of a 250-byte sender name
  const sub = await client.subscribe('names', { policy: 'block', size: 100 });
  const sender = 'n'.repeat(250);
  for (let i = 0; i < 20; i++) server.inject('names', i, { sender });
  await readCreditedInPairs(server, sub, 20, (msg, i) => assert.equal(msg.data, i));
  await client.close();
});

test('a reader that does not consume gets only its window; its policy drops on the server', async () => {
  const { server, client } = await setup();
  await client.createChannel('fast');
  server.window = 1;
  const sub = await client.subscribe('fast', { size: 1 });
  for (let i = 1; i <= 5; i++) server.inject('fast', i);
  await tick(); await tick();
  const first = await sub.next();
  assert.equal(first.value.data, 1);
  const second = await sub.next();
  assert.equal(second.value.data, 5, 'drop_oldest size 1 keeps the newest');
  assert.equal(second.value.lost, 3);
  assert.equal(sub.lost, 3);
  await client.close();
});

test('a lost notice counts at once and goes into the next message\'s lost', async () => {
  const { server, client } = await setup();
  await client.createChannel('ai');
  const sub = await client.subscribe('ai', { policy: 'drop_newest', size: 10 });
  server.inject('ai', 1);
  assert.equal((await sub.next()).value.lost, 0);
  const [conn] = server.conns;
  conn.send(controlFrame({ op: 'lost', sub: sub.id, lost: 4, seq: 5 }));
  await until(() => sub.lost === 4, 1000, 'the notice counted');
  server.channel('ai').seq = 5; // the 4 frames the notice reported
  server.inject('ai', 6);
  const next = (await sub.next()).value;
  assert.deepStrictEqual([next.data, next.seq, next.lost], [6, 6, 4]);
  assert.equal(sub.lost, 4, 'counted once');
  await client.close();
});

test('DATA in the same WebSocket message as the subscribe reply is not lost', async () => {
  const { server, client } = await setup();
  await client.createChannel('h');
  server.window = 1;
  server.history.set('h', 'latest');
  const sub = await client.subscribe('h', { size: 1 });
  const batches = server.messages.length;
  assert.equal((await sub.next()).value.data, 'latest');
  await until(() => server.messages.length > batches, 1000, 'credit');
  server.inject('h', 'next');
  assert.equal((await sub.next()).value.data, 'next', 'credit for the first frame went back');
  await client.close();
});

test('callback subscriptions: onMessage is awaited before credit returns', async () => {
  const { server, client } = await setup();
  await client.createChannel('cb');
  server.window = 1;
  const seen = [];
  let release;
  const gate = new Promise((r) => { release = r; });
  await client.subscribe('cb', {
    size: 100,
    onMessage: async (msg) => { seen.push(msg.data); if (msg.data === 1) await gate; },
  });
  for (let i = 1; i <= 3; i++) server.inject('cb', i);
  await until(() => seen.length === 1);
  await new Promise((r) => setTimeout(r, 20));
  assert.deepStrictEqual(seen, [1], 'no credit while the callback is busy, so nothing more arrives');
  release();
  await until(() => seen.length === 3);
  assert.deepStrictEqual(seen, [1, 2, 3]);
  await client.close();
});

test('publish: nothing on the wire without readers; PUB_ACK window respected', async () => {
  const { server, client } = await setup();
  await client.createChannel('out');
  assert.equal(await client.publish('out', 1), false);
  const pub = client.publishers[0];
  assert.equal(pub.readers, 0);
  assert.equal(server.messages.flat().filter((f) => f.type === PUBLISH).length, 0);

  // a second client reads the channel: the publisher learns it
  const reader = await connect(URL, { WebSocket: server.WebSocket, name: 'reader' });
  const sub = await reader.subscribe('out', { size: 100 });
  await pub.waitForReaders({ timeout: 1000 });
  assert.equal(pub.readers, 1);

  server.autoAck = false;
  const sends = [];
  for (let i = 0; i < 6; i++) sends.push(client.publish('out', i));
  const published = () => server.messages.flat().filter((f) => f.type === PUBLISH);
  await until(() => published().length === 4, 1000, 'the window of sends');
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(published().length, 4, 'publish_window_frames = 4');
  assert.equal(pub.inFlight, 4);
  const conn = [...server.conns].find((c) => c.name === 'test');
  conn.ack(pub.id, 2);
  conn.unacked.splice(0, 2);
  await until(() => published().length === 6, 1000, 'the rest of the sends');
  assert.deepStrictEqual(await Promise.all(sends), [true, true, true, true, true, true]);
  const values = [];
  for (let i = 0; i < 6; i++) values.push((await sub.next()).value.data);
  assert.deepStrictEqual(values, [0, 1, 2, 3, 4, 5]);
  await reader.close();
  await until(() => pub.readers === 0, 1000, 'readers back to 0');
  assert.equal(await client.publish('out', 'nobody'), false);
  await client.close();
});

test('publish and send refuse undefined: a missing value is not sent as CBOR undefined', async () => {
  const { server, client } = await setup();
  try {
    await client.createChannel('c');
    const pub = await client.publisher('c');
    await assert.rejects(pub.send(undefined), (e) => e instanceof TypeError && /^send: a value is needed, not undefined/.test(e.message));
    await assert.rejects(pub.send(), TypeError);
    await assert.rejects(client.publish('c'), (e) => e instanceof TypeError && /^publish: a value is needed/.test(e.message));
    assert.equal(server.messages.flat().filter((f) => f.type === PUBLISH).length, 0, 'nothing sent');
    assert.equal(client.state, 'open');
  } finally {
    await client.close();
  }
});

test('publish: frame size checked against the server limit before sending', async () => {
  const { server, client } = await setup();
  server.limits.max_frame_bytes = 100;
  await client.close();
  const c2 = await connect(URL, { WebSocket: server.WebSocket });
  await c2.createChannel('big');
  const r = await connect(URL, { WebSocket: server.WebSocket });
  await r.subscribe('big');
  const pub = await c2.publisher('big');
  await pub.waitForReaders();
  await assert.rejects(pub.send(new Float64Array(100)), (e) => e instanceof FrameTooLarge && /raise max_frame_bytes on the server/.test(e.message));
  assert.equal(await pub.send(1), true);
  await r.close();
  await c2.close();
});

test('reconnect: backoff, state events, resubscription, publishers reopened', async () => {
  const { server, client } = await setup();
  await client.createChannel('ch');
  const states = [];
  client.on('state', (s) => states.push(s));
  const sub = await client.subscribe('ch', { size: 10 });
  const pub = await client.publisher('ch');
  await pub.waitForReaders();
  server.inject('ch', 'before');
  assert.equal((await sub.next()).value.data, 'before');

  await server.goDown(client);
  assert.equal(pub.readers, 1, 'the last count known, until the reopen says');
  assert.equal(await pub.send('kept'), true, 'kept in the window while disconnected');
  assert.equal(pub.inFlight, 1);
  await new Promise((r) => setTimeout(r, 60)); // a few failed attempts
  server.refuse = false;
  await until(() => client.state === 'open', 2000, 'reopened');
  await until(() => server.controls('subscribe').length === 2 && pub.readers === 1, 1000, 'resubscribed');
  assert.deepStrictEqual(states.slice(0, 1), ['reconnecting']);
  assert.equal(states.at(-1), 'open');
  assert.equal((await sub.next()).value.data, 'kept', 'sent on the new connection');
  server.inject('ch', 'after');
  assert.equal((await sub.next()).value.data, 'after');
  assert.equal(await pub.send('again'), true);
  assert.equal((await sub.next()).value.data, 'again');
  await client.close();
});

test('publisher close on a stalled connection says what was not acknowledged, after 1 s', async () => {
  // A stalled link's 40 values went with a close that returned normally after 10 s (the
  // request timeout), without a word (a control-room engineer).
  const { server, client } = await setup();
  const warned = [];
  const warn = console.warn;
  console.warn = (line) => warned.push(line);
  try {
    await client.createChannel('w');
    server.keepsHistory.add('w');
    const quick = await client.publisher('w');
    assert.equal(await quick.send('taken'), true);
    await quick.close(); // acknowledged and answered: nothing to say
    assert.deepStrictEqual(warned, []);
    const pub = await client.publisher('w');
    server.autoAck = false;
    for (let i = 0; i < 3; i++) assert.equal(await pub.send(i), true);
    server.delays.set('close_publisher', 5000); // a server that does not answer in time
    const started = Date.now();
    await pub.close();
    const took = Date.now() - started;
    assert.ok(took >= 900 && took < 3000, `close took ${took} ms`);
    assert.equal(warned.length, 1, warned.join('\n'));
    assert.match(warned[0], /^trio_stream: 3 values sent to "w" were not acknowledged: the server did not answer the publisher's close within 1 s/);
  } finally {
    console.warn = warn;
    await client.close();
  }
});

test('publisher resume: the server says what it took, the rest of the window goes again', async () => {
  const { server, client } = await setup();
  try {
    await client.createChannel('w');
    server.keepsHistory.add('w'); // wanted without readers, as a channel with history
    const pub = await client.publisher('w');
    assert.equal(pub.readers, 0);
    assert.equal(pub.wanted, true);
    const [open1] = server.controls('open_publisher');
    assert.match(open1.writer, /^[0-9a-f]{32}$/);
    assert.equal(open1.resume_pub, undefined);
    const publishes = () => server.messages.flat().filter((f) => f.type === PUBLISH);
    const values = (frames) => frames.map((f) => decode(f.payload));

    server.autoAck = false;
    for (let i = 0; i < 3; i++) assert.equal(await pub.send(i), true);
    await until(() => publishes().length === 3, 1000, 'three frames');
    const conn = [...server.conns][0];
    conn.ack(pub.id, 1); // frame 0 acknowledged; 1 and 2 taken, their acks lost with the connection
    await until(() => pub.inFlight === 2, 1000, 'one ack');
    const firstId = pub.id;

    await server.goDown(client);
    assert.equal(await pub.send(3), true, 'kept while disconnected');
    assert.equal(pub.inFlight, 3);
    server.answerTaken = true;
    server.refuse = false;
    await until(() => publishes().length === 4, 2000, 'the frame the server did not take');
    const open2 = server.controls('open_publisher')[1];
    assert.deepStrictEqual(
      [open2.resume_pub, open2.writer, open2.claim], [firstId, open1.writer, 1], 'the reopen names the old id',
    );
    assert.notEqual(pub.id, firstId);
    const resent = publishes().slice(3);
    assert.deepStrictEqual(values(resent), [3], '1 and 2 were taken: not twice');
    assert.equal(resent[0].pub, pub.id);
    assert.equal(pub.inFlight, 1);

    // A server that answers no `taken` (restarted): the whole window goes again, in order.
    server.answerTaken = false;
    assert.equal(await pub.send(4), true);
    await until(() => publishes().length === 5, 1000, 'frame 4');
    server.dropAll();
    await until(() => publishes().length === 7, 2000, 'the window again');
    assert.deepStrictEqual(values(publishes().slice(5)), [3, 4]);
    assert.equal(server.controls('open_publisher')[2].claim, 2, 'each reopen counts');
  } finally {
    await client.close();
  }
});

test('publisher resume: a channel missing after a reconnect is asked for again, the window waits', async () => {
  const { server, client } = await setup();
  try {
    server.channel('gone'); // another client's channel
    server.keepsHistory.add('gone');
    const errors = [];
    client.on('error', (e) => errors.push(e));
    const pub = await client.publisher('gone');
    const publishes = () => server.messages.flat().filter((f) => f.type === PUBLISH);
    await server.restart(client, 'gone'); // the channel's owner is not back yet
    assert.equal(await pub.send('waits'), true);
    await until(() => server.controls('open_publisher').length >= 3, 2000, 'reopen asked again');
    assert.equal(pub.closed, false);
    assert.equal(publishes().length, 0);
    server.channel('gone'); // its owner re-created it
    await until(() => publishes().length === 1, 3000, 'the window after the channel came back');
    assert.equal(decode(publishes()[0].payload), 'waits');
    assert.equal(publishes()[0].pub, pub.id);
    assert.deepStrictEqual(errors.filter((e) => e instanceof ChannelNotFound), [], 'not reported as a failure');
  } finally {
    await client.close();
  }
});

test('resubscribe: a channel missing after a reconnect is asked for again, then read on', async () => {
  const { server, client } = await setup();
  try {
    server.channel('later'); // another client's channel
    const sub = await client.subscribe('later', { size: 10 });
    const waiting = [];
    const waitingErrors = [];
    sub.on('waiting', (why, error) => { waiting.push(why); waitingErrors.push(error); });
    server.inject('later', 'before');
    assert.equal((await sub.next()).value.data, 'before');
    await server.restart(client, 'later'); // the channel's owner is not back yet
    await until(() => server.controls('subscribe').length >= 3, 2000, 'resubscribe asked again');
    assert.equal(sub.ended, false);
    assert.equal(waiting.length, 1, "one 'waiting' event, however many tries");
    assert.match(waiting[0], /later/);
    // the error too, so that a page can say it in its own words (the dashboard does)
    assert.ok(waitingErrors[0] instanceof ChannelNotFound);
    server.channel('later'); // its owner re-created it
    await until(() => server.channel('later').subs.size === 1, 3000, 'subscribed again');
    server.inject('later', 'after');
    assert.equal((await sub.next()).value.data, 'after');
  } finally {
    await client.close();
  }
});

test("a subscription that waited for its channel says 'restored' once it is back, before any frame", async () => {
  // A panel said "waiting for the channel to come back" for 84 s beside a table that listed
  // the channel again: it was back, its writer not yet, and only a frame changed the text.
  const { server, client } = await setup();
  try {
    server.channel('quiet');
    const sub = await client.subscribe('quiet', { size: 10 });
    const events = [];
    sub.on('waiting', () => events.push('waiting'));
    sub.on('restored', () => events.push('restored'));
    sub.on('message', () => events.push('message'));
    await server.restart(client, 'quiet');
    await until(() => events.includes('waiting'), 2000, "'waiting'");
    server.channel('quiet'); // its owner re-created it; no writer sends yet
    await until(() => events.includes('restored'), 3000, "'restored'");
    assert.deepEqual(events, ['waiting', 'restored']);
    // A reconnect that finds its channel at once waited for nothing: no event.
    await server.goDown(client);
    server.refuse = false;
    await until(() => client.state === 'open' && server.channel('quiet').subs.size === 1, 2000, 'resubscribed');
    await tick();
    assert.deepEqual(events, ['waiting', 'restored']);
  } finally {
    await client.close();
  }
});

test("a reset after a reconnect says when the page reconnected, and whether the server is the one from before", async () => {
  // "reconnected 17:18:44.904: reset (frames the old server held are lost ...)": the time of
  // the first frame, 84 s after the reconnection, and a channel deleted and created again
  // during a cut blamed on an "old server" that never stopped (an operator).
  const { server, client } = await setup();
  server.epochs = true;
  try {
    server.channel('$stats');
    server.channel('x');
    const stats = await client.subscribe('$stats', { size: 10 });
    const sub = await client.subscribe('x', { size: 10 });
    server.inject('$stats', { uptime_s: 1 });
    server.inject('x', 1);
    assert.equal((await stats.next()).value.gap, null);
    assert.equal((await sub.next()).value.gap, null);

    // A cut; meanwhile 'x' is deleted and created again on the same server.
    await server.goDown(client);
    server.channels.delete('x');
    server.channel('x');
    const cutAt = Date.now() / 1000;
    server.refuse = false;
    await until(() => server.channel('x').subs.size === 1 && server.channel('$stats').subs.size === 1, 2000, 'resubscribed');
    await new Promise((r) => setTimeout(r, 30)); // its writer comes back later
    server.inject('x', 2);
    const first = (await sub.next()).value;
    assert.equal(first.gap.kind, 'reset');
    assert.equal(first.gap.reconnection.sameServer, true, "$stats resumed in its epoch: the same server");
    const { at } = first.gap.reconnection;
    assert.ok(at >= cutAt && at < Date.now() / 1000 - 0.02, `the reconnection's time (${at}), not the frame's`);

    // A restart: every channel new, the server's own too.
    await server.restart(client);
    server.channel('$stats');
    server.channel('x');
    await until(() => server.channel('x').subs.size === 1 && server.channel('$stats').subs.size === 1, 3000, 'resubscribed after the restart');
    server.inject('x', 3);
    const afterRestart = (await sub.next()).value;
    assert.equal(afterRestart.gap.kind, 'reset');
    assert.equal(afterRestart.gap.reconnection.sameServer, false, "$stats in a new epoch: a new server");
    assert.ok(afterRestart.gap.reconnection.at > at);
  } finally {
    await client.close();
  }
});

/** A server whose welcomes name their run ('run-a', a new one at each restart()), with
 * channel epochs, and a client of it. */
async function setupWithRuns() {
  const server = new FakeServer();
  server.epochs = true;
  server.run = 'run-a';
  const client = await connect(URL, { WebSocket: server.WebSocket, name: 'test', ...fast });
  return { server, client };
}

test("the welcome's run tells the same server from a restart exactly, without a $ subscription", async () => {
  // Without `run`, a page reading only its own channel took a channel deleted and created
  // again as "on the same server" even after a restart whose writer came back first (its
  // channel resumed nothing: no evidence either way until a `$` channel said so).
  const { server, client } = await setupWithRuns();
  try {
    server.channel('x');
    const sub = await client.subscribe('x', { size: 10 });
    server.inject('x', 1);
    assert.equal((await sub.next()).value.gap, null);

    await server.goDown(client);
    server.channels.delete('x');
    server.channel('x'); // deleted and created again, the same server
    server.refuse = false;
    await until(() => client.state === 'open', 2000, 'reconnected');
    assert.equal(client.reconnection.sameServer, true, 'known at the welcome, before any resubscription');
    await until(() => server.channel('x').subs.size === 1, 2000, 'resubscribed');
    server.inject('x', 2);
    const first = (await sub.next()).value;
    assert.equal(first.gap.kind, 'reset');
    assert.equal(first.gap.reconnection.sameServer, true);

    await server.restart(client); // a new run
    server.channel('x');
    await until(() => client.state === 'open', 3000, 'reconnected after the restart');
    assert.equal(client.reconnection.sameServer, false, 'another run: a restart');
    await until(() => server.channel('x').subs.size === 1, 3000, 'resubscribed');
    server.inject('x', 3);
    const afterRestart = (await sub.next()).value;
    assert.equal(afterRestart.gap.kind, 'reset');
    assert.equal(afterRestart.gap.reconnection.sameServer, false);
  } finally {
    await client.close();
  }
});

test("a restarted server's connection cut before its resubscriptions were answered is not the server before", async () => {
  // Compared with the last welcome, the second connection to the restarted server was "the
  // same server", and a reset then blamed on a channel's new life (a review).
  const { server, client } = await setupWithRuns();
  try {
    server.channel('x');
    await client.subscribe('x', { size: 10 });
    await server.restart(client); // a new run
    server.channel('x');
    server.delays.set('subscribe', 60000); // the resubscription is not answered...
    await until(() => client.state === 'open', 3000, 'welcomed by the restarted server');
    assert.equal(client.reconnection.sameServer, false);
    await server.goDown(client); // ...before this cut
    server.delays.delete('subscribe');
    server.refuse = false;
    await until(() => client.state === 'open', 3000, 'welcomed again');
    assert.equal(client.reconnection.sameServer, false, 'what it holds is from the run before the restart');
  } finally {
    await client.close();
  }
});

test('restored goes out after a reconnect once every resubscription is answered, not before', async () => {
  const { server, client } = await setup();
  try {
    server.channel('a');
    server.channel('b');
    await client.subscribe('a', { size: 10 });
    await client.subscribe('b', { size: 10 });
    await tick();
    assert.equal(server.controls('restored').length, 0, 'not on the first connection');
    server.delays.set('subscribe', 50);
    await server.restart(client, 'b'); // 'b' is missing for now: its resubscribe is retried
    await until(() => server.controls('subscribe').length >= 5, 2000, "b's resubscribe asked again");
    server.channel('b');
    await until(() => server.channel('b').subs.size === 1, 2000, 'b back by a retry');
    assert.equal(server.controls('restored').length, 0, 'not after a retry');
    await server.goDown(client); // both channels stay: both answered at the first try
    server.refuse = false;
    await until(() => server.controls('restored').length === 1, 2000, 'restored once both answered');
    const ops = server.controls().map((m) => m.op);
    const restored = ops.lastIndexOf('restored');
    assert.ok(ops.lastIndexOf('subscribe') < restored, 'after the resubscriptions');
  } finally {
    await client.close();
  }
});

test('rpc: a describe not answered in time names its provider', async () => {
  // It said "describe: no reply after 50 ms", naming no provider (as the Python client does).
  const { server, client } = await setup({ requestTimeout: 50 });
  try {
    server.delays.set('describe', 150);
    await assert.rejects(client.rpc('daq'), (e) => e instanceof RequestTimeout
      && /^no answer to rpc\('daq'\) within 50 ms: .*longer timeout/.test(e.message));
    assert.equal(client.state, 'open');
  } finally {
    await client.close();
  }
});

test('timeouts and delays are milliseconds: a fraction of one is refused with the seconds hint', async () => {
  // { timeout: 0.5 } (seconds, as the Python client takes them) timed out after half a millisecond.
  const server = new FakeServer();
  assert.throws(() => createClient(URL, { WebSocket: server.WebSocket, requestTimeout: 0.5 }),
    (e) => e instanceof RangeError && /^requestTimeout must be milliseconds, .*not 0\.5: .*for 0\.5 s write 500$/.test(e.message));
  assert.throws(() => createClient(URL, { WebSocket: server.WebSocket, connectTimeout: 0 }), RangeError, 'no "none" for a connect');
  assert.throws(() => createClient(URL, { WebSocket: server.WebSocket, reconnectDelay: 0 }), RangeError, 'a backoff of 0 spins');
  assert.throws(() => createClient(URL, { WebSocket: server.WebSocket, pingInterval: '5000' }), TypeError);
  assert.throws(() => createClient(URL, { WebSocket: server.WebSocket, maxReconnectDelay: Infinity }), RangeError);
  const { client } = await setup();
  try {
    await assert.rejects(client.call('daq', 'move', [], {}, { timeout: 0.25 }), (e) => e instanceof RangeError
      && /^call: timeout must be milliseconds.*for 0\.25 s write 250$/.test(e.message));
    await assert.rejects(client.rpc('daq', { timeout: 0.1 }), RangeError);
    await assert.rejects(client.ping({ timeout: -1 }), RangeError);
    await assert.rejects(client.ready({ timeout: NaN }), RangeError);
    assert.equal(client.state, 'open');
    assert.ok((await client.ping({ timeout: 0 })) >= 0, '0: no timeout');
    assert.ok((await client.ping({ timeout: null })) >= 0, 'null: no timeout, as before');
    await createClient(URL, { WebSocket: server.WebSocket, requestTimeout: null }).close();
  } finally {
    await client.close();
  }
});

test('a subscribe or open_publisher answered after requestTimeout is undone on the server', async () => {
  const { server, client } = await setup({ requestTimeout: 50 });
  try {
    server.channel('late');
    server.delays.set('subscribe', 150);
    server.delays.set('open_publisher', 150);
    await assert.rejects(client.subscribe('late', { policy: 'block', size: 10 }), /no reply after 50 ms/);
    await assert.rejects(client.publisher('late'), /no reply after 50 ms/);
    // The late answers made a subscription and a publisher nobody holds: both undone.
    await until(() => server.controls('unsubscribe').length === 1, 2000, 'the late subscription undone');
    await until(() => server.controls('close_publisher').length === 1, 2000, 'the late publisher undone');
    assert.equal(server.channel('late').subs.size, 0);
    assert.equal(server.channel('late').pubs.size, 0);
    assert.equal(client.state, 'open');
  } finally {
    await client.close();
  }
});

test('reconnect: channels this client created are created again if gone, before its publishers', async () => {
  const { server, client } = await setup();
  try {
    const meta = { units: 'V', labels: ['x'] };
    await client.createChannel('mine', { history: 3, meta });
    await client.createChannel('brief', { lifetime: 60 });
    await client.createChannel('dropped');
    await client.deleteChannel('dropped');
    const pub = await client.publisher('mine');
    await server.restart(client);
    await until(() => server.controls('open_publisher').length === 2 && pub.id !== null, 2000, 'reopened');
    const creates = server.controls('create_channel');
    assert.deepStrictEqual(creates.map((m) => m.channel), ['mine', 'brief', 'dropped', 'mine']);
    const again = creates.at(-1);
    assert.deepStrictEqual([again.history, again.meta, again.public, again.keep], [3, meta, true, false]);
    const order = server.messages.flat().filter((f) => f.msg).map((f) => f.msg.op);
    assert.ok(order.lastIndexOf('create_channel') < order.lastIndexOf('open_publisher'), 'created first');
    assert.equal(pub.closed, false);
    // Kept through the blip (ChannelExists): quietly nothing to do.
    const errors = [];
    client.on('error', (e) => errors.push(e));
    server.dropAll();
    await until(() => server.controls('open_publisher').length === 3 && pub.id !== null, 2000, 'reopened again');
    assert.equal(server.controls('create_channel').length, 5);
    assert.deepStrictEqual(errors, []);
  } finally {
    await client.close();
  }
});

test('reconnect: channels the welcome names as deleted meanwhile are not created again', async () => {
  const { server, client } = await setup();
  try {
    await client.createChannel('gone');
    await client.createChannel('stays');
    server.channels.delete('gone'); // another client deleted it while this one was away
    server.channels.delete('stays');
    server.channelsDeleted = { gone: "channel 'gone' was deleted by operator" };
    server.dropAll();
    await until(() => server.controls('create_channel').length === 3, 2000, 'created again');
    await new Promise((r) => setTimeout(r, 50));
    assert.deepStrictEqual(server.controls('create_channel').map((m) => m.channel), ['gone', 'stays', 'stays']);
    server.dropAll(); // and not at the next reconnect either
    await until(() => server.controls('create_channel').length === 4, 2000, 'created again');
    assert.equal(server.controls('create_channel').at(-1).channel, 'stays');
  } finally {
    await client.close();
  }
});

test('publish: the byte window counts each frame with its 13-byte head, as the server does', async () => {
  const { server, client } = await setup();
  try {
    server.limits.publish_window_frames = 16;
    server.limits.publish_window_bytes = 30; // two frames of 'x' (13 + 2 bytes), not fifteen
    server.dropAll(); // the next welcome brings these limits
    await until(() => client.state === 'open' && client.limits.publish_window_bytes === 30, 2000, 'new limits');
    await client.createChannel('bytes');
    server.keepsHistory.add('bytes');
    const pub = await client.publisher('bytes');
    server.autoAck = false;
    const sends = [];
    for (let i = 0; i < 3; i++) sends.push(pub.send('x'));
    await until(() => pub.inFlight === 2, 1000, 'two in flight');
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(pub.inFlight, 2, 'the third waits for room');
    const conn = [...server.conns].find((c) => c.name === 'test');
    conn.ack(pub.id, 1);
    await until(() => pub.inFlight === 2, 1000, 'the third after an ack');
    assert.deepStrictEqual(await Promise.all(sends), [true, true, true]);
  } finally {
    await client.close();
  }
});

test('publisher resume: a reopen answered later than requestTimeout still resumes', async () => {
  const { server, client } = await setup({ requestTimeout: 100 });
  try {
    server.channel('slow');
    server.keepsHistory.add('slow');
    const pub = await client.publisher('slow');
    server.autoAck = false;
    assert.equal(await pub.send('kept'), true);
    const publishes = () => server.messages.flat().filter((f) => f.type === PUBLISH);
    await until(() => publishes().length === 1, 1000, 'the first frame on the wire');
    server.delays.set('open_publisher', 300); // a slow cluster
    server.dropAll();
    await until(() => publishes().length === 2, 3000, 'the window after the late answer');
    assert.equal(pub.closed, false);
    assert.equal(decode(publishes()[1].payload), 'kept');
    assert.equal(server.controls('open_publisher').length, 2, 'one reopen, no second one');
  } finally {
    await client.close();
  }
});

test('pending requests fail with ConnectionClosed when the connection drops', async () => {
  const { server, client } = await setup();
  const conn = [...server.conns][0];
  conn.onFrame = () => {}; // the server stops answering
  const p = client.stats();
  await tick(); await tick();
  server.dropAll();
  await assert.rejects(p, ConnectionClosed);
  await client.close();
});

test('protocol errors close the connection and reconnect; sub_end ends a subscription', async () => {
  const { server, client } = await setup();
  await client.createChannel('z');
  const errors = [];
  client.on('error', (e) => errors.push(e));
  const sub = await client.subscribe('z');
  const conn = [...server.conns][0];
  conn.send(controlFrame({ op: 'sub_end', sub: sub.id, reason: 'channel deleted' }));
  assert.deepStrictEqual(await sub.next(), { value: undefined, done: true });
  assert.equal(sub.endReason, 'channel deleted');

  conn.ws._deliver('not binary');
  await until(() => errors.length === 1, 1000, 'protocol error');
  assert.match(errors[0].message, /text WebSocket message/);
  await until(() => server.controls('goodbye').length === 1, 1000, 'goodbye');
  assert.equal(server.controls('goodbye')[0].reason, 'protocol error: text WebSocket message');
  await until(() => client.state === 'open' && server.conns.size === 1, 2000, 'reconnected');

  // a frame that claims more bytes than the message holds
  const bad = new Uint8Array([0, 0, 0, 9, CONTROL, 0xa0]);
  [...server.conns][0].ws._deliver(bad.buffer);
  await until(() => errors.length === 2, 1000, 'second protocol error');
  assert.match(errors[1].message, /spans/);
  await client.close();
});

test("a goodbye with reconnect: false closes the client; one without it reconnects", async () => {
  const { server, client } = await setup();
  const goodbyes = [];
  client.on('goodbye', (reason) => goodbyes.push(reason));
  [...server.conns][0].send(controlFrame({ op: 'goodbye', reason: 'server shutting down' }));
  await until(() => goodbyes.length === 1, 1000, 'goodbye');
  const reopened = new Promise((r) => client.on('open', r));
  server.dropAll();
  assert.equal((await reopened).reconnected, true);
  const closes = [];
  client.on('close', (reason) => closes.push(reason));
  [...server.conns][0].send(controlFrame({ op: 'goodbye', reason: 'disconnected by admin ops', reconnect: false }));
  await until(() => goodbyes.length === 2, 1000, 'second goodbye');
  server.dropAll();
  await until(() => closes.length === 1, 1000, 'closed');
  assert.match(closes[0], /disconnected by admin ops/);
  assert.equal(client.state, 'closed');
  await new Promise((r) => setTimeout(r, 60)); // several reconnect delays' worth
  assert.equal(server.conns.size, 0);
  await assert.rejects(client.channels(), ConnectionClosed);
});

test('createClient keeps trying until the server shows up', async () => {
  const server = new FakeServer();
  server.refuse = true;
  const client = createClient(URL, { WebSocket: server.WebSocket, ...fast });
  const opened = new Promise((r) => client.on('open', r));
  const retries = [];
  client.on('reconnecting', (r) => retries.push(r));
  await new Promise((r) => setTimeout(r, 40));
  assert.equal(client.state, 'connecting', "'connecting' until the first welcome");
  assert.ok(retries.length >= 1);
  server.refuse = false;
  const info = await opened;
  assert.equal(info.server, 'fake');
  assert.equal(info.reconnected, false);
  assert.equal(typeof await client.ping(), 'number');
  await client.close();
});

test('subscription validates options locally', async () => {
  const { client } = await setup();
  await client.createChannel('v');
  await assert.rejects(client.subscribe('v', { policy: 'bogus' }), TypeError);
  await assert.rejects(client.subscribe('v', { every: 0 }), RangeError);
  await assert.rejects(client.subscribe('v', { maxRate: -1 }), RangeError);
  await client.close();
});

test('no double subscribe: subscriptions made in an open listener or while reconnecting', async () => {
  const { server, client } = await setup();
  await client.createChannel('once');
  const made = [];
  client.on('open', () => { client.subscribe('once').then((s) => made.push(s)); });
  server.dropAll();
  await until(() => client.state === 'reconnecting', 1000, 'reconnecting');
  // made while reconnecting: waits for the connection, then subscribes exactly once
  const during = client.subscribe('once');
  const pubDuring = client.publisher('once');
  await until(() => client.state === 'open', 2000, 'reopened');
  await during;
  await pubDuring;
  await until(() => made.length === 1, 1000, 'subscription from the open listener');
  await new Promise((r) => setTimeout(r, 30));
  const conn = [...server.conns][0];
  assert.equal(conn.subs.size, 2, 'two subscriptions on the server, no duplicates');
  assert.equal(conn.pubs.size, 1, 'one publisher on the server');
  await client.close();
});

// --- liveness: a silent server is noticed, a stall of our own is not ----------------------------

// A stopped server (SIGSTOP): the connection stays open, nothing comes in or goes out.
function freeze(conn) {
  conn.onMessage = () => {};
  conn.ws._deliver = () => {};
}

test('a server that goes silent is dropped after three pings (at least 2 s) and reconnected', async () => {
  const { server, client } = await setup({ pingInterval: 200 });
  const first = [...server.conns][0];
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(client.state, 'open', 'a server that answers pings is alive');
  const pings = server.controls('ping').length;
  assert.ok(pings >= 2, `pings sent: ${pings}`);
  const errors = [];
  client.on('error', (e) => errors.push(e));
  const pending = client.stats();
  const frozenAt = Date.now();
  freeze(first);
  await assert.rejects(pending, ConnectionClosed);
  const noticed = Date.now() - frozenAt;
  assert.ok(noticed >= 2000 - 200 && noticed < 2000 + 200 + 1000, `noticed after ${noticed} ms`);
  assert.match(client.lastError?.message ?? '', /the server was silent for 2\.\d s/);
  await until(() => client.state === 'open' && server.conns.size >= 1 && ![...server.conns].includes(first),
    3000, 'reconnected to a live server');
  assert.equal(errors.length, 0);
  await client.close();
});

test('a page busy for longer than the silence bound does not drop a live server', async () => {
  const { server, client } = await setup({ pingInterval: 200 });
  const states = [];
  client.on('state', (s) => states.push(s));
  await new Promise((r) => setTimeout(r, 300));
  const busyUntil = Date.now() + 2500; // the event loop is blocked: timers fire late
  while (Date.now() < busyUntil) { /* a long computation */ }
  await new Promise((r) => setTimeout(r, 700)); // a few pings and pongs after it
  assert.deepStrictEqual(states, []);
  assert.equal(client.state, 'open');
  assert.equal(server.conns.size, 1);
  await client.close();
});

// --- a page's findings: subscribe exactly once, typed options checked before they go, errors ------

test('subscribe waitChannel made before the first welcome subscribes exactly once', async () => {
  const server = new FakeServer();
  server.channel('$channels');
  server.channel('early');
  const client = createClient(URL, { WebSocket: server.WebSocket, ...fast });
  assert.equal(client.state, 'connecting');
  // at once, before the connection is open: the welcome's resubscription must not make a second
  const sub = await client.subscribe('early', { waitChannel: true, size: 2 });
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(server.controls('subscribe').filter((m) => m.channel === 'early').length, 1, 'one subscribe sent');
  const conn = [...server.conns][0];
  const onServer = () => [...conn.subs.values()].filter((x) => x.channel === 'early');
  assert.equal(onServer().length, 1, 'one subscription on the server');
  server.inject('early', 'a');
  server.inject('early', 'b');
  server.inject('early', 'c');
  const seqs = [];
  for (let i = 0; i < 3; i++) seqs.push((await sub.next()).value.seq);
  assert.deepStrictEqual(seqs, [1, 2, 3], 'each frame once');
  await sub.close();
  await until(() => onServer().length === 0, 1000, 'unsubscribed on the server');
  await client.close();
});

test('a subscription answered twice on one connection closes the older sub id on the server', async () => {
  const { server, client } = await setup();
  await client.createChannel('twice');
  const sub = await client.subscribe('twice');
  const first = sub.id;
  await sub._subscribe(); // what a double subscribe did: a second id for the same subscription
  assert.notEqual(sub.id, first);
  await until(() => server.controls('unsubscribe').some((m) => m.sub === first), 1000, 'older id unsubscribed');
  const conn = [...server.conns][0];
  assert.deepStrictEqual([...conn.subs.keys()], [sub.id]);
  server.inject('twice', 1);
  assert.equal((await sub.next()).value.seq, 1);
  await sub.close();
  await client.close();
});

test('wrongly typed options are refused before anything is sent: the connection stays', async () => {
  const { server, client } = await setup();
  await client.createChannel('typed');
  const before = server.messages.length;
  const closes = [];
  client.on('state', (state) => closes.push(state));
  const refused = [
    // subscribe
    [() => client.subscribe(123), TypeError, /channel must be a string/],
    [() => client.subscribe(undefined), TypeError, /channel/],
    [() => client.subscribe('typed', { policy: 'block', blockTimeout: 'x' }), TypeError, /blockTimeout/],
    [() => client.subscribe('typed', { blockTimeout: -1 }), RangeError, /blockTimeout/],
    [() => client.subscribe('typed', { blockTimeout: Infinity }), RangeError, /blockTimeout/],
    [() => client.subscribe('typed', { maxRate: '5' }), TypeError, /maxRate/],
    [() => client.subscribe('typed', { maxRate: NaN }), RangeError, /maxRate/],
    [() => client.subscribe('typed', { size: '10' }), TypeError, /size/],
    [() => client.subscribe('typed', { size: 10.5 }), RangeError, /size/],
    [() => client.subscribe('typed', { size: 2 ** 60 }), RangeError, /size/],
    [() => client.subscribe('typed', { every: '2' }), TypeError, /every/],
    [() => client.subscribe('typed', { window: 'big' }), TypeError, /window/],
    [() => client.subscribe('typed', { window: 0 }), RangeError, /window/],
    [() => client.subscribe('typed', { key: 42 }), TypeError, /key/],
    [() => client.subscribe('typed', { since: { epoch: 'e', seq: 'x' } }), RangeError, /since\.seq/],
    [() => client.subscribe(42, { waitChannel: true }), TypeError, /channel/],
    // publish
    [() => client.publisher(7), TypeError, /channel/],
    [() => client.publisher('typed', { key: 1 }), TypeError, /key/],
    [() => client.publish(['typed'], 1), TypeError, /channel/],
    // channels
    [() => client.createChannel(5), TypeError, /channel/],
    [() => client.createChannel('c', { public: 'yes' }), TypeError, /public/],
    [() => client.createChannel('c', { key: 5 }), TypeError, /key/],
    [() => client.createChannel('c', { lifetime: '10' }), TypeError, /lifetime/],
    [() => client.createChannel('c', { lifetime: NaN }), RangeError, /lifetime/],
    [() => client.createChannel('c', { history: null }), TypeError, /history/],
    [() => client.createChannel('c', { history: 1.5 }), RangeError, /history/],
    [() => client.createChannel('c', { singleWriter: 1 }), TypeError, /singleWriter/],
    [() => client.createChannel('c', { keep: 'true' }), TypeError, /keep/],
    [() => client.createChannel('c', { meta: ['V'] }), TypeError, /meta/],
    [() => client.createChannel('c', { meta: { scale: new Float32Array(2) } }), TypeError, /meta/],
    [() => client.createChannel('c', { meta: { at: new Date() } }), TypeError, /meta/],
    [() => client.createChannel('c', { meta: new Map([[1, 'one']]) }), TypeError, /keys must be strings/],
    [() => client.createChannel('c', { meta: { n: 2n ** 70n } }), RangeError, /64 bits/],
    [() => client.createChannel('c', { meta: JSON.parse(`${'{"a":'.repeat(16)}1${'}'.repeat(16)}`) }), RangeError, /nested/],
    [() => client.deleteChannel(null), TypeError, /channel/],
    [() => client.deleteChannel('typed', { key: {} }), TypeError, /key/],
    // rpc
    [() => client.rpc(3), TypeError, /provider/],
    [() => client.call('p', 9), TypeError, /method/],
  ];
  for (const [make, Cls, message] of refused) {
    await assert.rejects(make(), (e) => e instanceof Cls && message.test(e.message), make.toString());
  }
  const pub = await client.publisher('typed');
  await assert.rejects(pub.send(1, { time: 'now' }), TypeError);
  await tick();
  const sent = server.messages.slice(before).flat().filter((f) => f.type === CONTROL).map((f) => f.msg.op);
  assert.deepStrictEqual(sent, ['open_publisher'], 'only the good request went out');
  assert.deepStrictEqual(closes, [], 'the connection stayed');
  // what is right still goes: nesting up to the limit, text keys in a Map, null and undefined
  await client.createChannel('ok', { meta: { units: 'V', none: null, unset: undefined, raw: new Uint8Array(2),
    deep: JSON.parse(`${'{"a":'.repeat(14)}1${'}'.repeat(14)}`) } });
  await client.createChannel('ok2', { meta: new Map([['units', 'A']]), lifetime: 5, history: 3 });
  await client.subscribe('typed', { policy: 'block', blockTimeout: 2.5, maxRate: 10, window: 4, size: 8 });
  await client.close();
});

test('retune checks blockTimeout before sending too', async () => {
  const { server, client } = await setup();
  await client.createChannel('rt');
  const sub = await client.subscribe('rt');
  await assert.rejects(sub.retune({ blockTimeout: 'soon' }), TypeError);
  await assert.rejects(sub.retune({ maxRate: 'fast' }), TypeError);
  // Options retune does not change (a typo, or one fixed at subscribe) were ignored without a word.
  await assert.rejects(sub.retune({ sizes: 10 }), { name: 'TypeError', message: /not 'sizes'/ });
  await assert.rejects(sub.retune({ window: 4 }), { name: 'TypeError', message: /fixed when a channel is subscribed/ });
  await assert.rejects(sub.retune(5), TypeError);
  assert.equal(server.controls('retune').length, 0);
  await client.close();
});

test('createClient with a wrong token: ready() rejects with the AuthError', async () => {
  const server = new FakeServer();
  server.token = 'secret';
  const client = createClient(URL, { WebSocket: server.WebSocket, token: 'nope', ...fast });
  const errors = [];
  client.on('error', (e) => errors.push(e));
  const ready = client.ready();
  const request = client.channels();
  await assert.rejects(ready, (e) => e instanceof AuthError && /wrong token/.test(e.message));
  assert.ok(errors[0] instanceof AuthError);
  assert.equal(client.lastError, errors[0]);
  // asked again once closed: the same error; a request on the closed client: ConnectionClosed
  await assert.rejects(client.ready(), AuthError);
  await assert.rejects(request, ConnectionClosed);
  await assert.rejects(client.channels(), ConnectionClosed);
  await client.close();
});

test('no WebSocket: the error says how to get one', () => {
  assert.throws(() => createClient(URL, { WebSocket: undefined }),
    (e) => e instanceof TypeError && /--experimental-websocket/.test(e.message) && /WebSocket option/.test(e.message)
      && /createClient\(url, \{ WebSocket \}\)/.test(e.message));
});

test('error classes: the server\'s error types, as in the Python hierarchy', async () => {
  assert.ok(new ClusterUnavailable('x') instanceof TrioStreamError);
  assert.ok(new ResourceClosed('x') instanceof TrioStreamError);
  assert.ok(new UnknownMethod('x') instanceof RpcError);
  assert.equal(new UnknownMethod('x').type, 'UnknownMethod');
  assert.equal(ReexportedNDArray, NDArray);
  assert.equal(ReexportedTag, Tag);
  assert.equal(ReexportedCBORError, CBORError);
  const { server, client } = await setup();
  server.failures.set('create_channel', ['ClusterUnavailable', 'the cluster\'s Redis is down']);
  await assert.rejects(client.createChannel('c'), (e) => e instanceof ClusterUnavailable && e.type === 'ClusterUnavailable');
  server.failures.set('create_channel', ['TrioStreamError', 'generic']);
  await assert.rejects(client.createChannel('c'), (e) => e.constructor === TrioStreamError);
  server.failures.clear();
  await client.close();
});

test('send after pub.close() is ResourceClosed; after the client closed, ConnectionClosed', async () => {
  const { client } = await setup();
  await client.createChannel('rc');
  const pub = await client.publisher('rc');
  await pub.close();
  await assert.rejects(pub.send(1), (e) => e instanceof ResourceClosed && /"rc"/.test(e.message));
  await assert.rejects(pub.waitForReaders(), ResourceClosed);
  const other = await client.publisher('rc');
  await client.close();
  await assert.rejects(other.send(1), (e) => e instanceof ConnectionClosed);
});

test('a proxy asked for a method its provider does not expose: UnknownMethod, nothing sent', async () => {
  const { server, client } = await setup();
  const proxy = new RpcProxy(client, 'daq', [{ name: 'read', params: [] }, { name: 'echo', params: [] }], 1000);
  const before = server.messages.length;
  await assert.rejects(proxy.call('nosuch'), (e) => e instanceof UnknownMethod && e instanceof RpcError
    && /"daq" exposes no method "nosuch" \(it has: echo, read\)/.test(e.message));
  assert.equal(server.messages.length, before);
  await client.close();
});
