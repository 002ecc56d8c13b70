// Tests of the dashboard's pure parts: how payloads are classified for plotting, and formatting.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { classify, niceTicks, finiteRange, numericArray, markerLabel, reconnectNote, describe, addPoint, breakAfter, needsOwnScales } from '../../trio_stream/web/plot.js';
import * as fmt from '../../trio_stream/web/format.js';
import { NDArray, decode, encode } from '../../trio_stream/web/cbor.js';

test('scalars: numbers, bigints, booleans, 0-d arrays, a dict\'s first numeric field', () => {
  assert.deepStrictEqual(classify(3.5), { kind: 'scalar', value: 3.5, label: null });
  assert.deepStrictEqual(classify(2n ** 60n), { kind: 'scalar', value: 2 ** 60, label: null });
  assert.deepStrictEqual(classify(true), { kind: 'scalar', value: 1, label: null });
  assert.equal(classify(new NDArray([], new Float64Array([4.25]))).value, 4.25);
  assert.deepStrictEqual(classify({ name: 'x', t: 1.5, v: 2 }), { kind: 'scalar', value: 1.5, label: 't', fields: [['t', 1.5], ['v', 2]] });
});

test('1-D: typed arrays, numeric arrays, 1-D tag 40, int64 converted', () => {
  const f = new Float32Array([1, 2, 3]);
  assert.equal(classify(f).kind, 'line');
  assert.equal(classify(f).values, f, 'no copy');
  assert.deepStrictEqual(classify([1, 2, 3]).values, new Float64Array([1, 2, 3]));
  assert.deepStrictEqual(classify(new BigInt64Array([1n, -2n])).values, new Float64Array([1, -2]));
  assert.equal(classify(new NDArray([4], new Int16Array(4))).kind, 'line');
  assert.equal(classify(new NDArray([1, 1, 4], new Int16Array(4))).kind, 'line', 'squeezed');
});

test('2-D: images, colour images, complex magnitude', () => {
  const img = decode(encode(new NDArray([2, 3], new Uint16Array(6))));
  assert.deepStrictEqual(
    { ...classify(img), values: null },
    { kind: 'image', height: 2, width: 3, channels: 1, values: null, label: null },
  );
  const rgb = classify(new NDArray([2, 2, 3], new Uint8Array(12)));
  assert.equal(rgb.kind, 'image');
  assert.equal(rgb.channels, 3);
  const z = classify(new NDArray([2], new Float64Array([3, 4, 0, 1]), '<c16'));
  assert.equal(z.kind, 'line');
  assert.deepStrictEqual(z.values, new Float64Array([5, 1]));
});

test('everything else is text', () => {
  for (const v of ['hello', null, undefined, [], ['a', 1], { a: 'x' }, new Map([[1, 2]]), new Date(0),
    new NDArray([2, 2, 2, 2], new Float64Array(16)), new Uint8Array(0).buffer]) {
    const view = classify(v);
    assert.equal(view.kind, 'text', String(v));
    assert.equal(typeof view.text, 'string');
  }
  assert.match(classify({ a: new Float64Array([1, 2]), b: 'x' }).text, /Float64Array\(2\) \[1, 2\]/);
});

test('numericArray, finiteRange, niceTicks', () => {
  assert.equal(numericArray(['1']), null);
  assert.equal(numericArray(new DataView(new ArrayBuffer(2))), null);
  assert.deepStrictEqual(finiteRange([3, NaN, -1, Infinity, 2]), [-1, 3]);
  assert.equal(finiteRange([NaN]), null);
  assert.deepStrictEqual(niceTicks(0, 10, 5), [0, 2, 4, 6, 8, 10]);
  assert.deepStrictEqual(niceTicks(-0.95, 0.95, 4), [-0.5, 0, 0.5]);
  assert.deepStrictEqual(niceTicks(-60, 0, 6), [-60, -50, -40, -30, -20, -10, 0]);
  assert.deepStrictEqual(niceTicks(1, 1), [1]);
});

test('formatting: missing values are a dash', () => {
  for (const f of [fmt.compact, fmt.bytes, fmt.rate, fmt.byteRate, fmt.count, fmt.percent, fmt.duration, fmt.clock]) {
    assert.equal(f(undefined), '–');
    assert.equal(f(null), '–');
    assert.equal(f('12'), '–');
    assert.equal(f(NaN), '–');
  }
});

