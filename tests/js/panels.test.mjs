// The image panel's server-side view: which steps a frame's shape gets, and how it is said.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  imageView, viewText, subscriptionOptions, firstSubscriptionOptions, frameBytesFromRates, MAX_IMAGE_SIDE_PX, IMAGE_BYTES_PER_S, PANEL_DEPTH_S,
  reconnectTally, tallyFrame, tallyNote, usualGap, quietFor, payloadBytes, channelCount, SYSTEM_CHANNELS,
} from '../../trio_stream/web/panels.js';
import { NDArray } from '../../trio_stream/web/cbor.js';

test('a frame within the side gets no view', () => {
  assert.equal(imageView([MAX_IMAGE_SIDE_PX, 300]), null);
  assert.equal(imageView([48, 64, 3]), null);
});

test('a large frame gets step ceil(dim / side) per dimension, colour planes whole', () => {
  assert.deepEqual(imageView([2048, 2048]), [[null, null, 4], [null, null, 4]]);
  assert.deepEqual(imageView([3000, 4000, 3]), [[null, null, 6], [null, null, 8], [null, null, 1]]);
  assert.deepEqual(imageView([1, 1025, 600]), [[null, null, 1], [null, null, 3], [null, null, 2]]);
  for (const shape of [[513, 513], [2049, 100], [4096, 3072]]) {
    const steps = imageView(shape).map((s) => s[2]);
    shape.forEach((d, i) => assert.ok(Math.ceil(d / steps[i]) <= MAX_IMAGE_SIDE_PX));
  }
});

test('the info line says which pixels the server keeps', () => {
  assert.equal(viewText(imageView([2048, 2048])), 'every 4th pixel');
  assert.equal(viewText(imageView([1024, 1024])), 'every 2nd pixel');
  assert.equal(viewText(imageView([1536, 1024, 3])), 'every 3rd × 2nd × 1st element');
});

test('a panel subscribes deep enough for half a second of its rate, not one frame', () => {
  // size 1 made the credit window one frame: a page busy for two intervals lost frames
  assert.deepEqual(subscriptionOptions(30), { policy: 'drop_oldest', size: 15, maxRate: 30 });
  assert.equal(subscriptionOptions(10).size, 5);
  assert.equal(subscriptionOptions(5).size, 3);
  assert.equal(subscriptionOptions(1).size, 2);
});

test('an image panel buffers at most half a second of its byte budget', () => {
  const small = subscriptionOptions(30, 64 * 1024); // 2 MiB/s: its rate decides
  assert.deepEqual(small, { policy: 'drop_oldest', size: 15, maxRate: 30 });
  const big = subscriptionOptions(30, 2 * 2 ** 20); // 4 Hz of it fit the budget
  assert.equal(big.maxRate, 4);
  assert.equal(big.size, 2);
  assert.ok(big.size * 2 * 2 ** 20 <= IMAGE_BYTES_PER_S * PANEL_DEPTH_S);
  const huge = subscriptionOptions(10, 16 * 2 ** 20); // one frame is more than the budget
  assert.deepEqual(huge, { policy: 'drop_oldest', size: 1, maxRate: 0.5 });
});

test("before its first frame a panel sizes by the channel's rates", () => {
  // a camera of 8 MiB frames at 30 Hz: 240 MiB/s in the channel table
  const camera = { rate_fps: 30, rate_bps: 30 * 8 * 2 ** 20 };
  assert.equal(frameBytesFromRates(camera), 8 * 2 ** 20);
  assert.deepEqual(subscriptionOptions(30, frameBytesFromRates(camera)), { policy: 'drop_oldest', size: 1, maxRate: 1 });
  // nothing flows (or a row without rates): unknown, and the rate alone decides
  for (const idle of [{ rate_fps: 0, rate_bps: 0 }, {}, { rate_fps: 5, rate_bps: null }, { rate_fps: 'x', rate_bps: 9 }]) {
    assert.equal(frameBytesFromRates(idle), null, JSON.stringify(idle));
  }
  assert.equal(frameBytesFromRates({ rate_fps: 3, rate_bps: 100 }), 34); // rounded up
});

test('after a reconnection the info line counts what the frames the server held carried', () => {
  const at = new Date(2026, 0, 2, 13, 4, 5, 6).getTime() / 1000;
  // A kept subscription: the frame in flight comes again (nothing lost before it), then the
  // buffered one with the 246 its size-1 buffer dropped while the page was away.
  const tally = reconnectTally({ kind: 'resumed', lost: 0, recovered: 2 }, at);
  assert.equal(tallyNote(tally), 'reconnected 13:04:05.006: gap −0');
  tallyFrame(tally, { lost: 246 });
  assert.equal(tallyNote(tally), 'reconnected 13:04:05.006: gap −246');
  tallyFrame(tally, { lost: 3 }); // live again: a later loss is the plot's, not the outage's
  assert.equal(tallyNote(tally), 'reconnected 13:04:05.006: gap −246');
  // Nothing held: the first frame's gap is all of it.
  const fresh = reconnectTally({ kind: 'resumed', lost: 7, recovered: 0 }, at);
  tallyFrame(fresh, { lost: 1 });
  assert.equal(tallyNote(fresh), 'reconnected 13:04:05.006: gap −7');
  const reset = reconnectTally({ kind: 'reset', lost: null, recovered: 3, reconnection: { at, sameServer: false } }, at);
  tallyFrame(reset, { lost: 2 });
  assert.match(tallyNote(reset), /: reset \(frames the old server held are lost, count unknown\)$/);
});

