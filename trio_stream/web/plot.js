// Live plot on a <canvas>, no chart library. classify() decides how a decoded payload is
// shown (pure, tested in Node); Plotter draws it: scalars as a scrolling time series, 1-D arrays
// as a line, 2-D arrays as an auto-scaled image with a colour map, anything else as text.

import { NDArray } from './cbor.js';
import { tick, tickLabels, exact, valueText, clock, duration } from './format.js';

// ------------------------------------------------------------------------------------ classify

const BIG_ARRAYS = [globalThis.BigInt64Array, globalThis.BigUint64Array];

/** Numbers from a TypedArray or an array of numbers, or null when it is not numeric. */
export function numericArray(a) {
  if (ArrayBuffer.isView(a) && !(a instanceof DataView)) {
    if (BIG_ARRAYS.some((C) => a instanceof C)) return Float64Array.from(a, Number);
    return a;
  }
  if (Array.isArray(a) && a.length > 0 && a.every((x) => typeof x === 'number' || typeof x === 'bigint')) {
    return Float64Array.from(a, Number);
  }
  return null;
}

function magnitude(interleaved) {
  const out = new Float64Array(interleaved.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = Math.hypot(interleaved[2 * i], interleaved[2 * i + 1]);
  return out;
}

const text = (value) => ({ kind: 'text', text: valueText(value) });

function fromShape(shape, data, label, dtype, exact = null) {
  const dims = shape.length > 2 ? shape.filter((d) => d !== 1) : shape; // squeeze (1, h, w) etc.
  // `exact`: 64-bit integers as sent, for export (what is drawn is their float64 copy, which
  // rounds past 2**53: nanosecond timestamps all came out equal in a .npy)
  const kept = exact ? { exact } : {};
  if (dims.length === 0) return { kind: 'scalar', value: Number(data[0]), label };
  if (dims.length === 1) return { kind: 'line', values: data, label, ...kept };
  if (dims.length === 2) return { kind: 'image', height: dims[0], width: dims[1], channels: 1, values: data, label, ...kept };
  if (dims.length === 3 && (dims[2] === 3 || dims[2] === 4)) {
    return { kind: 'image', height: dims[0], width: dims[1], channels: dims[2], values: data, label, ...kept };
  }
  return { kind: 'text', text: `${dtype ?? data.constructor.name} array of shape [${shape.join(', ')}]` };
}

/**
 * A time-axis marker's label: a loss "−k" (k frames the server counted lost), a resumed
 * connection's gap "gap −k" (k exact, 0 included), a reset (the server could not resume:
 * what was missed is unknown) "reset", a reconnection of unknown cost "↻".
 */
export function markerLabel(kind, count) {
  if (kind === 'loss') return `−${count}`;
  if (kind === 'gap') return count === null || count === undefined ? 'reset' : `gap −${count}`;
  return '↻';
}

/**
 * What a panel's info line keeps saying after a reconnection: when, and what the resume
 * reported ("gap −k", or a reset, whose count nobody knows). Every kind of panel shows it:
 * an array or a text has no time axis to mark, and a series' marker sits at the first frame's
 * own time, which a long outage puts off the plot.
 *
 * A reset says why, as far as the page knows (gap.reconnection.sameServer, the browser
 * client's Client.reconnection): the same server means the channel was deleted and created
 * again meanwhile, its new life starting at seq 1 (the frames of the old one the page did not
 * get, and the new one's before its history, are not counted); a new server, a restart, whose
 * frames in hand died with it. "The old server" was blamed for a channel re-created during a
 * 25 s cut of a server that never stopped (an operator).
 * @param {{kind: string, lost: number | null, afterCleanStop?: boolean, resubscribed?: boolean,
 *   reconnection?: {at: number, sameServer: boolean | null}, resetEnd?: {at: number}}} gap the
 *   first frame's msg.gap
 * @param {number} epochSeconds when the page reconnected (or subscribed again, or the server
 *   ended the channel's old life: gap.resetEnd.at)
 */
export function reconnectNote(gap, epochSeconds) {
  const reset = gap.kind === 'reset';
  const what = markerLabel('gap', reset ? null : gap.lost);
  // Not a reconnection: the panel's subscription ended (a channel deleted and created again,
  // its seq restarting at 1) and the panel made a new one (Panel.onMessage).
  if (gap.resubscribed) return `subscribed again ${clock(epochSeconds)}: ${what} (the subscription had ended; frames meanwhile are not counted)`;
  // Not a reconnection either: the server ended the channel's old life with `again` (a
  // cluster's Redis restarted empty, or the channel was created anew on another node), and
  // the subscription read on in its new one by itself (the browser client's gap.resetEnd).
  if (gap.resetEnd) return `channel reset ${clock(epochSeconds)}: ${what} (its cluster's Redis restarted empty, or it was created anew on another node: its new life starts again; frames between are not counted)`;
  const sameServer = gap.reconnection?.sameServer;
  let why = '';
  // A graceful stop said goodbye and drained what it held first (within its shutdown
  // grace): "lost" there told an operator of losses that did not happen.
  if (reset && gap.afterCleanStop) why = ' (the old server stopped cleanly, delivering what it held within its shutdown grace)';
  else if (reset && sameServer === true) why = ' (the channel was deleted and created again meanwhile, on the same server: its new life starts at seq 1; frames between are not counted)';
  else if (reset && sameServer === false) why = ' (frames the old server held are lost, count unknown)';
  else if (reset) why = ' (the server restarted, or the channel was created again: frames between are not counted)';
  return `reconnected ${clock(epochSeconds)}: ${what}${why}`;
}

/**
 * How to show one payload:
 *   {kind: 'scalar', value, label, fields?}   a number (or a dict: its first numeric field,
 *                                             and all of them in `fields`: [[name, value]])
 *   {kind: 'line', values, label}             a 1-D array
 *   {kind: 'image', width, height, channels, values, label}   2-D (or h x w x 3|4 colour)
 *   {kind: 'text', text}                      everything else
 */
export function classify(data, label = null) {
  if (typeof data === 'number' || typeof data === 'bigint') return { kind: 'scalar', value: Number(data), label };
  if (typeof data === 'boolean') return { kind: 'scalar', value: data ? 1 : 0, label };
  if (data instanceof NDArray) {
    let values = data.data;
    if (data.dtype && data.dtype[1] === 'c') values = magnitude(values); // complex: |z|
    const numeric = numericArray(values);
    if (!numeric) return text(data);
    const shown = data.dtype && data.dtype[1] === 'c' ? `|${label ?? 'value'}|` : label;
    const exact = BIG_ARRAYS.some((C) => values instanceof C) ? values : null;
    const view = fromShape(data.shape, numeric, shown, data.dtype, exact);
    const dtype = data.dtype ?? values.dtype; // '|b1', '<f2': what the export saves
    return dtype && view.kind !== 'text' ? { ...view, dtype } : view;
  }
  const arr = numericArray(data);
  if (arr) {
    if (BIG_ARRAYS.some((C) => data instanceof C)) return { kind: 'line', values: arr, label, exact: data };
    return data.dtype ? { kind: 'line', values: arr, label, dtype: data.dtype } : { kind: 'line', values: arr, label };
  }
  if (data && typeof data === 'object' && !Array.isArray(data) && !(data instanceof Map) && !(data instanceof Date)
      && !ArrayBuffer.isView(data)) {
    // every numeric field becomes a series of its own (a $stats record plots all its loads)
    // A NaN field stays a series (its legend says "= NaN", its line has a gap): a sensor
    // that reads NaN for a while must not drop out of the legend unannounced.
    const fields = [];
    for (const [k, v] of Object.entries(data)) {
      if (typeof v === 'number' || typeof v === 'bigint') fields.push([k, Number(v)]);
    }
    if (fields.length) return { kind: 'scalar', value: fields[0][1], label: fields[0][0], fields };
  }
  return text(data);
}

/** Finite min and max of an array-like, or null if it has no finite value. */
export function finiteRange(values, start = 0, end = values.length) {
  let lo = Infinity, hi = -Infinity;
  for (let i = start; i < end; i++) {
    const v = Number(values[i]);
    if (v - v !== 0) continue; // NaN and ±Infinity (cheaper than Number.isFinite in this loop)
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return lo <= hi ? [lo, hi] : null;
}

/** The finite min and max of each of `cols` columns of values[a:b] (NaN where a column has
 * none), and of all of them (`range`, null if none): one pass over the values. */
export function columnRanges(values, a, b, cols) {
  const lo = new Float64Array(cols).fill(NaN), hi = new Float64Array(cols).fill(NaN);
  const shown = b - a;
  let all = null;
  for (let c = 0; c < cols; c++) {
    const j0 = a + Math.floor((c * shown) / cols), j1 = Math.max(j0 + 1, a + Math.floor(((c + 1) * shown) / cols));
    const r = finiteRange(values, j0, j1);
    if (!r) continue;
    lo[c] = r[0];
    hi[c] = r[1];
    if (!all) all = [r[0], r[1]];
    else { if (r[0] < all[0]) all[0] = r[0]; if (r[1] > all[1]) all[1] = r[1]; }
  }
  return { lo, hi, range: all };
}

// ------------------------------------------------------------------------------------ axis ranges

// A span this small beside its values is their rounding, not a signal: it is drawn flat.
// A float64 holds ~16 significant digits (eps 2.2e-16). What differs in its last bits
// (293.15 and 293.15000000000003, |exp(1j*phase)| = 1 ± 2e-16, a mean of a million
// samples: ~1e-13 of its value at most) is below 1e-12. Above it, the ticks are at least
// ~1e-14 of their value apart (the span over 50 ticks at most, a nice step no less than
// 1/1.5 of that), tens of ulps: each is exact to an ulp, they are all distinct, and their
// labels take at most 14 significant digits (tickLabels adds up to 12). Below it the steps
// near the values' rounding: the loop that added them stopped advancing once a step was under
// half an ulp (filling an array until "Invalid array length", the page frozen meanwhile).
// Not higher: a hydrogen line's 1420405751.7 Hz wandering by 0.3 Hz (2e-10 of it), epoch
// milliseconds over half a second, a byte counter of 5e12 rising by 2000 are signals, which
// 1e-9 drew flat (a review). A real signal below it (a 10 MHz clock's 1 uHz wander) cannot
// be read on tick labels without an offset, which this axis has not: it is drawn flat, its
// values in the legend and the cursor readout. (matplotlib's locators go down to ~1e-14 of
// the values, nonsingular()'s `tiny`, and label an offset; d3's ticks() has no guard: at
// 1e15 + [0, 0.25] its tick integers pass 2 ** 53 and repeat.)
const FLAT_SPAN = 1e-12;
// Values all smaller than this are flat around 0: a billionth of them would be under the least
// normal float64 (2.2e-308), where 10 ** k and 1 / span lose their digits or overflow
// (matplotlib's nonsingular() does the same below ~2e-293).
const TINY = 1e-290;
// No axis has more ticks, whatever it is asked: `count` is held to half of it, and a nice step
// is at least 1/1.5 of span / count (so at most 1.5 * count + 1 ticks come).
export const MAX_TICKS = 100;

/** Whether [lo, hi] is flat: equal, apart by less than their values can resolve (FLAT_SPAN),
 * all tiny (TINY), reversed, or not numbers. */
export function isFlat(lo, hi) {
  const size = Math.max(Math.abs(lo), Math.abs(hi));
  return !(size >= TINY && hi - lo > FLAT_SPAN * size);
}

/**
 * Round tick values covering [lo, hi], about `count` of them (never more than MAX_TICKS),
 * ascending, each within [lo, hi]. As d3's ticks(): every tick is an integer times the step
 * (over its inverse for steps below 1: 0.3, not 0.30000000000000004), the integers counted
 * from the ends, so the loop runs by count whatever the numbers. A flat span (isFlat) gets
 * one tick in its middle; an end that is not finite, the other end alone (none for NaN).
 */
export function niceTicks(lo, hi, count = 5) {
  if (hi < lo) [lo, hi] = [hi, lo];
  if (!(Number.isFinite(lo) && Number.isFinite(hi))) return [lo, hi].filter(Number.isFinite).slice(0, 1);
  const middle = lo === hi ? lo : lo / 2 + hi / 2; // halves: hi + lo may overflow
  if (isFlat(lo, hi)) return [middle + 0]; // (+ 0: -0 is 0)
  const n = Math.min(MAX_TICKS / 2, Math.max(1, Math.round(count) || 1));
  let raw = (hi - lo) / n;
  if (raw === Infinity) raw = hi / n - lo / n; // -1e308 to 1e308
  const e = Math.floor(Math.log10(raw));
  const norm = raw / 10 ** e;
  const f = norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10;
  const inverse = e < 0 ? 10 ** -e / f : 0; // an integer: ticks are i / inverse
  const step = e < 0 ? 1 / inverse : f * 10 ** e; // else ticks are i * step
  if (!(step > 0 && step < Infinity)) return [middle + 0];
  const at = (i) => (e < 0 ? i / inverse : i * step) + 0;
  let i0 = Math.round(lo / step), i1 = Math.round(hi / step);
  if (at(i0) < lo) i0++;
  if (at(i1) > hi) i1--;
  if (!(i1 >= i0)) return [middle + 0]; // no round number inside (count 1)
  const out = [];
  for (let i = i0; i <= i1 && out.length < MAX_TICKS; i++) out.push(at(i));
  return out;
}

/**
 * The y range drawn for values within [lo, hi]: 6 % more at each end; a flat range
 * (isFlat: equal, or apart by rounding only) ±10 % around its middle (±1 around 0), where
 * the line runs flat across the plot's middle between round ticks (a zigzag of rounding
 * noise took the plot's full height, labelled "9897.12905874393, ...929, ...927").
 * Always finite, never flat.
 */
export function padRange([lo, hi]) {
  const MAX = Number.MAX_VALUE;
  if (!(Number.isFinite(lo) && Number.isFinite(hi))) return [-1, 1]; // (no finite values)
  if (isFlat(lo, hi)) {
    const middle = Math.abs(lo) < TINY && Math.abs(hi) < TINY ? 0 : lo / 2 + hi / 2;
    const d = Math.abs(middle) * 0.1 || 1;
    return [Math.max(-MAX, middle - d), Math.min(MAX, middle + d)];
  }
  const pad = hi * 0.06 - lo * 0.06; // (hi - lo) * 0.06 may be Infinity
  return [Math.max(-MAX, lo - pad), Math.min(MAX, hi + pad)];
}

/** Where v stands in [a, b]: 0 at a, 1 at b (past them beyond); 0.5 for a flat [a, b]. A
 * span wider than the largest float (-1e308 to 1e308) is measured in halves. */
export function unitScale(a, b) {
  if (isFlat(a, b)) return () => 0.5;
  const h = b - a < Infinity ? 1 : 0.5;
  const from = a * h, span = b * h - a * h;
  return (v) => (v * h - from) / span;
}

/** The value a fraction `f` of the way from a to b (unitScale's inverse). */
function lerp(a, b, f) {
  return b - a < Infinity ? a + f * (b - a) : a * (1 - f) + b * f;
}

// ------------------------------------------------------------------------------------ colour map

// viridis, sampled at 9 stops and interpolated into a 256-entry lookup table
const VIRIDIS = [
  [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
  [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37],
];
const LUT = (() => {
  const lut = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * (VIRIDIS.length - 1);
    const k = Math.min(VIRIDIS.length - 2, Math.floor(x));
    const f = x - k;
    for (let c = 0; c < 3; c++) lut[i * 3 + c] = Math.round(VIRIDIS[k][c] * (1 - f) + VIRIDIS[k + 1][c] * f);
  }
  return lut;
})();

// ------------------------------------------------------------------------------------ plotter

const MARGIN = { left: 58, right: 14, top: 12, bottom: 26 }; // left: the least; see _fitMargin
const TICK_GAP = 6; // px between the plot area and its y tick labels
const UNITS_GAP = 8; // px between the widest y tick label and the (rotated) units: 3 read as one (">2576.5")
const UNITS_HALF = 7; // half the rotated units label's width: its line height at 11 px
const MARGIN_SLACK = 8; // px a margin may be wider than needed before it shrinks
// Overlaid series take these in turn (the first is the theme's --plot-line), enough for a
// $stats record's 17 series (which repeated 8 colours); past them, hues a golden angle apart.
const PALETTE = ['', '#e8590c', '#2f9e44', '#ae3ec9', '#1098ad', '#f59f00', '#d6336c', '#5c7cfa',
  '#c92a2a', '#74b816', '#0ca678', '#7048e8', '#868e96', '#9c6644', '#ff8787', '#8f8a00', '#66d9e8'];
const LEGEND_ROWS = 8; // at most; a longer legend ends with "+N more"
const LEGEND_ROW_PX = 17;
// Series this many times larger than others share no y axis with them (needsOwnScales).
const OWN_SCALE_RATIO = 100;
const MARKER_COLORS = { loss: '#cf222e', reconnect: '#b26a00', gap: '#b26a00' };
const MAX_MARKERS = 500;

/**
 * How long a pause between two points of a series may last before its line breaks there:
 * four times its usual interval (`typical`, seconds), at least a second.
 */
export function breakAfter(typical) {
  return Math.max(1, 4 * typical);
}

/**
 * Add the point (t, v) to the time-ordered series `s` (an array of {t, v}), keeping at most
 * `historySeconds` before its newest point and `maxPoints` points. `s.typical` follows its
 * usual interval (seconds): an average that one long pause moves by little (a step counts
 * at most four times the average).
 */
export function addPoint(s, t, v, historySeconds, maxPoints) {
  const n = s.length;
  const newest = n ? s[n - 1].t : -Infinity;
  if (t >= newest) {
    if (n) {
      const dt = t - newest;
      s.typical = s.typical === undefined ? dt : 0.9 * s.typical + 0.1 * Math.min(dt, 4 * s.typical || dt);
    }
    s.push({ t, v });
  } else if (t < newest - historySeconds) {
    // A sender whose clock jumped back by more than the window: that history starts again.
    s.length = 0;
    s.typical = undefined;
    s.push({ t, v });
  } else {
    // An older time than the newest (two writers whose clocks differ, a late frame): in
    // its place. (Clearing the history here left a channel of two such writers unplotted.)
    let i = n;
    while (i > 0 && s[i - 1].t > t) i--;
    s.splice(i, 0, { t, v });
  }
  const cut = s[s.length - 1].t - historySeconds;
  let drop = 0;
  while (drop < s.length && s[drop].t < cut) drop++;
  if (s.length - drop > maxPoints) drop = s.length - maxPoints;
  if (drop) s.splice(0, drop);
}

/**
 * Whether the series of a time series each need their own y scale: their visible ranges
 * (`[lo, hi]` or null) differ in size by two orders of magnitude or more, so a shared axis
 * draws the small ones as flat lines (a $stats record: memory_bytes ~5e8 beside
 * cpu_percent ~5). Series of zeros and empty ones do not count. `was`: whether they had
 * their own scales at the last drawing (they keep them down to a third of the ratio, or a
 * panel near it would switch back and forth).
 */
export function needsOwnScales(ranges, was = false) {
  const sizes = ranges.filter(Boolean).map(([lo, hi]) => Math.max(Math.abs(lo), Math.abs(hi))).filter((m) => m > 0);
  return sizes.length > 1 && Math.max(...sizes) >= (was ? OWN_SCALE_RATIO / 3 : OWN_SCALE_RATIO) * Math.min(...sizes);
}

/**
 * One plot: a time series of one or more numeric channels (overlaid, each its own colour),
 * or the newest 1-D array (a line) or 2-D array (an image) of one channel.
 *
 * Drawing happens at most once per animation frame, however fast messages come: push()
 * only records and asks for a frame. Tools: pause() freezes what is shown (data keeps being
 * recorded), setYRange() fixes the y axis, zoomAt()/panBy() move the x window, the cursor
 * readout follows the pointer, and addMarker() puts a mark on the time axis: 'loss' (with the
 * count of frames lost), 'reconnect', and 'gap' (a resumed connection's exact count, or a reset).
 */
export class Plotter {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{historySeconds?: number, maxPoints?: number}} [o] scalar history kept per series
   */
  constructor(canvas, { historySeconds = 60, maxPoints = 10000 } = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.historySeconds = historySeconds;
    this.maxPoints = maxPoints;
    this.colors = {};
    this.offscreen = null;
    this.units = {}; // series or channel name -> units text (from the channel's meta)
    this.yRange = null; // null: auto; [lo, hi]: fixed
    this.paused = false;
    this.zoom = null; // null: follow the data; time series {span, end} (s); line {i0, i1}
    this.cursor = null; // {x, y} in CSS pixels, or null
    this.drawn = 0; // frames drawn (for tests and the performance note)
    this._frame = 0;
    this._map = null; // the last drawing's pixel mappings, for the cursor readout
    this.refreshColors();
    this.reset();
  }

  /** Forget everything shown (the channels changed). */
  reset(placeholder = '') {
    this.series = new Map(); // series name -> [{t, v}]
    this.markers = []; // {kind, t, count}
    this.seriesIndex = new Map(); // series name -> its channel's place in the panel
    // The series' places, in their channels' order: a series' colour is colorOf(its place).
    // A series forgotten (_forgetStale) leaves a hole there, which its channel's next new
    // series takes: the other series keep their places, and so their colours.
    this._slots = []; // {name, index}, name null for a hole
    this._frameTime = new Map(); // channel's place -> the time of its last frame
    this._appends = 0; // points appended since the last _forgetStale()
    this.view = null;
    this.viewName = null;
    this.viewIndex = 0;
    this.leadKind = null; // the kind of the panel's first channel's last message
    this._ownScales = false;
    this.placeholder = placeholder;
    this.zoom = null;
    this._marginLeft = null; // the last channel's tick labels' (see _fitMargin)
    this.requestDraw();
  }

  refreshColors() {
    const css = getComputedStyle(this.canvas);
    for (const name of ['bg', 'grid', 'axis', 'text', 'line', 'fill']) {
      this.colors[name] = css.getPropertyValue(`--plot-${name}`).trim() || '#888';
    }
  }

  /** Match the canvas' pixel size to its CSS box (crisp lines on HiDPI screens). */
  resize() {
    const r = this.canvas.getBoundingClientRect();
    const dpr = globalThis.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(r.width * dpr));
    const h = Math.max(1, Math.round(r.height * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.draw();
  }

  /** Draw on the next animation frame (many pushes in one frame cost one drawing). */
  requestDraw() {
    if (this._frame || typeof requestAnimationFrame !== 'function') return;
    this._frame = requestAnimationFrame(() => { this._frame = 0; this.draw(); });
  }

  /**
   * Record one message of channel `name`, the `index`th of the panel (0: its first, whose
   * kind the panel shows; its colour is colorOf(index)). Returns the view (its kind tells the
   * page whether to show text; `shown: false` when it is not drawn). Scalars add to the time
   * series; arrays replace the shown array.
   */
  push(msg, name = '', index = 0) {
    const view = classify(msg.data);
    // Only numbers share a panel: another channel than the first is drawn only as a series
    // beside the first's. An array (or a text) overlaid on a time series took the plot from
    // it at each message, and the series took it back at the next: a $stats panel with
    // demo/sine on it flipped between the two views all the time.
    if (index === 0) this.leadKind = view.kind;
    else if (view.kind !== 'scalar' || (this.leadKind ?? 'scalar') !== 'scalar') {
      view.shown = false;
      return view;
    }
    const t = typeof msg.time === 'number' && msg.time > 0 ? msg.time : Date.now() / 1000;
    // the first frame after a reconnection: the resume's exact count ('gap −k'), or 'reset'
    if (msg.gap) this.addMarker('gap', t, msg.gap.kind === 'reset' ? null : msg.gap.lost);
    else if (msg.lost > 0) this.addMarker('loss', t, msg.lost);
    if (view.kind === 'scalar') {
      this._frameTime.set(index, t);
      const fields = view.fields && view.fields.length > 1 ? view.fields : [[view.label, view.value]];
      for (const [field, value] of fields) {
        const key = fields.length > 1 || !name ? `${name ? `${name}.` : ''}${field ?? ''}` : name;
        this._append(key, t, value, index);
      }
      if (this.view && this.view.kind !== 'scalar') this.zoom = null;
      this.view = { kind: 'scalar' };
    } else if (!this.paused) {
      if (!this.view || this.view.kind !== view.kind) this.zoom = null;
      this.view = view;
      this.viewName = name;
      this.viewIndex = index;
    }
    this.placeholder = '';
    if (!this.paused) this.requestDraw();
    return view;
  }

  _append(key, t, v, index = 0) {
    let s = this.series.get(key);
    if (!s) {
      this.series.set(key, (s = []));
      this.seriesIndex.set(key, index);
      this._place(key, index);
    }
    addPoint(s, t, v, this.historySeconds, this.maxPoints);
    this._pushedAt = Date.now();
    // Series that stopped coming are forgotten at each drawing, and here once per as many
    // points as there are series (a page in a background tab draws nothing for hours):
    // a scan of the series costs one step per point appended.
    if (++this._appends >= this.series.size) this._forgetStale();
  }

  /** Give a new series of channel `index` a place: its channel's first hole, or after the
   * channel's (and earlier channels') series. */
  _place(name, index) {
    const slots = this._slots;
    const hole = slots.find((e) => e.name === null && e.index === index);
    if (hole) { hole.name = name; return; }
    let at = slots.length;
    while (at > 0 && slots[at - 1].index > index) at--;
    slots.splice(at, 0, { name, index });
  }

  /**
   * Forget the series whose newest point is outside the time window of its channel: more
   * than historySeconds before (or after: a writer's clock set back) the channel's last
   * frame. A dict's field that stopped coming (a device list that changed) then leaves the
   * plot and its legend with its points, rather than be listed with its last value as if
   * current, forever. Measured on each channel's own clock (its frames' times), not against
   * the other channels': a writer whose clock is behind the others' is not forgotten, nor
   * is a channel that stopped sending (its series then keep their last values).
   */
  _forgetStale() {
    this._appends = 0;
    let forgot = false;
    for (const [name, s] of this.series) {
      const at = this._frameTime.get(this.seriesIndex.get(name) ?? 0);
      if (at === undefined || !s.length || Math.abs(at - s[s.length - 1].t) <= this.historySeconds) continue;
      this.series.delete(name);
      this.seriesIndex.delete(name);
      const slot = this._slots.find((e) => e.name === name);
      if (slot) slot.name = null;
      forgot = true;
    }
    if (forgot) while (this._slots.length && this._slots[this._slots.length - 1].name === null) this._slots.pop();
  }

  /**
   * A mark on the time axis at `t` (epoch seconds): 'loss' (count: frames lost),
   * 'reconnect' (the connection came back; what was missed is unknown), 'gap' (a resumed
   * connection: count = frames missed, exactly). The one call the resume protocol needs.
   */
  addMarker(kind, t = Date.now() / 1000, count = null) {
    this.markers.push({ kind, t, count, label: markerLabel(kind, count) });
    if (this.markers.length > MAX_MARKERS) this.markers.splice(0, this.markers.length - MAX_MARKERS);
    if (!this.paused) this.requestDraw();
  }

  pause(on = !this.paused) {
    this.paused = on;
    if (on) this._frozenAt = this._liveEnd();
    this.requestDraw();
    return this.paused;
  }

  /** `null` for an auto-scaled y axis, or `[lo, hi]`. */
  setYRange(range) {
    this.yRange = range && range[1] > range[0] ? [range[0], range[1]] : null;
    this.requestDraw();
  }

  /** Zoom the x axis around the pointer at CSS x `px` by `factor` (<1 zooms in). */
  zoomAt(px, factor) {
    const m = this._map;
    if (!m) return;
    const [x0, x1] = m.xr;
    const at = m.ix(px);
    const lo = at - (at - x0) * factor, hi = at + (x1 - at) * factor;
    this._setX(lo, hi);
  }

  /** Pan the x axis by `dpx` CSS pixels (drag right: look back in time). */
  panBy(dpx) {
    const m = this._map;
    if (!m) return;
    const [x0, x1] = m.xr;
    const d = ((x1 - x0) * dpx) / m.area.w;
    this._setX(x0 - d, x1 - d);
  }

  _setX(lo, hi) {
    if (isFlat(lo, hi)) return; // zoomed in past what the axis can resolve: no further
    // the time axis is drawn relative to its end (seconds before it): back to epoch seconds
    if (this.view?.kind === 'scalar') this.zoom = { span: hi - lo, end: this._tEnd + hi };
    else this.zoom = { i0: lo, i1: hi };
    this.requestDraw();
  }

  resetZoom() { this.zoom = null; this.requestDraw(); }

  setCursor(pos) { this.cursor = pos; if (this.paused || this.view?.kind !== 'image') this.draw(); else this.requestDraw(); }

  _latestTime() {
    let end = -Infinity;
    for (const s of this.series.values()) if (s.length) end = Math.max(end, s[s.length - 1].t);
    return Number.isFinite(end) ? end : Date.now() / 1000;
  }

  /**
   * The live time axis' end, "now": the newest sample's time (the writers' clock, which may
   * differ from this page's) plus the time since it came. While no frame comes the axis goes
   * on and the line stops short of "now", as a quiet or stopped writer's does.
   */
  _liveEnd() {
    const since = this._pushedAt ? Math.max(0, Date.now() - this._pushedAt) / 1000 : 0;
    return this._latestTime() + since;
  }

  /** What is plotted now, for export: {kind: 'series', names, rows} or {kind, values, shape}. */
  snapshot() {
    const v = this.view;
    if (v?.kind === 'scalar') {
      this._forgetStale();
      const [t0, t1] = this._timeWindow();
      const names = [...this.series.keys()];
      const rows = [];
      names.forEach((name, k) => {
        for (const p of this.series.get(name)) if (p.t >= t0 && p.t <= t1) rows.push([p.t, k, p.v]);
      });
      return { kind: 'series', names, rows };
    }
    if (v?.kind === 'line') {
      const [i0, i1] = this.zoom ? [Math.max(0, Math.floor(this.zoom.i0)), Math.min(v.values.length, Math.ceil(this.zoom.i1) + 1)] : [0, v.values.length];
      return { kind: 'line', values: (v.exact ?? v.values).slice(i0, i1), shape: [i1 - i0], offset: i0, dtype: v.dtype };
    }
    if (v?.kind === 'image') return { kind: 'image', values: v.exact ?? v.values, shape: v.channels > 1 ? [v.height, v.width, v.channels] : [v.height, v.width], dtype: v.dtype };
    return null;
  }

  _timeWindow() {
    const end = this.zoom?.end ?? (this.paused ? this._frozenAt : this._liveEnd());
    const span = this.zoom?.span ?? this.historySeconds;
    return [end - span, end];
  }

  draw() {
    const { ctx, canvas } = this;
    this.drawn++;
    const dpr = globalThis.devicePixelRatio || 1;
    const w = canvas.width / dpr, h = canvas.height / dpr;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = this.colors.bg;
    ctx.fillRect(0, 0, w, h);
    ctx.font = '11px system-ui, sans-serif';
    const left = this._marginLeft ?? MARGIN.left;
    const area = { x: left, y: MARGIN.top, w: w - left - MARGIN.right, h: h - MARGIN.top - MARGIN.bottom };
    this._map = null;
    if (area.w < 20 || area.h < 20) return;
    const v = this.view;
    if (!v || v.kind === 'text') return this.centered(this.placeholder, w, h);
    if (v.kind === 'scalar') this.drawSeries(area);
    else if (v.kind === 'line') this.drawLine(area, v);
    else if (v.kind === 'image') return this.drawImage(area, v, w);
    this.drawCursor(area);
    if (this.paused) {
      ctx.fillStyle = this.colors.text;
      ctx.textAlign = 'right';
      ctx.textBaseline = 'top';
      ctx.font = '600 11px system-ui, sans-serif';
      ctx.fillText('PAUSED', area.x + area.w - 6, area.y + 6);
    }
  }

  centered(message, w, h) {
    if (!message) return;
    const { ctx } = this;
    ctx.fillStyle = this.colors.text;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.font = '13px system-ui, sans-serif';
    ctx.fillText(message, w / 2, h / 2);
  }

  // Grid and labels; returns value <-> pixel mappings.
  axes(area, [x0, x1], [y0, y1], xLabel, yUnits = '') {
    const { ctx } = this;
    const fx = unitScale(x0, x1), fy = unitScale(y0, y1);
    const sx = (x) => area.x + fx(x) * area.w;
    const sy = (y) => area.y + area.h - fy(y) * area.h;
    const ix = (px) => lerp(x0, x1, (px - area.x) / area.w);
    const iy = (py) => lerp(y0, y1, (area.y + area.h - py) / area.h);
    ctx.lineWidth = 1;
    ctx.strokeStyle = this.colors.grid;
    ctx.fillStyle = this.colors.text;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    ctx.beginPath();
    const yTicks = niceTicks(y0, y1, Math.max(2, Math.floor(area.h / 50)));
    const yLabels = tickLabels(yTicks);
    const labelsWide = Math.max(0, ...yLabels.map((label) => ctx.measureText(label).width));
    this._fitMargin(labelsWide, yUnits);
    yTicks.forEach((t, k) => {
      const y = Math.round(sy(t)) + 0.5;
      ctx.moveTo(area.x, y);
      ctx.lineTo(area.x + area.w, y);
      ctx.fillText(yLabels[k], area.x - TICK_GAP, y);
    });
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    const xTicks = niceTicks(x0, x1, Math.max(2, Math.floor(area.w / 90)));
    // Plain ticks (an array's index) share one notation (80000 beside 1.0e+5 did not).
    const xLabels = xLabel === tick ? tickLabels(xTicks) : xTicks.map(xLabel);
    xTicks.forEach((t, k) => {
      const x = Math.round(sx(t)) + 0.5;
      ctx.moveTo(x, area.y);
      ctx.lineTo(x, area.y + area.h);
      ctx.fillText(xLabels[k], x, area.y + area.h + 6);
    });
    ctx.stroke();
    ctx.strokeStyle = this.colors.axis;
    ctx.strokeRect(area.x + 0.5, area.y + 0.5, area.w - 1, area.h - 1);
    // Beside the widest tick label, not over it (at a fixed x, "V" drawn over "2576.5" read
    // as ">2576.5"); _fitMargin made room for it.
    const unitsX = Math.max(UNITS_HALF, area.x - TICK_GAP - labelsWide - UNITS_GAP - UNITS_HALF);
    if (yUnits) {
      ctx.save();
      ctx.translate(unitsX, area.y + area.h / 2);
      ctx.rotate(-Math.PI / 2);
      ctx.textBaseline = 'middle';
      ctx.fillText(yUnits, 0, 0);
      ctx.restore();
    }
    this._map = { area, sx, sy, ix, iy, xr: [x0, x1], yr: [y0, y1] };
    return this._map;
  }

  /**
   * The left margin the y tick labels (``labelsWide`` px) and the units need: a wider one
   * takes effect at the next drawing (this one's mappings are made), so a label that grows
   * costs one frame drawn tight; a margin shrinks only by more than a few pixels, or it
   * would change width whenever a tick label does.
   */
  _fitMargin(labelsWide, yUnits) {
    // Without units, 2 px keep the widest label off the canvas' edge.
    const need = Math.ceil(TICK_GAP + labelsWide + (yUnits ? UNITS_GAP + 2 * UNITS_HALF : 2));
    const want = Math.max(MARGIN.left, need);
    const now = this._marginLeft ?? MARGIN.left;
    if (want > now || want < now - MARGIN_SLACK) {
      this._marginLeft = want;
      this.requestDraw();
    }
  }

  colorOf(k) {
    if (k < PALETTE.length) return PALETTE[k] || this.colors.line;
    return `hsl(${Math.round((k * 137.508) % 360)}, 60%, ${k % 2 ? 38 : 55}%)`;
  }

  /** The series in their channels' order, so that a channel's line has its chip's colour
   * (they took colours in the order their first frames came); a dict's in its fields'.
   * Returns their names and their colours' numbers (colorOf), which a forgotten series'
   * hole does not change. */
  _seriesNames() {
    const names = [], colors = [];
    this._slots.forEach((e, k) => {
      if (e.name !== null && this.series.has(e.name)) { names.push(e.name); colors.push(k); }
    });
    return { names, colors };
  }

  /**
   * The order of the legend's rows (indexes into `names`): the series still coming first,
   * in their places' order, then those that stopped, the latest first, each with how long
   * before its channel's last frame its newest point came (`ago`, seconds). A series is
   * still coming while its line goes on to its channel's last frame (breakAfter). A dict
   * whose fields change listed its first ones, long gone, and put the live one under
   * "+N more".
   */
  _legendOrder(names) {
    const rows = names.map((name, k) => {
      const s = this.series.get(name);
      const newest = s.length ? s[s.length - 1].t : -Infinity;
      const ago = (this._frameTime.get(this.seriesIndex.get(name) ?? 0) ?? newest) - newest;
      return { k, newest, ago, live: !(ago > breakAfter(s.typical ?? 0)) };
    });
    return rows.sort((a, b) => (b.live - a.live) || (a.live ? 0 : b.newest - a.newest) || a.k - b.k);
  }

  _unitsText(names) {
    const units = [...new Set(names.map((n) => this.units[n] ?? this.units[n.split('.')[0]]).filter(Boolean))];
    return units.join(', ');
  }

  drawSeries(area) {
    const { ctx } = this;
    this._forgetStale();
    const { names, colors } = this._seriesNames();
    const [t0, tEnd] = this._timeWindow();
    const ranges = names.map((name) => { // each series' finite min and max in the window
      let lo = Infinity, hi = -Infinity;
      for (const { t, v } of this.series.get(name)) {
        if (t < t0 || t > tEnd || v - v !== 0) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      return lo <= hi ? [lo, hi] : null;
    });
    let all = null;
    for (const r of ranges) if (r) all = all ? [Math.min(all[0], r[0]), Math.max(all[1], r[1])] : r;
    // Series of very different sizes (a $stats record) each get their own scale, their range
    // drawn from 0 to 100 % of the axis; the legend says each one's range, the cursor reads
    // their values. A fixed y range is the operator's: one scale then.
    const own = (this._ownScales = !this.yRange && needsOwnScales(ranges, this._ownScales));
    const yr = own ? padRange([0, 100]) : this.yRange ?? padRange(all ?? [0, 1]);
    const { sx, sy: syAxis } = this.axes(area, [t0 - tEnd, 0], yr,
      (t) => (t === 0 && !this.zoom && !this.paused ? 'now' : `${tick(t)} s`), own ? "% of each series' range" : this._unitsText(names));
    this._tEnd = tEnd;
    ctx.save();
    ctx.beginPath();
    ctx.rect(area.x, area.y, area.w, area.h);
    ctx.clip();
    this._drawMarkers(area, (t) => sx(t - tEnd), t0, tEnd);
    ctx.lineWidth = 1.6;
    ctx.lineJoin = 'round';
    names.forEach((name, k) => {
      const series = this.series.get(name);
      const [lo, hi] = ranges[k] ?? [0, 0];
      const own01 = own && unitScale(lo, hi); // a flat series (isFlat) along the middle
      const sy = own01 ? (v) => syAxis(own01(v) * 100) : syAxis;
      ctx.strokeStyle = this.colorOf(colors[k]);
      ctx.beginPath();
      // A pause much longer than the series' usual interval is a hole in the data (a writer
      // stopped, hung or restarted): the line breaks there rather than draw a value that
      // stayed or a ramp that never was. A point alone between two holes is a dot.
      const hole = breakAfter(series.typical ?? 0);
      let pen = false, prevT = 0;
      for (const p of series) {
        if (!Number.isFinite(p.v) || p.t < t0 - 1 || p.t > tEnd + 1) { pen = false; continue; }
        const x = sx(p.t - tEnd), y = sy(p.v);
        if (pen && p.t - prevT <= hole) ctx.lineTo(x, y);
        else { ctx.moveTo(x + 1.2, y); ctx.arc(x, y, 1.2, 0, 2 * Math.PI); ctx.moveTo(x, y); }
        pen = true;
        prevT = p.t;
      }
      ctx.stroke();
    });
    ctx.restore();
    // legend: each series' newest value (and its range when it has its own scale), top
    // left inside the plot, on the plot's background (it was drawn over the lines); the ones
    // that do not fit are counted
    ctx.textAlign = 'left';
    ctx.textBaseline = 'top';
    ctx.font = '600 13px system-ui, sans-serif';
    const fit = Math.max(1, Math.min(LEGEND_ROWS, Math.floor((area.h - 12) / LEGEND_ROW_PX)));
    const listed = names.length > fit ? fit - 1 : names.length;
    const lines = this._legendOrder(names).slice(0, listed).map(({ k, live, ago }) => {
      const name = names[k];
      const s = this.series.get(name);
      const last = s[s.length - 1];
      const units = this.units[name] ?? this.units[name.split('.')[0]] ?? '';
      const range = own && ranges[k] && !isFlat(ranges[k][0], ranges[k][1]) ? `  (${exact(ranges[k][0])} … ${exact(ranges[k][1])})` : '';
      const when = live ? '' : `  (${duration(ago)} ago)`; // stopped: not a current value
      return [`${name || 'value'} = ${last ? exact(last.v) : '–'}${units ? ` ${units}` : ''}${range}${when}`, this.colorOf(colors[k])];
    });
    if (listed < names.length) lines.push([`+${names.length - listed} more`, this.colors.text]);
    if (names.length > 1) {
      const wide = Math.max(...lines.map(([text]) => ctx.measureText(text).width));
      ctx.fillStyle = this.colors.bg;
      ctx.globalAlpha = 0.85;
      ctx.fillRect(area.x + 3, area.y + 3, wide + 10, lines.length * LEGEND_ROW_PX + 4);
      ctx.globalAlpha = 1;
    }
    lines.forEach(([text, color], k) => {
      ctx.fillStyle = color;
      ctx.fillText(text, area.x + 8, area.y + 6 + k * LEGEND_ROW_PX);
    });
  }

  _drawMarkers(area, px, t0, t1) {
    const { ctx } = this;
    ctx.save();
    ctx.font = '10px system-ui, sans-serif';
    ctx.textAlign = 'center';
    ctx.textBaseline = 'bottom';
    for (const m of this.markers) {
      if (m.t < t0 || m.t > t1) continue;
      const x = Math.round(px(m.t)) + 0.5;
      ctx.strokeStyle = ctx.fillStyle = MARKER_COLORS[m.kind] ?? this.colors.axis;
      ctx.setLineDash(m.kind === 'loss' ? [] : [4, 3]);
      ctx.beginPath();
      ctx.moveTo(x, area.y);
      ctx.lineTo(x, area.y + area.h);
      ctx.stroke();
      ctx.fillText(m.label, x, area.y + area.h - 2);
    }
    ctx.restore();
  }

  drawLine(area, v) {
    const { ctx } = this;
    const vals = v.values;
    const n = vals.length;
    if (n === 0) return this.centered('empty array', area.x * 2 + area.w, area.y * 2 + area.h);
    const i0 = this.zoom?.i0 ?? 0, i1 = this.zoom?.i1 ?? Math.max(1, n - 1);
    const a = Math.max(0, Math.floor(i0)), b = Math.min(n, Math.ceil(i1) + 1);
    // The pixels the samples a..b-1 span (the axis maps i0..i1 onto the area): less than the
    // area when zoomed out past the ends, where the bars must follow the axis (they filled
    // the width and stood beside their indexes).
    const x0 = area.x + ((a - i0) / (i1 - i0 || 1)) * area.w;
    const x1 = area.x + ((b - 1 - i0) / (i1 - i0 || 1)) * area.w;
    const cols = Math.max(1, Math.floor(x1 - x0));
    const shown = b - a;
    // More points than pixels: one vertical min-max stroke per pixel column, found in one
    // pass that also gives the y range (a 1 MiB array took three passes a frame: the range,
    // the columns, the line under the plot, ~100 ms of the page's main thread).
    const columns = shown > cols * 2 ? columnRanges(vals, a, b, cols) : null;
    let range = columns ? columns.range : finiteRange(vals, a, b);
    if (a === 0 && b === n) v.range = range; // the whole array's: describe() takes it
    const yr = this.yRange ?? padRange(range ?? [0, 1]);
    const { sx, sy } = this.axes(area, [i0, i1], yr, tick, this._unitsText([this.viewName ?? '']));
    ctx.save();
    ctx.beginPath();
    ctx.rect(area.x, area.y, area.w, area.h);
    ctx.clip();
    ctx.strokeStyle = this.colorOf(this.viewIndex); // its chip's
    ctx.lineWidth = 1.4;
    ctx.lineJoin = 'round';
    ctx.beginPath();
    if (columns) {
      // Whole-pixel bars, each reaching the one before it so the trace stays unbroken: a
      // stroked path of full-height zigzags (or anti-aliased rectangles) took the compositor
      // 26-57 ms to rasterize per frame of a noisy 1 MiB array, on the page's main thread.
      const { lo, hi } = columns;
      ctx.fillStyle = ctx.strokeStyle;
      let prevTop = NaN, prevBottom = NaN;
      for (let c = 0; c < cols; c++) {
        if (!(lo[c] <= hi[c])) { prevTop = prevBottom = NaN; continue; } // no finite value here
        const yHi = Math.round(sy(hi[c])), yLo = Math.round(sy(lo[c]));
        const top = prevBottom < yHi ? prevBottom : yHi, bottom = prevTop > yLo ? prevTop : yLo;
        ctx.fillRect(Math.round(x0) + c, top - 1, 2, bottom - top + 2);
        prevTop = yHi;
        prevBottom = yLo;
      }
    } else {
      let pen = false;
      for (let i = a; i < b; i++) {
        const y = Number(vals[i]);
        if (!Number.isFinite(y)) { pen = false; continue; }
        if (pen) ctx.lineTo(sx(i), sy(y)); else ctx.moveTo(sx(i), sy(y));
        pen = true;
      }
      if (n === 1) ctx.arc(sx(0), sy(Number(vals[0])), 2, 0, 2 * Math.PI);
    }
    ctx.stroke();
    ctx.restore();
  }

  /** The readout at the pointer: a cross-hair and the values under it. */
  drawCursor(area) {
    const m = this._map, c = this.cursor;
    if (!m || !c || c.x < area.x || c.x > area.x + area.w || c.y < area.y || c.y > area.y + area.h) return;
    const { ctx } = this;
    ctx.save();
    ctx.strokeStyle = this.colors.axis;
    ctx.setLineDash([2, 3]);
    ctx.beginPath();
    ctx.moveTo(Math.round(c.x) + 0.5, area.y);
    ctx.lineTo(Math.round(c.x) + 0.5, area.y + area.h);
    ctx.moveTo(area.x, Math.round(c.y) + 0.5);
    ctx.lineTo(area.x + area.w, Math.round(c.y) + 0.5);
    ctx.stroke();
    ctx.restore();
    const text = this.readout(c.x, c.y);
    if (!text) return;
    ctx.font = '11px system-ui, sans-serif';
    const tw = ctx.measureText(text).width + 10;
    const bx = Math.min(c.x + 10, area.x + area.w - tw), by = Math.max(area.y, c.y - 22);
    ctx.fillStyle = this.colors.bg;
    ctx.globalAlpha = 0.9;
    ctx.fillRect(bx, by, tw, 18);
    ctx.globalAlpha = 1;
    ctx.strokeStyle = this.colors.axis;
    ctx.strokeRect(bx + 0.5, by + 0.5, tw - 1, 17);
    ctx.fillStyle = this.colors.text;
    ctx.textAlign = 'left';
    ctx.textBaseline = 'middle';
    ctx.fillText(text, bx + 5, by + 9);
  }

  /** The cursor readout at CSS pixel (px, py): the x position and the nearest values. */
  readout(px, py) {
    const m = this._map;
    if (!m) return '';
    const x = m.ix(px);
    if (this.view?.kind === 'line') {
      const i = Math.round(x), vals = this.view.values;
      if (i < 0 || i >= vals.length) return '';
      return `[${i}] = ${exact(Number(vals[i]))}`;
    }
    const t = this._tEnd + x;
    const parts = [clock(t)];
    for (const [name, s] of this.series) {
      let best = null;
      for (const p of s) if (!best || Math.abs(p.t - t) < Math.abs(best.t - t)) best = p;
      if (best && Math.abs(best.t - t) < (m.xr[1] - m.xr[0]) / 4) parts.push(`${name || 'value'} ${exact(best.v)}`);
    }
    if (parts.length === 1) parts.push(`y ${tick(m.iy(py))}`);
    return parts.join(' · ');
  }

  drawImage(area, v, canvasWidth) {
    const { ctx } = this;
    const { width, height, channels, values } = v;
    if (!width || !height) return this.centered('empty image', canvasWidth, area.y * 2 + area.h);
    const raw8 = values instanceof Uint8Array || values instanceof Uint8ClampedArray;
    if (v.range === undefined && !(channels > 1 && raw8)) v.range = finiteRange(values);
    const range = this.yRange ?? (channels > 1 && raw8 ? [0, 255] : v.range ?? [0, 1]);
    const [lo, hi] = range;
    // A pixel's level: (x * h - from) * scale, 0..255. A flat range (isFlat: equal, or apart
    // by rounding only) is all the lowest colour, as an equal one was (rounding noise was
    // drawn at full contrast); one wider than the largest float is measured in halves (h).
    const h = hi - lo < Infinity ? 1 : 0.5, from = lo * h;
    const scale = isFlat(lo, hi) ? 0 : 255 / (hi * h - lo * h);
    // Paint the pixels at their own size off screen, then scale them up without smoothing.
    if (!this.offscreen) this.offscreen = document.createElement('canvas');
    const off = this.offscreen;
    if (off.width !== width || off.height !== height) {
      off.width = width;
      off.height = height;
      this._img = null;
    }
    const octx = off.getContext('2d');
    const img = this._img ?? (this._img = octx.createImageData(width, height));
    const px = img.data;
    const n = width * height;
    if (channels === 1) {
      for (let i = 0; i < n; i++) {
        const o = i * 4;
        const x = values[i];
        if (x - x !== 0) { px[o + 3] = 0; continue; }
        // clamped before the | 0, which wraps past 2 ** 31 (a value far over a fixed range)
        const level = (x * h - from) * scale;
        const k = (level > 0 ? (level < 255 ? (level + 0.5) | 0 : 255) : 0) * 3;
        px[o] = LUT[k]; px[o + 1] = LUT[k + 1]; px[o + 2] = LUT[k + 2]; px[o + 3] = 255;
      }
    } else {
      for (let i = 0; i < n; i++) {
        const o = i * 4;
        for (let c = 0; c < 3; c++) px[o + c] = raw8 ? values[i * channels + c] : (Number(values[i * channels + c]) * h - from) * scale;
        px[o + 3] = channels === 4 ? (raw8 ? values[i * 4 + 3] : 255) : 255;
      }
    }
    octx.putImageData(img, 0, 0);
    const barW = channels === 1 ? 64 : 0; // colour bar and its labels
    const fit = Math.min((area.w - barW) / width, area.h / height);
    const dw = width * fit, dh = height * fit;
    const dx = area.x + (area.w - barW - dw) / 2, dy = area.y + (area.h - dh) / 2;
    ctx.imageSmoothingEnabled = fit < 1; // enlarge crisp, shrink smooth
    ctx.drawImage(off, dx, dy, dw, dh);
    ctx.strokeStyle = this.colors.axis;
    ctx.strokeRect(dx - 0.5, dy - 0.5, dw + 1, dh + 1);
    ctx.fillStyle = this.colors.text;
    ctx.textBaseline = 'top';
    // The size under the image's right end, inside the canvas: right-aligned in the left
    // margin it lost its first digit ("56 × 256") once wider than the margin.
    ctx.textAlign = 'right';
    ctx.fillText(`${height} × ${width}`, dx + dw, area.y + area.h + 8);
    // the cursor readout: the pixel under the pointer
    const c = this.cursor;
    if (c && c.x >= dx && c.x < dx + dw && c.y >= dy && c.y < dy + dh) {
      const col = Math.floor((c.x - dx) / fit), row = Math.floor((c.y - dy) / fit);
      const at = (row * width + col) * channels;
      const val = channels === 1 ? exact(Number(values[at])) : Array.from(values.subarray(at, at + channels)).join(', ');
      ctx.textAlign = 'left';
      ctx.fillText(`[${row}, ${col}] = ${val}`, area.x, area.y + area.h + 8);
    }
    if (!barW) return;
    // colour bar at the right edge, the auto-scaled range written beside its ends
    const bw = 12, bx = area.x + area.w - bw, by = area.y, bh = area.h;
    for (let i = 0; i < bh; i++) {
      const k = Math.round((1 - i / Math.max(1, bh - 1)) * 255) * 3;
      ctx.fillStyle = `rgb(${LUT[k]},${LUT[k + 1]},${LUT[k + 2]})`;
      ctx.fillRect(bx, by + i, bw, 1);
    }
    ctx.strokeRect(bx - 0.5, by - 0.5, bw + 1, bh + 1);
    ctx.fillStyle = this.colors.text;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'top';
    ctx.fillText(tick(hi), bx - 4, by);
    ctx.textBaseline = 'bottom';
    ctx.fillText(tick(lo), bx - 4, by + bh);
  }
}

/** One line about a message for under the plot. */
export function describe(msg, view, sub) {
  const parts = [`seq ${msg.seq}`, clock(msg.time), `from ${msg.sender || '?'}`];
  parts.push(`lost ${msg.lost}${sub ? ` (total ${sub.lost})` : ''}`);
  const d = msg.data;
  if (d instanceof NDArray) parts.push(`${d.dtype ?? d.data.constructor.name.replace('Array', '')} [${d.shape.join(' × ')}]`);
  else if (ArrayBuffer.isView(d)) parts.push(`${d.constructor.name}(${d.length})`);
  if (view.kind === 'line' || view.kind === 'image') {
    // One pass per view: a message's line comes here once, drawn or paused.
    if (view.range === undefined) view.range = finiteRange(view.values);
    const r = view.range;
    if (r) parts.push(`min ${exact(r[0])} max ${exact(r[1])}`);
  }
  return parts.join(' · ');
}