test('formatting: numbers', () => {
  assert.equal(fmt.compact(0), '0');
  assert.equal(fmt.compact(9.994), '9.99');
  assert.equal(fmt.compact(1234.5), '1.23k');
  assert.equal(fmt.compact(999.9), '1k');
  assert.equal(fmt.compact(2.5e6), '2.5M');
  assert.equal(fmt.bytes(512), '512 B');
  assert.equal(fmt.bytes(1536), '1.5 KiB');
  assert.equal(fmt.bytes(49631232), '47.3 MiB');
  assert.equal(fmt.byteRate(2048), '2 KiB/s');
  assert.equal(fmt.count(1234567), '1,234,567');
  assert.equal(fmt.count(5n), '5');
  assert.equal(fmt.percent(1.77), '1.8 %');
  assert.equal(fmt.duration(5.9), '5s');
  assert.equal(fmt.duration(65), '1m 05s');
  assert.equal(fmt.duration(3 * 3600 + 5 * 60), '3h 05m');
  assert.equal(fmt.duration(2 * 86400 + 3600), '2d 1h');
  assert.equal(fmt.tick(0.5), '0.5');
  assert.equal(fmt.tick(123456), '1.2e+5');
  // an axis's labels differ where its ticks do
  const big = niceTicks(2 ** 70, 2 ** 70 + 3e20, 4);
  assert.equal(new Set(fmt.tickLabels(big)).size, big.length, fmt.tickLabels(big).join(', '));
  assert.deepEqual(fmt.tickLabels([0, 0.5, 1]), ['0', '0.5', '1']);
  assert.deepEqual(fmt.tickLabels([0, 50000, 100000]), ['0', '5.0e+4', '1.0e+5']); // one notation
  // read-outs: a uint16 image's max is 65535, not tick's 65540
  assert.equal(fmt.exact(65535), '65535');
  assert.equal(fmt.exact(-7), '-7');
  assert.equal(fmt.exact(0.1 + 0.2), '0.3');
  assert.equal(fmt.exact(1234.56789), '1234.57');
  assert.equal(fmt.exact(1420405751.5), '1420405751.5'); // not 1420410000 (a 1.42 GHz line)
  assert.equal(fmt.exact(12345678.94), '12345678.9');
  assert.equal(fmt.exact(2 ** 70), '1.18059e+21');
  assert.equal(fmt.exact(1.5e-7), '1.5e-7');
  assert.equal(fmt.exact(NaN), 'NaN');
  assert.equal(fmt.exact(-Infinity), '-Infinity');
});

test("a map's NaN field stays a series, a one-field map of NaN too (a sensor reading NaN)", () => {
  const v = classify({ a: NaN, b: Infinity, c: 3 });
  assert.equal(v.kind, 'scalar');
  assert.deepEqual(v.fields.map(([k]) => k), ['a', 'b', 'c']);
  assert.equal(classify({ temp: NaN }).kind, 'scalar');
  assert.equal(classify({ text: 'x' }).kind, 'text');
});

test("the line under a plot gives a uint16 line its exact integer range", () => {
  const data = new Uint16Array([0, 65535, 12, 40000]);
  const text = describe({ seq: 1, time: 0, sender: 'cam', lost: 0, data }, { kind: 'line', values: data });
  assert.match(text, /min 0 max 65535/);
});

test('time-axis markers: a loss and a gap with their counts, a reset without one', () => {
  assert.equal(markerLabel('loss', 38), '−38');
  assert.equal(markerLabel('gap', 3), 'gap −3');
  assert.equal(markerLabel('gap', 0), 'gap −0');
  assert.equal(markerLabel('gap', null), 'reset');
  assert.equal(markerLabel('reconnect', null), '↻');
});

