// A compressed payload (docs/protocol.md 4.1) gets a clear error from the browser decoder.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decode, CBORError } from '../../trio_stream/web/cbor.js';

// tag 7631618 (0xda 0x00 0x74 0x73 0x02) or 7631619 around a 3-byte byte string
const payload = (last) => Uint8Array.from([0xda, 0x00, 0x74, 0x73, last, 0x43, 1, 2, 3]);

test('zlib- and zstd-compressed payloads raise a CBORError that says what to do', () => {
  for (const [last, name] of [[0x02, 'zlib'], [0x03, 'zstd']]) {
    assert.throws(() => decode(payload(last)), (e) => {
      assert.ok(e instanceof CBORError);
      assert.match(e.message, new RegExp(`${name}-compressed .*without compress=`));
      return true;
    });
  }
});
