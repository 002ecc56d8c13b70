// The browser client as an RPC *provider* (Client.expose, protocol.md 6) against a real server
// (tests/js/rpc_provider_server.py), called by the Python client "py-caller" (which reports
// what Python got) and by other JS clients. Needs a WebSocket in Node: Node >= 22, or Node 20
// with --experimental-websocket (`node --experimental-websocket --test tests/js/`). Skipped
// otherwise, or without Python.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  connect, createClient, ConnectionClosed, InvalidArgument, NDArray, RemoteError, RpcError, RpcTimeout,
} from '../../trio_stream/web/trio_stream.js';
import {
  liveSetup, sleep, startRpcProviderServer, stopRpcProviderServer, waitFor, within,
} from './python.mjs';

const { python, skip } = liveSetup('trio_stream, numpy');

let server, url, proxyUrl, caller;
const opened = []; // clients a test opened: closed after it, whatever happened

before(async () => {
  if (skip) return;
  ({ server, url, proxyUrl } = await startRpcProviderServer(python));
  caller = await connect(url, { name: 'js-caller' });
});

after(async () => {
  for (const c of opened) await c.close();
  await caller?.close();
  await stopRpcProviderServer(server);
});

async function page(name, options = {}) {
  const c = await connect(options.viaProxy ? proxyUrl : url, { name, ...options });
  opened.push(c);
  return c;
}

/** What the Python client got calling `provider.method(*args, **kwargs)` (rpc_provider_server.py). */
function fromPython(provider, method, args = [], { kwargs = null, timeout = 5 } = {}) {
  return caller.call('py-caller', 'call_page', [provider, method, args, kwargs, timeout], {}, { timeout: 20000 });
}

function deferred() {
  let resolve;
  const promise = new Promise((r) => { resolve = r; });
  return { promise, resolve };
}

test('a page that exposes nothing answers a call at once with the refusal, not a timeout', { skip }, async () => {
  await page('js-plain');
  // Python: as a Python client that exposes nothing answers (protocol.md 6: invoke -> refuse).
  const got = await fromPython('js-plain', 'hello', [], { timeout: 3 });
  assert.equal(got.error, 'RpcError', JSON.stringify(got));
  assert.equal(got.message, "'js-plain' exposes no method 'hello' (it has: none)");
  assert.ok(got.elapsed < 1.5, `answered after ${got.elapsed} s`);
  // introspect -> methods []: the caller's rpc() says it exposes none, at once
  const described = await caller.call('py-caller', 'describe', ['js-plain', 3], {}, { timeout: 20000 });
  assert.equal(described.error, 'RpcError', JSON.stringify(described));
  assert.match(described.message, /'js-plain' exposes no methods/);
  assert.ok(described.elapsed < 1.5, `described after ${described.elapsed} s`);
  // and a JS caller alike
  const started = Date.now();
  const error = await caller.call('js-plain', 'hello', [], {}, { timeout: 3000 }).catch((e) => e);
  assert.ok(error instanceof RpcError && !(error instanceof RpcTimeout), String(error));
  assert.equal(error.message, "'js-plain' exposes no method 'hello' (it has: none)");
  await assert.rejects(caller.rpc('js-plain', { timeout: 3000 }), (e) => e instanceof RpcError && !(e instanceof RpcTimeout));
  assert.ok(Date.now() - started < 1500, `JS caller answered after ${Date.now() - started} ms`);
});

class MotorFault extends Error {
  name = 'MotorFault';
}

