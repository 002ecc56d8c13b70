// The dashboard's .npy export of float16 and bool arrays: saved as '<f2' and '|b1' when the
// dtype is passed, not as the float32 and uint8 copies the browser decodes them to.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { toNpy, halfBits } from '../../trio_stream/web/export.js';
import { decode, NDArray } from '../../trio_stream/web/cbor.js';
import { findPython, ROOT } from './python.mjs';

function npyParts(npy) {
  const headerLen = npy[8] | (npy[9] << 8);
  const header = new TextDecoder().decode(npy.subarray(10, 10 + headerLen));
  assert.equal((10 + headerLen) % 64, 0);
  return { descr: /'descr': '([^']*)'/.exec(header)[1], shape: /'shape': \(([^)]*)\)/.exec(header)[1], data: npy.slice(10 + headerLen) };
}

test('.npy of float16: every half value decoded (as float32) is saved with its own bits', () => {
  // All 65,536 bit patterns as one RFC 8746 float16 typed array (tag 84), as a writer sends
  // them; the decoder hands out a Float32Array of their values.
  const bits = Uint16Array.from({ length: 65536 }, (_, i) => i);
  const cbor = new Uint8Array(7 + bits.byteLength);
  cbor.set([0xd8, 84, 0x5a, 0x00, 0x02, 0x00, 0x00]);
  cbor.set(new Uint8Array(bits.buffer), 7);
  const decoded = decode(cbor);
  assert.ok(decoded instanceof Float32Array, 'the browser keeps no float16 type');
  const { descr, shape, data } = npyParts(toNpy(decoded, [65536], '<f2'));
  assert.equal(descr, '<f2');
  assert.equal(shape, '65536,');
  const saved = new Uint16Array(data.buffer);
  for (let i = 0; i < 65536; i++) {
    const nan = (i & 0x7c00) === 0x7c00 && (i & 0x3ff);
    if (nan) assert.equal(saved[i], 0x7e00, `NaN ${i.toString(16)}`); // a NaN, quiet
    else assert.equal(saved[i], i, `half ${i.toString(16)}`);
  }
});

test('float16 bits of numbers between halves: to nearest, ties to even', () => {
  const cases = [
    [1 / 3, 0x3555], [0.1, 0x2e66], [-0, 0x8000], [65504, 0x7bff], [65519, 0x7bff],
    [65520, 0x7c00], [1e6, 0x7c00], [-Infinity, 0xfc00], [2 ** -25, 0], [3 * 2 ** -25, 2],
    [2 ** -14 - 2 ** -25, 0x0400], [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02], [1e-10, 0],
  ];
  for (const [x, want] of cases) assert.equal(halfBits(x), want, String(x));
});

test('.npy of bool: an extension bool array is saved as |b1, not as uint8', () => {
  // [dtype '|b1', shape [2, 2], 4 bytes] under the extension tag 7631617, as Python sends it
  const cbor = Uint8Array.from([
    0xda, 0x00, 0x74, 0x73, 0x01, 0x83, 0x63, ...new TextEncoder().encode('|b1'),
    0x82, 0x02, 0x02, 0x44, 1, 0, 0, 1,
  ]);
  const nd = decode(cbor);
  assert.ok(nd instanceof NDArray && nd.data instanceof Uint8Array && nd.dtype === '|b1');
  const { descr, shape, data } = npyParts(toNpy(nd.data, nd.shape, nd.dtype));
  assert.deepStrictEqual([descr, shape, [...data]], ['|b1', '2, 2', [1, 0, 0, 1]]);
  assert.deepStrictEqual([...npyParts(toNpy(Uint8Array.from([0, 2, 255]), [3], '|b1')).data], [0, 1, 1]);
});

test('.npy without a dtype, or with one the TypedArray tells: as before', () => {
  assert.equal(npyParts(toNpy(new Float32Array([1.5]))).descr, '<f4');
  assert.equal(npyParts(toNpy(new Uint8Array([1]), [1])).descr, '|u1');
  assert.equal(npyParts(toNpy(new Float64Array([1.5]), [1], '<f8')).descr, '<f8');
  assert.equal(npyParts(toNpy(new BigInt64Array([1n]), [1], '<i8')).descr, '<i8');
});

const python = findPython('numpy, trio_stream');

test('.npy of float16 and bool arrays that numpy loads as the arrays published', { skip: python ? false : 'no Python with numpy' }, () => {
  // What /tmp/s20/data/npy_export.py saw through the dashboard: float16 saved as float32,
  // bool as uint8 (values kept, dtype changed).
  const made = {
    f16: 'np.arange(12, dtype=np.float16).reshape(3, 4) / 3',
    bool: 'np.arange(12).reshape(3, 4) % 2 == 0',
  };
  const dir = mkdtempSync(join(tmpdir(), 'npy-'));
  try {
    const script = (body) => execFileSync(python, ['-c', `import sys, numpy as np\n${body}`], { cwd: ROOT, encoding: 'utf-8' });
    for (const [name, expr] of Object.entries(made)) {
      const hex = script(`from trio_stream._protocol.codec import encode_payload\nprint(b"".join(bytes(p) for p in encode_payload(${expr})).hex())`).trim();
      const value = decode(Uint8Array.from(Buffer.from(hex, 'hex')));
      assert.ok(value instanceof NDArray);
      // float16 arrives as a Float32Array under tag 40 with no dtype: the caller says '<f2'
      const dtype = value.dtype ?? (name === 'f16' ? '<f2' : undefined);
      writeFileSync(join(dir, `${name}.npy`), toNpy(value.data, value.shape, dtype));
    }
    const checked = script([
      `d = ${JSON.stringify(dir)}`,
      ...Object.entries(made).map(([name, expr]) => `a = np.load(d + "/${name}.npy"); b = ${expr}; print("${name}", a.dtype, a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes())`),
    ].join('\n'));
    assert.equal(checked, 'f16 float16 True\nbool bool True\n');
    assert.deepStrictEqual(readFileSync(join(dir, 'bool.npy')).subarray(-12).toJSON().data, [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
