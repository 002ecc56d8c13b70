// Unit tests for trio_stream/web/cbor.js against the shared vectors (node --test tests/js/).

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { decode, encode, CBORError, NDArray, Tag, Simple } from '../../trio_stream/web/cbor.js';

const vectors = JSON.parse(
  readFileSync(new URL('../vectors/cbor_vectors.json', import.meta.url), 'utf-8'),
);

const fromHex = (h) => Uint8Array.from(h.match(/../g) ?? [], (b) => parseInt(b, 16));
const toHex = (b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

const SPECIAL_FLOATS = { NaN: NaN, Infinity: Infinity, '-Infinity': -Infinity, '-0': -0 };
const BIG_TYPES = new Set(['BigInt64Array', 'BigUint64Array']);

function typedFrom({ type, values }) {
  const elems = values.map((v) => (BIG_TYPES.has(type) ? BigInt(v) : (SPECIAL_FLOATS[v] ?? v)));
  return type === 'Array' ? elems : globalThis[type].from(elems);
}

// Rebuild the JS value a vector's JSON form stands for (tests/vectors/README.md).
function expected(j) {
  if (Array.isArray(j)) return j.map(expected);
  if (j === null || typeof j !== 'object') return j;
  const keys = Object.keys(j);
  if (keys.length === 1 && keys[0].startsWith('$')) {
    const v = j[keys[0]];
    switch (keys[0]) {
      case '$bigint': return BigInt(v);
      case '$float': return SPECIAL_FLOATS[v];
      case '$bytes': return fromHex(v);
      case '$undefined': return undefined;
      case '$simple': return new Simple(v);
      case '$date': return new Date(v);
      case '$map': return new Map(v.map(([k, x]) => [expected(k), expected(x)]));
      case '$object': return plainObject(v);
      case '$tag': return new Tag(v.tag, expected(v.value));
      case '$typed': return typedFrom(v);
      case '$ndarray': return new NDArray(v.shape, typedFrom(v));
      case '$ext': return new NDArray(v.shape, typedFrom(v), v.dtype);
      default: throw new Error(`unknown special form ${keys[0]}`);
    }
  }
  return plainObject(j);
}

function plainObject(j) {
  const out = {};
  for (const [k, v] of Object.entries(j)) {
    Object.defineProperty(out, k, { value: expected(v), enumerable: true, writable: true, configurable: true });
  }
  return out;
}

// The committed vectors must be what the generator writes (when Python with cbor2 is around).
const venvPython = new URL('../../.venv/bin/python', import.meta.url).pathname;
const python = process.env.TS_PYTHON ?? (existsSync(venvPython) ? venvPython : 'python3');
let generatorSkip = false;
try {
  execFileSync(python, ['-c', 'import cbor2, numpy'], { stdio: 'ignore' });
} catch {
  generatorSkip = 'no Python with cbor2 and numpy';
}
test('cbor_vectors.json is up to date with make_vectors.py', { skip: generatorSkip }, () => {
  const script = new URL('../vectors/make_vectors.py', import.meta.url).pathname;
  execFileSync(python, [script, '--check'], { stdio: 'inherit' }); // exit 1: regenerate the file
});

describe('shared vectors: valid', () => {
  for (const v of vectors.valid) {
    test(v.name, () => {
      const bytes = fromHex(v.hex);
      const want = expected(v.value);
      assert.deepStrictEqual(decode(bytes), want);
      // Same result whatever the alignment of the input buffer (typed arrays copy if needed)
      for (let off = 1; off < 8; off++) {
        const buf = new Uint8Array(bytes.length + off);
        buf.set(bytes, off);
        assert.deepStrictEqual(decode(buf.subarray(off)), want, `offset ${off}`);
      }
      if (v.js_encodes) {
        assert.equal(toHex(encode(want)), v.hex, 'encode(expected)');
        assert.equal(toHex(encode(decode(bytes))), v.hex, 'encode(decode(hex))');
      } else {
        assert.deepStrictEqual(decode(encode(want)), normalize(want), 'round trip');
      }
    });
  }
});

// What a value becomes after an encode/decode trip where bytes may differ.
function normalize(x) {
  if (x instanceof Date) return new Date(x.getTime());
  if (x instanceof NDArray) return new NDArray(x.shape, normalize(x.data), x.dtype);
  if (Array.isArray(x)) return x.map(normalize);
  return x;
}

describe('shared vectors: invalid', () => {
  for (const v of vectors.invalid) {
    test(`${v.name} [${v.level}]`, () => {
      assert.throws(() => decode(fromHex(v.hex)), CBORError);
    });
  }
});

describe('decoder behaviour', () => {
  test('integers: Number when safe, BigInt beyond', () => {
    assert.equal(decode(fromHex('1b001fffffffffffff')), Number.MAX_SAFE_INTEGER);
    assert.equal(decode(fromHex('1b0020000000000000')), 2n ** 53n);
    assert.equal(decode(fromHex('3b001ffffffffffffe')), -Number.MAX_SAFE_INTEGER);
    assert.equal(decode(fromHex('3b001fffffffffffff')), -(2n ** 53n));
    assert.equal(decode(fromHex('3bffffffffffffffff')), -(2n ** 64n));
  });

  test('aligned typed arrays are views, unaligned ones are copied', () => {
    const bytes = encode([new Float64Array([1, 2, 3])]); // 81 d8 56 58 18: data at offset 5
    const buf = new Uint8Array(bytes.length + 3);
    buf.set(bytes, 3); // data now at offset 8: aligned
    const [aligned] = decode(buf.subarray(3));
    assert.equal(aligned.buffer, buf.buffer);
    const [copied] = decode(bytes); // data at offset 5: copied
    assert.notEqual(copied.buffer, bytes.buffer);
    assert.deepStrictEqual(copied, new Float64Array([1, 2, 3]));
  });

  test('maps: text keys -> object, others -> Map, no prototype pollution', () => {
    const obj = decode(fromHex('a1695f5f70726f746f5f5fa1616101'));
    assert.equal(Object.getPrototypeOf(obj), Object.prototype);
    assert.deepStrictEqual(Object.keys(obj), ['__proto__']);
    assert.equal(({}).a, undefined);
    assert.ok(decode(fromHex('a10102')) instanceof Map);
  });

  test('depth limit is configurable', () => {
    const nested = fromHex('8181818100');
    assert.deepStrictEqual(decode(nested), [[[[0]]]]);
    assert.throws(() => decode(nested, { maxDepth: 3 }), /nesting/);
    assert.deepStrictEqual(decode(nested, { maxDepth: 4 }), [[[[0]]]]);
  });

  test('accepts ArrayBuffer and DataView input', () => {
    const b = fromHex('83010203');
    assert.deepStrictEqual(decode(b.buffer), [1, 2, 3]);
    assert.deepStrictEqual(decode(new DataView(b.buffer)), [1, 2, 3]);
    assert.throws(() => decode('83010203'), TypeError);
  });

  test('error messages name the problem and the offset', () => {
    assert.throws(() => decode(fromHex('d82360')), /tag 35 .*refused/);
    assert.throws(() => decode(fromHex('8301')), /truncated.*at byte 1/);
    assert.throws(() => decode(fromHex('82011a0000')), /truncated.*at byte 3/);
    assert.throws(() => decode(fromHex('0000')), /trailing/);
  });

  test('fuzz: mutated and truncated vectors throw CBORError or decode, never anything else', () => {
    let seed = 42;
    const rand = (n) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const started = Date.now();
    for (const v of vectors.valid) {
      const bytes = fromHex(v.hex);
      for (let i = 0; i < 60; i++) {
        const m = bytes.slice(0, rand(bytes.length + 1) || bytes.length);
        for (let k = rand(4); k >= 0 && m.length; k--) m[rand(m.length)] = rand(256);
        try {
          decode(m);
        } catch (e) {
          if (!(e instanceof CBORError)) throw new Error(`${v.name} mutated to ${toHex(m)}: ${e}`);
        }
      }
    }
    for (let i = 0; i < 3000; i++) {
      const m = Uint8Array.from({ length: rand(40) }, () => rand(256));
      try {
        decode(m);
      } catch (e) {
        if (!(e instanceof CBORError)) throw new Error(`random ${toHex(m)}: ${e}`);
      }
    }
    assert.ok(Date.now() - started < 10000, 'fuzzing took too long');
  });
});

describe('encoder behaviour', () => {
  test('every TypedArray maps to its little-endian tag', () => {
    const cases = [
      [Uint8ClampedArray, 68], [Int8Array, 72], [Uint16Array, 69], [Uint32Array, 70],
      [BigUint64Array, 71], [Int16Array, 77], [Int32Array, 78], [BigInt64Array, 79],
      [Float32Array, 85], [Float64Array, 86],
    ];
    for (const [ctor, tag] of cases) {
      const ta = new ctor(3);
      const out = encode(ta);
      assert.equal(out[0], 0xd8, ctor.name);
      assert.equal(out[1], tag, ctor.name);
      assert.deepStrictEqual(decode(out), ta, ctor.name);
    }
    assert.equal(toHex(encode(new Uint8Array([1, 2]))), '420102', 'Uint8Array is a byte string');
  });

  test('subarray views encode only their own elements', () => {
    const base = new Float64Array([1, 2, 3, 4]);
    assert.deepStrictEqual(decode(encode(base.subarray(1, 3))), new Float64Array([2, 3]));
  });

  test('NDArray: tag 40, or the extension tag with a dtype', () => {
    const img = new NDArray([2, 2], new Float32Array([1, 2, 3, 4]));
    const out = encode(img);
    assert.equal(toHex(out.subarray(0, 2)), 'd828');
    assert.deepStrictEqual(decode(out), img);
    const cplx = new NDArray([1], new Float64Array([1, -1]), '<c16');
    assert.deepStrictEqual(decode(encode(cplx)), cplx);
  });

  test('numbers, bigints, dates, simple values', () => {
    assert.equal(toHex(encode(-0)), 'fb8000000000000000');
    assert.equal(toHex(encode(NaN)), 'f97e00');
    assert.equal(toHex(encode(2 ** 60)), 'fb43b0000000000000', 'unsafe integers stay doubles');
    assert.equal(toHex(encode(-(2n ** 64n))), '3bffffffffffffffff');
    assert.equal(toHex(encode(2n ** 64n)), 'c249010000000000000000');
    assert.deepStrictEqual(decode(encode(-(2n ** 70n))), -(2n ** 70n));
    const d = new Date(Date.UTC(2020, 5, 1, 12, 0, 0, 5));
    assert.deepStrictEqual(decode(encode(d)), d);
    assert.deepStrictEqual(decode(encode([null, undefined, true, false])), [null, undefined, true, false]);
    assert.deepStrictEqual(decode(encode(new Set([1, 2]))), [1, 2]);
  });

  test('refuses cycles, functions, symbols and invalid dates', () => {
    const a = [];
    a.push(a);
    assert.throws(() => encode(a), /nesting/);
    assert.throws(() => encode(() => 1), TypeError);
    assert.throws(() => encode(Symbol('x')), TypeError);
    assert.throws(() => encode(new Date(NaN)), TypeError);
  });

  test('large values grow the buffer', () => {
    const big = new Float64Array(100000).map((_, i) => i);
    const s = 'é'.repeat(50000);
    assert.deepStrictEqual(decode(encode({ big, s })), { big, s });
  });
});

describe('limits on what a writer may make us do', () => {
  const head = (major, n) => {
    const b = Buffer.alloc(5);
    b[0] = (major << 5) | 26;
    b.writeUInt32BE(n, 1);
    return b;
  };
  const bignum = (nbytes) => Buffer.concat([Buffer.from([0xc2]), head(2, nbytes), Buffer.alloc(nbytes, 0xff)]);
  const elapsed = (fn) => {
    const t = performance.now();
    try { fn(); } catch (e) { if (!(e instanceof CBORError)) throw e; }
    return performance.now() - t;
  };

  test('a huge bignum is refused before it is read, naming the limit', () => {
    const wire = bignum(1 << 20);
    assert.throws(() => decode(wire), /bignum of 1048576 bytes exceeds maxBignumBytes \(1024\)/);
    assert.ok(elapsed(() => decode(wire)) < 50);
  });

  test('a decimal or bigfloat with a huge mantissa is refused too', () => {
    for (const tag of [0xc4, 0xc5]) {
      const wire = Buffer.concat([Buffer.from([tag, 0x82, 0x00]), bignum(64 * 1024)]);
      assert.throws(() => decode(wire), /maxBignumBytes/);
    }
  });

  test('an indefinite-length bignum is measured after it is read', () => {
    const wire = Buffer.concat([Buffer.from([0xc2, 0x5f]), head(2, 2000), Buffer.alloc(2000), Buffer.from([0xff])]);
    assert.throws(() => decode(wire), /maxBignumBytes/);
  });

  test('bignums within the limit decode exactly, and the limit can be raised', () => {
    assert.equal(decode(bignum(16)), (1n << 128n) - 1n);
    assert.equal(decode(Buffer.from([0xc3, 0x42, 0x01, 0x00])), -257n);
    assert.equal(decode(bignum(4096), { maxBignumBytes: 4096 }), (1n << 32768n) - 1n);
  });

  test('item count is bounded and can be raised', () => {
    const wire = Buffer.concat([head(4, 100000), Buffer.alloc(100000, 0xf6)]);
    assert.throws(() => decode(wire, { maxItems: 1000 }), /maxItems \(1000\)/);
    assert.equal(decode(wire).length, 100000);
  });

  test('a typed array counts as one item, whatever its length', () => {
    const data = Buffer.alloc(8 * 100000);
    const wire = Buffer.concat([Buffer.from([0xd8, 86]), head(2, data.length), data]);
    assert.equal(decode(wire, { maxItems: 2 }).length, 100000);
  });

  test('nesting is bounded and can be raised', () => {
    const wire = Buffer.concat([Buffer.alloc(100, 0x81), Buffer.from([0x01])]);
    assert.throws(() => decode(wire), /nesting exceeds maxDepth \(64\)/);
    let v = decode(wire, { maxDepth: 200 });
    for (let i = 0; i < 100; i++) v = v[0];
    assert.equal(v, 1);
  });

  test('cut at every offset, a value is a CBORError, never anything else', () => {
    const wire = encode({ a: [1, 2n ** 100n, 'x', new Float64Array([1, 2])], b: new Map([[1, 2]]) });
    for (let cut = 0; cut < wire.length; cut++) {
      assert.throws(() => decode(wire.subarray(0, cut)), CBORError);
    }
  });
});
