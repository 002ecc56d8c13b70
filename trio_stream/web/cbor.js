// Compact CBOR (RFC 8949) encoder/decoder for trio_stream payloads and control maps.
//
// Covers what docs/protocol.md section 4 puts on the wire: integers (64-bit as Number when
// safe, BigInt otherwise), floats 16/32/64, text, bytes, arrays, maps, simple values,
// datetimes (tags 0/1), bignums (tags 2/3), RFC 8746 typed arrays (tags 64-87) and n-d arrays
// (tag 40), and the trio_stream extension tag 7631617 for dtypes RFC 8746 lacks.
// Untrusted input never hangs or over-allocates: every length is checked against the bytes
// that are actually there, nesting is bounded, and malformed input throws a CBORError.

export class CBORError extends Error {
  constructor(message) {
    super(message);
    this.name = 'CBORError';
  }
}

/** A tag this module has no meaning for: `{tag, value}`. Encodes back unchanged. */
export class Tag {
  constructor(tag, value) {
    this.tag = tag;
    this.value = value;
  }
}

/** An unassigned CBOR simple value (0-19, 32-255). */
export class Simple {
  constructor(value) {
    this.value = value;
  }
}

/**
 * An n-dimensional array: `shape` (array of ints, row-major) and `data` (a flat TypedArray).
 * Tag 40 decodes to `{shape, data}`; the extension tag also carries `dtype` (numpy type string).
 */
export class NDArray {
  constructor(shape, data, dtype) {
    this.shape = shape;
    this.data = data;
    if (dtype !== undefined) this.dtype = dtype;
  }
}

export const TAG_DATETIME_STRING = 0;
export const TAG_DATETIME_EPOCH = 1;
export const TAG_NDARRAY = 40;
export const TAG_EXT_ARRAY = 7631617;
// Compressed payloads (docs/protocol.md 4.1): this client cannot decode them.
export const TAG_ZLIB_PAYLOAD = 7631618;
export const TAG_ZSTD_PAYLOAD = 7631619;
const TAG_SELF_DESCRIBE = 55799;

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const Float16 = globalThis.Float16Array; // newer engines only; Float32Array otherwise

// RFC 8746 tag layout: 0b010_f_s_e_ll (f float, s signed, e little-endian, ll size).
// Value: [constructor, element size]. Float16 has no portable TypedArray: decoded to Float32Array.
const INT_TYPES = [
  [Uint8Array, 1], [Uint16Array, 2], [Uint32Array, 4], [BigUint64Array, 8],
  [Int8Array, 1], [Int16Array, 2], [Int32Array, 4], [BigInt64Array, 8],
];
const FLOAT_TYPES = [['f16', 2], [Float32Array, 4], [Float64Array, 8], null /* float128 */];

function typedArraySpec(tag) {
  if (tag < 64 || tag > 87) return null;
  const f = (tag >> 4) & 1, s = (tag >> 3) & 1, e = (tag >> 2) & 1, ll = tag & 3;
  if (tag === 68) return { ctor: Uint8ClampedArray, size: 1, little: true };
  if (f) {
    if (s) return null; // 88+ is outside the range anyway
    const t = FLOAT_TYPES[ll];
    return t && { ctor: t[0], size: t[1], little: !!e };
  }
  if (ll === 0 && e) return null; // 68 handled above, 76 is reserved
  const [ctor, size] = INT_TYPES[s * 4 + ll];
  return { ctor, size, little: !!e || size === 1 };
}

// Encoding: each TypedArray class goes to its little-endian tag (protocol.md section 4).
const ENCODE_TAGS = new Map([
  [Uint8ClampedArray, 68], [Int8Array, 72],
  [Uint16Array, 69], [Uint32Array, 70], [BigUint64Array, 71],
  [Int16Array, 77], [Int32Array, 78], [BigInt64Array, 79],
  [Float32Array, 85], [Float64Array, 86],
]);
if (Float16) ENCODE_TAGS.set(Float16, 84);

// numpy dtype kind+size -> TypedArray, for the extension tag.
const DTYPE_CTORS = {
  b1: Uint8Array, u1: Uint8Array, i1: Int8Array,
  u2: Uint16Array, u4: Uint32Array, u8: BigUint64Array,
  i2: Int16Array, i4: Int32Array, i8: BigInt64Array,
  f2: 'f16', f4: Float32Array, f8: Float64Array,
  c8: Float32Array, c16: Float64Array, // complex: interleaved real/imaginary
};

