// Live plot on a <canvas>, no chart library. classify() decides how a decoded payload is
// shown (pure, tested in Node); Plotter draws it: scalars as a scrolling time series, 1-D arrays
// as a line, 2-D arrays as an auto-scaled image with a colour map, anything else as text.

import { NDArray } from './cbor.js';
import { tick, valueText, clock } from './format.js';

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

function fromShape(shape, data, label, dtype) {
  const dims = shape.length > 2 ? shape.filter((d) => d !== 1) : shape; // squeeze (1, h, w) etc.
  if (dims.length === 0) return { kind: 'scalar', value: Number(data[0]), label };
  if (dims.length === 1) return { kind: 'line', values: data, label };
  if (dims.length === 2) return { kind: 'image', height: dims[0], width: dims[1], channels: 1, values: data, label };
  if (dims.length === 3 && (dims[2] === 3 || dims[2] === 4)) {
    return { kind: 'image', height: dims[0], width: dims[1], channels: dims[2], values: data, label };
  }
  return { kind: 'text', text: `${dtype ?? data.constructor.name} array of shape [${shape.join(', ')}]` };
}

/**
 * How to show one payload:
 *   {kind: 'scalar', value, label}            a number (or a dict's first numeric field)
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
    return fromShape(data.shape, numeric, shown, data.dtype);
  }
  const arr = numericArray(data);
  if (arr) return { kind: 'line', values: arr, label };
  if (data && typeof data === 'object' && !Array.isArray(data) && !(data instanceof Map) && !(data instanceof Date)
      && !ArrayBuffer.isView(data)) {
    for (const [k, v] of Object.entries(data)) {
      if ((typeof v === 'number' && !Number.isNaN(v)) || typeof v === 'bigint') return { kind: 'scalar', value: Number(v), label: k };
    }
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

/** Round tick values covering [lo, hi], about `count` of them. */
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

