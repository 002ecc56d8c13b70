// The Python that runs a real trio_stream server for the tests that need one.

import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/**
 * The first of $TS_PYTHON, the repository's .venv and python3 that imports `modules`
 * (trio_stream at least); null: none does, and the tests that need it are skipped.
 */
export function findPython(modules = 'trio_stream') {
  for (const py of [process.env.TS_PYTHON, join(ROOT, '.venv/bin/python'), 'python3'].filter(Boolean)) {
    try {
      execFileSync(py, ['-c', `import ${modules}`], { cwd: ROOT, stdio: 'ignore' });
      return py;
    } catch {
      // next
    }
  }
  return null;
}

/**
 * For tests of the client against a real server: the Python (null without a WebSocket in this
 * Node, which needs Node >= 22 or --experimental-websocket) and the reason to skip (false: run).
 */
export function liveSetup(modules = 'trio_stream') {
  if (typeof WebSocket !== 'function') {
    return { python: null, skip: 'no WebSocket in this Node (use Node >= 22 or --experimental-websocket)' };
  }
  const python = findPython(modules);
  return { python, skip: python ? false : 'no Python with trio_stream' };
}
