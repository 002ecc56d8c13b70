// The dashboard's pure helpers: .npy and CSV export, the layout kept in the URL.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toNpy, toCsv } from '../../trio_stream/web/export.js';
import { parseLayout, formatLayout, snapRate, RATES_HZ, DEFAULT_RATE_HZ } from '../../trio_stream/web/layout.js';

test('.npy: a v1.0 header NumPy reads, 64-byte aligned, then the raw data', () => {
  const npy = toNpy(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
  assert.deepStrictEqual([...npy.subarray(0, 8)], [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
  const headerLen = npy[8] | (npy[9] << 8);
  assert.equal((10 + headerLen) % 64, 0);
  const header = new TextDecoder().decode(npy.subarray(10, 10 + headerLen));
  assert.match(header, /^\{'descr': '<f4', 'fortran_order': False, 'shape': \(2, 3\), \} *\n$/);
  assert.deepStrictEqual([...new Float32Array(npy.slice(10 + headerLen).buffer)], [1, 2, 3, 4, 5, 6]);
  assert.match(new TextDecoder().decode(toNpy(new Uint8Array(3)).subarray(10, 80)), /'\|u1'.*'shape': \(3,\)/);
});

test('CSV: time series aligned on time, lines with their index', () => {
  const csv = toCsv({ kind: 'series', names: ['a', 'b'], rows: [[1, 0, 10], [2, 0, 20], [1, 1, 5]] });
  assert.equal(csv, 'time,a,b\n1,10,5\n2,20,\n');
  assert.equal(toCsv({ kind: 'line', values: new Float64Array([7, 8]), offset: 3 }), 'index,value\n3,7\n4,8\n');
  assert.equal(toCsv({ kind: 'image', values: new Uint8Array([1, 2, 3, 4]), shape: [2, 2] }), '1,2\n3,4\n');
});

test('layout: round trip, old single-channel links, bad settings ignored', () => {
  const panels = [
    { channels: ['demo/sine', 'a,b;c'], rate: 30, y: [-1, 1.5] },
    { channels: ['demo/image'], rate: DEFAULT_RATE_HZ, y: null },
  ];
  assert.deepStrictEqual(parseLayout(formatLayout(panels)), panels);
  assert.deepStrictEqual(parseLayout('#AnalogInput1'), [{ channels: ['AnalogInput1'], rate: DEFAULT_RATE_HZ, y: null }]);
  assert.deepStrictEqual(parseLayout('#x~r=-3&y=5:1'), [{ channels: ['x'], rate: DEFAULT_RATE_HZ, y: null }]);
  assert.equal(formatLayout([]), '');
});

test("layout: a rate is one of the menu's (1-30 Hz), the nearest by ratio", () => {
  // r=1000 was taken as is: 1000 Hz asked of the server, a 500-frame buffer, a blank menu
  assert.equal(parseLayout('#demo%2Fsine~r=1000')[0].rate, 30);
  assert.equal(parseLayout('#a~r=7')[0].rate, 5);
  assert.equal(parseLayout('#a~r=0.1')[0].rate, 1);
  assert.equal(parseLayout('#a~r=Infinity')[0].rate, 30);
  assert.equal(formatLayout(parseLayout('#a~r=1000')), '#a~r=30');
  for (const r of RATES_HZ) assert.equal(snapRate(r), r);
  assert.equal(snapRate(20), 30); // 1.5 from 30, 2 from 10
  assert.equal(snapRate(NaN), DEFAULT_RATE_HZ);
});

test('.npy of 64-bit integers keeps them exact, though the plot draws float64 copies', async () => {
  // Nanosecond timestamps past 2**53: the export wrote the float64 copy the plot draws, in
  // which all four were equal.
  const { classify } = await import('../../trio_stream/web/plot.js');
  const { NDArray } = await import('../../trio_stream/web/cbor.js');
  const stamps = new BigInt64Array([0n, 1n, 2n, 3n].map((i) => 1796453540123456789n + i));
  for (const view of [classify(new NDArray([4], stamps, '<i8')), classify(stamps)]) {
    assert.equal(view.kind, 'line');
    assert.ok(view.values instanceof Float64Array, 'drawn as float64');
    assert.equal(view.exact, stamps, 'kept as sent, for export');
    const npy = toNpy(view.exact);
    const headerLen = npy[8] | (npy[9] << 8);
    assert.match(new TextDecoder().decode(npy.subarray(10, 10 + headerLen)), /'descr': '<i8'/);
    assert.deepStrictEqual([...new BigInt64Array(npy.slice(10 + headerLen).buffer)], [...stamps]);
  }
});
