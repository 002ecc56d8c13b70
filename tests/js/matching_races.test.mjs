// subscribeMatching's bookkeeping under races, as the Python client's fixes (eda3e1e, 5d6d5b5 in
// trio_stream/_matching.py) have it: a subscribe on its way holds its maxChannels slot; a
// listing forgets only the skipped names stamped before it began (its answer may predate a
// channel skipped while it was on its way); a resubscription's backoff entry goes once no
// member of that name is left. Each race is held open by wrapping the reader's subscribe or
// channels (no timing). Against a real server (`python -m trio_stream serve`), the reader
// through a TCP proxy that cuts it where needed. Needs a WebSocket in Node (Node >= 22, or
// `node --experimental-websocket --test tests/js/`) and the Python with trio_stream.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ClusterUnavailable, connect, LimitExceeded } from '../../trio_stream/web/trio_stream.js';
import { freePort, killChildren, liveSetup, sleep, startServer, waitFor, within } from './python.mjs';
import { startTcpProxy } from './tcp_proxy.mjs';

const { python, skip } = liveSetup();

let server, port, proxy;
const opened = []; // clients a test opened: closed after it, whatever happened

before(async () => {
  if (skip) return;
  port = await freePort();
  server = await startServer(python, port, ['--name', 'matching-races', '--resume-grace', '5']);
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

function gate() {
  let open;
  const promise = new Promise((r) => { open = r; });
  return { promise, open };
}

test('a subscribe on its way holds its maxChannels slot: a channel announced meanwhile is skipped (maxChannels 1 '
  + 'holds), said in the singular, and takes the slot once the member leaves', { skip, timeout: 30000 }, async () => {
  const admin = await open('ov-admin');
  const reader = await open('ov-reader');
  const p = await reader.subscribeMatching('ov.*', { maxChannels: 1 });
  const warnings = [];
  p.on('warning', (message, channel) => warnings.push([channel, message]));
  // Every subscribe of the pattern is answered, then held until the gate opens.
  const hold = gate();
  const held = [];
  const subscribe = reader.subscribe.bind(reader);
  reader.subscribe = async (channel, o) => {
    const sub = await subscribe(channel, o);
    held.push(channel);
    await hold.promise;
    return sub;
  };
  try {
    await admin.createChannel('ov.a');
    await waitFor(() => held.length === 1, 5000, 'ov.a\'s subscribe held');
    await admin.createChannel('ov.b');
    // Its slot is ov.a's (on its way): skipped, not subscribed (a second member once overshot).
    await waitFor(() => warnings.length > 0 || held.length > 1, 5000, 'ov.b announced and handled');
    hold.open();
    await waitFor(() => p.channels.length > 0, 5000, 'ov.a to join');
    await sleep(300); // (a second subscribe, if one was made, lands)
    assert.deepEqual(held, ['ov.a'], 'ov.b was subscribed while ov.a\'s subscribe held the only slot');
    assert.deepEqual(p.channels, ['ov.a']);
    assert.deepEqual(warnings, [['ov.b', "pattern 'ov.*': channel 'ov.b' is not read: 1 channel is subscribed "
      + '(maxChannels): it is read once one of them ends; give subscribeMatching(pattern, { maxChannels: N }) a '
      + 'larger N to read more at once']]);
    // The slot frees as ov.a's member leaves: the skipped ov.b takes it.
    const pending = p.next(); // reads ov.a's end
    await admin.deleteChannel('ov.a');
    await within(pending, 5000, 'ov.a\'s end read').catch(() => {});
    await waitFor(() => p.channels.includes('ov.b'), 5000, 'ov.b to take the slot');
    assert.deepEqual(p.channels, ['ov.b']);
  } finally {
    hold.open();
    reader.subscribe = subscribe;
    await p.close();
  }
});

test('a channel skipped while a listing\'s answer is on its way (the answer predates it) is not forgotten by that '
  + 'listing: it takes the slot a member frees, with no listing', { skip, timeout: 30000 }, async () => {
  const admin = await open('ls-admin');
  const reader = await open('ls-reader', { reconnectDelay: 100, maxReconnectDelay: 300 }, proxy.url());
  await admin.createChannel('ls.a');
  const p = await reader.subscribeMatching('ls.*', { maxChannels: 1 });
  const warnings = [];
  p.on('warning', (message, channel) => warnings.push([channel, message]));
  // The listing after the reconnect: its answer (without ls.b) held until the gate opens.
  let hold = gate();
  let held = 0;
  let listed = 0;
  const channels = reader.channels.bind(reader);
  reader.channels = async (...args) => {
    const answer = await channels(...args);
    if (hold) {
      held++;
      await hold.promise;
    }
    listed++;
    return answer;
  };
  const pending = p.next(); // the member's end is read as it comes
  try {
    assert.deepEqual(p.channels, ['ls.a']);
    proxy.cut();
    await waitFor(() => held === 1, 10000, 'the listing after the reconnect, held');
    await waitFor(() => reader.state === 'open' && reader.subscriptions.every((s) => s.id !== null), 10000,
      'the subscriptions resumed');
    await admin.createChannel('ls.b'); // announced: skipped (the slot is ls.a's)
    await waitFor(() => warnings.some(([channel]) => channel === 'ls.b'), 5000, 'ls.b skipped');
    const { open: release } = hold;
    hold = null;
    release();
    await waitFor(() => listed === 1, 5000, 'the listing answered');
    await sleep(200); // (the listing's end: its subscribes, none here)
    assert.equal(p._sizes.skipped, 1, 'the listing forgot ls.b, which its answer predates');
    const listings = listed;
    await admin.deleteChannel('ls.a'); // its member leaves: ls.b takes the slot
    await within(pending, 5000, 'ls.a\'s end read').catch(() => {});
    await waitFor(() => p.channels.includes('ls.b'), 5000, 'ls.b to take ls.a\'s slot');
    assert.deepEqual(p.channels, ['ls.b']);
    assert.equal(listed, listings, 'taken without a listing');
  } finally {
    hold?.open();
    reader.channels = channels;
    await p.close();
  }
});

test('a resubscription\'s backoff entry goes once no member of that name is left (here: its subscribe refused)',
  { skip, timeout: 30000 }, async () => {
    const admin = await open('ag-admin');
    const reader = await open('ag-reader');
    await admin.createChannel('ag.a');
    const p = await reader.subscribeMatching('ag.*');
    const warnings = [];
    p.on('warning', (message, channel) => warnings.push([channel, message]));
    const subscribe = reader.subscribe.bind(reader);
    try {
      // Subscribed again once its end is read: refused (as by a server limit).
      reader.subscribe = async () => { throw new LimitExceeded('refused by the test'); };
      await admin.deleteChannel('ag.a');
      await sleep(300); // its 'deleted' comes before its end is read (which drops nothing yet)
      const pending = p.next(); // reads the end: the member leaves, and is subscribed again
      await waitFor(() => warnings.some(([channel]) => channel === 'ag.a'), 5000, 'the resubscribe refused');
      await sleep(100);
      assert.equal(p._sizes.active, 0);
      assert.equal(p._sizes.again, 0, `the backoff entry of a name with no member was kept (${JSON.stringify(p._sizes)})`);
      void pending;
    } finally {
      reader.subscribe = subscribe;
      await p.close();
    }
  });

test('a slot held for a subscribe that does not land (its channel deleted meanwhile) goes to the channel skipped '
  + 'for it, at once, with no listing', { skip, timeout: 30000 }, async () => {
  const admin = await open('fa-admin');
  const reader = await open('fa-reader');
  const p = await reader.subscribeMatching('fa.*', { maxChannels: 1 });
  const warnings = [];
  p.on('warning', (message, channel) => warnings.push([channel, message]));
  // Every subscribe of the pattern waits for the gate before it is sent.
  const hold = gate();
  const asked = [];
  const subscribe = reader.subscribe.bind(reader);
  reader.subscribe = async (channel, o) => {
    asked.push(channel);
    await hold.promise;
    return subscribe(channel, o);
  };
  let listed = 0;
  const channels = reader.channels.bind(reader);
  reader.channels = async (...args) => {
    listed++;
    return channels(...args);
  };
  try {
    await admin.createChannel('fa.a');
    await waitFor(() => asked.length === 1, 5000, 'fa.a\'s subscribe held');
    await admin.createChannel('fa.b'); // announced while fa.a holds the only slot: skipped
    await waitFor(() => warnings.some(([channel]) => channel === 'fa.b'), 5000, 'fa.b skipped');
    await admin.deleteChannel('fa.a'); // fa.a's subscribe will find no channel
    hold.open();
    await waitFor(() => p.channels.includes('fa.b'), 5000, 'fa.b to take the slot fa.a\'s subscribe held');
    assert.deepEqual(p.channels, ['fa.b']);
    assert.equal(listed, 0, 'taken without a listing');
  } finally {
    hold.open();
    reader.subscribe = subscribe;
    reader.channels = channels;
    await p.close();
  }
});

test('while subscribes fail for a passing reason (a cluster\'s Redis away), a slot given back is not filled again at '
  + 'once, over and over: the listing with its backoff covers it', { skip, timeout: 30000 }, async () => {
  const admin = await open('fl-admin');
  const reader = await open('fl-reader');
  const p = await reader.subscribeMatching('fl.*', { maxChannels: 1 });
  const warnings = [];
  p.on('warning', (message, channel) => warnings.push(channel));
  const hold = gate();
  const calls = [];
  const subscribe = reader.subscribe.bind(reader);
  const channels = reader.channels.bind(reader);
  reader.subscribe = async (channel) => {
    calls.push(channel);
    if (calls.length === 1) await hold.promise; // fl.a's subscribe holds the only slot
    await sleep(0); // (an answer comes as a macrotask, as from the network)
    throw new ClusterUnavailable('Redis away (the test)');
  };
  reader.channels = async () => {
    await sleep(0);
    throw new ClusterUnavailable('Redis away (the test)');
  };
  try {
    await admin.createChannel('fl.a');
    await waitFor(() => calls.length === 1, 5000, 'fl.a\'s subscribe held');
    await admin.createChannel('fl.b');
    await admin.createChannel('fl.c');
    await waitFor(() => warnings.includes('fl.b') && warnings.includes('fl.c'), 5000, 'fl.b and fl.c skipped');
    hold.open(); // fl.a's subscribe fails: a passing failure
    await sleep(1000);
    assert.ok(calls.length <= 3, `subscribed ${calls.length} times in a second: ${calls.slice(0, 10)}...`);
  } finally {
    hold.open();
    reader.subscribe = subscribe;
    reader.channels = channels;
    await p.close();
  }
});
