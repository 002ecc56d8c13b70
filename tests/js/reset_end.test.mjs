// A subscription the server ends with `again` (docs/protocol.md 8, "Reset ends": a cluster's
// Redis restarted empty, a channel created anew on another node) reads on in the channel's
// new life: it subscribes again since its position without resume_sub, retried while the
// channel is missing, at most RESET_BACK_MS (30 s), and its first message of the new life has
// a reset gap. Against the in-process fake server; cluster_reset.test.mjs does it for real.

import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { connect, ChannelNotFound } from '../../trio_stream/web/trio_stream.js';
import { FakeServer, controlFrame, until, tick } from './fake_server.mjs';
import { reconnectTally, tallyNote } from '../../trio_stream/web/panels.js';

const URL = 'ws://fake/ws';
const fast = { reconnectDelay: 5, maxReconnectDelay: 20 };
const REASON = "channel 'c' was lost in Redis (a restart without persistence) and is registered again: "
  + 'frames sent meanwhile may be missing; subscribe again';
const GONE = "channel 'c' is gone from Redis (deleted, created anew, or lost in a Redis restart): subscribe again";

async function setup() {
  const server = new FakeServer();
  server.epochs = true;
  const client = await connect(URL, { WebSocket: server.WebSocket, name: 'test', ...fast });
  return { server, client };
}

/**
 * The server ends every subscription to `name` as a node does at a reset (after what it
 * holds for them): `sub_end` with `fields`; with `again`, the channel's old life ends, and
 * its new one (a new epoch) is there unless `missing`.
 */
function endAll(server, name, fields, { missing = false } = {}) {
  const ch = server.channel(name);
  for (const sub of [...ch.subs]) {
    sub.conn.subs.delete(sub.id);
    ch.subs.delete(sub);
    sub.conn.send(controlFrame({ op: 'sub_end', sub: sub.id, ...fields }));
  }
  if (fields.again) {
    server.channels.delete(name);
    if (!missing) server.channel(name); // registered again: a new epoch, seq from 1
  }
}

const subscribes = (server) => server.controls('subscribe');

