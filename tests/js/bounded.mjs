// A call that must end: run in a worker thread under a time and a memory limit, so that a
// loop that never ends (or one that fills an array until "Invalid array length", as the
// dashboard's tick loop did) fails its test, rather than hang the run or abort Node.

import { Worker } from 'node:worker_threads';

const SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
import(workerData.module)
  .then((m) => m[workerData.name](...workerData.args))
  .then((value) => parentPort.postMessage({ value }), (e) => parentPort.postMessage({ error: String(e?.stack ?? e) }));
`;

/**
 * The value of `name(...args)`, a function of the module at `moduleUrl`, called in a worker.
 * Rejects when it throws, takes more than `timeoutMs`, or more than `heapMb` of memory.
 * Arguments and result cross by structured clone (NaN, ±Infinity and -0 do).
 */
export function callBounded(moduleUrl, name, args = [], { timeoutMs = 30_000, heapMb = 256 } = {}) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(SOURCE, {
      eval: true,
      workerData: { module: String(moduleUrl), name, args },
      resourceLimits: { maxOldGenerationSizeMb: heapMb },
    });
    const timer = setTimeout(() => {
      worker.terminate();
      reject(new Error(`${name}() did not return within ${timeoutMs} ms`));
    }, timeoutMs);
    worker.once('message', (m) => {
      clearTimeout(timer);
      worker.terminate();
      if ('error' in m) reject(new Error(m.error));
      else resolve(m.value);
    });
    worker.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}
