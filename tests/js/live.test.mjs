// The browser client against a real trio_stream server (tests/js/live_server.py).
// Needs a WebSocket in Node: Node >= 22, or Node 20 with --experimental-websocket
// (`node --experimental-websocket --test tests/js/`). Skipped otherwise, or without Python.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import {
  connect, createClient, ChannelExists, ChannelNotFound, ConnectionClosed, LimitExceeded, NameInUse, ProtocolError,
  RemoteError, RemoteStream, RpcTimeout, RpcError, Subscription, UnknownMethod,
} from '../../trio_stream/web/trio_stream.js';
import { NDArray } from '../../trio_stream/web/cbor.js';
import { ROOT, liveSetup } from './python.mjs';
import { until } from './fake_server.mjs';

const { python, skip } = liveSetup('trio_stream, numpy');

let server, url, proxyUrl, client;

before(async () => {
  if (skip) return;
  server = spawn(python, [join(ROOT, 'tests/js/live_server.py')], { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
  url = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`live server did not start: ${out}`)), 15000);
    server.stdout.on('data', (chunk) => {
      out += chunk;
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line) {
        clearTimeout(timer);
        const urls = JSON.parse(line);
        proxyUrl = urls.proxy_url;
        resolve(urls.ws_url);
      }
    });
    server.on('exit', (code) => reject(new Error(`live server exited (${code}): ${out}`)));
  });
  client = await connect(url, { name: 'js-live' });
});

after(async () => {
  await client?.close();
  if (server) {
    server.stdin.end();
    await Promise.race([new Promise((r) => server.on('exit', r)), new Promise((r) => setTimeout(r, 5000))]);
    if (server.exitCode === null) server.kill('SIGKILL');
  }
});

test('handshake and listings', { skip }, async () => {
  assert.equal(client.name, 'js-live');
  assert.match(client.serverName, /live/);
  assert.ok(client.limits.max_frame_bytes > 0);
  const names = (await client.channels()).map((c) => c.name);
  for (const n of ['$stats', '$clients', '$channels']) assert.ok(names.includes(n), n);
  const clients = await client.clients();
  const py = clients.find((c) => c.name === 'py');
  assert.ok(py.methods.includes('echo'));
  assert.equal(clients.find((c) => c.name === 'js-live').transport, 'ws');
  const stats = await client.stats();
  assert.ok(stats.connections >= 2);
  await assert.rejects(connect(url, { name: 'js-live' }), NameInUse);
});

test('publish and subscribe between JS clients, lossless', { skip }, async () => {
  await client.createChannel('js/a');
  await assert.rejects(client.createChannel('js/a'), ChannelExists);
  await assert.rejects(client.subscribe('js/none'), ChannelNotFound);
  assert.equal(await client.publish('js/a', 'nobody listens'), false);
  const reader = await connect(url, { name: 'js-reader' });
  const sub = await reader.subscribe('js/a', { policy: 'block', size: 8 });
  const pub = await client.publisher('js/a');
  await pub.waitForReaders({ timeout: 2000 });
  const N = 300;
  const sending = (async () => {
    for (let i = 0; i < N; i++) assert.equal(await pub.send({ i, v: new Float32Array([i, -i]) }), true);
  })();
  let expect = 0, lastSeq = 0;
  for await (const msg of sub) {
    assert.equal(msg.data.i, expect++);
    assert.deepStrictEqual(msg.data.v, new Float32Array([msg.data.i, -msg.data.i]));
    assert.ok(msg.seq > lastSeq);
    assert.equal(msg.lost, 0);
    assert.equal(msg.sender, 'js-live');
    lastSeq = msg.seq;
    if (expect === N) break;
  }
  await sending;
  assert.equal(sub.lost, 0);
  await pub.close();
  await reader.close();
});

test("ChannelNotFound's advice names this client's options, not the trio client's", { skip }, async () => {
  // The server's text said "subscribe(..., wait_channel=True)" and "create_channel()", which a
  // page's author could not find in this client (first-hour audit).
  const error = await client.subscribe('js/never').catch((e) => e);
  assert.ok(error instanceof ChannelNotFound);
  assert.match(error.message, /createChannel\(\)/);
  assert.match(error.message, /subscribe\(channel, \{ waitChannel: true \}\)/);
  assert.match(error.message, /pass \{ key \}/);
  assert.doesNotMatch(error.message, /wait_channel|create_channel|key=/);
});

