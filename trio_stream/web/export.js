// Export what a plot shows: CSV for time series and arrays, .npy (NumPy format v1.0, written
// here: a small header and the raw little-endian data) for arrays. Pure: tested in Node.

const NPY_DTYPES = new Map([
  [Float64Array, '<f8'], [Float32Array, '<f4'], [Int8Array, '|i1'], [Uint8Array, '|u1'],
  [Uint8ClampedArray, '|u1'], [Int16Array, '<i2'], [Uint16Array, '<u2'], [Int32Array, '<i4'],
  [Uint32Array, '<u4'], [globalThis.BigInt64Array, '<i8'], [globalThis.BigUint64Array, '<u8'],
  [globalThis.Float16Array, '<f2'], // newer engines only
].filter(([ctor]) => ctor));

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

const roundHalfEven = (v) => {
  const f = Math.floor(v);
  const d = v - f;
  return d > 0.5 || (d === 0.5 && f % 2 === 1) ? f + 1 : f;
};

/** The IEEE 754 half-precision bits of the number `x`, rounded to nearest (ties to even). */
export function halfBits(x) {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a === Infinity) return sign | 0x7c00;
  if (a < 2 ** -14) return sign | roundHalfEven(a * 2 ** 24); // subnormal (1024: the least normal)
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e -= 1; // log2 of a power of two's neighbour can be off by one
  else if (2 ** (e + 1) <= a) e += 1;
  let m = roundHalfEven((a / 2 ** e - 1) * 1024); // exact: scaling by powers of two
  if (m === 1024) { m = 0; e += 1; }
  if (e > 15) return sign | 0x7c00; // 65520 and beyond round to infinity
  return sign | ((e + 15) << 10) | m;
}

/**
 * The data and descr that `dtype` (a numpy dtype string the payload carried) asks of `values`,
 * for the dtypes a TypedArray does not tell: float16 (the decoder hands out a Float32Array of
 * the same values, or a Float16Array) and bool (a Uint8Array); null for any other dtype.
 */
function asDtype(values, dtype) {
  const kind = typeof dtype === 'string' ? /^[<=|]?(f2|b1)$/.exec(dtype)?.[1] : undefined;
  if (kind === 'f2') {
    if (globalThis.Float16Array && values instanceof globalThis.Float16Array) return [values, '<f2'];
    const bits = new Uint16Array(values.length);
    for (let i = 0; i < values.length; i++) bits[i] = halfBits(Number(values[i]));
    return [bits, '<f2'];
  }
  if (kind === 'b1') return [Uint8Array.from(values, (v) => (v ? 1 : 0)), '|b1'];
  return null;
}

/**
 * An .npy file (bytes) holding `values` (a TypedArray) with `shape` (C order). `dtype`: the
 * numpy dtype string of the array as sent, when the TypedArray does not say it: '<f2'
 * (float16, decoded as float32 values) and '|b1' (bool, decoded as uint8) are saved as such;
 * without it (or for another dtype) the TypedArray's own type is saved.
 */
export function toNpy(values, shape = [values.length], dtype = undefined) {
  let [data, descr] = asDtype(values, dtype) ?? [values, NPY_DTYPES.get(values.constructor)];
  if (!descr) { data = Float64Array.from(values, Number); descr = '<f8'; }
  if (!LITTLE_ENDIAN) throw new Error('.npy export needs a little-endian machine');
  const dims = shape.length === 1 ? `${shape[0]},` : shape.join(', ');
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${dims}), }`;
  // magic (6) + version (2) + header length (2) + header, padded with spaces to 64 bytes, '\n'
  const unpadded = 10 + header.length + 1;
  header += ' '.repeat((64 - (unpadded % 64)) % 64) + '\n';
  const out = new Uint8Array(10 + header.length + data.byteLength);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0], 0); // \x93NUMPY v1.0
  out[8] = header.length & 0xff;
  out[9] = header.length >> 8;
  for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), 10 + header.length);
  return out;
}

const csvCell = (x) => {
  const s = String(x);
  return /[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
};

/**
 * CSV of a plot snapshot: time series as `time,<series...>` (one row per time, empty cells
 * where a series has no sample), a line as `index,value`, an image as its rows.
 */
export function toCsv(snap) {
  if (snap.kind === 'series') {
    const byTime = new Map();
    for (const [t, k, v] of snap.rows) {
      let row = byTime.get(t);
      if (!row) byTime.set(t, (row = new Array(snap.names.length).fill('')));
      row[k] = v;
    }
    const lines = [['time', ...snap.names.map((n) => n || 'value')].map(csvCell).join(',')];
    for (const t of [...byTime.keys()].sort((a, b) => a - b)) lines.push([t, ...byTime.get(t)].join(','));
    return `${lines.join('\n')}\n`;
  }
  if (snap.kind === 'line') {
    const lines = ['index,value'];
    snap.values.forEach((v, i) => lines.push(`${i + (snap.offset ?? 0)},${v}`));
    return `${lines.join('\n')}\n`;
  }
  const [h, w, c = 1] = snap.shape;
  const lines = [];
  for (let r = 0; r < h; r++) lines.push(Array.from(snap.values.subarray(r * w * c, (r + 1) * w * c)).join(','));
  return `${lines.join('\n')}\n`;
}

/** Let the browser save `bytes` (a string or Uint8Array) as `filename`. */
export function download(filename, bytes, type) {
  const url = URL.createObjectURL(new Blob([bytes], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
