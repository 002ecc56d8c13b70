// What axis.test.mjs runs in a worker (bounded.mjs): the dashboard's tick, range and drawing
// code on given numbers, its results returned as plain data for the test to check.

import { installFakeDom, FakeElement } from './fake_dom.mjs';
import { niceTicks, padRange, Plotter } from '../../trio_stream/web/plot.js';
import { tickLabels } from '../../trio_stream/web/format.js';
import { NDArray } from '../../trio_stream/web/cbor.js';

/** [ticks, labels] of niceTicks(lo, hi, count) for each [lo, hi, count]. */
export function ticks(cases) {
  return cases.map(([lo, hi, count]) => {
    const t = niceTicks(lo, hi, count);
    return [t, tickLabels(t)];
  });
}

/** [range, ticks, labels] of padRange([lo, hi]) and its niceTicks(..., count), for each pair. */
export function padded(pairs, count) {
  return pairs.map((pair) => {
    const r = padRange(pair);
    const t = niceTicks(r[0], r[1], count);
    return [r, t, tickLabels(t)];
  });
}

const NEXT = new Float64Array(1);
const BITS = new BigInt64Array(NEXT.buffer);
/** `v` moved by `k` units in the last place (for a positive v). */
export function ulps(v, k) {
  NEXT[0] = v;
  BITS[0] += BigInt(k);
  return NEXT[0];
}

// The new user's payloads: each a list of messages for Plotter.push.
const PAYLOADS = {
  // a temperature in kelvin that differs in its last bit, at 10 Hz
  series: () => Array.from({ length: 40 }, (_, k) => ({ data: k % 2 ? 293.15000000000003 : 293.15, time: 1000 + k / 10 })),
  // np.exp(1j * phase): |z| is 1 ± rounding
  phasor: () => [{ data: new NDArray([256], Float64Array.from({ length: 512 }, (_, k) => (k % 2 ? Math.sin : Math.cos)(((k >> 1) * 2 * Math.PI) / 256)), '<c16'), time: 1000 }],
  // 9897.129058743927 and its next two floats
  ulpArray: () => [{ data: Float64Array.from({ length: 200 }, (_, k) => ulps(9897.129058743927, k % 3)), time: 1000 }],
  // 1e15 + [0, 0.125, 0.25]
  bigUlp: () => [{ data: Float64Array.from({ length: 200 }, (_, k) => 1e15 + 0.125 * (k % 3)), time: 1000 }],
};

/**
 * A Plotter (on fake_dom's 600 x 300 canvas) given the payloads `kind` and drawn: its y tick
 * labels, the y of every point of its line, its plot area and its y range.
 */
export function drawn(kind) {
  installFakeDom();
  const plotter = new Plotter(new FakeElement('canvas'));
  plotter.resize();
  // fillText with its place (the recording context keeps the text only): the y tick labels
  // are the right-aligned ones left of the plot area
  const inner = plotter.ctx, texts = [];
  plotter.ctx = new Proxy(inner, {
    get: (_t, k) => (k === 'fillText' ? (text, x, y) => texts.push({ text, x, y, align: inner.textAlign }) : inner[k]),
    set: (_t, k, v) => { inner[k] = v; return true; },
  });
  PAYLOADS[kind]().forEach((msg, k) => plotter.push({ seq: k + 1, ...msg }, 'lab/x', 0));
  plotter.draw();
  plotter.draw(); // a margin widened for the labels takes effect at the next drawing
  const { area, yr } = plotter._map;
  const last = texts.length;
  plotter.draw();
  const yLabels = texts.slice(last).filter((t) => t.align === 'right' && t.x === area.x - 6).map((t) => t.text);
  const line = inner.strokes[inner.strokes.length - 1].points;
  return { yLabels, ys: line.map(([, y]) => y), area: { ...area }, yr };
}

/** The colour levels a 2-D image of `rows` (numbers) is drawn with: distinct RGBA pixels. */
export function imageColours(rows, yRange = null) {
  installFakeDom();
  const plotter = new Plotter(new FakeElement('canvas'));
  plotter.resize();
  const made = [];
  const offscreen = new FakeElement('canvas');
  offscreen.getContext().createImageData = (w, h) => {
    const img = { data: new Uint8ClampedArray(w * h * 4) };
    made.push(img);
    return img;
  };
  plotter.offscreen = offscreen;
  plotter.setYRange(yRange);
  const values = Float64Array.from(rows.flat());
  plotter.push({ seq: 1, data: new NDArray([rows.length, rows[0].length], values), time: 1000 }, 'lab/x', 0);
  plotter.draw();
  const px = made[made.length - 1].data;
  const colours = [];
  for (let o = 0; o < px.length; o += 4) colours.push(`${px[o]},${px[o + 1]},${px[o + 2]},${px[o + 3]}`);
  return colours;
}