test('subscribe waitChannel: waits for the channel, announced or private', { skip, timeout: 20000 }, async () => {
  const reader = await connect(url, { name: 'js-waiter' });
  const py = await client.rpc('py');
  try {
    // announced in $channels: the subscribe returns as soon as it is created
    const waiting = reader.subscribe('js/later', { waitChannel: true, policy: 'block', size: 10 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    await py.call('create', ['js/later']);
    const started = Date.now();
    const sub = await waiting;
    assert.ok(Date.now() - started < 900, `took ${Date.now() - started} ms`);
    assert.deepEqual(await py.call('send', ['js/later', ['first']]), [true]);
    assert.equal((await sub.next()).value.data, 'first');
    await sub.close();
    // a private channel is not announced: found by the poll, with its key
    const privately = reader.subscribe('js/secret', { waitChannel: true, key: 'k1' });
    await new Promise((resolve) => setTimeout(resolve, 200));
    await client.createChannel('js/secret', { public: false, key: 'k1' });
    const secret = await privately;
    assert.equal(secret.ended, false);
    await secret.close();
    // without it the same subscribe fails at once, as before
    await assert.rejects(reader.subscribe('js/not-yet'), ChannelNotFound);
    // nothing left behind: the $channels subscriptions it used are closed
    assert.deepEqual((await reader.clients()).find((c) => c.name === 'js-waiter').subscriptions, []);
  } finally {
    await reader.close();
  }
});

test('createClient then subscribe waitChannel at once: one subscription on the server, none after close', { skip }, async () => {
  await client.createChannel('js/waitdup');
  const early = createClient(url, { name: 'js-waitdup' }); // not open yet when subscribe is called
  try {
    const sub = await early.subscribe('js/waitdup', { size: 2, waitChannel: true });
    const mine = async () => (await early.clients()).find((c) => c.name === 'js-waitdup').subscriptions
      .filter((s) => s.channel === 'js/waitdup');
    const readers = async () => (await client.channels()).find((c) => c.name === 'js/waitdup').readers;
    assert.equal((await mine()).length, 1, 'subscribed once');
    assert.equal(await readers(), 1);
    const pub = await client.publisher('js/waitdup');
    await pub.waitForReaders({ timeout: 2000 });
    for (const v of [1, 2, 3]) await pub.send(v);
    const seqs = [];
    for (let i = 0; i < 3; i++) seqs.push((await sub.next()).value.seq);
    assert.deepEqual(seqs, [1, 2, 3]);
    await sub.close();
    assert.deepEqual(await mine(), [], 'no orphan left on the server');
    assert.equal(await readers(), 0);
    await pub.close();
  } finally {
    await early.close();
    await client.deleteChannel('js/waitdup');
  }
});

test('wrongly typed options are refused by the client: the connection and its subscriptions stay', { skip }, async () => {
  await client.createChannel('js/typed');
  const reader = await connect(url, { name: 'js-typed' });
  try {
    const states = [];
    reader.on('state', (state) => states.push(state));
    const sub = await reader.subscribe('js/typed');
    await assert.rejects(reader.subscribe(123), TypeError);
    await assert.rejects(reader.subscribe('js/typed', { policy: 'block', blockTimeout: 'x' }), TypeError);
    await assert.rejects(reader.createChannel('js/typed2', { history: '3' }), TypeError);
    await assert.rejects(reader.createChannel('js/typed2', { meta: { scale: new Float32Array(1) } }), TypeError);
    assert.equal(typeof await reader.ping(), 'number');
    assert.deepEqual(states, [], 'never reconnected');
    const pub = await client.publisher('js/typed');
    await pub.waitForReaders({ timeout: 2000 });
    await pub.send('still here');
    const msg = (await sub.next()).value;
    assert.equal(msg.data, 'still here');
    assert.equal(msg.gap, null, 'not reset');
    await pub.close();
    await sub.close();
  } finally {
    await reader.close();
    await client.deleteChannel('js/typed');
  }
});

test('a subscribe waiting for its channel fails with ConnectionClosed when its client closes', { skip }, async () => {
  const reader = await connect(url, { name: 'js-waiter-closed' });
  const waiting = reader.subscribe('js/never-made', { waitChannel: true }).catch((e) => e);
  await new Promise((resolve) => setTimeout(resolve, 200));
  await reader.close();
  assert.ok((await waiting) instanceof ConnectionClosed);
});

test("a call's result is decoded with the client's payloadLimits", { skip }, async () => {
  // They were applied to channel values only: a result past the default depth failed,
  // with advice to raise payloadLimits (values audit).
  const py = await client.rpc('py');
  await assert.rejects(py.call('deep', [100]), /maxDepth \(64\)/);
  const deep = await connect(url, { name: 'js-deep', payloadLimits: { maxDepth: 200 } });
  try {
    let value = await (await deep.rpc('py')).call('deep', [100]);
    let levels = 0;
    while (Array.isArray(value)) { value = value[0]; levels += 1; }
    assert.equal(levels, 100);
  } finally {
    await deep.close();
  }
});

test('a subscription the server ends for a fault throws it from the loop', { skip }, async () => {
  // Its for-await loop just ended, the error left in endReason's text, while the Python
  // client raises LimitExceeded (browser-client audit).
  await client.createChannel('js/held');
  const sub = await client.subscribe('js/held', { policy: 'block', size: 1, window: 1, blockTimeout: 0.5 });
  const writer = await connect(url, { name: 'js-held-writer' });
  const pub = await writer.publisher('js/held');
  await pub.waitForReaders();
  for (let i = 0; i < 20; i++) await pub.send(i); // parked behind the reader that does not read
  await new Promise((resolve) => sub.on('end', resolve)); // its block_timeout
  await writer.close();
  const got = [];
  await assert.rejects(async () => {
    for await (const msg of sub) got.push(msg.data);
  }, (e) => e instanceof LimitExceeded && /blockTimeout/.test(e.message) && !/block_timeout\b/.test(e.message));
  assert.ok(got.length >= 1 && got.length < 20, `got ${got}`);
  assert.ok(sub.error instanceof LimitExceeded);
  assert.deepEqual(await sub.next(), { value: undefined, done: true }); // thrown once
});

test('a slow drop_oldest size-1 reader gets the newest value and counts losses', { skip }, async () => {
  await client.createChannel('js/burst');
  const sub = await client.subscribe('js/burst', { policy: 'drop_oldest', size: 1 });
  const py = await client.rpc('py');
  assert.equal(await py.call('burst', ['js/burst', 500]), 500);
  await new Promise((r) => setTimeout(r, 200)); // everything has reached our server-side buffer
  const seen = [];
  for (;;) {
    const next = await Promise.race([sub.next(), new Promise((r) => setTimeout(() => r(null), 300))]);
    if (!next) break;
    seen.push(next.value);
  }
  assert.equal(seen.at(-1).data, 499, 'the newest value arrives last');
  assert.ok(seen.length < 500, `received ${seen.length}`);
  assert.equal(seen.length + sub.lost, 500, 'every frame was either delivered or counted lost');
  await sub.close();
});

test('a reader without prefetch gets the newest frame when it asks, by next() and by onMessage', { skip }, async () => {
  // A slow viewer of drop_oldest size 1 got the frame that came while it worked, not the newest.
  await client.createChannel('js/newest');
  const py = await client.rpc('py');
  const pulled = await client.subscribe('js/newest', { policy: 'drop_oldest', size: 1, prefetch: false });
  const called = [];
  let wanted = null;
  const pushed = await client.subscribe('js/newest', {
    policy: 'drop_oldest', size: 1, prefetch: false,
    onMessage: async (msg) => {
      called.push([msg.data, msg.lost]);
      if (called.length === 1) await new Promise((r) => { wanted = r; }); // busy with the first
    },
  });
  assert.deepStrictEqual(await py.call('send', ['js/newest', [0]]), [true]);
  assert.equal((await pulled.next()).value.data, 0);
  await eventually(() => called.length === 1, 5000, 'the first callback');
  for (const first of [1, 6]) {
    await new Promise((r) => setTimeout(r, 200)); // credit returned as 0 was taken would be there
    await py.call('send', ['js/newest', [first, first + 1, first + 2, first + 3, first + 4]]);
    const { value } = await pulled.next();
    assert.deepStrictEqual([value.data, value.lost], [first + 4, 4]);
  }
  wanted(); // the callback ends, and asks for the next: the newest the server holds
  await eventually(() => called.length === 2, 5000, 'the second callback');
  assert.deepStrictEqual(called, [[0, 0], [10, 9]]);
  assert.throws(() => new Subscription(client, 'js/newest', { prefetch: 'no' }), TypeError);
  await pulled.close();
  await pushed.close();
});

test('drops no frame will report (drop_newest, the writer stops) arrive as a lost notice', { skip }, async () => {
  await client.createChannel('js/trailing');
  const sub = await client.subscribe('js/trailing', { policy: 'drop_newest', size: 1, window: 1 });
  const py = await client.rpc('py');
  assert.equal(await py.call('burst', ['js/trailing', 200]), 200);
  await new Promise((r) => setTimeout(r, 200));
  const seen = [];
  for (;;) {
    const next = await Promise.race([sub.next(), new Promise((r) => setTimeout(() => r(null), 300))]);
    if (!next) break;
    seen.push(next.value);
  }
  assert.ok(seen.length < 200, `received ${seen.length}`);
  assert.equal(seen[0].data, 0, 'drop_newest keeps the oldest');
  assert.equal(seen.length + sub.lost, 200, 'every frame was either delivered or counted lost');
  await sub.close();
});

test('a payload beyond payloadLimits is skipped and counted lost, with the drops before it', { skip }, async () => {
  // Its error was emitted, but the frame and the drops it carried were in no message's lost.
  await client.createChannel('js/refused');
  const reader = await connect(url, { name: 'js-refusing', payloadLimits: { maxDepth: 3 } });
  const py = await client.rpc('py');
  try {
    const errors = [];
    const sub = await reader.subscribe('js/refused', { policy: 'drop_oldest', size: 1, window: 1 });
    sub.on('error', (e) => errors.push(e));
    assert.deepEqual(await py.call('send', ['js/refused', ['first', 1, 2, 3, [[[[[1]]]]]]]), [true, true, true, true, true]);
    assert.equal((await sub.next()).value.data, 'first'); // in flight: nothing lost
    await until(() => errors.length === 1, 3000, 'the refused payload');
    assert.ok(errors[0] instanceof ProtocolError);
    await py.call('send', ['js/refused', ['next']]);
    const { value } = await sub.next();
    assert.deepEqual([value.data, value.lost, sub.lost], ['next', 4, 4]); // 1, 2, 3 and the refused one
    await sub.close();
  } finally {
    await reader.close();
  }
});

test('numpy arrays published from Python decode to typed arrays', { skip }, async () => {
  await client.createChannel('js/np');
  const sub = await client.subscribe('js/np', { policy: 'unbounded', size: null });
  const py = await client.rpc('py');
  const n = await py.call('publish_arrays', ['js/np']);
  const got = [];
  for await (const msg of sub) { got.push(msg.data); if (got.length === n) break; }
  assert.deepStrictEqual(got[0], new NDArray([2, 3], new Float64Array([0, 1, 2, 3, 4, 5])));
  assert.deepStrictEqual(got[1], new BigInt64Array([1n, -2n, 3n]));
  assert.deepStrictEqual(got[2], new NDArray([2], new Float32Array([1, 2, -3, -4]), '<c8'));
  assert.deepStrictEqual(got[3], new NDArray([2, 2], new Uint8Array([1, 0, 0, 1]), '|b1'));
  assert.deepStrictEqual(got[4], new NDArray([3, 4], Uint8Array.from({ length: 12 }, (_, i) => i)));
  assert.deepStrictEqual(got[5], new NDArray([], new Float32Array([7.5])));
  assert.deepStrictEqual(got[6], { t: 1.5, x: new Float64Array([0, 0.25, 0.5, 0.75, 1]) });
});

test('subscribe sender: only that writer\'s frames, none counted lost', { skip }, async () => {
  await client.createChannel('js/temps');
  const other = await connect(url, { name: 'js-sensor-8' });
  const sub = await client.subscribe('js/temps', { policy: 'block', size: 50, sender: 'js-sensor-8' });
  const mine = await client.publisher('js/temps');
  const theirs = await other.publisher('js/temps');
  await mine.waitForReaders({ timeout: 2000 });
  await theirs.waitForReaders({ timeout: 2000 });
  for (let i = 0; i < 10; i++) await (i % 2 ? theirs : mine).send(i);
  await theirs.send('end');
  const got = [];
  for await (const msg of sub) {
    assert.equal(msg.sender, 'js-sensor-8');
    assert.equal(msg.lost, 0);
    if (msg.data === 'end') break;
    got.push(msg.data);
  }
  assert.deepStrictEqual(got, [1, 3, 5, 7, 9]);
  assert.equal(sub.lost, 0);
  await mine.close();
  await other.close();
});

test('subscribe view: the server cuts numpy frames, other frames pass whole', { skip }, async () => {
  await client.createChannel('js/view');
  const sub = await client.subscribe('js/view', { policy: 'unbounded', size: null, view: [[null, null, 2], [null, null, 2]] });
  const py = await client.rpc('py');
  const n = await py.call('publish_arrays', ['js/view']);
  const got = [];
  for await (const msg of sub) { got.push(msg.data); if (got.length === n) break; }
  // arange(12, u1).reshape(3, 4)[::2, ::2]
  assert.deepStrictEqual(got[4], new NDArray([2, 2], new Uint8Array([0, 2, 8, 10])));
  assert.deepStrictEqual(got[0], new NDArray([1, 2], new Float64Array([0, 2])));
  assert.deepStrictEqual(got[1], new BigInt64Array([1n, -2n, 3n])); // fewer dimensions than the view: whole
  assert.deepStrictEqual(got[6], { t: 1.5, x: new Float64Array([0, 0.25, 0.5, 0.75, 1]) }); // no array: whole
  await assert.rejects(client.subscribe('js/view', { view: [[null, null, 0]] }), RangeError);
  await assert.rejects(client.subscribe('js/view', { view: [1, 2] }), TypeError);
  await sub.close();
});

test('retune: maxRate off delivers the held frame now; size follows', { skip }, async () => {
  await client.createChannel('js/retune');
  const sub = await client.subscribe('js/retune', { maxRate: 0.1, size: 10 });
  const pub = await client.publisher('js/retune');
  await pub.waitForReaders({ timeout: 2000 });
  await pub.send(1);
  assert.equal((await sub.next()).value.data, 1);
  await pub.send(2); // held for 10 s by maxRate
  const started = Date.now();
  await sub.retune({ maxRate: null, size: 3 });
  assert.equal((await sub.next()).value.data, 2);
  assert.ok(Date.now() - started < 5000, 'not held for the old interval');
  assert.equal(sub.maxRate, null);
  assert.equal(sub.size, 3);
  assert.equal(sub.window, 3, 'the window follows the new size');
  await assert.rejects(sub.retune({ policy: 'bogus' }), TypeError);
  await assert.rejects(client.request('retune', { sub: sub.id, every: 0 }), /every/);
  await pub.close();
  await sub.close();
});

test('RPC: calls, keyword arguments, remote errors, timeouts', { skip }, async () => {
  const py = await client.rpc('py');
  assert.deepStrictEqual(await py.call('echo', ['HALLO']), 'HALLO');
  assert.deepStrictEqual(await py.call('echo', [new Float64Array([1, 2])], { twice: true }),
    [new Float64Array([1, 2]), new Float64Array([1, 2])]);
  await assert.rejects(py.call('echo'), TypeError, 'checked locally, nothing sent');
  await assert.rejects(py.call('echo', [1, 2, 3]), TypeError);
  await assert.rejects(py.call('echo', [1], { bogus: 1 }), TypeError);
  await assert.rejects(py.call('nope'), (e) => e instanceof UnknownMethod && e instanceof RpcError
    && /exposes no method "nope" \(it has: .*echo/.test(e.message));
  await assert.rejects(py.call('fail', ['boom']), (e) => e instanceof RemoteError && e.typeName === 'ValueError'
    && e.remoteMessage === 'boom' && /Traceback/.test(e.remoteTraceback));
  // It said "call: no reply after 200 ms", naming neither the provider nor the method.
  await assert.rejects(py.call('sleep', [5], {}, { timeout: 200 }), (e) => e instanceof RpcTimeout
    && /^no answer to py\.sleep\(\) within 200 ms: the provider is slow or stuck.*longer timeout/.test(e.message));
  assert.equal(await py.call('echo', ['still fine']), 'still fine');
  await assert.rejects(client.rpc('nobody'), RpcError);
});

// ------------------------------------------------------------------ streaming calls (protocol.md 6.1)

/** Poll the async `pred` every 20 ms until it holds; fail naming `what` after `ms`. */
async function eventually(pred, ms, what) {
  for (const t0 = Date.now(); !(await pred());) {
    assert.ok(Date.now() - t0 < ms, `timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The values of `stream` until it ends, and the error it ended with (null: a clean end). */
async function drain(stream) {
  const values = [];
  try {
    for await (const v of stream) values.push(v);
    return { values, error: null };
  } catch (error) {
    return { values, error };
  }
}

test('streaming RPC: every value in order, then the end', { skip }, async () => {
  const stream = client.stream('py', 'count', [5]);
  assert.ok(stream instanceof RemoteStream);
  const got = [];
  for await (const v of stream) got.push(v);
  assert.deepStrictEqual(got, [0, 1, 2, 3, 4]);
  assert.equal(stream.ended, true);
  assert.deepStrictEqual(await stream.next(), { value: undefined, done: true }, 'stays done');
  const py = await client.rpc('py');
  assert.equal(py.byName.get('count').stream, true);
  assert.deepStrictEqual((await drain(py.stream('count', [3]))).values, [0, 1, 2]);
  assert.deepStrictEqual(await drain(py.stream('count', [0])), { values: [], error: null });
  assert.deepStrictEqual(await drain(client.stream('py', 'count', [], { n: 5 }, { window: 1 })),
    { values: [0, 1, 2, 3, 4], error: null }, 'keyword arguments; a window of one value');
});

test('streaming RPC: more values than the window, the generator held to the credit returned', { skip }, async () => {
  const py = await client.rpc('py');
  const yielded = async () => (await py.call('stream_state', ['credit']))?.yielded;
  const stream = client.stream('py', 'count', [100, 'credit'], {}, { window: 4 });
  assert.deepStrictEqual(await stream.next(), { value: 0, done: false });
  // One value taken of 4: no credit back yet (it goes in batches of 2), so the provider
  // stops at the window.
  await eventually(async () => (await yielded()) === 4, 5000, 'a window of values');
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(await yielded(), 4, 'the generator waits for credit');
  assert.deepStrictEqual(await stream.next(), { value: 1, done: false }); // credit 2 goes back
  await eventually(async () => (await yielded()) === 6, 5000, 'two more values');
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(await yielded(), 6);
  const { values, error } = await drain(stream);
  assert.equal(error, null);
  assert.deepStrictEqual(values, Array.from({ length: 98 }, (_, i) => i + 2));
  assert.deepStrictEqual(await py.call('stream_state', ['credit']), { yielded: 100, closed: true });
});

test('streaming RPC: a remote error after the values before it', { skip }, async () => {
  const { values, error } = await drain(client.stream('py', 'count_then_fail', [2]));
  assert.deepStrictEqual(values, [0, 1]);
  assert.ok(error instanceof RemoteError && error instanceof RpcError, String(error));
  assert.equal(error.typeName, 'ValueError');
  assert.equal(error.remoteMessage, 'failed after 2 values');
  assert.match(error.remoteTraceback, /Traceback/);
  // A provider that is not there: the server's error, mapped.
  const none = await drain(client.stream('nobody', 'count', [3]));
  assert.ok(none.error instanceof RpcError && !(none.error instanceof RemoteError), String(none.error));
  assert.deepStrictEqual(none.values, []);
});

test("streaming RPC: leaving the loop early cancels the provider's generator", { skip }, async () => {
  const py = await client.rpc('py');
  const state = (name) => py.call('stream_state', [name]);
  const got = [];
  for await (const v of py.stream('ticks', ['early'])) {
    got.push(v);
    if (got.length === 3) break;
  }
  assert.deepStrictEqual(got, [0, 1, 2]);
  await eventually(async () => (await state('early')).closed, 5000, 'the generator closed');
  // return() by hand: done from then on, the values that came meanwhile dropped.
  const stream = client.stream('py', 'ticks', ['by-hand']);
  assert.deepStrictEqual(await stream.next(), { value: 0, done: false });
  await new Promise((r) => setTimeout(r, 100)); // more values queue up
  assert.deepStrictEqual(await stream.return(), { value: undefined, done: true });
  assert.deepStrictEqual(await stream.next(), { value: undefined, done: true });
  await eventually(async () => (await state('by-hand')).closed, 5000, 'the generator closed');
  // Left before its first next(): no call was ever made.
  const unused = client.stream('py', 'ticks', ['never']);
  await unused.return();
  assert.deepStrictEqual(await unused.next(), { value: undefined, done: true });
  assert.equal(await state('never'), null);
});

test('streaming RPC: a value past payloadLimits ends that stream, not the connection', { skip }, async () => {
  const py = await client.rpc('py');
  const errors = [];
  const off = client.on('error', (e) => errors.push(e));
  try {
    const { values, error } = await drain(py.stream('ticks', ['undecodable'], { deep_at: 2 }));
    assert.deepStrictEqual(values, [0, 1]);
    assert.ok(error instanceof ProtocolError, String(error));
    assert.match(error.message, /ticks\(\).*maxDepth \(64\)/);
    await eventually(async () => (await py.call('stream_state', ['undecodable'])).closed, 5000, 'the generator closed');
    assert.equal(await py.call('echo', ['still connected']), 'still connected');
    assert.deepStrictEqual(errors, [], 'no error of the connection');
  } finally {
    off();
  }
});

test('streaming RPC: UnknownMethod, call/stream mismatches and bad windows are refused before sending', { skip }, async () => {
  const py = await client.rpc('py');
  assert.throws(() => py.stream('nope'), (e) => e instanceof UnknownMethod && /exposes no method "nope"/.test(e.message));
  await assert.rejects(py.call('count', [3]), (e) => e instanceof TypeError
    && /py\.count\(\) streams its values/.test(e.message) && /proxy\.stream\("count"/.test(e.message));
  assert.throws(() => py.stream('echo', ['x']), (e) => e instanceof TypeError
    && /py\.echo\(\) returns one result/.test(e.message) && /proxy\.call\("echo"/.test(e.message));
  assert.throws(() => py.stream('count'), /missing required argument "n"/);
  assert.throws(() => py.stream('count', [1, 'x', 3]), TypeError);
  for (const window of [0, 1025, 2.5, -1, NaN]) {
    assert.throws(() => client.stream('py', 'count', [3, 'badwindow'], {}, { window }),
      (e) => e instanceof RangeError && /window must be an integer from 1 to 1024/.test(e.message), String(window));
    assert.throws(() => py.stream('count', [3, 'badwindow'], {}, { window }), RangeError);
  }
  assert.throws(() => client.stream('py', 'count', [3, 'badwindow'], {}, { window: '4' }), TypeError);
  assert.throws(() => client.stream(1, 'count', [3]), /stream: provider must be a string/);
  assert.throws(() => client.stream('py', null, [3]), /stream: method must be a string/);
  assert.throws(() => client.stream('py', 'count', 3), /args must be an array/);
  assert.throws(() => client.stream('py', 'count', [], 'n'), /kwargs must be an object/);
  assert.equal(await py.call('stream_state', ['badwindow']), null, 'no call was made');
  assert.deepStrictEqual((await drain(client.stream('py', 'count', [2], {}, { window: 1024 }))).values, [0, 1]);
});

test('a stream ends with ConnectionClosed when its connection is lost, and is not resumed', { skip }, async () => {
  const py = await client.rpc('py');
  const c2 = await connect(proxyUrl, { name: 'js-stream-cut', reconnectDelay: 100 });
  try {
    const stream = c2.stream('py', 'ticks', ['cut']);
    assert.deepStrictEqual(await stream.next(), { value: 0, done: false });
    await py.call('cut');
    const { values, error } = await drain(stream); // the values that came before the cut, then
    assert.ok(error instanceof ConnectionClosed, String(error));
    assert.deepStrictEqual(values, Array.from({ length: values.length }, (_, i) => i + 1));
    assert.deepStrictEqual(await stream.next(), { value: undefined, done: true });
    await eventually(async () => (await py.call('stream_state', ['cut'])).closed, 5000, 'the generator closed');
    await c2.ready({ timeout: 5000 });
    assert.deepStrictEqual((await drain(c2.stream('py', 'count', [3]))).values, [0, 1, 2], 'a new stream works');
  } finally {
    await c2.close();
  }
});

test('a call cut by a lost connection says it may have run on the provider', { skip, timeout: 20000 }, async () => {
  // It said only "connection lost (...)": a caller could not tell that a valve's move may have
  // happened, and repeat it (the Python client says so).
  const py = await client.rpc('py');
  const c2 = await connect(proxyUrl, { name: 'js-call-cut', reconnectDelay: 100 });
  try {
    const call = c2.call('py', 'sleep', [2]).then(() => null, (e) => e);
    await new Promise((r) => setTimeout(r, 200)); // on its way to the provider
    await py.call('cut');
    const error = await call;
    assert.ok(error instanceof ConnectionClosed
      && /^connection lost .*: py\.sleep\(\) may have run on the provider: its answer had not come when the connection ended; check before calling it again$/.test(error.message), String(error));
    await c2.ready({ timeout: 5000 });
    assert.equal(await c2.call('py', 'echo', ['after']), 'after');
  } finally {
    await c2.close();
  }
});

test('a subscription resumes after a cut: every frame once, the first after it with its gap', { skip }, async () => {
  const py = await client.rpc('py');
  await py.call('create', ['resume', 100]);
  const c2 = await connect(proxyUrl, { name: 'js-resume' });
  try {
    const gaps = [];
    c2.on('gap', (g) => gaps.push(g));
    const sub = await c2.subscribe('resume', { policy: 'block', size: 1000 });
    const it = sub[Symbol.asyncIterator]();
    await py.call('send', ['resume', [0, 1, 2]]);
    for (let i = 0; i < 3; i++) assert.equal((await it.next()).value.data, i);
    assert.equal(sub.position.seq, 3);
    await py.call('cut');
    await py.call('send', ['resume', [3, 4, 5]]);
    const got = [];
    for (let i = 0; i < 3; i++) got.push((await it.next()).value);
    assert.deepStrictEqual(got.map((m) => [m.seq, m.data]), [[4, 3], [5, 4], [6, 5]]);
    assert.equal(got[0].gap.kind, 'resumed');
    assert.equal(got[0].gap.lost, 0);
    assert.equal(got[1].gap, null);
    assert.equal(gaps.length, 1);
    assert.equal(gaps[0].channel, 'resume');
  } finally {
    c2.close();
  }
});

test('a slow reader cut again and again holds one window and loses nothing', { skip }, async () => {
  // Its application takes one message between cuts. Resumed with a whole fresh window on top
  // of what it held, it held a window more after each cut: what it holds counts now (`held`).
  const py = await client.rpc('py');
  await py.call('create', ['slow', 0]);
  const c2 = await connect(proxyUrl, { name: 'js-slow', reconnectDelay: 50 });
  const window = 8;
  try {
    const sub = await c2.subscribe('slow', { policy: 'block', size: 1000, window });
    const it = sub[Symbol.asyncIterator]();
    const values = Array.from({ length: 60 }, (_, i) => i);
    await py.call('send', ['slow', values]);
    const got = [];
    for (let cut = 0; cut < 4; cut++) {
      // (less than the window while what it took waits for a quarter's credit)
      await until(() => sub.received - got.length >= window - window / 4, 5000, 'a window');
      await py.call('cut');
      await until(() => c2.state !== 'open', 5000, 'the cut seen');
      got.push((await it.next()).value); // taken while the client is away
      await until(() => c2.state === 'open' && sub.id !== null, 5000, 'resumed');
      await client.channels(); // (a round trip elsewhere: what the new window sends arrives)
      await new Promise((r) => setTimeout(r, 100));
      assert.ok(sub.received - got.length <= window, `${sub.received - got.length} held`);
    }
    while (got.length < values.length) got.push((await it.next()).value);
    assert.deepStrictEqual(got.map((m) => m.data), values);
  } finally {
    c2.close();
  }
});

test('a block reader cut without history loses nothing: the server kept its subscription', { skip }, async () => {
  const py = await client.rpc('py');
  await py.call('create', ['kept', 0]);
  const c2 = await connect(proxyUrl, { name: 'js-kept', reconnectDelay: 500 }); // back after the sends
  try {
    const sub = await c2.subscribe('kept', { policy: 'block', size: 1000 });
    const it = sub[Symbol.asyncIterator]();
    assert.deepStrictEqual(await py.call('send', ['kept', [0, 1, 2]]), [true, true, true]);
    for (let i = 0; i < 3; i++) assert.equal((await it.next()).value.data, i);
    await py.call('cut');
    // No history: the values reach the subscription the server keeps for the reader.
    const taken = await py.call('send', ['kept', [3, 4, 5]]);
    assert.deepStrictEqual(taken, [true, true, true], 'its writer never saw it go');
    const got = [];
    for (let i = 0; i < 3; i++) got.push((await it.next()).value);
    assert.deepStrictEqual(got.map((m) => [m.seq, m.data]), [[4, 3], [5, 4], [6, 5]]);
    assert.equal(got[0].gap.kind, 'resumed');
    assert.equal(got[0].gap.lost, 0);
    assert.equal(got[0].gap.recovered, 3);
  } finally {
    c2.close();
  }
});

test('a block reader closed while its client reconnects does not hold the channel for the grace period', { skip }, async () => {
  const py = await client.rpc('py');
  await py.call('create', ['given_up', 0]);
  const c2 = await connect(proxyUrl, { name: 'js-given-up', reconnectDelay: 100 });
  try {
    const sub = await c2.subscribe('given_up', { policy: 'block', size: 1000 });
    await py.call('refuse'); // c2 stays away until accept
    await py.call('cut');
    const wait = async (ok, what) => {
      for (const t0 = Date.now(); !(await ok());) {
        assert.ok(Date.now() - t0 < 4000, `timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    await wait(() => c2.state !== 'open', 'the cut');
    await sub.close(); // offline: the server keeps it for a resume (resume_grace_s, 10 s)
    const reopened = new Promise((resolve) => c2.on('open', resolve));
    await py.call('accept');
    await reopened;
    // `restored` tells the server nothing more comes back: its kept subscription ends now.
    await wait(async () => (await py.call('send', ['given_up', [1]]))[0] === false, 'no reader left');
  } finally {
    c2.close();
  }
});

test('a resume after a lost notice continues after the dropped frames, not from the last one read', { skip }, async () => {
  const py = await client.rpc('py');
  await py.call('create', ['noticeresume', 100]); // the history holds the dropped frames too
  const c2 = await connect(proxyUrl, { name: 'js-notice-resume' });
  try {
    const sub = await c2.subscribe('noticeresume', { policy: 'drop_newest', size: 1, window: 1 });
    const it = sub[Symbol.asyncIterator]();
    assert.equal(await py.call('burst', ['noticeresume', 50]), 50);
    await new Promise((r) => setTimeout(r, 200));
    const seen = [];
    let pending = it.next(); // a next() that loses the race below still takes the next message
    for (;;) {
      const next = await Promise.race([pending, new Promise((r) => setTimeout(() => r(null), 300))]);
      if (!next) break;
      seen.push(next.value);
      pending = it.next();
    }
    assert.ok(seen.length < 50, `received ${seen.length}`);
    assert.equal(seen.length + sub.lost, 50, 'every frame was either delivered or counted lost');
    assert.equal(sub.position.seq, 50, 'the notice moved the position past the dropped frames');
    const lostBefore = sub.lost;
    await py.call('cut');
    await py.call('send', ['noticeresume', [100]]); // one: the buffer holds one frame
    const { value: first } = await pending;
    // Resumed after seq 50: the frames counted lost are not replayed from the history.
    assert.deepStrictEqual([first.seq, first.data], [51, 100]);
    assert.equal(first.gap.kind, 'resumed');
    // As the README says of the trio client: the gap's lost is the message's, the frames
    // missed since the message before it, those the notice reported before the cut included.
    const noticed = lostBefore - seen.reduce((n, m) => n + m.lost, 0);
    assert.ok(noticed > 0, 'the writer stopped: the drops came in a lost notice');
    assert.equal(first.lost, noticed, 'the notice lands on the next message, across the cut');
    assert.equal(first.gap.lost, noticed);
    assert.ok(first.gap.recovered <= 1, 'seq 51 replayed (sent before the resubscribe) or live');
    assert.equal(sub.lost, lostBefore, 'nothing counted twice');
  } finally {
    c2.close();
  }
});

test('a publisher resumes after a cut: every frame once, in order', { skip, timeout: 60000 }, async () => {
  const py = await client.rpc('py');
  await py.call('create', ['pubresume', 0]);
  const sub = await client.subscribe('pubresume', { policy: 'block', size: 1000 }); // not cut
  const it = sub[Symbol.asyncIterator]();
  const c2 = await connect(proxyUrl, { name: 'js-pub-resume' });
  try {
    const pub = await c2.publisher('pubresume');
    await pub.waitForReaders({ timeout: 5000 });
    const sends = [];
    for (let i = 0; i < 200; i++) sends.push(pub.send(i));
    // Cut while those are on their way (some taken by the server, some not, acks in flight),
    // then send more before the client has noticed and while it reconnects.
    const cut = py.call('cut');
    for (let i = 200; i < 400; i++) sends.push(pub.send(i));
    await cut;
    for (let i = 400; i < 600; i++) sends.push(pub.send(i));
    assert.ok((await Promise.all(sends)).every((sent) => sent === true));
    await pub.send('end');
    const got = [];
    for (;;) {
      const { value } = await it.next();
      if (value.data === 'end') break;
      got.push(value.data);
    }
    assert.deepStrictEqual(got, Array.from({ length: 600 }, (_, i) => i), 'none lost, none twice');
    assert.equal(c2.state, 'open');
  } finally {
    c2.close();
    await sub.close();
  }
});

test('a publisher closed while its client reconnects delivers first, or says what it drops', { skip, timeout: 60000 }, async () => {
  const py = await client.rpc('py');
  await py.call('create', ['closing', 0]);
  const sub = await client.subscribe('closing', { policy: 'block', size: 1000 }); // not cut
  const it = sub[Symbol.asyncIterator]();
  const w = await connect(proxyUrl, { name: 'js-closing', reconnectDelay: 50, maxReconnectDelay: 200 });
  try {
    // The connection comes back within close()'s wait: the values go out first.
    let pub = await w.publisher('closing');
    await pub.waitForReaders({ timeout: 5000 });
    await py.call('refuse');
    await py.call('cut');
    while (w.state === 'open') await new Promise((r) => setTimeout(r, 10));
    const sent = [];
    for (let i = 0; i < 5; i++) sent.push(await pub.send(i));
    assert.deepStrictEqual(sent, Array(5).fill(true), 'taken while disconnected');
    const closing = pub.close();
    await new Promise((r) => setTimeout(r, 300));
    await py.call('accept');
    await closing;
    const got = [];
    for (let i = 0; i < 5; i++) got.push((await it.next()).value.data);
    assert.deepStrictEqual(got, [0, 1, 2, 3, 4]);
    // It stays down: close() gives up after its wait and says how many it drops.
    while (w.state !== 'open') await new Promise((r) => setTimeout(r, 10));
    pub = await w.publisher('closing');
    await pub.waitForReaders({ timeout: 5000 });
    await py.call('refuse');
    await py.call('cut');
    while (w.state === 'open') await new Promise((r) => setTimeout(r, 10));
    for (let i = 0; i < 3; i++) assert.equal(await pub.send(i), true);
    const started = Date.now();
    await assert.rejects(pub.close(), (e) => e instanceof ConnectionClosed && /^3 values sent to "closing" were not delivered/.test(e.message));
    assert.ok(Date.now() - started >= 9000, 'it waited for the connection first');
  } finally {
    await py.call('accept');
    w.close();
    await sub.close();
  }
});

// The hold tests' set-up: a writer through the proxy, with a reader (also through the proxy,
// without reconnecting) that the next cut takes away for good.
async function writerLosingItsReader(channel, maxReconnectDelay) {
  const w = await connect(proxyUrl, { name: `${channel}-writer`, reconnectDelay: 50, maxReconnectDelay });
  const gone = await connect(proxyUrl, { name: `${channel}-reader`, reconnect: false });
  await w.createChannel(channel);
  const pub = await w.publisher(channel);
  await gone.subscribe(channel, { policy: 'block', size: 100 });
  await pub.waitForReaders({ timeout: 5000 });
  const until = Date.now() + 15000;
  const waitFor = async (ok) => {
    while (!ok() && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
  };
  // A cut, noticed, and the publisher open again.
  const cutAndBack = async () => {
    await (await client.rpc('py')).call('cut');
    await waitFor(() => w.state !== 'open');
    await waitFor(() => w.state === 'open' && pub.id !== null);
  };
  return { w, gone, pub, waitFor, cutAndBack };
}

test('a publisher back before its readers holds what it sends until they come', { skip, timeout: 30000 }, async () => {
  const { w, gone, pub, cutAndBack } = await writerLosingItsReader('js/hold', 200);
  let sub = null;
  try {
    await cutAndBack(); // the writer comes back, its reader does not (yet)
    assert.equal(pub.id !== null, true, 'the publisher reopened');
    assert.equal(pub.readers, 0);
    const sent = [];
    for (let i = 0; i < 20; i++) sent.push(await pub.send(i));
    assert.deepStrictEqual(sent, Array(20).fill(true), 'held for the reader, not dropped');
    sub = await client.subscribe('js/hold', { policy: 'block', size: 100 }); // a reader is back
    const it = sub[Symbol.asyncIterator]();
    const got = [];
    for (let i = 0; i < 20; i++) got.push((await it.next()).value.data);
    assert.deepStrictEqual(got, Array.from({ length: 20 }, (_, i) => i));
  } finally {
    await sub?.close();
    gone.close();
    w.close();
  }
});

test('a hold outlives a second cut, and close() waits for the readers', { skip, timeout: 30000 }, async () => {
  const py = await client.rpc('py');
  const { w, gone, pub, waitFor, cutAndBack } = await writerLosingItsReader('js/hold2', 2000);
  let sub = null;
  try {
    await cutAndBack();
    assert.equal(pub.readers, 0);
    const sent = [];
    for (let i = 0; i < 10; i++) sent.push(await pub.send(i)); // held
    await py.call('cut'); // again, during the hold
    await waitFor(() => w.state !== 'open');
    for (let i = 10; i < 20; i++) sent.push(await pub.send(i)); // while disconnected
    await waitFor(() => w.state === 'open' && pub.id !== null);
    assert.deepStrictEqual(sent, Array(20).fill(true));
    let closed = false;
    const closing = pub.close().then(() => { closed = true; });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(closed, false, 'close() waits for the hold to end');
    sub = await client.subscribe('js/hold2', { policy: 'block', size: 100 });
    const it = sub[Symbol.asyncIterator]();
    const got = [];
    for (let i = 0; i < 20; i++) got.push((await it.next()).value.data);
    assert.deepStrictEqual(got, Array.from({ length: 20 }, (_, i) => i));
    await closing;
  } finally {
    await sub?.close();
    gone.close();
    w.close();
  }
});

test('a channel created with meta lists it', { skip }, async () => {
  const meta = { units: 'V', labels: ['x', 'y'], description: 'from the browser' };
  await client.createChannel('withmeta', { meta });
  try {
    const record = (await client.channels()).find((c) => c.name === 'withmeta');
    assert.deepStrictEqual(record.meta, meta);
  } finally {
    await client.deleteChannel('withmeta');
  }
});