function padRange([lo, hi]) {
  if (hi === lo) {
    const d = Math.abs(lo) * 0.1 || 1;
    return [lo - d, hi + d];
  }
  const pad = (hi - lo) * 0.06;
  return [lo - pad, hi + pad];
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

const MARGIN = { left: 58, right: 14, top: 12, bottom: 26 };

export class Plotter {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{historySeconds?: number, maxPoints?: number}} [o] scalar history kept
   */
  constructor(canvas, { historySeconds = 60, maxPoints = 10000 } = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.historySeconds = historySeconds;
    this.maxPoints = maxPoints;
    this.colors = {};
    this.offscreen = null;
    this.refreshColors();
    this.reset();
  }

  /** Forget the history (a new channel was picked). */
  reset(placeholder = '') {
    this.series = []; // scalar history: {t, v}
    this.seriesLabel = null;
    this.view = null;
    this.placeholder = placeholder;
    this.draw();
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

  /** Show one message. Returns the view (its kind tells the page whether to show text). */
  push(msg) {
    const view = classify(msg.data);
    if (view.kind === 'scalar') {
      if (this.view?.kind !== 'scalar' || this.seriesLabel !== view.label) this.series = [];
      this.seriesLabel = view.label;
      const t = typeof msg.time === 'number' && msg.time > 0 ? msg.time : Date.now() / 1000;
      // A sender whose clock jumped back would fold the time axis: restart the history.
      if (this.series.length && t < this.series[this.series.length - 1].t - 1) this.series = [];
      this.series.push({ t, v: view.value });
      const cut = t - this.historySeconds;
      let drop = 0;
      while (drop < this.series.length && this.series[drop].t < cut) drop++;
      if (this.series.length - drop > this.maxPoints) drop = this.series.length - this.maxPoints;
      if (drop) this.series.splice(0, drop);
    }
    this.view = view;
    this.placeholder = '';
    this.draw();
    return view;
  }

  draw() {
    const { ctx, canvas } = this;
    const dpr = globalThis.devicePixelRatio || 1;
    const w = canvas.width / dpr, h = canvas.height / dpr;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = this.colors.bg;
    ctx.fillRect(0, 0, w, h);
    ctx.font = '11px system-ui, sans-serif';
    const area = { x: MARGIN.left, y: MARGIN.top, w: w - MARGIN.left - MARGIN.right, h: h - MARGIN.top - MARGIN.bottom };
    if (area.w < 20 || area.h < 20) return;
    const v = this.view;
    if (!v || v.kind === 'text') return this.centered(this.placeholder, w, h);
    if (v.kind === 'scalar') return this.drawSeries(area);
    if (v.kind === 'line') return this.drawLine(area, v);
    if (v.kind === 'image') return this.drawImage(area, v, w);
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

  // Grid and labels; returns value -> pixel mappings.
  axes(area, [x0, x1], [y0, y1], xLabel) {
    const { ctx } = this;
    const sx = (x) => area.x + ((x - x0) / (x1 - x0 || 1)) * area.w;
    const sy = (y) => area.y + area.h - ((y - y0) / (y1 - y0 || 1)) * area.h;
    ctx.lineWidth = 1;
    ctx.strokeStyle = this.colors.grid;
    ctx.fillStyle = this.colors.text;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    ctx.beginPath();
    for (const t of niceTicks(y0, y1, Math.max(2, Math.floor(area.h / 50)))) {
      const y = Math.round(sy(t)) + 0.5;
      ctx.moveTo(area.x, y);
      ctx.lineTo(area.x + area.w, y);
      ctx.fillText(tick(t), area.x - 6, y);
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (const t of niceTicks(x0, x1, Math.max(2, Math.floor(area.w / 90)))) {
      const x = Math.round(sx(t)) + 0.5;
      ctx.moveTo(x, area.y);
      ctx.lineTo(x, area.y + area.h);
      ctx.fillText(xLabel(t), x, area.y + area.h + 6);
    }
    ctx.stroke();
    ctx.strokeStyle = this.colors.axis;
    ctx.strokeRect(area.x + 0.5, area.y + 0.5, area.w - 1, area.h - 1);
    return { sx, sy };
  }

  drawSeries(area) {
    const { ctx, series } = this;
    const last = series[series.length - 1];
    const tEnd = last.t, tStart = tEnd - this.historySeconds;
    const yr = padRange(finiteRange(series.map((p) => p.v)) ?? [0, 1]);
    const { sx, sy } = this.axes(area, [tStart - tEnd, 0], yr, (t) => (t === 0 ? 'now' : `${tick(t)} s`));
    ctx.save();
    ctx.beginPath();
    ctx.rect(area.x, area.y, area.w, area.h);
    ctx.clip();
    ctx.strokeStyle = this.colors.line;
    ctx.lineWidth = 1.6;
    ctx.lineJoin = 'round';
    ctx.beginPath();
    let pen = false;
    for (const p of series) {
      if (!Number.isFinite(p.v)) { pen = false; continue; }
      const x = sx(p.t - tEnd), y = sy(p.v);
      if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      pen = true;
    }
    ctx.stroke();
    if (Number.isFinite(last.v)) {
      ctx.fillStyle = this.colors.line;
      ctx.beginPath();
      ctx.arc(sx(0), sy(last.v), 3, 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.restore();
    // the latest value, large, top left inside the plot
    ctx.fillStyle = this.colors.text;
    ctx.textAlign = 'left';
    ctx.textBaseline = 'top';
    ctx.font = '600 15px system-ui, sans-serif';
    const name = this.seriesLabel ? `${this.seriesLabel} = ` : '';
    ctx.fillText(`${name}${tick(last.v)}`, area.x + 8, area.y + 6);
  }

  drawLine(area, v) {
    const { ctx } = this;
    const vals = v.values;
    const n = vals.length;
    if (n === 0) return this.centered('empty array', area.x * 2 + area.w, area.y * 2 + area.h);
    const yr = padRange(finiteRange(vals) ?? [0, 1]);
    const { sx, sy } = this.axes(area, [0, Math.max(1, n - 1)], yr, (t) => tick(t));
    ctx.save();
    ctx.beginPath();
    ctx.rect(area.x, area.y, area.w, area.h);
    ctx.clip();
    ctx.strokeStyle = this.colors.line;
    ctx.lineWidth = 1.4;
    ctx.lineJoin = 'round';
    ctx.beginPath();
    const cols = Math.floor(area.w);
    if (n > cols * 2) {
      // More points than pixels: one vertical min-max stroke per pixel column.
      for (let c = 0; c < cols; c++) {
        const i0 = Math.floor((c * n) / cols), i1 = Math.max(i0 + 1, Math.floor(((c + 1) * n) / cols));
        const r = finiteRange(vals, i0, i1);
        if (!r) continue;
        const x = area.x + c + 0.5;
        if (c === 0) ctx.moveTo(x, sy(r[1])); else ctx.lineTo(x, sy(r[1]));
        ctx.lineTo(x, sy(r[0]));
      }
    } else {
      let pen = false;
      for (let i = 0; i < n; i++) {
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

  drawImage(area, v, canvasWidth) {
    const { ctx } = this;
    const { width, height, channels, values } = v;
    if (!width || !height) return this.centered('empty image', canvasWidth, area.y * 2 + area.h);
    const raw8 = values instanceof Uint8Array || values instanceof Uint8ClampedArray;
    const range = channels > 1 && raw8 ? [0, 255] : finiteRange(values) ?? [0, 1];
    const [lo, hi] = range;
    const scale = hi > lo ? 255 / (hi - lo) : 0;
    // Paint the pixels at their own size off screen, then scale them up without smoothing.
    if (!this.offscreen) this.offscreen = document.createElement('canvas');
    const off = this.offscreen;
    off.width = width;
    off.height = height;
    const octx = off.getContext('2d');
    const img = octx.createImageData(width, height);
    const px = img.data;
    const n = width * height;
    for (let i = 0; i < n; i++) {
      const o = i * 4;
      if (channels === 1) {
        const x = Number(values[i]);
        if (!Number.isFinite(x)) { px[o + 3] = 0; continue; }
        const k = Math.max(0, Math.min(255, Math.round((x - lo) * scale))) * 3;
        px[o] = LUT[k]; px[o + 1] = LUT[k + 1]; px[o + 2] = LUT[k + 2]; px[o + 3] = 255;
      } else {
        for (let c = 0; c < 3; c++) px[o + c] = raw8 ? values[i * channels + c] : (Number(values[i * channels + c]) - lo) * scale;
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
    ctx.textAlign = 'right';
    ctx.textBaseline = 'top';
    ctx.fillText(`${height} × ${width}`, area.x - 6, area.y);
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
    const r = finiteRange(view.values);
    if (r) parts.push(`min ${tick(r[0])} max ${tick(r[1])}`);
  }
  return parts.join(' · ');
}
