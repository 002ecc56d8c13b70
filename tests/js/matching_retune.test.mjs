// PatternSubscription.retune (the Python client's PatternSubscription.retune, trio_stream/_matching.py)
// against a real server (`python -m trio_stream serve`): what each member's subscription is on
// the server is read from its client listing (`clients()`: policy, size, every, max_rate per
// subscription). Needs a WebSocket in Node (Node >= 22, or `node --experimental-websocket
// --test tests/js/`) and the Python with trio_stream.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, InvalidArgument } from '../../trio_stream/web/trio_stream.js';
import { freePort, killChildren, liveSetup, startServer, waitFor, within } from './python.mjs';
import { startTcpProxy } from './tcp_proxy.mjs';

const { python, skip } = liveSetup();

let port, proxy;
const opened = []; // clients a test opened: closed after it, whatever happened

before(async () => {
  if (skip) return;
  port = await freePort();
  await startServer(python, port, ['--name', 'matching-retune']);
  proxy = await startTcpProxy(port);
});

after(async () => {
  for (const c of opened) await c.close().catch(() => {});
  await proxy?.close();
  await killChildren();
});

async function open(name, options = {}, url = `ws://127.0.0.1:${port}/ws`) {
  const c = await connect(url, { name: `${name}-${process.pid}`, ...options });
  opened.push(c);
  return c;
}

/** `reader`'s subscriptions to channels named `prefix...`, as the server lists them: name -> [policy, size, every, max_rate]. */
async function onServer(admin, reader, prefix) {
  const me = (await admin.clients()).find((record) => record.id === reader.clientId);
  assert.ok(me, `client ${reader.clientId} in the server's listing`);
  const subs = me.subscriptions.filter((s) => s.channel.startsWith(prefix));
  assert.equal(new Set(subs.map((s) => s.channel)).size, subs.length, `one subscription per channel: ${JSON.stringify(subs)}`);
  return Object.fromEntries(subs.map((s) => [s.channel, [s.policy, s.size, s.every, s.max_rate]]).sort());
}

