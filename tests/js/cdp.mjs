// A minimal Chrome DevTools Protocol driver over --remote-debugging-pipe (no npm packages, no
// WebSocket needed): enough to load the dashboard in headless Chromium, evaluate expressions,
// and collect console errors.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const CANDIDATES = ['chromium-headless-shell', 'chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable'];

/** Path of a Chromium-like browser, or null. $CHROMIUM wins. */
export function findChromium() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  for (const name of CANDIDATES) {
    try {
      return execFileSync('which', [name], { encoding: 'utf-8' }).trim() || null;
    } catch {
      // not this one
    }
  }
  return null;
}

export class Browser {
  #proc;
  #profile;
  #buffer = '';
  #nextId = 1;
  #pending = new Map();
  #listeners = new Set();

  static async launch(binary, { width = 1400, height = 1000 } = {}) {
    const b = new Browser();
    b.#profile = mkdtempSync(join(tmpdir(), 'ts-chromium-'));
    const args = [
      '--headless', '--no-sandbox', '--disable-gpu', '--remote-debugging-pipe', '--no-first-run',
      '--disable-extensions', '--disable-background-networking', `--user-data-dir=${b.#profile}`,
      `--window-size=${width},${height}`, 'about:blank',
    ];
    b.#proc = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
    b.#proc.stderr.resume();
    b.#proc.stdio[4].setEncoding('utf-8');
    b.#proc.stdio[4].on('data', (chunk) => b.#onData(chunk));
    b.exited = new Promise((resolve) => b.#proc.on('exit', resolve));
    await b.send('Browser.getVersion');
    return b;
  }

  #onData(chunk) {
    this.#buffer += chunk;
    let end;
    while ((end = this.#buffer.indexOf('\0')) >= 0) {
      const msg = JSON.parse(this.#buffer.slice(0, end));
      this.#buffer = this.#buffer.slice(end + 1);
      if (msg.id && this.#pending.has(msg.id)) {
        const { resolve, reject } = this.#pending.get(msg.id);
        this.#pending.delete(msg.id);
        if (msg.error) reject(new Error(`${msg.error.message} (${msg.error.code})`));
        else resolve(msg.result);
      } else if (msg.method) {
        for (const fn of this.#listeners) fn(msg);
      }
    }
  }

  send(method, params = {}, sessionId) {
    const id = this.#nextId++;
    const msg = { id, method, params };
    if (sessionId) msg.sessionId = sessionId;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#proc.stdio[3].write(`${JSON.stringify(msg)}\0`);
    });
  }

  on(fn) {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** A new tab with Runtime, Log and Page enabled; problems (errors, warnings) are collected. */
  async newPage() {
    const { targetId } = await this.send('Target.createTarget', { url: 'about:blank' });
    const { sessionId } = await this.send('Target.attachToTarget', { targetId, flatten: true });
    const page = new Page(this, sessionId);
    this.on((msg) => { if (msg.sessionId === sessionId) page._event(msg); });
    await page.send('Runtime.enable');
    await page.send('Log.enable');
    await page.send('Page.enable');
    return page;
  }

  async close() {
    try {
      await Promise.race([this.send('Browser.close'), new Promise((r) => setTimeout(r, 2000))]);
    } catch {
      // already gone
    }
    this.#proc.kill();
    await this.exited;
    try {
      rmSync(this.#profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    } catch {
      // a browser helper process still writing: leave the temp profile behind
    }
  }
}

export class Page {
  errors = []; // console errors, uncaught exceptions, failed loads, CSP violations
  warnings = [];

  constructor(browser, sessionId) {
    this.browser = browser;
    this.sessionId = sessionId;
  }

  send(method, params = {}) {
    return this.browser.send(method, params, this.sessionId);
  }

  _event({ method, params }) {
    if (method === 'Runtime.consoleAPICalled') {
      const text = params.args.map((a) => a.value ?? a.description ?? '').join(' ');
      if (params.type === 'error' || params.type === 'assert') this.errors.push(`console.${params.type}: ${text}`);
      else if (params.type === 'warning') this.warnings.push(text);
    } else if (method === 'Runtime.exceptionThrown') {
      const d = params.exceptionDetails;
      this.errors.push(`uncaught: ${d.exception?.description ?? d.text}`);
    } else if (method === 'Log.entryAdded') {
      const e = params.entry;
      if (e.level === 'error') this.errors.push(`${e.source}: ${e.text}${e.url ? ` (${e.url})` : ''}`);
      else if (e.level === 'warning') this.warnings.push(`${e.source}: ${e.text}`);
    }
  }

  async goto(url) {
    await this.send('Page.navigate', { url });
  }

  /** Evaluate an expression in the page and return its (JSON-able) value. */
  async eval(expression) {
    const r = await this.send('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true });
    if (r.exceptionDetails) throw new Error(`eval failed: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
    return r.result.value;
  }

  /** Poll `expression` until it is truthy; returns its value. */
  async waitFor(expression, { timeout = 10000, what = expression } = {}) {
    const t0 = Date.now();
    let lastError = null;
    for (;;) {
      try {
        const v = await this.eval(expression);
        if (v) return v;
      } catch (e) {
        lastError = e; // e.g. the page is still loading: try again
      }
      if (Date.now() - t0 > timeout) {
        throw new Error(`timed out waiting for ${what}${lastError ? ` (last error: ${lastError.message})` : ''}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async screenshot() {
    const { data } = await this.send('Page.captureScreenshot', { format: 'png' });
    return Buffer.from(data, 'base64');
  }
}