test('a Python client calls JS-exposed methods: sync, async, numpy arrays, options', { skip }, async () => {
  const p = await page('js-page');
  const received = {};
  const names = p.expose({
    hello: (who) => `hello ${who}`,
    async add(a, b) {
      await sleep(5);
      return a + b;
    },
    nothing() {},
    scale(vector, matrix) {
      received.vector = vector;
      received.matrix = matrix;
      return [vector.map((x) => x * 2), new NDArray(matrix.shape, matrix.data.map((x) => x + 1))];
    },
    whoCalls: (options) => ({ caller: options.caller, method: options.method, signal: options.signal instanceof AbortSignal }),
    notAFunction: 42,
  });
  assert.deepEqual(names, ['add', 'hello', 'nothing', 'scale', 'whoCalls']);
  assert.deepEqual(p.exposed, names);

  assert.deepEqual(await fromPython('js-page', 'hello', ['py']).then((r) => [r.value, r.python_type]), ['hello py', 'str']);
  assert.deepEqual(await fromPython('js-page', 'add', [2, 3]).then((r) => r.value), 5);
  assert.equal((await fromPython('js-page', 'nothing')).python_type, 'NoneType');
  const who = await fromPython('js-page', 'whoCalls');
  assert.deepEqual(who.value, { caller: 'py-caller', method: 'whoCalls', signal: true });

  const arrays = await caller.call('py-caller', 'call_array', ['js-page', 'scale'], {}, { timeout: 20000 });
  assert.ok(!arrays.error, JSON.stringify(arrays));
  assert.ok(received.vector instanceof Float64Array);
  assert.ok(received.matrix instanceof NDArray);
  assert.deepEqual(received.matrix.shape, [2, 3]);
  assert.ok(received.matrix.data instanceof Int32Array);
  assert.deepEqual(arrays.parts, [
    { dtype: '<f8', shape: [3], values: [3, -4, 6.5] },
    { dtype: '<i4', shape: [2, 3], values: [[1, 2, 3], [4, 5, 6]] },
  ]);

  // A Python proxy: described as JS methods are (positional arguments, any number).
  const described = await caller.call('py-caller', 'describe', ['js-page'], {}, { timeout: 20000 });
  assert.deepEqual(Object.keys(described.value).sort(), names);
  assert.equal(described.value.add, '<remote method js-page.add(*args)>');
  const viaProxy = await caller.call('py-caller', 'proxy_call', ['js-page', 'add', [1, 2]], {}, { timeout: 20000 });
  assert.equal(viaProxy.value, 3);
});

test('what a JS method throws arrives as RemoteError with its name, message and stack; unknown methods are refused at once', { skip }, async () => {
  const p = await page('js-errors');
  p.expose({
    fail() { throw new RangeError('too far'); },
    async stall() {
      await sleep(5);
      throw new MotorFault('stalled at 3 mm');
    },
    huge: () => new Uint8Array(2 * 1024 * 1024), // over the server's 1 MiB frames
    one: () => 1,
    // An error that cannot even be described (its name getter throws): answered all the
    // same (Node died of the unhandled rejection; a browser left the caller to its timeout).
    odd() {
      const error = new Error('odd');
      Object.defineProperty(error, 'name', { get() { throw new Error('no name'); } });
      throw error;
    },
  });
  const fail = await fromPython('js-errors', 'fail');
  assert.equal(fail.error, 'RemoteError', JSON.stringify(fail));
  assert.equal(fail.type_name, 'RangeError');
  assert.equal(fail.remote_message, 'too far');
  assert.match(fail.remote_traceback, /RangeError: too far\n\s+at .*fail .*rpc_provider\.test\.mjs/);
  const stall = await fromPython('js-errors', 'stall');
  assert.deepEqual([stall.error, stall.type_name, stall.remote_message], ['RemoteError', 'MotorFault', 'stalled at 3 mm']);
  assert.match(stall.remote_traceback, /stall/);

  const huge = await fromPython('js-errors', 'huge');
  assert.deepEqual([huge.error, huge.type_name], ['RemoteError', 'FrameTooLarge'], JSON.stringify(huge));
  assert.match(huge.remote_message, /the result of huge encodes to \d+ bytes, over the \d+ that fit a call \(the server's max_frame_bytes, \d+, less 1024 for the call's envelope\)/);

  const unknown = await fromPython('js-errors', 'nope', [], { timeout: 3 });
  assert.equal(unknown.error, 'RpcError');
  assert.equal(unknown.message, "'js-errors' exposes no method 'nope' (it has: fail, huge, odd, one, stall)");
  assert.ok(unknown.elapsed < 1.5, `answered after ${unknown.elapsed} s`);
  const odd = await fromPython('js-errors', 'odd', [], { timeout: 3 });
  assert.equal(odd.error, 'RemoteError', JSON.stringify(odd));
  assert.ok(odd.elapsed < 1.5, `answered after ${odd.elapsed} s`);
  const keywords = await fromPython('js-errors', 'one', [], { kwargs: { x: 1 } });
  assert.equal(keywords.error, 'RpcError');
  assert.match(keywords.message, /one is a JavaScript method: it takes positional arguments only, not keyword arguments \('x'\)/);

  // a JS caller gets them the same way
  const error = await caller.call('js-errors', 'stall').catch((e) => e);
  assert.ok(error instanceof RemoteError, String(error));
  assert.equal(error.typeName, 'MotorFault');
  assert.equal(error.remoteMessage, 'stalled at 3 mm');
  assert.equal(await caller.call('js-errors', 'one'), 1); // the page serves on
});