// ---------------------------------------------------------------------------------------
// helpers

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

function product(shape) {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function checkShape(shape, what) {
  if (!Array.isArray(shape)) throw new CBORError(`${what}: shape must be an array`);
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new CBORError(`${what}: invalid dimension ${String(d)}`);
  }
}

/**
 * View `bytes` as elements of `ctor` (element size `size`), honouring the byte order.
 * Zero-copy when the data is host-ordered and aligned; otherwise copied into a fresh buffer.
 */
function bytesToTyped(bytes, ctor, size, little) {
  if (bytes.byteLength % size !== 0) {
    throw new CBORError(`typed array: ${bytes.byteLength} bytes is not a multiple of element size ${size}`);
  }
  const n = bytes.byteLength / size;
  if (ctor === 'f16') {
    const out = new Float32Array(n);
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < n; i++) out[i] = halfToFloat(dv.getUint16(i * 2, little));
    // float16 has no portable TypedArray: the values as float32, marked (for the .npy export)
    Object.defineProperty(out, 'dtype', { value: '<f2' });
    return out;
  }
  if (size === 1) return new ctor(bytes.buffer, bytes.byteOffset, n);
  if (little === LITTLE_ENDIAN_HOST) {
    if (bytes.byteOffset % size === 0) return new ctor(bytes.buffer, bytes.byteOffset, n);
    // A copy into an aligned, offset-0 buffer (Uint8Array slice: a Node Buffer's slice is a view)
    return new ctor(Uint8Array.prototype.slice.call(bytes).buffer);
  }
  // Foreign byte order: swap each element into a copy.
  const copy = new Uint8Array(bytes.byteLength);
  for (let i = 0; i < bytes.byteLength; i += size) {
    for (let j = 0; j < size; j++) copy[i + j] = bytes[i + size - 1 - j];
  }
  return new ctor(copy.buffer);
}

function toUint8Array(input) {
  if (input instanceof Uint8Array) return input;
  if (input instanceof ArrayBuffer) return new Uint8Array(input);
  if (ArrayBuffer.isView(input)) return new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  throw new TypeError('decode: expected a Uint8Array, ArrayBuffer or ArrayBufferView');
}

// ---------------------------------------------------------------------------------------
// decoding

const BREAK = Symbol('break');
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

