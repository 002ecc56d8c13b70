// The Python that runs a real trio_stream server for the tests that need one, the processes
// those tests start (servers, and the redis-server behind several nodes), and the bounded
// waits they share.

import { execFileSync, spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { delimiter, join } from 'node:path';

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

// ------------------------------------------------------------------------------ bounded waits

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** `promise`, or a rejection naming `what` after `ms`. */
export function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Poll `pred` every 20 ms until it holds; fail after `ms`. */
export async function waitFor(pred, ms, what) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await sleep(20);
  }
}

/** A loopback port free a moment ago (bound to port 0, read, closed). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Whether a loopback connection to `port` opens; false after 1 s without an answer too. */
function tryConnect(port) {
  return new Promise((resolve) => {
    const sock = netConnect({ host: '127.0.0.1', port });
    sock.setTimeout(1000, () => { sock.destroy(); resolve(false); });
    sock.once('connect', () => { sock.destroy(); resolve(true); });
    sock.once('error', () => { sock.destroy(); resolve(false); });
  });
}

// ---------------------------------------------------------------------------------- processes

const children = new Set(); // every child these helpers started, until it has exited
// A test run that ends without its `after` hooks (an uncaught error, a timeout) must not
// leave servers or redis-server behind: 'exit' handlers may only do synchronous work, and
// kill() is.
process.once('exit', () => { for (const child of children) child.kill('SIGKILL'); });

/** Spawn a child whose output is kept for error messages; `child.exited` resolves on its exit. */
function spawnChild(command, args, options = {}) {
  const child = spawn(command, args, { cwd: ROOT, ...options, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.output = '';
  child.stdout.on('data', (chunk) => { child.output += chunk; });
  child.stderr.on('data', (chunk) => { child.output += chunk; });
  child.exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    });
    // A spawn that fails (no such program) emits 'error' and no 'exit'.
    child.once('error', (error) => {
      children.delete(child);
      child.spawnError = error;
      child.output += `${error.message}\n`;
      resolve({ code: null, signal: null, error });
    });
  });
  return child;
}

/** Poll `ready()` until it holds; fail at once if `child` exits, or after `ms`. */
async function untilReady(child, ready, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null || child.spawnError) {
      throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}): ${child.output}`);
    }
    if (await ready()) return;
    if (Date.now() > deadline) throw new Error(`${what} not ready within ${ms} ms: ${child.output}`);
    await sleep(50);
  }
}

/** SIGKILL `child` (if still running) and wait for its exit: a crash, not a shutdown. */
export async function killChild(child) {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await within(child.exited, 5000, `process ${child.pid} to exit after SIGKILL`);
}

/** For an `after` hook: kill every child still running (a test that failed half-way). */
export async function killChildren() {
  for (const child of [...children]) await killChild(child).catch(() => {});
}

/**
 * Start `python -m trio_stream serve` with its WebSocket on `httpPort` (plus `args`); resolve
 * with the child once the port accepts connections (a Redis node has joined its cluster by then).
 */
export async function startServer(python, httpPort, args = []) {
  const child = spawnChild(python, ['-m', 'trio_stream', 'serve', '--host', '127.0.0.1', '--tcp-port', '0',
    '--http-port', String(httpPort), ...args]);
  try {
    await untilReady(child, () => tryConnect(httpPort), 15000, `server on ${httpPort}`);
  } catch (e) {
    await killChild(child).catch(() => {});
    throw e;
  }
  return child;
}

/**
 * Start tests/js/rpc_provider_server.py (a server, a WebSocket proxy to it, and the Python
 * caller "py-caller"); resolve with `{ server, url, proxyUrl }` once it printed its URLs.
 * Stop it with stopRpcProviderServer.
 */
export async function startRpcProviderServer(python) {
  const server = spawn(python, [join(ROOT, 'tests/js/rpc_provider_server.py')], { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
  const { ws_url: url, proxy_url: proxyUrl } = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`rpc provider server did not start: ${out}`)), 15000);
    server.stdout.on('data', (chunk) => {
      out += chunk;
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line) {
        clearTimeout(timer);
        resolve(JSON.parse(line));
      }
    });
    server.on('exit', (code) => reject(new Error(`rpc provider server exited (${code}): ${out}`)));
  });
  return { server, url, proxyUrl };
}

/** Ask the rpc_provider_server.py child to stop (its stdin closes); SIGKILL it after 5 s. */
export async function stopRpcProviderServer(server) {
  if (!server) return;
  server.stdin.end();
  await Promise.race([new Promise((r) => server.on('exit', r)), sleep(5000)]);
  if (server.exitCode === null) server.kill('SIGKILL');
}

// -------------------------------------------------------------------------------------- Redis

const REDIS_DEFAULT_PORT = 6379; // somebody else's Redis may live there: never ours

/** redis-server on the PATH (as shutil.which finds it), or null. */
function findRedisServer() {
  for (const dir of (process.env.PATH ?? '').split(delimiter).filter(Boolean)) {
    const path = join(dir, 'redis-server');
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // next
    }
  }
  return null;
}

/**
 * For tests of several nodes: liveSetup's, plus the redis-server. As tests/redis_server.py: its
 * absence skips the tests, except in CI ($CI set), where the cluster tests must run and a
 * missing server is a broken set-up: then `skip` is false and startRedis() fails the test.
 */
export function clusterSetup(modules = 'trio_stream, coredis') {
  const live = liveSetup(modules);
  const redis = findRedisServer();
  if (live.skip || redis) return { ...live, redis };
  const missing = 'redis-server not installed: scripts/test installs it (apt-get redis-server)';
  return { ...live, redis: null, missing, skip: process.env.CI ? false : missing };
}

function redisPing(port) {
  return new Promise((resolve) => {
    const sock = netConnect({ host: '127.0.0.1', port });
    let reply = '';
    const done = (ok) => { sock.destroy(); resolve(ok); };
    sock.setTimeout(1000, () => done(false));
    sock.once('connect', () => sock.write('PING\r\n'));
    sock.on('data', (chunk) => {
      reply += chunk;
      if (reply.endsWith('\r\n')) done(reply.startsWith('+PONG'));
    });
    sock.once('error', () => done(false));
  });
}

/**
 * A private redis-server (`setup` from clusterSetup()): its own loopback port (never 6379) and
 * temporary directory, no persistence. Resolves once it answers PING with {url, stop()}; stop()
 * kills it by its own PID (and the after hook's killChildren() does if a test fails first).
 * `port`: on that port (one this helper's own Redis had: a restart, empty, after a stop()).
 */
export async function startRedis(setup, { port = null } = {}) {
  if (!setup.redis) throw new Error(setup.missing ?? 'no redis-server');
  if (port === REDIS_DEFAULT_PORT) throw new Error('port 6379 may be somebody else\'s Redis');
  while (port === null || port === REDIS_DEFAULT_PORT) port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'ts-redis-'));
  const child = spawnChild(setup.redis, ['--port', String(port), '--bind', '127.0.0.1',
    '--save', '', '--appendonly', 'no', '--daemonize', 'no'], { cwd: dir });
  // Its directory goes with it, whoever kills it (stop(), or killChildren() after a failure).
  child.exited.then(() => rmSync(dir, { recursive: true, force: true }));
  const stop = () => killChild(child);
  try {
    await untilReady(child, () => redisPing(port), 10000, `redis-server on ${port}`);
  } catch (e) {
    await stop().catch(() => {});
    throw e;
  }
  return { url: `redis://127.0.0.1:${port}/0`, port, stop };
}