test("a caller's cancel reaches the method's AbortSignal; the page serves on", { skip }, async () => {
  const p = await page('js-slow');
  const aborted = deferred();
  let finished = false;
  p.expose({
    slow(ms, { signal }) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => { finished = true; resolve('done'); }, ms);
        signal.addEventListener('abort', () => {
          clearTimeout(timer);
          aborted.resolve(signal.reason);
          reject(signal.reason);
        });
      });
    },
    hang: () => new Promise(() => {}), // never settles: nobody waits for it once cancelled
    quick: () => 'quick',
  });
  const got = await fromPython('js-slow', 'slow', [10000], { timeout: 0.5 });
  assert.equal(got.error, 'RpcTimeout', JSON.stringify(got));
  const reason = await within(aborted.promise, 3000, "the method's signal to abort");
  assert.equal(reason.name, 'AbortError');
  assert.equal(finished, false);
  assert.equal((await fromPython('js-slow', 'hang', [], { timeout: 0.3 })).error, 'RpcTimeout');
  assert.equal((await fromPython('js-slow', 'quick')).value, 'quick');
  // a JS caller's timeout cancels too
  const again = deferred();
  p.expose({ slow(ms, { signal }) { signal.addEventListener('abort', () => again.resolve(signal.reason)); return new Promise(() => {}); } },
    { name: 'again' });
  await assert.rejects(caller.call('js-slow', 'again.slow', [1], {}, { timeout: 300 }), RpcTimeout);
  assert.equal((await within(again.promise, 3000, 'the second signal')).name, 'AbortError');
});