class Decoder {
  constructor(bytes, limits) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
    this.maxDepth = limits.maxDepth;
    this.maxBignumBytes = limits.maxBignumBytes;
    this.maxItems = limits.maxItems;
    this.itemsLeft = limits.maxItems;
  }

  // A limit of decode()'s options was exceeded: say which, and how to raise it.
  refuse(what, option, limit) {
    throw new CBORError(
      `CBOR: ${what} exceeds ${option} (${limit}); pass a larger ${option} in the decode options ` +
      `(payloadLimits of the client) if your writers mean it (at byte ${this.pos})`);
  }

  fail(msg) {
    throw new CBORError(`CBOR: ${msg} (at byte ${this.pos})`);
  }

  need(n) {
    if (this.pos + n > this.bytes.length) this.fail(`truncated input: need ${n} more byte(s)`);
  }

  remaining() {
    return this.bytes.length - this.pos;
  }

  // Reads the argument of a head. Returns a Number when safe, a BigInt otherwise, or -1 for
  // an indefinite length (ai 31), which the caller validates per major type.
  argument(ai) {
    if (ai < 24) return ai;
    const v = this.view;
    let r;
    switch (ai) {
      case 24: this.need(1); r = v.getUint8(this.pos); this.pos += 1; return r;
      case 25: this.need(2); r = v.getUint16(this.pos); this.pos += 2; return r;
      case 26: this.need(4); r = v.getUint32(this.pos); this.pos += 4; return r;
      case 27: {
        this.need(8);
        const hi = v.getUint32(this.pos), lo = v.getUint32(this.pos + 4);
        this.pos += 8;
        if (hi < 0x200000) return hi * 0x100000000 + lo; // < 2^53: exact as a Number
        return (BigInt(hi) << 32n) | BigInt(lo);
      }
      case 31: return -1;
      default: this.fail(`reserved additional information ${ai}`);
    }
  }

  length(ai, what) {
    const n = this.argument(ai);
    if (typeof n === 'bigint') this.fail(`${what} length too large`);
    return n;
  }

  item(depth) {
    if (depth > this.maxDepth) this.refuse('nesting', 'maxDepth', this.maxDepth);
    if (--this.itemsLeft < 0) this.refuse('the number of items', 'maxItems', this.maxItems);
    this.need(1);
    const ib = this.bytes[this.pos++];
    const major = ib >> 5, ai = ib & 31;
    switch (major) {
      case 0: {
        if (ai === 31) this.fail('indefinite length is not allowed for integers');
        return this.argument(ai);
      }
      case 1: {
        if (ai === 31) this.fail('indefinite length is not allowed for integers');
        const n = this.argument(ai);
        if (typeof n === 'bigint') return -1n - n;
        // -1 - n is exact for n < 2^53; beyond that switch to BigInt
        return n < Number.MAX_SAFE_INTEGER ? -1 - n : -1n - BigInt(n);
      }
      case 2: return this.byteString(ai, depth);
      case 3: return this.textString(ai, depth);
      case 4: return this.array(ai, depth);
      case 5: return this.map(ai, depth);
      case 6: return this.tag(ai, depth);
      default: return this.simple(ai);
    }
  }

  byteString(ai, depth) {
    const n = this.length(ai, 'byte string');
    if (n === -1) return this.chunks(2, depth);
    this.need(n);
    const out = this.bytes.subarray(this.pos, this.pos + n); // a view: no copy
    this.pos += n;
    return out;
  }

  textString(ai, depth) {
    const n = this.length(ai, 'text string');
    if (n === -1) return this.decodeUtf8(this.chunks(3, depth));
    this.need(n);
    const s = this.decodeUtf8(this.bytes.subarray(this.pos, this.pos + n));
    this.pos += n;
    return s;
  }

  decodeUtf8(bytes) {
    // Short ASCII strings (map keys, ops) are the common case; skip TextDecoder's overhead.
    if (bytes.length <= 24) {
      let ascii = true;
      for (let i = 0; i < bytes.length; i++) if (bytes[i] > 0x7f) { ascii = false; break; }
      if (ascii) return String.fromCharCode.apply(null, bytes);
    }
    try {
      return utf8Decoder.decode(bytes);
    } catch {
      this.fail('invalid UTF-8 in text string');
    }
  }

  // Indefinite-length string: definite chunks of the same major type, then a break.
  chunks(major, depth) {
    const parts = [];
    let total = 0;
    for (;;) {
      this.need(1);
      const ib = this.bytes[this.pos];
      if (ib === 0xff) { this.pos++; break; }
      if (ib >> 5 !== major || (ib & 31) === 31) this.fail('invalid chunk in indefinite-length string');
      this.pos++;
      const part = this.byteString(ib & 31, depth);
      parts.push(part);
      total += part.length;
    }
    const out = new Uint8Array(total);
    let off = 0;
    for (const p of parts) { out.set(p, off); off += p.length; }
    return out;
  }

  array(ai, depth) {
    const n = this.length(ai, 'array');
    const out = [];
    if (n === -1) {
      for (;;) {
        const v = this.itemOrBreak(depth + 1);
        if (v === BREAK) return out;
        out.push(v);
      }
    }
    // Every item takes at least one byte: a length beyond the input is malformed, and
    // checking it first stops a 5-byte header from asking for a 4-billion-slot array.
    if (n > this.remaining()) this.fail(`truncated input: array of ${n} items exceeds the ${this.remaining()} byte(s) left`);
    for (let i = 0; i < n; i++) out.push(this.item(depth + 1));
    return out;
  }

  map(ai, depth) {
    const n = this.length(ai, 'map');
    const keys = [], values = [];
    if (n === -1) {
      for (;;) {
        const k = this.itemOrBreak(depth + 1);
        if (k === BREAK) break;
        keys.push(k);
        values.push(this.item(depth + 1));
      }
    } else {
      if (n * 2 > this.remaining()) this.fail(`truncated input: map of ${n} pairs exceeds the ${this.remaining()} byte(s) left`);
      for (let i = 0; i < n; i++) {
        keys.push(this.item(depth + 1));
        values.push(this.item(depth + 1));
      }
    }
    if (keys.every((k) => typeof k === 'string')) {
      const obj = {};
      for (let i = 0; i < keys.length; i++) {
        const k = keys[i];
        if (Object.prototype.hasOwnProperty.call(obj, k)) this.fail(`duplicate map key ${JSON.stringify(k)}`);
        // defineProperty: a "__proto__" key must stay data, never reach the prototype setter
        Object.defineProperty(obj, k, { value: values[i], enumerable: true, writable: true, configurable: true });
      }
      return obj;
    }
    const m = new Map();
    for (let i = 0; i < keys.length; i++) {
      if (m.has(keys[i])) this.fail(`duplicate map key ${String(keys[i])}`);
      m.set(keys[i], values[i]);
    }
    return m;
  }

  itemOrBreak(depth) {
    this.need(1);
    if (this.bytes[this.pos] === 0xff) { this.pos++; return BREAK; }
    return this.item(depth);
  }

  simple(ai) {
    const v = this.view;
    let r;
    switch (ai) {
      case 20: return false;
      case 21: return true;
      case 22: return null;
      case 23: return undefined;
      case 24:
        this.need(1);
        r = this.bytes[this.pos++];
        if (r < 32) this.fail(`simple value ${r} must use the one-byte form`);
        return new Simple(r);
      case 25: this.need(2); r = halfToFloat(v.getUint16(this.pos)); this.pos += 2; return r;
      case 26: this.need(4); r = v.getFloat32(this.pos); this.pos += 4; return r;
      case 27: this.need(8); r = v.getFloat64(this.pos); this.pos += 8; return r;
      case 31: this.fail('unexpected break');
      default:
        if (ai < 20) return new Simple(ai);
        this.fail(`reserved additional information ${ai}`);
    }
  }

  tag(ai, depth) {
    if (ai === 31) this.fail('indefinite length is not allowed for tags');
    const tag = this.argument(ai);
    // Refuse before looking at the content (protocol.md section 4)
    if (tag === 35 || tag === 36) this.fail(`tag ${tag} (${tag === 35 ? 'regular expression' : 'MIME message'}) is refused`);
    const start = this.pos;
    if ((tag === 2 || tag === 3) && this.pos < this.bytes.length && this.bytes[this.pos] >> 5 === 2) {
      // Look at a bignum's size before reading it (tags 4/5 wrap bignums as their mantissa).
      const save = this.pos;
      const head = this.bytes[this.pos++];
      const n = this.argument(head & 31);
      this.pos = save;
      if (n !== -1 && n > this.maxBignumBytes) this.refuse(`a bignum of ${n} bytes`, 'maxBignumBytes', this.maxBignumBytes);
    }
    const value = this.item(depth + 1);
    if ((tag === 2 || tag === 3) && value instanceof Uint8Array && value.length > this.maxBignumBytes) {
      this.refuse(`a bignum of ${value.length} bytes`, 'maxBignumBytes', this.maxBignumBytes); // indefinite length
    }
    try {
      return decodeTag(tag, value);
    } catch (e) {
      if (e instanceof CBORError) throw new CBORError(`CBOR: tag ${tag}: ${e.message} (at byte ${start})`);
      throw e;
    }
  }
}

