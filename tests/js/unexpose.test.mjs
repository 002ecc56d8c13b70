// client.unexpose(target): the browser client withdraws methods it exposed (Client.expose,
// protocol.md 6), against a real server (tests/js/rpc_provider_server.py), called by the
// Python client "py-caller" (which reports what Python got) and by a JS client. Needs a
// WebSocket in Node (Node >= 22, or `node --experimental-websocket --test tests/js/`) and the
// Python with trio_stream and numpy; skipped otherwise.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client, connect, InvalidArgument, RpcError, RpcTimeout } from '../../trio_stream/web/trio_stream.js';
import {
  liveSetup, sleep, startRpcProviderServer, stopRpcProviderServer, waitFor, within,
} from './python.mjs';

const { python, skip } = liveSetup('trio_stream, numpy');

let server, url, proxyUrl, caller;
const opened = []; // clients a test opened: closed after it, whatever happened

before(async () => {
  if (skip) return;
  ({ server, url, proxyUrl } = await startRpcProviderServer(python));
  caller = await connect(url, { name: 'js-unexpose-caller' });
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

/** What the Python client got calling `provider.method(*args)` (rpc_provider_server.py). */
function fromPython(provider, method, args = [], { timeout = 5 } = {}) {
  return caller.call('py-caller', 'call_page', [provider, method, args, null, timeout], {}, { timeout: 20000 });
}

/**
 * The methods the server lists for the client `name` (its `clients` record), once they are
 * `expected` (within 5 s): the page's `expose` and this caller's `clients` request go on two
 * connections, in no order between them.
 */
async function listed(name, expected) {
  const deadline = Date.now() + 5000;
  for (;;) {
    const methods = (await caller.clients()).find((c) => c.name === name)?.methods;
    if (JSON.stringify(methods) === JSON.stringify(expected) || Date.now() > deadline) return methods;
    await sleep(50);
  }
}

function gate() {
  let open;
  const promise = new Promise((r) => { open = r; });
  return { promise, open };
}

test('unexpose by method name, by the name exposed under, by the object: a Python caller is refused '
  + 'the removed methods as ones never exposed, the kept ones still answer', { skip, timeout: 30000 }, async () => {
  const p = await page('js-unexpose');
  const tools = { a: () => 'A', b: (x) => `B${x}` };
  const motor = { move: (x) => `moved ${x}`, stop: () => 'stopped' };
  assert.deepEqual(p.expose(tools), ['a', 'b']);
  assert.deepEqual(p.expose(motor, { name: 'motor' }), ['motor.move', 'motor.stop']);
  assert.deepEqual(p.expose({ spin: () => 'spun' }, { name: 'motor.x' }), ['motor.x.spin']);
  assert.equal((await fromPython('js-unexpose', 'a')).value, 'A');

  // A method's name.
  assert.deepEqual(p.unexpose('a'), ['a']);
  let got = await fromPython('js-unexpose', 'a');
  assert.equal(got.error, 'RpcError', JSON.stringify(got));
  assert.equal(got.message, "'js-unexpose' exposes no method 'a' (it has: b, motor.move, motor.stop, motor.x.spin)");
  assert.ok(got.elapsed < 1.5, `refused after ${got.elapsed} s`); // at once, not a timeout
  assert.equal((await fromPython('js-unexpose', 'b', [1])).value, 'B1');
  // The server's list is replaced at once: what `clients` shows.
  const left = ['b', 'motor.move', 'motor.stop', 'motor.x.spin'];
  assert.deepEqual(await listed('js-unexpose', left), left);

  // The name it was exposed under: the methods right under it, not those of 'motor.x'.
  assert.deepEqual(p.unexpose('motor'), ['motor.move', 'motor.stop']);
  got = await fromPython('js-unexpose', 'motor.move', [3]);
  assert.equal(got.error, 'RpcError', JSON.stringify(got));
  assert.equal(got.message, "'js-unexpose' exposes no method 'motor.move' (it has: b, motor.x.spin)");
  assert.equal((await fromPython('js-unexpose', 'motor.x.spin')).value, 'spun');
  // A JS caller alike.
  await assert.rejects(caller.call('js-unexpose', 'motor.stop', [], {}, { timeout: 3000 }),
    (e) => e instanceof RpcError && !(e instanceof RpcTimeout) && /exposes no method 'motor.stop'/.test(e.message));

  // The object, by identity: every name it was exposed under.
  p.expose(motor, { name: 'motor' });
  p.expose(motor, { name: 'arm' });
  assert.deepEqual(p.exposed, ['arm.move', 'arm.stop', 'b', 'motor.move', 'motor.stop', 'motor.x.spin']);
  assert.deepEqual(p.unexpose(motor), ['arm.move', 'arm.stop', 'motor.move', 'motor.stop']);
  assert.deepEqual(p.exposed, ['b', 'motor.x.spin']);
  assert.deepEqual(await listed('js-unexpose', ['b', 'motor.x.spin']), ['b', 'motor.x.spin']);
  assert.equal((await fromPython('js-unexpose', 'b', [2])).value, 'B2');

  // Refused: what is not exposed (the message lists what is), a copy of an exposed object,
  // anything that is neither an object nor a string.
  assert.throws(() => p.unexpose('a'), (e) => e instanceof InvalidArgument && e.message
    === "no method and no name 'a' is exposed: unexpose takes an exposed object, a method's name or the name it was "
      + 'exposed under (exposed now: b, motor.x.spin)');
  assert.throws(() => p.unexpose(motor), (e) => e instanceof InvalidArgument && /^this object is not exposed: /.test(e.message));
  assert.throws(() => p.unexpose({ ...tools }), InvalidArgument);
  assert.throws(() => p.unexpose(null), TypeError);
  assert.throws(() => p.unexpose(7), TypeError);
  assert.deepEqual(p.exposed, ['b', 'motor.x.spin']); // nothing changed by a refusal

  // The last ones: an empty list goes to the server, and callers hear it exposes nothing.
  assert.deepEqual(p.unexpose(tools), ['b']);
  assert.deepEqual(p.unexpose('motor.x'), ['motor.x.spin']);
  assert.deepEqual(p.exposed, []);
  assert.deepEqual(await listed('js-unexpose', []), []);
  got = await fromPython('js-unexpose', 'b', [3]);
  assert.equal(got.message, "'js-unexpose' exposes no method 'b' (it has: none)");
  const described = await caller.call('py-caller', 'describe', ['js-unexpose', 3], {}, { timeout: 20000 });
  assert.equal(described.error, 'RpcError', JSON.stringify(described));
  assert.match(described.message, /'js-unexpose' exposes no methods/);

  // Exposed again later: callable again.
  p.expose(tools);
  assert.equal((await fromPython('js-unexpose', 'a')).value, 'A');
});

test('calls already running when their method is withdrawn finish and are answered, streams too', { skip, timeout: 30000 }, async () => {
  const p = await page('js-unexpose-running');
  const slowGate = gate();
  const streamGate = gate();
  let slowStarted = false;
  let streamStarted = false;
  p.expose({
    async slow() {
      slowStarted = true;
      await slowGate.promise;
      return 'done';
    },
    async *values() {
      streamStarted = true;
      yield 1;
      await streamGate.promise;
      yield 2;
      yield 3;
    },
  });
  const call = fromPython('js-unexpose-running', 'slow', [], { timeout: 10 });
  const stream = caller.call('py-caller', 'stream_page', ['js-unexpose-running', 'values', []], {}, { timeout: 20000 });
  await waitFor(() => slowStarted && streamStarted, 5000, 'both calls to start');
  assert.deepEqual(p.unexpose('slow'), ['slow']);
  assert.deepEqual(p.unexpose('values'), ['values']);
  // A new call is refused meanwhile...
  const refused = await fromPython('js-unexpose-running', 'slow');
  assert.equal(refused.message, "'js-unexpose-running' exposes no method 'slow' (it has: none)");
  // ...and the running ones finish.
  slowGate.open();
  streamGate.open();
  const got = await within(call, 10000, 'the running call');
  assert.deepEqual([got.value, got.error], ['done', undefined], JSON.stringify(got));
  const streamed = await within(stream, 10000, 'the running stream');
  assert.deepEqual(streamed.value, [1, 2, 3], JSON.stringify(streamed));
});

test('withdrawn methods do not come back after a reconnect, also one withdrawn while reconnecting', { skip, timeout: 30000 }, async () => {
  const p = await page('js-unexpose-reconnect', { viaProxy: true, reconnectDelay: 200, maxReconnectDelay: 400 });
  p.expose({ keep: () => 'kept', drop: () => 'dropped', later: () => 'later' });
  assert.deepEqual(p.unexpose('drop'), ['drop']);
  let withdrawn = null;
  const off = p.on('state', (state) => {
    if (state === 'reconnecting' && withdrawn === null) withdrawn = p.unexpose('later'); // nothing to send it on
  });
  const opened = new Promise((resolve) => { p.on('open', ({ reconnected }) => { if (reconnected) resolve(); }); });
  await caller.call('py-caller', 'cut', [], {}, { timeout: 5000 });
  await within(opened, 10000, 'the page to reconnect');
  off();
  assert.deepEqual(withdrawn, ['later']);
  assert.deepEqual(p.exposed, ['keep']);
  assert.deepEqual(await listed('js-unexpose-reconnect', ['keep']), ['keep']);
  for (const method of ['drop', 'later']) {
    const got = await fromPython('js-unexpose-reconnect', method);
    assert.equal(got.message, `'js-unexpose-reconnect' exposes no method '${method}' (it has: keep)`);
  }
  assert.equal((await fromPython('js-unexpose-reconnect', 'keep')).value, 'kept');
});

test('a key with dots exposed without a name is withdrawn by the part before its last dot, as in Python '
  + '(its rule: the method\'s name up to the last dot)', () => {
  // Never connected: expose and unexpose only keep the list (the welcome would send it).
  const page = new Client('ws://127.0.0.1:1/ws', { WebSocket: class {} });
  const f = () => 1;
  assert.deepEqual(page.expose({ 'stage.move': f, 'stage.stop': f, 'stage.x.spin': f, read: f }),
    ['read', 'stage.move', 'stage.stop', 'stage.x.spin']);
  assert.deepEqual(page.unexpose('stage'), ['stage.move', 'stage.stop']); // 'stage.x.spin' is under 'stage.x'
  assert.deepEqual(page.exposed, ['read', 'stage.x.spin']);
  assert.deepEqual(page.unexpose('stage.x'), ['stage.x.spin']);
  // Under a name too: the name, and the part before the key's last dot, each withdraw it.
  page.expose({ 'arm.move': f, stop: f }, { name: 'bot' });
  assert.deepEqual(page.exposed, ['bot.arm.move', 'bot.stop', 'read']);
  assert.deepEqual(page.unexpose('bot.arm'), ['bot.arm.move']);
  page.expose({ 'arm.move': f }, { name: 'bot2' });
  assert.deepEqual(page.unexpose('bot2'), ['bot2.arm.move']);
  // An empty name is no name: nothing is withdrawn by it (Python's message: what to pass).
  assert.throws(() => page.unexpose(''), (e) => e instanceof InvalidArgument
    && e.message === "unexpose('') names nothing: pass the exposed object, a method's full name ('read', "
      + "'stage.move') or the name it was exposed under ('stage') (exposed now: bot.stop, read)");
  assert.deepEqual(page.exposed, ['bot.stop', 'read']);
});

test('a name that is both a method\'s full name and the name an object was exposed under is refused, naming both '
  + 'meanings, and withdraws nothing (as Python\'s _named); the object withdraws its own', () => {
  const page = new Client('ws://127.0.0.1:1/ws', { WebSocket: class {} });
  class Inner { constructor() { this.y = () => 2; this.z = () => 3; } }
  const stage = { x: () => 1 };
  const inner = new Inner();
  page.expose(stage, { name: 'stage' }); // 'stage.x'
  page.expose(inner, { name: 'stage.x' }); // 'stage.x.y', 'stage.x.z'
  assert.throws(() => page.unexpose('stage.x'), (e) => e instanceof InvalidArgument
    && e.message === "'stage.x' names both a method (of Object) and the name methods of Inner were exposed under "
      + '(stage.x.y, stage.x.z): pass the object to withdraw instead, unexpose(obj)');
  assert.deepEqual(page.exposed, ['stage.x', 'stage.x.y', 'stage.x.z']);
  // Unambiguous names and the objects still withdraw.
  assert.deepEqual(page.unexpose('stage.x.y'), ['stage.x.y']);
  assert.deepEqual(page.unexpose(stage), ['stage.x']);
  assert.deepEqual(page.unexpose('stage.x'), ['stage.x.z']); // (now only a name)
  assert.deepEqual(page.exposed, []);
});