test('a JS generator streams its values to Python and JS callers; leaving early closes it', { skip }, async () => {
  const p = await page('js-stream');
  const state = { closed: 0 };
  p.expose({
    async *count(n) {
      for (let i = 0; i < n; i++) yield i * 0.5;
    },
    *forever() {
      try {
        for (let i = 0; ; i++) yield i;
      } finally {
        state.closed++;
      }
    },
    plain: () => 1,
  });
  const all = await caller.call('py-caller', 'stream_page', ['js-stream', 'count', [5]], {}, { timeout: 20000 });
  assert.deepEqual(all.value, [0, 0.5, 1, 1.5, 2]);
  const some = await caller.call('py-caller', 'stream_page', ['js-stream', 'forever', [], 3], {}, { timeout: 20000 });
  assert.deepEqual(some.value, [0, 1, 2]);
  await waitFor(() => state.closed === 1, 3000, "the generator's finally after the Python caller left");
  const values = [];
  for await (const v of caller.stream('js-stream', 'forever', [], {}, { window: 4 })) {
    values.push(v);
    if (values.length === 10) break;
  }
  assert.deepEqual(values, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  await waitFor(() => state.closed === 2, 3000, "the generator's finally after the JS caller left");
  // a plain method iterated, a generator called: refused, as the Python provider does
  const proxy = await caller.rpc('js-stream');
  assert.equal(proxy.byName.get('count').stream, true);
  await assert.rejects(caller.call('js-stream', 'count', [1]), /count streams its values/);
  await assert.rejects(async () => { for await (const v of caller.stream('js-stream', 'plain')) void v; }, /plain returns one result/);
});

test('JS callers call a JS page: client.call and a proxy', { skip }, async () => {
  const p = await page('js-peer');
  p.expose({ mul: (a, b) => a * b, echo: (x) => x }, { name: 'math' });
  assert.equal(await caller.call('js-peer', 'math.mul', [6, 7]), 42);
  const proxy = await caller.rpc('js-peer');
  assert.deepEqual(proxy.methods.map((m) => m.name).sort(), ['math.echo', 'math.mul']);
  assert.deepEqual(await proxy.call('math.echo', [new Float32Array([1, 2])]), new Float32Array([1, 2]));
  assert.deepEqual((await caller.clients()).find((c) => c.name === 'js-peer').methods, ['math.echo', 'math.mul']);
});

test('expose refuses what it cannot expose, before anything is sent', { skip }, async () => {
  const p = await page('js-checks');
  assert.throws(() => p.expose({ x: 1 }), InvalidArgument);
  assert.throws(() => p.expose(new (class Dev { read() {} })()), /methods of a class live on its prototype/);
  assert.throws(() => p.expose({ f() {} }, { name: 'not a name' }), InvalidArgument);
  assert.throws(() => p.expose({ [`m${'x'.repeat(200)}`]: () => 0 }), InvalidArgument);
  assert.throws(() => p.expose(null), TypeError);
  const first = { f: () => 1 };
  p.expose(first);
  p.expose(first); // the same object again: harmless
  assert.throws(() => p.expose({ f: () => 2 }), /a method 'f' is exposed already/);
  assert.deepEqual(p.expose({ f: () => 2 }, { name: 'other' }), ['other.f']);
  await p.close();
  assert.throws(() => p.expose({ g: () => 1 }), ConnectionClosed);
});

test('after a reconnect the methods are exposed again; a call cut by the loss aborts its signal', { skip, timeout: 30000 }, async () => {
  const p = createClient(proxyUrl, { name: 'js-cut', reconnectDelay: 50, maxReconnectDelay: 200 });
  opened.push(p);
  const aborted = deferred();
  const started = deferred(); // the call has reached the page (a fixed sleep assumed it)
  p.expose({
    ping: () => 'pong',
    wait(ms, { signal }) {
      signal.addEventListener('abort', () => aborted.resolve(signal.reason));
      started.resolve();
      return sleep(ms);
    },
  });
  await p.ready({ timeout: 5000 });
  // (the expose went out with the welcome, on another connection than the listing's request)
  const listed = async (what) => {
    const deadline = Date.now() + 5000;
    let methods;
    while (Date.now() < deadline) {
      methods = (await caller.clients()).find((c) => c.name === 'js-cut')?.methods;
      if (methods?.length === 2) return methods;
      await sleep(50);
    }
    assert.fail(`${what}: the methods listed are ${JSON.stringify(methods)}`);
  };
  assert.deepEqual(await listed('first connection'), ['ping', 'wait']);
  const reopened = new Promise((resolve) => p.on('open', (info) => info.reconnected && resolve()));
  const inFlight = fromPython('js-cut', 'wait', [20000], { timeout: 10 });
  await within(started.promise, 5000, 'the call reaching the page');
  await caller.call('py-caller', 'cut');
  const reason = await within(aborted.promise, 5000, 'the signal of the call the cut lost');
  assert.ok(reason instanceof ConnectionClosed, String(reason));
  const lost = await inFlight;
  assert.equal(lost.error, 'RpcError', JSON.stringify(lost));
  await within(reopened, 10000, 'the reconnection');
  assert.deepEqual(await listed('after the reconnect'), ['ping', 'wait']);
  assert.equal((await fromPython('js-cut', 'ping')).value, 'pong');
});