function decodeTag(tag, value) {
  if (tag >= 64 && tag <= 87) {
    const spec = typedArraySpec(tag);
    if (!spec) return new Tag(tag, value); // reserved (76) and float128 (83, 87)
    if (!(value instanceof Uint8Array)) throw new CBORError('typed array content must be a byte string');
    return bytesToTyped(value, spec.ctor, spec.size, spec.little);
  }
  switch (tag) {
    case TAG_DATETIME_STRING: {
      if (typeof value !== 'string') throw new CBORError('datetime must be a text string');
      // RFC 3339 requires a date, a time and an offset; Date.parse alone is too lenient.
      if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/i.test(value)) {
        throw new CBORError(`invalid RFC 3339 datetime ${JSON.stringify(value)}`);
      }
      const t = Date.parse(value);
      if (Number.isNaN(t)) throw new CBORError(`invalid RFC 3339 datetime ${JSON.stringify(value)}`);
      return new Date(t);
    }
    case TAG_DATETIME_EPOCH: {
      const s = typeof value === 'bigint' ? Number(value) : value;
      if (typeof s !== 'number' || !Number.isFinite(s)) throw new CBORError('epoch datetime must be a finite number');
      return new Date(s * 1000);
    }
    case 2:
    case 3: {
      if (!(value instanceof Uint8Array)) throw new CBORError('bignum content must be a byte string');
      // Through hex: linear, where shifting a BigInt byte by byte is quadratic.
      let hex = '0x0';
      for (const b of value) hex += (b < 16 ? '0' : '') + b.toString(16);
      const n = BigInt(hex);
      return tag === 2 ? n : -1n - n;
    }
    case TAG_NDARRAY: {
      if (!Array.isArray(value) || value.length !== 2) throw new CBORError('expected [shape, data]');
      const [shape, data] = value;
      checkShape(shape, 'n-d array');
      if (!ArrayBuffer.isView(data) && !Array.isArray(data)) throw new CBORError('data must be a typed array or an array');
      if (data.length !== product(shape)) {
        throw new CBORError(`shape [${shape}] needs ${product(shape)} elements, got ${data.length}`);
      }
      return new NDArray(shape, data);
    }
    case TAG_EXT_ARRAY: return decodeExtArray(value);
    case TAG_ZLIB_PAYLOAD:
    case TAG_ZSTD_PAYLOAD:
      throw new CBORError(
        `this payload is ${tag === TAG_ZLIB_PAYLOAD ? 'zlib' : 'zstd'}-compressed (tag ${tag}), which the ` +
        'browser client does not decode: publish to channels that browsers read without compress=',
      );
    case TAG_SELF_DESCRIBE: return value;
    default: return new Tag(tag, value);
  }
}