test('a reset end (again): subscribed again since the position, no resume_sub, read on with a reset gap', async () => {
  const { server, client } = await setup();
  try {
    server.channel('c');
    const sub = await client.subscribe('c', { size: 10 });
    const events = [];
    sub.on('end', (r) => events.push(['end', r]));
    sub.on('gap', (gap) => events.push(['gap', gap.kind]));
    server.inject('c', 'a');
    server.inject('c', 'b');
    assert.equal((await sub.next()).value.data, 'a');
    const old = sub.position;
    await until(() => old.seq === 2 || sub.position.seq === 2, 2000, 'b received');
    const epoch = sub.position.epoch;
    endAll(server, 'c', { reason: REASON, again: true });
    await until(() => subscribes(server).length === 2, 2000, 'subscribed again');
    const again = subscribes(server)[1];
    assert.equal(again.since_epoch, epoch);
    assert.equal(again.since_seq, 2, 'after the newest frame received (b, not yet taken)');
    assert.equal('resume_sub' in again, false, 'the old life is not named');
    assert.equal(sub.ended, false);
    await until(() => server.channel('c').subs.size === 1, 2000, 'attached to the new life');
    server.inject('c', 'new');
    // The message received before the end is still there, then the new life's, with its gap.
    assert.equal((await sub.next()).value.data, 'b');
    const first = (await sub.next()).value;
    assert.equal(first.data, 'new');
    assert.equal(first.seq, 1);
    assert.equal(first.gap.kind, 'reset');
    assert.equal(first.gap.lost, null);
    assert.equal(first.gap.reconnection, undefined, 'no reconnection: the channel reset');
    assert.equal(first.gap.resetEnd.reason, REASON);
    assert.equal(typeof first.gap.resetEnd.at, 'number');
    assert.notEqual(sub.position.epoch, epoch);
    assert.equal(sub.resetEnd, null, 'no longer waiting');
    server.inject('c', 'next');
    const next = (await sub.next()).value;
    assert.deepStrictEqual([next.data, next.seq, next.gap], ['next', 2, null]);
    assert.deepStrictEqual(events, [['gap', 'reset']], 'no end');
    // The dashboard's info line tells it from a reconnection.
    assert.match(tallyNote(reconnectTally(first.gap, 0)), /^channel reset .*: reset \(its cluster's Redis restarted empty/);
  } finally {
    await client.close();
  }
});

test('a reset end waits for a channel not registered again yet, then reads on', async () => {
  const { server, client } = await setup();
  try {
    server.channel('c');
    const sub = await client.subscribe('c', { size: 10 });
    const waiting = [];
    sub.on('waiting', (why, error) => waiting.push(error));
    server.inject('c', 'a');
    assert.equal((await sub.next()).value.data, 'a');
    endAll(server, 'c', { reason: GONE, again: true }, { missing: true });
    await until(() => subscribes(server).length >= 4, 3000, 'asked again, with its backoff');
    assert.equal(sub.ended, false);
    assert.equal(sub.resetEnd.reason, GONE);
    assert.equal(waiting.length, 1);
    assert.ok(waiting[0] instanceof ChannelNotFound);
    assert.ok(subscribes(server).slice(1).every((m) => !('resume_sub' in m) && m.since_seq === 1));
    server.channel('c'); // its node registered it again
    await until(() => server.channel('c').subs.size === 1, 3000, 'attached to the new life');
    server.inject('c', 'new');
    const first = (await sub.next()).value;
    assert.deepStrictEqual([first.data, first.gap.kind, first.gap.resetEnd.reason], ['new', 'reset', GONE]);
  } finally {
    await client.close();
  }
});

test('a reset end rides through a reconnect while it waits: still no resume_sub', async () => {
  const { server, client } = await setup();
  try {
    server.channel('c');
    const sub = await client.subscribe('c', { size: 10 });
    server.inject('c', 'a');
    assert.equal((await sub.next()).value.data, 'a');
    // A reconnect first: the subscription is named by the resume (resume_sub), as ever.
    await server.goDown(client);
    server.refuse = false;
    await until(() => client.state === 'open' && server.channel('c').subs.size === 1, 2000, 'resumed');
    assert.ok('resume_sub' in subscribes(server)[1]);
    endAll(server, 'c', { reason: GONE, again: true }, { missing: true });
    await until(() => subscribes(server).length >= 3, 2000, 'asked again');
    await server.goDown(client);
    server.channel('c');
    server.refuse = false;
    await until(() => server.channel('c').subs.size === 1, 3000, 'attached to the new life');
    assert.ok(subscribes(server).slice(2).every((m) => !('resume_sub' in m)), 'never the old life named');
    server.inject('c', 'new');
    const first = (await sub.next()).value;
    assert.deepStrictEqual([first.data, first.gap.kind, first.gap.resetEnd.reason], ['new', 'reset', GONE]);
  } finally {
    await client.close();
  }
});

test('after a ride through a reset end, a delete (no again) still ends it at once, and so does an error end', async () => {
  const { server, client } = await setup();
  try {
    server.channel('c');
    const sub = await client.subscribe('c', { size: 10 });
    endAll(server, 'c', { reason: REASON, again: true });
    await until(() => server.channel('c').subs.size === 1, 2000, 'attached to the new life');
    server.inject('c', 'kept');
    await until(() => sub.position.seq === 1, 2000, 'received');
    const asked = subscribes(server).length;
    endAll(server, 'c', { reason: "channel 'c' was deleted" });
    await until(() => sub.ended, 2000, 'ended');
    assert.equal(sub.endReason, "channel 'c' was deleted");
    const kept = (await sub.next()).value;
    assert.deepStrictEqual([kept.data, kept.gap.kind], ['kept', 'reset'], 'still readable');
    assert.equal((await sub.next()).done, true);

    server.channel('d');
    const failed = await client.subscribe('d', { size: 10 });
    for (const s of server.channel('d').subs) {
      s.conn.send(controlFrame({ op: 'sub_end', sub: s.id, reason: 'over the bound', error: 'LimitExceeded', again: true }));
    }
    await until(() => failed.ended, 2000, 'ended');
    await assert.rejects(failed.next(), /over the bound/);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(subscribes(server).length, asked + 1, 'neither subscribed again');
  } finally {
    await client.close();
  }
});

test('a reset end whose channel never comes back ends after 30 s with the server\'s reason', async () => {
  const { server, client } = await setup();
  try {
    server.channel('c');
    const sub = await client.subscribe('c', { size: 10 });
    const ends = [];
    sub.on('end', (r) => ends.push(r));
    server.inject('c', 'kept');
    await until(() => sub.position.seq === 1, 2000, 'received');
    // Only the clock the bound reads is moved: the retries run on real timers (1 s apart at most).
    mock.timers.enable({ apis: ['Date'], now: Date.now() });
    try {
      endAll(server, 'c', { reason: GONE, again: true }, { missing: true });
      const polls = async (n, cond) => { for (let i = 0; i < n && !cond(); i++) await new Promise((r) => setTimeout(r, 10)); };
      await polls(100, () => subscribes(server).length >= 3);
      assert.ok(subscribes(server).length >= 3, 'asked again');
      mock.timers.tick(29000);
      await polls(150, () => sub.ended);
      assert.equal(sub.ended, false, 'waits up to 30 s');
      mock.timers.tick(1100);
      await polls(200, () => sub.ended);
    } finally {
      mock.timers.reset();
    }
    assert.equal(sub.ended, true);
    assert.equal(sub.endReason, GONE);
    assert.deepStrictEqual(ends, [GONE]);
    assert.equal(sub.error, null);
    assert.equal((await sub.next()).value.data, 'kept', 'what came before the end is still readable');
    assert.equal((await sub.next()).done, true);
  } finally {
    await client.close();
  }
});

test('closed while it waits for the new life: nothing subscribes again', async () => {
  const { server, client } = await setup();
  try {
    server.channel('c');
    const sub = await client.subscribe('c', { size: 10 });
    endAll(server, 'c', { reason: GONE, again: true }, { missing: true });
    await until(() => subscribes(server).length >= 2, 2000, 'asked again');
    await sub.close();
    const asked = subscribes(server).length;
    server.channel('c');
    await new Promise((r) => setTimeout(r, 1200));
    await tick();
    assert.equal(subscribes(server).length, asked);
    assert.equal(server.channel('c').subs.size, 0);
    assert.equal(sub.endReason, 'closed');
  } finally {
    await client.close();
  }
});