test("a panel's note after a reconnection: when, and the gap or the reset", () => {
  const at = new Date(2026, 0, 2, 13, 4, 5, 6).getTime() / 1000;
  assert.equal(reconnectNote({ kind: 'resumed', lost: 3 }, at), 'reconnected 13:04:05.006: gap −3');
  assert.equal(reconnectNote({ kind: 'resumed', lost: 0 }, at), 'reconnected 13:04:05.006: gap −0');
  // A restart: the server's own channels came back in a new epoch.
  assert.equal(
    reconnectNote({ kind: 'reset', lost: null, reconnection: { at, sameServer: false } }, at),
    'reconnected 13:04:05.006: reset (frames the old server held are lost, count unknown)',
  );
  // The same server (another subscription resumed in its epoch): the channel was deleted and
  // created again during the cut, its new life; "the old server" was blamed for it.
  assert.equal(
    reconnectNote({ kind: 'reset', lost: null, reconnection: { at, sameServer: true } }, at),
    'reconnected 13:04:05.006: reset (the channel was deleted and created again meanwhile, on the same server: its new life starts at seq 1; frames between are not counted)',
  );
  // Not known (yet): neither is claimed.
  for (const gap of [{ kind: 'reset', lost: null }, { kind: 'reset', lost: null, reconnection: { at, sameServer: null } }]) {
    assert.equal(
      reconnectNote(gap, at),
      'reconnected 13:04:05.006: reset (the server restarted, or the channel was created again: frames between are not counted)',
    );
  }
  assert.equal(
    reconnectNote({ kind: 'reset', lost: null, afterCleanStop: true }, at),
    'reconnected 13:04:05.006: reset (the old server stopped cleanly, delivering what it held within its shutdown grace)',
  );
  // a panel's subscription ended (its channel deleted) and was made again: a reset too
  assert.equal(
    reconnectNote({ kind: 'reset', lost: null, resubscribed: true }, at),
    'subscribed again 13:04:05.006: reset (the subscription had ended; frames meanwhile are not counted)',
  );
});

test('series two orders of magnitude apart get a scale each; alike ones share one', () => {
  // $stats: memory_bytes beside cpu_percent (and frames_lost, all zeros: not counted)
  assert.equal(needsOwnScales([[5.6e8, 5.7e8], [4, 9], [0, 0], null]), true);
  assert.equal(needsOwnScales([[-1, 1], [0, 50]]), false); // a sine beside a counter
  assert.equal(needsOwnScales([[20, 25]]), false);
  assert.equal(needsOwnScales([[0, 0], [3, 4]]), false);
  assert.equal(needsOwnScales([[-2, 1], [150, 190]]), false);
  assert.equal(needsOwnScales([[-2, 1], [150, 200]]), true);
  assert.equal(needsOwnScales([[-2, 1], [150, 190]], true), true, 'once apart, kept down to a third of the ratio');
  assert.equal(needsOwnScales([[-2, 1], [40, 60]], true), false);
});

test("a series keeps time order: two writers' clocks 3 s apart both stay plotted", () => {
  // A channel written in turn by two consoles, one clock 3 s behind: every step back in time
  // cleared the history, and the panel plotted nothing at all.
  const s = [];
  for (let k = 0; k < 20; k++) {
    const t = 1000 + 0.2 * k;
    addPoint(s, k % 2 ? t - 3 : t, k, 60, 10_000);
  }
  assert.equal(s.length, 20);
  assert.deepStrictEqual(s.map((p) => p.t), [...s.map((p) => p.t)].sort((a, b) => a - b));
  // A clock that jumped back by more than the window starts that history again.
  addPoint(s, 900, -1, 60, 10_000);
  assert.deepStrictEqual(s, Object.assign([{ t: 900, v: -1 }], { typical: undefined }));
});

test('a series breaks its line at a pause far longer than its usual interval', () => {
  // An instrument stopped for 8 s was drawn as a flat line across the hole.
  const s = [];
  for (let k = 0; k < 100; k++) addPoint(s, 1000 + 0.01 * k, k, 60, 10_000);
  assert.ok(Math.abs(s.typical - 0.01) < 1e-9, s.typical);
  assert.equal(breakAfter(s.typical), 1, 'at least a second');
  const before = s.typical;
  addPoint(s, s[s.length - 1].t + 8, 100, 60, 10_000);
  assert.ok(8 > breakAfter(s.typical), 'the hole is broken');
  assert.ok(s.typical < 2 * before, 'one pause moves the usual interval by little');
  assert.equal(breakAfter(10), 40, 'a slow writer: four of its intervals');
  // The window: points older than historySeconds before the newest go, and maxPoints holds.
  const w = [];
  for (let k = 0; k < 100; k++) addPoint(w, k, k, 10, 5);
  assert.deepStrictEqual(w.map((p) => p.t), [95, 96, 97, 98, 99]);
});
