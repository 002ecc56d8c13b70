// Number and value formatting for the dashboard. Missing or non-numeric values show as "–".

export const DASH = '–';

/** Set an element's text only when it changed (no layout work for the same text). */
export function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

const isNum = (x) => (typeof x === 'number' && Number.isFinite(x)) || typeof x === 'bigint';

/** 1234.5 -> "1.23k", 0.5 -> "0.5", 12 -> "12": three significant digits, SI suffixes. */
export function compact(x) {
  if (!isNum(x)) return DASH;
  const v = Number(x);
  const a = Math.abs(v);
  if (a === 0) return '0';
  const units = [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  for (const [scale, suffix] of units) if (a >= scale * 0.9995) return `${trim(v / scale)}${suffix}`;
  if (a < 0.001) return v.toExponential(1);
  return trim(v);
}

function trim(v) {
  const a = Math.abs(v);
  const digits = a >= 100 ? 0 : a >= 10 ? 1 : 2;
  return String(Number(v.toFixed(digits)));
}

/** Bytes with binary units: 1536 -> "1.5 KiB". */
export function bytes(x) {
  if (!isNum(x)) return DASH;
  let v = Number(x);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${Math.round(v)} B` : `${trim(v)} ${units[i]}`;
}

export const rate = (x) => (isNum(x) ? compact(x) : DASH);
export const byteRate = (x) => (isNum(x) ? `${bytes(x)}/s` : DASH);

// One formatter for every count: toLocaleString builds one per call, and with 300 channels
// and 50 clients the counts of a refresh took 45 ms of every second (a profile's top entry).
const COUNTS = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

/** Whole numbers with thousands separators (counts). */
export function count(x) {
  if (!isNum(x)) return DASH;
  return COUNTS.format(typeof x === 'bigint' ? x : Math.round(x));
}

export function percent(x) {
  return isNum(x) ? `${Number(x).toFixed(Number(x) < 10 ? 1 : 0)} %` : DASH;
}

/** Seconds -> "3d 4h", "2h 05m", "4m 07s", "12s". */
export function duration(s) {
  if (!isNum(s) || Number(s) < 0) return DASH;
  let t = Math.floor(Number(s));
  const d = Math.floor(t / 86400); t -= d * 86400;
  const h = Math.floor(t / 3600); t -= h * 3600;
  const m = Math.floor(t / 60); t -= m * 60;
  const p2 = (n) => String(n).padStart(2, '0');
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${p2(m)}m`;
  if (m) return `${m}m ${p2(t)}s`;
  return `${t}s`;
}

/** Epoch seconds -> local "HH:MM:SS.mmm". */
export function clock(epochSeconds) {
  if (!isNum(epochSeconds)) return DASH;
  const d = new Date(Number(epochSeconds) * 1000);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** A plot axis label: short, exact enough to tell ticks apart (``extra``: more digits;
 * ``exponent``: true or false to force the notation, by default chosen by the value). */
export function tick(v, extra = 0, exponent = undefined) {
  const a = Math.abs(v);
  if (a === 0) return '0';
  if (exponent ?? (a >= 1e5 || a < 1e-3)) return v.toExponential(1 + extra);
  return String(Number(v.toPrecision(4 + extra)));
}

/** The labels of an axis's ticks: in one notation (the largest tick's), as short as tick()
 * makes them, with the digits it takes to tell them apart (ticks 1.15e21 apart read
 * "1.3e+21, 1.2e+21, 1.2e+21", and an index axis "80000, 1.0e+5"). */
export function tickLabels(values) {
  const top = Math.max(0, ...values.map((v) => Math.abs(v)));
  const exponent = top >= 1e5 || (top > 0 && top < 1e-3);
  let labels = values.map((v) => tick(v, 0, exponent));
  for (let extra = 1; extra <= 12 && new Set(labels).size < labels.length; extra++) {
    labels = values.map((v) => tick(v, extra, exponent));
  }
  return labels;
}

/** A value read out for people (the info line, the legend, the cursor): integers whole
 * (a uint16 image's max 65535, not tick's "65540"), others to 6 significant digits, or
 * their integer digits and one decimal when that is more. */
export function exact(v) {
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  const a = Math.abs(v);
  if (!Number.isFinite(v) || a === 0) return String(v);
  if (a >= 1e15 || a < 1e-4) return v.toExponential(5).replace(/\.?0+e/, 'e');
  // 6 significant digits, but never fewer than the integer's and one decimal: a 1.42 GHz
  // line, 1420405751.5 Hz, read "1420410000" (its wander of 0.3 Hz gone, a new user).
  const digits = Math.floor(Math.log10(a)) + 1;
  return String(Number(v.toPrecision(Math.min(15, Math.max(6, digits + 1)))));
}

/** Any decoded payload as readable text (JSON-like, typed arrays summarised), bounded. */
export function valueText(value, maxChars = 20000) {
  const seen = new Set();
  const text = JSON.stringify(value, (_key, v) => {
    if (typeof v === 'bigint') return `${v}n`;
    if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
    if (v === undefined) return 'undefined';
    if (v instanceof Date) return v.toISOString();
    if (v instanceof Uint8Array && v.constructor === Uint8Array && v.length > 64) {
      return `<${v.length} bytes>`;
    }
    if (ArrayBuffer.isView(v) && !(v instanceof DataView)) {
      const head = Array.from(v.subarray(0, 32), (x) => (typeof x === 'bigint' ? `${x}n` : x));
      return `${v.constructor.name}(${v.length}) [${head.join(', ')}${v.length > 32 ? ', …' : ''}]`;
    }
    if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [String(k), x]));
    if (v && typeof v === 'object') {
      if (seen.has(v)) return '[cycle]';
      seen.add(v);
    }
    return v;
  }, 2);
  const s = text ?? String(value);
  return s.length > maxChars ? `${s.slice(0, maxChars)}\n…` : s;
}
