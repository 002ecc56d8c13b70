// The image panel's server-side view: which steps a frame's shape gets, and how it is said.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { imageView, viewText, MAX_IMAGE_SIDE_PX } from '../../trio_stream/web/panels.js';

test('a frame within the side gets no view', () => {
  assert.equal(imageView([MAX_IMAGE_SIDE_PX, 300]), null);
  assert.equal(imageView([48, 64, 3]), null);
});

test('a large frame gets step ceil(dim / side) per dimension, colour planes whole', () => {
  assert.deepEqual(imageView([2048, 2048]), [[null, null, 4], [null, null, 4]]);
  assert.deepEqual(imageView([3000, 4000, 3]), [[null, null, 6], [null, null, 8], [null, null, 1]]);
  assert.deepEqual(imageView([1, 1025, 600]), [[null, null, 1], [null, null, 3], [null, null, 2]]);
  for (const shape of [[513, 513], [2049, 100], [4096, 3072]]) {
    const steps = imageView(shape).map((s) => s[2]);
    shape.forEach((d, i) => assert.ok(Math.ceil(d / steps[i]) <= MAX_IMAGE_SIDE_PX));
  }
});

test('the info line says which pixels the server keeps', () => {
  assert.equal(viewText(imageView([2048, 2048])), 'every 4th pixel');
  assert.equal(viewText(imageView([1024, 1024])), 'every 2nd pixel');
  assert.equal(viewText(imageView([1536, 1024, 3])), 'every 3rd × 2nd × 1st element');
});
