// The plots' axes on any numbers: the ticks end, and are few, in order and inside their range;
// a range the values cannot resolve (equal, or apart by rounding only) is drawn flat in the
// middle of readable ticks. Properties over many generated ranges (a seeded generator: a
// failure names its case), the adversarial ones first: a new user's series of 293.15 and
// 293.15000000000003 froze the page in the tick loop, which never advanced (a step under half
// the values' last place) and filled an array until "Invalid array length".
//
// The calls run in a worker under a time and a memory limit (bounded.mjs): a loop that does
// not end fails its test.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { callBounded } from './bounded.mjs';
import { isFlat, unitScale, padRange, MAX_TICKS } from '../../trio_stream/web/plot.js';

const CASES = new URL('./axis_cases.mjs', import.meta.url);
const call = (name, ...args) => callBounded(CASES, name, args);

// ------------------------------------------------------------------------------ generation

/** mulberry32: a small seeded generator of uniform numbers in [0, 1). */
function generator(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const F = new Float64Array(1);
const B = new BigUint64Array(F.buffer);

/** `v` moved by `k` units in its last place, away from 0 (for a finite v other than 0). */
function ulps(v, k) {
  F[0] = v;
  B[0] += BigInt(k);
  return F[0];
}

const MAX = Number.MAX_VALUE, MIN = Number.MIN_VALUE; // 1.8e308, 5e-324 (subnormal)

// Values the generated ranges start from: equal, one ulp apart, huge, tiny, subnormal, not
// finite, both signs.
const POOL = [
  0, -0, 1, -1, 0.1, 0.3, 293.15, 293.15000000000003, 9897.129058743927, ulps(9897.129058743927, 1),
  1e15, 1e15 + 0.125, 1e15 + 0.25, ulps(1e15, 1), 2 ** 53, 2 ** 53 + 2, 1 - 2 ** -53, 1 + 2 ** -52,
  1e-300, 1e-310, MIN, 2 * MIN, 2.2250738585072014e-308, -MIN, 1e300, 1e308, -1e308, MAX, -MAX,
  NaN, Infinity, -Infinity, 1.7e9, 1.7e9 + 1e-6, -273.15, 65535,
];
const COUNTS = [5, 2, 1, 8, 50, 1000, 0, -3, 2.5, NaN, Infinity];

/** A number of any kind: from the pool, near it (a few ulps), any float64 bits, any size. */
function anyNumber(rnd) {
  const r = rnd();
  if (r < 0.3) return POOL[Math.floor(rnd() * POOL.length)];
  if (r < 0.5) {
    const v = POOL[Math.floor(rnd() * POOL.length)];
    return Number.isFinite(v) && v !== 0 ? ulps(v, Math.floor(rnd() * 5)) : v;
  }
  if (r < 0.7) { // any bits: NaNs, infinities, subnormals, anything
    B[0] = (BigInt(Math.floor(rnd() * 2 ** 32)) << 32n) | BigInt(Math.floor(rnd() * 2 ** 32));
    return F[0];
  }
  return (rnd() < 0.5 ? -1 : 1) * 10 ** (rnd() * 630 - 320);
}

/** Ranges of every kind: the pool's pairs, then generated ones (one end near the other too). */
function ranges(seed, n) {
  const rnd = generator(seed);
  const out = [];
  for (const lo of POOL) for (const hi of POOL) out.push([lo, hi, COUNTS[out.length % COUNTS.length]]);
  while (out.length < n) {
    const lo = anyNumber(rnd);
    const near = Number.isFinite(lo) && lo !== 0 && rnd() < 0.4;
    const hi = near ? ulps(lo, Math.floor(rnd() * 3000)) : anyNumber(rnd);
    out.push([lo, hi, rnd() < 0.8 ? 1 + Math.floor(rnd() * 20) : COUNTS[Math.floor(rnd() * COUNTS.length)]]);
  }
  return out;
}

/** Flat ranges: a value of any size and the same plus up to 1000 ulps (a relative span under
 * 2.3e-13), in either order. */
function flatRanges(seed, n) {
  const rnd = generator(seed);
  const out = [[293.15, 293.15000000000003], [293.15, 293.15], [1e15, 1e15 + 0.25], [1 - 2 ** -53, 1 + 2 ** -52],
    [9897.129058743927, ulps(9897.129058743927, 2)], [0, 0], [0, MIN], [-MIN, MIN], [MAX, MAX], [-MAX, -MAX]];
  while (out.length < n) {
    const v = (rnd() < 0.5 ? -1 : 1) * 10 ** (rnd() * 620 - 310);
    const w = v === 0 || !Number.isFinite(v) ? v : ulps(v, Math.floor(rnd() * 1000));
    out.push(rnd() < 0.5 ? [v, w] : [w, v]);
  }
  return out.filter(([a, b]) => Number.isFinite(a) && Number.isFinite(b));
}

const show = (c) => c.map((x) => (Object.is(x, -0) ? '-0' : String(x))).join(', ');

// ------------------------------------------------------------------------------ properties

test('niceTicks ends on any numbers with a bounded count of increasing ticks inside the range', async () => {
  const cases = ranges(20240611, 20000);
  const results = await call('ticks', cases);
  cases.forEach((c, k) => {
    const [lo, hi, count] = c, [ticks, labels] = results[k];
    const why = `niceTicks(${show(c)}) = [${ticks.join(', ')}]`;
    assert.ok(ticks.length <= MAX_TICKS, why);
    const n = Math.min(MAX_TICKS / 2, Math.max(1, Math.round(count) || 1));
    assert.ok(ticks.length <= 1.5 * n + 2, `${why}: more than about ${n}`);
    for (let i = 0; i < ticks.length; i++) {
      assert.ok(Number.isFinite(ticks[i]), why);
      if (i) assert.ok(ticks[i] > ticks[i - 1], `${why}: not increasing`);
    }
    if (!(Number.isFinite(lo) && Number.isFinite(hi))) {
      // NaN or ±Infinity: the finite end alone, if any
      assert.ok(ticks.length <= 1 && ticks.every((t) => t === lo || t === hi), why);
      return;
    }
    const [a, b] = lo <= hi ? [lo, hi] : [hi, lo];
    assert.ok(ticks.length >= 1, why);
    for (const t of ticks) assert.ok(t >= a && t <= b, `${why}: ${t} outside`);
    if (isFlat(a, b)) assert.equal(ticks.length, 1, `${why}: a flat range has one tick`);
    else if (n >= 4) assert.ok(ticks.length >= 2, why);
    // told apart by their labels (tickLabels' digits are bounded too)
    assert.equal(new Set(labels).size, labels.length, `${why}: labels ${labels.join(', ')}`);
  });
});

test('a span the values cannot resolve is flat: padded around its middle, with a few short labels', async () => {
  const pairs = flatRanges(7, 5000);
  for (const [a, b] of pairs) assert.ok(isFlat(Math.min(a, b), Math.max(a, b)), show([a, b]));
  const results = await call('padded', pairs, 5);
  pairs.forEach((pair, k) => {
    const [[y0, y1], ticks, labels] = results[k];
    const why = `padRange([${show(pair)}]) = [${y0}, ${y1}], ticks [${ticks.join(', ')}] labelled ${labels.join(' / ')}`;
    assert.ok(Number.isFinite(y0) && Number.isFinite(y1) && !isFlat(y0, y1), why);
    // the value sits in the middle of the plot (a flat line across it), or near it when the
    // padding met the largest float
    const at = unitScale(y0, y1)(Math.min(...pair));
    assert.ok(Math.abs(at - 0.5) < 1e-6 || Math.max(...pair.map(Math.abs)) > MAX / 1.2, `${why}: at ${at}`);
    assert.ok(ticks.length >= 2 && ticks.length <= 9, why);
    for (const label of labels) assert.ok(label.length <= 10, `${why}: "${label}" is not readable`);
    assert.equal(new Set(labels).size, labels.length, why);
  });
});

test('padRange: finite, never flat, covering the values', () => {
  const rnd = generator(99);
  for (let k = 0; k < 20000; k++) {
    const u = anyNumber(rnd), v = rnd() < 0.3 && Number.isFinite(u) && u !== 0 ? ulps(u, Math.floor(rnd() * 50)) : anyNumber(rnd);
    if (!Number.isFinite(u) || !Number.isFinite(v)) continue; // finiteRange's output is finite
    const [lo, hi] = u <= v ? [u, v] : [v, u];
    const [y0, y1] = padRange([lo, hi]);
    const why = `padRange([${show([lo, hi])}]) = [${y0}, ${y1}]`;
    assert.ok(Number.isFinite(y0) && Number.isFinite(y1) && y0 < y1 && !isFlat(y0, y1), why);
    if (!isFlat(lo, hi)) assert.ok(y0 <= lo && y1 >= hi, why);
  }
});

test('unitScale: a range onto 0..1 (even -MAX..MAX), a flat one to its middle', () => {
  assert.equal(unitScale(0, 10)(2.5), 0.25);
  assert.equal(unitScale(-MAX, MAX)(0), 0.5);
  assert.equal(unitScale(-MAX, MAX)(MAX), 1);
  assert.equal(unitScale(-MAX, MAX)(-MAX), 0);
  for (const [a, b] of [[293.15, 293.15000000000003], [1, 1], [0, MIN], [NaN, 1], [1, 0]]) {
    assert.equal(unitScale(a, b)(a), 0.5, show([a, b]));
  }
  const rnd = generator(5);
  for (let k = 0; k < 20000; k++) {
    const u = anyNumber(rnd), v = anyNumber(rnd);
    if (!Number.isFinite(u) || !Number.isFinite(v) || isFlat(Math.min(u, v), Math.max(u, v))) continue;
    const [a, b] = u <= v ? [u, v] : [v, u];
    const f = unitScale(a, b), x = a + (b / 2 - a / 2) * rnd(); // a point inside
    const why = `unitScale(${a}, ${b})`;
    assert.ok(Math.abs(f(a)) < 1e-9 && Math.abs(f(b) - 1) < 1e-9, why);
    assert.ok(f(x) >= -1e-9 && f(x) <= 1 + 1e-9, `${why}(${x}) = ${f(x)}`);
  }
});

test('the new user\'s ranges: round ticks around the value, as a constant\'s', async () => {
  const [temp, phasor, ulp, big, constant] = await call('padded', [
    [293.15, 293.15000000000003], [1 - 2 ** -53, 1 + 2 ** -52], [9897.129058743927, ulps(9897.129058743927, 2)],
    [1e15, 1e15 + 0.25], [293.15, 293.15]], 5);
  assert.deepEqual(temp[1], [270, 280, 290, 300, 310, 320]);
  assert.deepEqual(temp[1], constant[1]);
  assert.deepEqual(phasor[2], ['0.9', '0.95', '1', '1.05', '1.1']);
  assert.deepEqual(ulp[2], ['9000', '9500', '10000', '10500']); // not "9897.12905874393, ...929"
  assert.deepEqual(big[2], ['9.50e+14', '1.00e+15', '1.05e+15', '1.10e+15']);
});

// ------------------------------------------------------------------------------ drawn

for (const kind of ['series', 'phasor', 'ulpArray', 'bigUlp']) {
  test(`a Plotter draws ${kind} (a last-bit variation) as a flat line across the middle`, async () => {
    const { yLabels, ys, area, yr } = await call('drawn', kind);
    const why = `${kind}: y range [${yr}], labels ${yLabels.join(' / ')}`;
    assert.ok(yLabels.length >= 2 && yLabels.length <= 12, why);
    for (const label of yLabels) assert.ok(label.length <= 8, `${why}: "${label}" is not readable`);
    assert.ok(ys.length > 1, why);
    const middle = area.y + area.h / 2;
    for (const y of ys) assert.ok(Math.abs(y - middle) < 1, `${why}: a point at y ${y}, the middle ${middle}`);
  });
}

test('an image that varies in its last bit is one colour, as a constant one; a fixed range far off clamps', async () => {
  const v = 9897.129058743927;
  const noisy = await call('imageColours', [[v, ulps(v, 1), ulps(v, 2)], [ulps(v, 2), v, ulps(v, 1)]]);
  const constant = await call('imageColours', [[v, v, v], [v, v, v]]);
  assert.equal(new Set(noisy).size, 1, noisy.join(' '));
  assert.deepEqual(noisy, constant);
  // A value 2**40 times over a fixed range is the brightest colour (the level wrapped past
  // 2 ** 31 to the darkest); -MAX..MAX spans more than the largest float, in halves.
  const [over] = await call('imageColours', [[2 ** 40, 0]], [0, 1]);
  const [top] = await call('imageColours', [[1, 0]], [0, 1]);
  assert.equal(over, top);
  const wide = await call('imageColours', [[-MAX, 0, MAX]]);
  assert.equal(new Set(wide).size, 3, wide.join(' '));
});

test('a signal on a large offset is drawn as a signal, with distinct labels', async () => {
  // Drawn flat with a flat span of 1e-9 of the values (a review): a hydrogen line's
  // 1420405751.7 Hz wandering by 0.3 Hz, epoch milliseconds over half a second, epoch seconds
  // over one, a byte counter of 5e12 rising by 2000.
  const pairs = [[1420405751.5, 1420405752.1], [1.7e12, 1.7e12 + 500], [1.7e9, 1.7e9 + 1], [5e12, 5e12 + 2000]];
  const out = await call('padded', pairs, 5);
  out.forEach(([range, ticks, labels], k) => {
    const [lo, hi] = pairs[k];
    assert.ok(!isFlat(lo, hi), `${lo}..${hi} is a signal`);
    assert.ok(range[0] <= lo && range[1] >= hi && range[1] - range[0] < (hi - lo) * 2, `${range}`);
    assert.ok(ticks.length >= 2, `${ticks}`);
    assert.equal(new Set(labels).size, labels.length, `${labels}`);
  });
  // Padded NaN or infinite ends (no finite value) are a plain -1..1.
  assert.deepEqual(padRange([NaN, NaN]), [-1, 1]);
  assert.deepEqual(padRange([0, Infinity]), [-1, 1]);
});