/** Until the server lists `reader`'s `prefix...` subscriptions as `expected` (name -> tuning). */
async function untilOnServer(admin, reader, prefix, expected, what) {
  let seen = null;
  const deadline = Date.now() + 10000;
  for (;;) {
    seen = await onServer(admin, reader, prefix);
    try {
      assert.deepEqual(seen, expected);
      return;
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`timed out: ${what}: ${e.message}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

const each = (names, tuning) => Object.fromEntries(names.map((name) => [name, tuning]));

/** Count `reader`'s retune requests: {asked, inFlight, most, restore()}. */
function countRetunes(reader) {
  const request = reader.request.bind(reader);
  const counts = { asked: 0, inFlight: 0, most: 0, restore: () => { reader.request = request; } };
  reader.request = (op, fields, o) => {
    if (op !== 'retune') return request(op, fields, o);
    counts.asked++;
    counts.most = Math.max(counts.most, ++counts.inFlight);
    return request(op, fields, o).finally(() => { counts.inFlight--; });
  };
  return counts;
}

test('retune changes every member\'s subscription on the server, a bounded number at a time; an ended member is '
  + 'passed over; a channel created afterwards joins with the new options', { skip, timeout: 90000 }, async () => {
  const admin = await open('rt-admin');
  const reader = await open('rt-reader');
  const names = Array.from({ length: 40 }, (_, i) => `rt.${String(i).padStart(2, '0')}`);
  for (const name of names) await admin.createChannel(name);
  const p = await reader.subscribeMatching('rt.*', { policy: 'block', size: 50 });
  try {
    assert.deepEqual(p.channels, names);
    await untilOnServer(admin, reader, 'rt.', each(names, ['block', 50, 1, null]), 'the members as subscribed');

    // One ended (its end not read yet: still a member): passed over, not asked for.
    const gone = reader.subscriptions.find((s) => s.channel === 'rt.39');
    await admin.deleteChannel('rt.39');
    await waitFor(() => gone.ended, 5000, 'rt.39\'s member to end');
    const live = names.slice(0, 39);

    const counts = countRetunes(reader);
    try {
      await within(p.retune({ policy: 'drop_oldest', size: 3, every: 2, maxRate: 50 }), 30000, 'the retune');
    } finally {
      counts.restore();
    }
    assert.equal(counts.asked, 39, 'one request per live member');
    assert.ok(counts.most <= 32 && counts.most > 1, `requests at once: ${counts.most}`);
    // Resolved: every member changed on the server already.
    assert.deepEqual(await onServer(admin, reader, 'rt.'), each(live, ['drop_oldest', 3, 2, 50]));

    // A channel created afterwards is subscribed with the new options.
    await admin.createChannel('rt.new');
    await waitFor(() => p.channels.includes('rt.new'), 5000, 'rt.new to join');
    assert.deepEqual((await onServer(admin, reader, 'rt.new')), { 'rt.new': ['drop_oldest', 3, 2, 50] });

    // Options left out stay; maxRate: null removes the limit; a policy alone keeps the size.
    await within(p.retune({ maxRate: null, policy: 'drop_newest' }), 30000, 'the second retune');
    assert.deepEqual(await onServer(admin, reader, 'rt.'), each([...live, 'rt.new'], ['drop_newest', 3, 2, null]));
    await admin.createChannel('rt.newer');
    await waitFor(() => p.channels.includes('rt.newer'), 5000, 'rt.newer to join');
    assert.deepEqual((await onServer(admin, reader, 'rt.newer')), { 'rt.newer': ['drop_newest', 3, 2, null] });
  } finally {
    await p.close();
  }
});

test('a channel being subscribed while a retune runs is retuned as it joins', { skip, timeout: 30000 }, async () => {
  const admin = await open('rw-admin');
  const reader = await open('rw-reader');
  await admin.createChannel('rw.a');
  const p = await reader.subscribeMatching('rw.*', { size: 10 });
  const subscribe = reader.subscribe.bind(reader);
  let release;
  const gate = new Promise((r) => { release = r; });
  let held = 0;
  // rw.late's subscribe (with the options before the retune) is held until the retune is done.
  reader.subscribe = async (channel, o) => {
    if (channel === 'rw.late') {
      held++;
      await gate;
    }
    return subscribe(channel, o);
  };
  try {
    await admin.createChannel('rw.late');
    await waitFor(() => held === 1, 5000, 'rw.late\'s subscribe to be asked for');
    await within(p.retune({ policy: 'drop_newest', size: 4 }), 10000, 'the retune');
    assert.deepEqual(await onServer(admin, reader, 'rw.'), { 'rw.a': ['drop_newest', 4, 1, null] });
    release();
    await waitFor(() => p.channels.includes('rw.late'), 5000, 'rw.late to join');
    assert.deepEqual(await onServer(admin, reader, 'rw.'),
      { 'rw.a': ['drop_newest', 4, 1, null], 'rw.late': ['drop_newest', 4, 1, null] });
  } finally {
    reader.subscribe = subscribe;
    release();
    await p.close();
  }
});

test('members waiting to resume after a cut take the new options without a request, and come back retuned '
  + '(their frames resumed); one whose resubscribe was on its way is retuned once it is answered',
{ skip, timeout: 60000 }, async () => {
  const admin = await open('rr-admin');
  const reader = await open('rr-reader', { reconnectDelay: 100, maxReconnectDelay: 300 }, proxy.url());
  await admin.createChannel('rr.a');
  await admin.createChannel('rr.b');
  const p = await reader.subscribeMatching('rr.*', { policy: 'drop_oldest', size: 20 });
  try {
    const pub = await admin.publisher('rr.a');
    await within(pub.waitForReaders(), 5000, 'rr.a\'s member as a reader');
    await pub.send(0);
    assert.equal((await within(p.next(), 5000, 'before the cut')).value.data, 0);

    // Away: the retune resolves at once, no request sent; the members resume with the options.
    proxy.refuse();
    proxy.cut();
    await waitFor(() => reader.state !== 'open', 5000, 'the reader to notice the cut');
    const counts = countRetunes(reader);
    await within(p.retune({ policy: 'drop_newest', size: 5, maxRate: 100 }), 5000, 'the retune while away');
    assert.equal(counts.asked, 0);
    counts.restore();
    for (let i = 1; i <= 3; i++) await pub.send(i);
    proxy.accept();
    await waitFor(() => reader.state === 'open', 10000, 'the reader back');
    await untilOnServer(admin, reader, 'rr.', each(['rr.a', 'rr.b'], ['drop_newest', 5, 1, 100]), 'resumed, retuned');
    const resumed = [];
    for (let i = 1; i <= 3; i++) resumed.push((await within(p.next(), 5000, `value ${i} after the cut`)).value);
    assert.deepEqual(resumed.map((m) => m.data), [1, 2, 3]);
    assert.deepEqual(resumed[0].gap && [resumed[0].gap.kind, resumed[0].gap.lost], ['resumed', 0]);

    // Again, the resubscribes held on their way (asked with the options before): retuned once
    // they are answered.
    const request = reader.request.bind(reader);
    let release;
    const gate = new Promise((r) => { release = r; });
    let held = 0;
    reader.request = async (op, fields, o) => {
      if (op === 'subscribe' && String(fields?.channel).startsWith('rr.')) {
        held++;
        await gate;
      }
      return request(op, fields, o);
    };
    try {
      proxy.refuse();
      proxy.cut();
      await waitFor(() => reader.state !== 'open', 5000, 'the reader to notice the second cut');
      proxy.accept();
      await waitFor(() => held === 2, 10000, 'both resubscribes asked for (held)');
      await within(p.retune({ size: 7, every: 3 }), 5000, 'the retune while they are on their way');
      release();
      await untilOnServer(admin, reader, 'rr.', each(['rr.a', 'rr.b'], ['drop_newest', 7, 3, 100]),
        'resumed with the options before, then retuned');
    } finally {
      reader.request = request;
      release();
    }
  } finally {
    proxy.accept();
    await p.close();
  }
});

test('bad options are refused as sub.retune refuses them, before anything changes; a policy alone keeps the size; '
  + 'a closed pattern subscription refuses', { skip, timeout: 30000 }, async () => {
  const admin = await open('ri-admin');
  const reader = await open('ri-reader');
  await admin.createChannel('ri.a');
  await admin.createChannel('ri-plain');
  const plain = await reader.subscribe('ri-plain'); // what sub.retune says of each
  const p = await reader.subscribeMatching('ri.*', { size: 10, max_rate: 20 });
  const counts = countRetunes(reader);
  try {
    const bad = [{ policy: 'newest' }, { size: 0 }, { size: 2.5 }, { size: '3' }, { every: 0 }, { every: '2' },
      { maxRate: -1 }, { maxRate: Infinity }, { max_rate: 'x' }, { blockTimeout: 0 }, { block_timeout: -1 },
      { policy: 'block', size: -3 }];
    for (const o of bad) {
      const expected = await plain.retune(o).then(() => null, (e) => e);
      assert.ok(expected instanceof Error, `sub.retune refuses ${JSON.stringify(o)}`);
      await assert.rejects(p.retune(o), (e) => e.constructor === expected.constructor && e.message === expected.message,
        `${JSON.stringify(o)}: ${expected.constructor.name}: ${expected.message}`);
    }
    await assert.rejects(p.retune({ window: 4 }), (e) => e instanceof TypeError
      && e.message === "retune takes policy, size, every, maxRate, blockTimeout, not 'window' (the others are fixed when "
        + 'a channel is subscribed)');
    await assert.rejects(p.retune(null), TypeError);
    assert.equal(counts.asked, 0, 'no request');
    assert.deepEqual(await onServer(admin, reader, 'ri.'), { 'ri.a': ['drop_oldest', 10, 1, 20] });
    await admin.createChannel('ri.b'); // joins with the options as they were
    await waitFor(() => p.channels.includes('ri.b'), 5000, 'ri.b to join');
    assert.deepEqual(await onServer(admin, reader, 'ri.'),
      { 'ri.a': ['drop_oldest', 10, 1, 20], 'ri.b': ['drop_oldest', 10, 1, 20] });

    // max_rate given as the pattern was subscribed: maxRate: null removes it (the alias too).
    await p.retune({ maxRate: null });
    assert.deepEqual(await onServer(admin, reader, 'ri.'),
      { 'ri.a': ['drop_oldest', 10, 1, null], 'ri.b': ['drop_oldest', 10, 1, null] });
    await admin.createChannel('ri.c');
    await waitFor(() => p.channels.includes('ri.c'), 5000, 'ri.c to join');
    assert.deepEqual((await onServer(admin, reader, 'ri.c')), { 'ri.c': ['drop_oldest', 10, 1, null] });
  } finally {
    counts.restore();
    await p.close();
  }
  await assert.rejects(p.retune({ size: 3 }), (e) => e instanceof InvalidArgument
    && e.message === 'this pattern subscription has ended (this pattern subscription was closed)');

  // Leaving 'unbounded': a policy alone takes the size the channels were subscribed with (100,
  // subscribe's default); with none (size: null), it needs one, and nothing changes.
  await admin.createChannel('ru.a');
  const q = await reader.subscribeMatching('ru.*', { policy: 'unbounded' });
  const r = await reader.subscribeMatching('ru.*', { policy: 'unbounded', size: null });
  // (Two pattern subscriptions: two members of ru.a.)
  const tunings = async () => {
    const me = (await admin.clients()).find((record) => record.id === reader.clientId);
    return me.subscriptions.filter((s) => s.channel === 'ru.a').map((s) => [s.policy, s.size]).sort();
  };
  try {
    assert.deepEqual(await tunings(), [['unbounded', null], ['unbounded', null]]);
    await q.retune({ policy: 'block' });
    await assert.rejects(r.retune({ policy: 'drop_oldest' }), (e) => e instanceof InvalidArgument
      && e.message === "policy 'drop_oldest' needs size >= 1 (frames)");
    assert.deepEqual(await tunings(), [['block', 100], ['unbounded', null]]);
    await r.retune({ policy: 'drop_oldest', size: 8 });
    assert.deepEqual(await tunings(), [['block', 100], ['drop_oldest', 8]]);
  } finally {
    await q.close();
    await r.close();
  }
});