// trio_stream extension: [dtype, shape, bytes] for dtypes without an RFC 8746 tag.
function decodeExtArray(value) {
  if (!Array.isArray(value) || value.length !== 3) throw new CBORError('expected [dtype, shape, bytes]');
  const [dtype, shape, bytes] = value;
  if (typeof dtype !== 'string') throw new CBORError('dtype must be a text string');
  checkShape(shape, 'extension array');
  if (!(bytes instanceof Uint8Array)) throw new CBORError('data must be a byte string');
  const m = /^([<>|=])([a-zA-Z])(\d{1,3})$/.exec(dtype);
  if (!m) throw new CBORError(`invalid dtype ${JSON.stringify(dtype)}`);
  const [, order, kind, sizeText] = m;
  const itemSize = Number(sizeText);
  const count = product(shape);
  if (bytes.byteLength !== count * itemSize) {
    throw new CBORError(`dtype ${dtype} shape [${shape}] needs ${count * itemSize} bytes, got ${bytes.byteLength}`);
  }
  const ctor = DTYPE_CTORS[kind + sizeText];
  // Unknown to JS (long double, strings, ...): hand out the raw bytes with the dtype.
  if (!ctor) return new NDArray(shape, bytes, dtype);
  const elemSize = kind === 'c' ? itemSize / 2 : itemSize;
  const little = order !== '>'; // '|' (no order) and '=' (native) are little-endian on the wire
  return new NDArray(shape, bytesToTyped(bytes, ctor, elemSize, little), dtype);
}

export const DEFAULT_LIMITS = Object.freeze({ maxDepth: 64, maxBignumBytes: 1024, maxItems: 4194304 });

/**
 * Decode exactly one CBOR data item.
 * @param {Uint8Array|ArrayBuffer|ArrayBufferView} input
 * @param {{maxDepth?: number, maxBignumBytes?: number, maxItems?: number}} [options]
 *   limits on what a writer may make us do (protocol.md section 4): `maxDepth` bounds nesting
 *   of arrays, maps and tags (64), `maxBignumBytes` the bytes of one integer beyond 64 bits,
 *   tags 2/3, also as the mantissa of a decimal or bigfloat (1024), `maxItems` the data items
 *   in one value, a typed array counting as one (4,194,304). Beyond one: a CBORError naming it.
 * Byte strings and aligned little-endian typed arrays are views into `input` (no copy).
 */
