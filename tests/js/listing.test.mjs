// How the dashboard lists (listing.js): its pace (a second, slower for many records, bounded)
// and the count beside a table's title.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { refreshDelayMs, countText, REFRESH_MS, REFRESH_MAX_MS, RECORDS_PER_SECOND } from '../../trio_stream/web/listing.js';

test('a server with few channels is listed every second', () => {
  for (const records of [0, 1, 50, RECORDS_PER_SECOND]) assert.equal(refreshDelayMs(records), REFRESH_MS);
});

test('many records wait a second per RECORDS_PER_SECOND of them', () => {
  assert.equal(refreshDelayMs(2 * RECORDS_PER_SECOND), 2000);
  assert.equal(refreshDelayMs(100000), 10000);
  assert.equal(refreshDelayMs(100001), 10001);
});

test('the pace is bounded, and a count that is not one is none', () => {
  assert.equal(refreshDelayMs(10_000_000), REFRESH_MAX_MS);
  for (const odd of [NaN, -5, Infinity, undefined]) assert.equal(refreshDelayMs(odd), REFRESH_MS);
});

test('the pace never falls as the records grow', () => {
  let last = 0;
  for (let records = 0; records <= 400000; records += 997) {
    const delay = refreshDelayMs(records);
    assert.ok(delay >= last && delay >= REFRESH_MS && delay <= REFRESH_MAX_MS);
    last = delay;
  }
});

test('the count says what the table shows, of what, and the pace when slower', () => {
  assert.deepEqual(countText(0, 0, 0), { text: '', title: '' });
  assert.deepEqual(countText(3, 3, 3), { text: '(3)', title: '' });
  assert.deepEqual(countText(6, 2, 2), { text: '(2 of 6)', title: '' });
  const many = countText(25003, 25003, 1000, 2501);
  assert.equal(many.text, '(first 1000 of 25003) · every 3 s');
  assert.match(many.title, /first 1000 rows: type in the filter, or sort by a column/);
  assert.match(many.title, /listed every 3 s rather than every second/);
  assert.equal(countText(25003, 1200, 1000).text, '(first 1000 of 1200 of 25003)');
  assert.equal(countText(5, 5, 5, REFRESH_MS).title, '');
});