test("after a reconnection the info line says when the page reconnected, not when a frame came", () => {
  const reconnectedAt = new Date(2026, 0, 2, 17, 17, 20, 0).getTime() / 1000;
  const frameAt = reconnectedAt + 84.904; // its writer came back long after
  const reconnection = { at: reconnectedAt, sameServer: null };
  const tally = reconnectTally({ kind: 'reset', lost: null, recovered: 1, reconnection }, frameAt);
  assert.match(tallyNote(tally), /^reconnected 17:17:20\.000: reset \(the server restarted, or the channel was created again/);
  // The resubscriptions tell which later (the client settles the reconnection in place):
  // the note follows on the panel's next frame.
  reconnection.sameServer = true;
  assert.match(tallyNote(tally), /^reconnected 17:17:20\.000: reset \(the channel was deleted and created again meanwhile, on the same server/);
  // A gap with no reconnection of the client's (a resume `since`): the frame's time.
  assert.match(tallyNote(reconnectTally({ kind: 'resumed', lost: 2, recovered: 0 }, frameAt)), /^reconnected 17:18:44\.904: gap −2$/);
});

test('a panel on a channel of unknown frame size first asks for one frame', () => {
  // nobody reads the channel, so the table has no rates: one frame, at the panel's rate
  assert.deepEqual(firstSubscriptionOptions(30, null), { policy: 'drop_oldest', size: 1, maxRate: 30 });
  // known: what the panel keeps once tuned
  assert.deepEqual(firstSubscriptionOptions(30, 8), subscriptionOptions(30, 8));
  assert.deepEqual(firstSubscriptionOptions(30, 8 * 2 ** 20), { policy: 'drop_oldest', size: 1, maxRate: 1 });
});

test('a panel whose frames stopped says for how long, once that is far past their usual interval', () => {
  // A hung 100 Hz instrument's panel showed its last value in full colour, as if steady.
  let typical = 0, at = 0;
  for (let k = 0; k < 50; k++) { const now = 1_000_000 + 10 * k; if (at) typical = usualGap(typical, now - at); at = now; }
  assert.ok(Math.abs(typical - 10) < 1e-9, typical);
  assert.equal(quietFor(at, typical, at + 2_999), '', 'at least 3 s');
  assert.equal(quietFor(at, typical, at + 15_000), '15s');
  // One long pause moves the usual interval by little: the next stop is still told at once.
  typical = usualGap(typical, 8_000);
  assert.ok(typical < 14, typical);
  // A slow writer (every 10 s) is quiet only after five of its intervals.
  assert.equal(quietFor(at, 10_000, at + 40_000), '');
  assert.equal(quietFor(at, 10_000, at + 50_000), '50s');
  assert.equal(quietFor(at, 0, at + 60_000), '', 'one frame: no interval known yet (a setpoint)');
  assert.equal(quietFor(0, 0, 60_000), '', 'nothing came yet');
});

test("any frame tells a panel the channel's frame size, roughly its bytes on the wire", () => {
  // A scalar's or a dict's was never kept: after a restart such a panel asked one frame.
  assert.equal(payloadBytes(21.5), 9);
  assert.equal(payloadBytes('ok'), 3);
  assert.equal(payloadBytes(new Float32Array(256)), 1025);
  assert.equal(payloadBytes(new NDArray([16, 16], new Uint16Array(256))), 513 + 18);
  const dict = payloadBytes({ connections: 2, memory_bytes: 5.6e8 });
  assert.ok(dict > 18 && dict < 64, dict);
  assert.deepEqual(subscriptionOptions(10, payloadBytes({ a: 1 })), subscriptionOptions(10));
  assert.ok(payloadBytes([new Uint8Array(4e6), 'x']) > 4e6, 'a big payload counts for its bytes');
});

test("the load card counts the users' channels, the system ones apart, as the CLI does", () => {
  // A $stats record's `channels` counts the $ channels: the card said 6 for 3 channels (the
  // CLI: "channels 3 (+3 system)"), 3 for an empty server.
  const listed = ['$channels', '$clients', '$stats', 'a', 'b', 'c'].map((name) => ({ name }));
  assert.deepEqual(channelCount(6, listed), { user: 3, system: 3 });
  assert.deepEqual(channelCount(3, listed.slice(0, 3)), { user: 0, system: 3 });
  // before the channel list came: the server's three
  assert.equal(SYSTEM_CHANNELS, 3);
  assert.deepEqual(channelCount(5, null), { user: 2, system: 3 });
  // a channel made since the list came, or one gone: never below 0
  assert.deepEqual(channelCount(2, listed), { user: 0, system: 3 });
  assert.ok(Number.isNaN(channelCount(undefined, listed).user), 'no count: a dash');
  assert.ok(Number.isNaN(channelCount('6', listed).user));
});