export function decode(input, options = {}) {
  const bytes = toUint8Array(input);
  const d = new Decoder(bytes, { ...DEFAULT_LIMITS, ...options });
  const value = d.item(0);
  if (d.pos !== bytes.length) d.fail(`${bytes.length - d.pos} trailing byte(s) after the data item`);
  return value;
}

// ---------------------------------------------------------------------------------------
// encoding

const utf8Encoder = new TextEncoder();

class Encoder {
  constructor(maxDepth) {
    this.buf = new Uint8Array(256);
    this.view = new DataView(this.buf.buffer);
    this.pos = 0;
    this.maxDepth = maxDepth;
  }

  reserve(n) {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u8(b) { this.reserve(1); this.buf[this.pos++] = b; }

  bytes(b) {
    this.reserve(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  // Major type + argument, shortest form. `n` is a non-negative Number or BigInt < 2^64.
  head(major, n) {
    const mt = major << 5;
    if (typeof n === 'bigint') {
      if (n <= 0xffffffffn) return this.head(major, Number(n));
      this.reserve(9);
      this.buf[this.pos] = mt | 27;
      this.view.setBigUint64(this.pos + 1, n);
      this.pos += 9;
      return;
    }
    this.reserve(9);
    const v = this.view, p = this.pos;
    if (n < 24) { this.buf[p] = mt | n; this.pos += 1; }
    else if (n < 0x100) { this.buf[p] = mt | 24; this.buf[p + 1] = n; this.pos += 2; }
    else if (n < 0x10000) { this.buf[p] = mt | 25; v.setUint16(p + 1, n); this.pos += 3; }
    else if (n < 0x100000000) { this.buf[p] = mt | 26; v.setUint32(p + 1, n); this.pos += 5; }
    else {
      this.buf[p] = mt | 27;
      v.setUint32(p + 1, Math.floor(n / 0x100000000));
      v.setUint32(p + 5, n >>> 0);
      this.pos += 9;
    }
  }

  number(x) {
    if (Number.isSafeInteger(x) && !Object.is(x, -0)) {
      if (x >= 0) this.head(0, x);
      else this.head(1, -1 - x);
      return;
    }
    // Non-finite values take the half-precision form (as cbor2 does); the rest are doubles.
    if (Number.isNaN(x)) return this.bytes([0xf9, 0x7e, 0x00]);
    if (x === Infinity) return this.bytes([0xf9, 0x7c, 0x00]);
    if (x === -Infinity) return this.bytes([0xf9, 0xfc, 0x00]);
    this.reserve(9);
    this.buf[this.pos] = 0xfb;
    this.view.setFloat64(this.pos + 1, x);
    this.pos += 9;
  }

  bigint(x) {
    if (x >= 0n && x < 1n << 64n) return this.head(0, x);
    if (x < 0n && x >= -(1n << 64n)) return this.head(1, -1n - x);
    // Beyond 64 bits: bignum tags 2/3 around the big-endian magnitude
    let mag = x >= 0n ? x : -1n - x;
    const out = [];
    while (mag > 0n) { out.unshift(Number(mag & 0xffn)); mag >>= 8n; }
    this.head(6, x >= 0n ? 2 : 3);
    this.head(2, out.length);
    this.bytes(out);
  }

  string(s) {
    const b = utf8Encoder.encode(s);
    this.head(3, b.length);
    this.bytes(b);
  }

  typed(ta) {
    const tag = ENCODE_TAGS.get(ta.constructor);
    if (tag === undefined) throw new TypeError(`cannot encode ${ta.constructor.name}`);
    const raw = new Uint8Array(ta.buffer, ta.byteOffset, ta.byteLength);
    this.head(6, tag);
    this.head(2, raw.length);
    if (LITTLE_ENDIAN_HOST || ta.BYTES_PER_ELEMENT === 1) return this.bytes(raw);
    const size = ta.BYTES_PER_ELEMENT;
    this.reserve(raw.length);
    for (let i = 0; i < raw.length; i += size) {
      for (let j = 0; j < size; j++) this.buf[this.pos + i + j] = raw[i + size - 1 - j];
    }
    this.pos += raw.length;
  }

  ndarray(a, depth) {
    checkShape(a.shape, 'NDArray');
    if (a.dtype === undefined) {
      this.head(6, TAG_NDARRAY);
      this.head(4, 2);
      this.value(a.shape, depth + 1);
      this.value(a.data, depth + 1);
      return;
    }
    // Extension form: the raw little-endian element bytes under the numpy dtype string.
    const d = a.data;
    if (!ArrayBuffer.isView(d)) throw new TypeError('NDArray with dtype needs a TypedArray as data');
    if (!LITTLE_ENDIAN_HOST && d.BYTES_PER_ELEMENT > 1) throw new TypeError('extension arrays need a little-endian host');
    this.head(6, TAG_EXT_ARRAY);
    this.head(4, 3);
    this.string(a.dtype);
    this.value(a.shape, depth + 1);
    const raw = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
    this.head(2, raw.length);
    this.bytes(raw);
  }

  date(d) {
    const t = d.getTime();
    if (Number.isNaN(t)) throw new TypeError('cannot encode an invalid Date');
    // RFC 3339 in UTC, microsecond digits only when needed (the same text cbor2 writes)
    const ms = t % 1000 === 0 ? '' : `.${String(((t % 1000) + 1000) % 1000).padStart(3, '0')}000`;
    this.head(6, TAG_DATETIME_STRING);
    this.string(d.toISOString().replace(/\.\d{3}Z$/, `${ms}Z`));
  }

  value(x, depth) {
    if (depth > this.maxDepth) throw new CBORError(`CBOR: nesting deeper than ${this.maxDepth} (cyclic value?)`);
    switch (typeof x) {
      case 'number': return this.number(x);
      case 'string': return this.string(x);
      case 'boolean': return this.u8(x ? 0xf5 : 0xf4);
      case 'undefined': return this.u8(0xf7);
      case 'bigint': return this.bigint(x);
      case 'object': break;
      default: throw new TypeError(`cannot encode a value of type ${typeof x}`);
    }
    if (x === null) return this.u8(0xf6);
    if (Array.isArray(x)) {
      this.head(4, x.length);
      for (const v of x) this.value(v, depth + 1);
      return;
    }
    if (x instanceof Uint8Array) { this.head(2, x.length); this.bytes(x); return; }
    if (ArrayBuffer.isView(x)) {
      if (x instanceof DataView) {
        const b = new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
        this.head(2, b.length);
        this.bytes(b);
        return;
      }
      return this.typed(x);
    }
    if (x instanceof ArrayBuffer) { this.head(2, x.byteLength); this.bytes(new Uint8Array(x)); return; }
    if (x instanceof Date) return this.date(x);
    if (x instanceof NDArray) return this.ndarray(x, depth);
    if (x instanceof Tag) {
      this.head(6, x.tag);
      return this.value(x.value, depth + 1);
    }
    if (x instanceof Simple) {
      if (x.value < 20) this.u8(0xe0 | x.value);
      else if (x.value >= 32 && x.value <= 255) { this.u8(0xf8); this.u8(x.value); }
      else throw new TypeError(`invalid simple value ${x.value}`);
      return;
    }
    if (x instanceof Map) {
      this.head(5, x.size);
      for (const [k, v] of x) {
        this.value(k, depth + 1);
        this.value(v, depth + 1);
      }
      return;
    }
    if (x instanceof Set) {
      this.head(4, x.size);
      for (const v of x) this.value(v, depth + 1);
      return;
    }
    // Plain object: own enumerable string keys, in insertion order.
    const keys = Object.keys(x);
    this.head(5, keys.length);
    for (const k of keys) {
      this.string(k);
      this.value(x[k], depth + 1);
    }
  }
}

/**
 * Encode one value as CBOR.
 * Numbers: safe integers as CBOR integers, everything else as float64 (NaN/±Infinity as
 * float16). BigInt: 64-bit integers, bignum tags beyond. Uint8Array/ArrayBuffer: byte strings.
 * Other TypedArrays: their little-endian RFC 8746 tag. NDArray: tag 40, or the extension tag
 * when it carries a dtype. Date: tag 0. Map: CBOR map with any keys; plain objects: text keys.
 * @returns {Uint8Array}
 */
export function encode(value, { maxDepth = 64 } = {}) {
  const e = new Encoder(maxDepth);
  e.value(value, 0);
  return e.buf.slice(0, e.pos);
}
