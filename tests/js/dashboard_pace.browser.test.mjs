// End-to-end: the dashboard against a server of 50,000 channels (listing.js) lists them
// every 5 s rather than every second and draws the first 1,000 rows (25,003 took 22 s to
// draw, the page frozen), says so, and does not call its tables stale in between; the
// filter finds the others. The server's $stats is silent: the load cards, asked for
// between listings, stay live. A real server and headless Chromium; skipped without them.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Browser, findChromium } from './cdp.mjs';
import { ROOT, findPython } from './python.mjs';

const CHANNELS = 50000;
const chromium = findChromium();
const python = findPython();
const skip = !chromium ? 'no Chromium found (set $CHROMIUM)' : !python ? 'no Python with trio_stream' : false;

let server, browser, page, dashboardUrl;
let listings = 0;

before(async () => {
  if (skip) return;
  server = spawn(python, [join(ROOT, 'tests', 'js', 'many_channels_server.py'), String(CHANNELS), '--silent-stats'], {
    cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'],
  });
  dashboardUrl = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the server did not start')), 30000);
    let buffered = '';
    server.stdout.setEncoding('utf-8');
    server.stdout.on('data', (chunk) => {
      buffered += chunk;
      let end;
      while ((end = buffered.indexOf('\n')) >= 0) {
        const line = JSON.parse(buffered.slice(0, end));
        buffered = buffered.slice(end + 1);
        if (line.dashboard) { clearTimeout(timer); resolve(line.dashboard); }
        if (line.listings) listings = line.listings;
      }
    });
    server.on('exit', (code) => { clearTimeout(timer); reject(new Error(`the server exited (${code})`)); });
  });
  browser = await Browser.launch(chromium);
  page = await browser.newPage();
  await page.goto(dashboardUrl);
});

after(async () => {
  await browser?.close();
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server.on('exit', r));
    server.stdin.end();
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    if (server.exitCode === null) server.kill('SIGKILL');
  }
});

const COUNT = `document.getElementById('channels-count').textContent`;
const ROWS = `document.querySelectorAll('#channels-body tr').length`;

test('a server of many channels is listed at a slower pace, a part drawn, and said so', { skip }, async () => {
  await page.waitFor(`${COUNT} === '(first 1000 of 50003) · every 5 s'`, { timeout: 20000, what: 'the count and pace' });
  assert.equal(await page.eval(ROWS), 1000);
  assert.match(await page.eval(`document.getElementById('channels-count').title`), /first 1000 rows[^]*listed every 5 s/);
  const first = listings;
  const stale = { table: 0, cards: 0, silent: 0 };
  for (let i = 0; i < 20; i++) { // 10 s
    await new Promise((r) => setTimeout(r, 500));
    stale.table += await page.eval(`document.getElementById('channels-table').classList.contains('stale')`);
    stale.cards += await page.eval(`document.querySelector('section.cards').classList.contains('stale')`);
    stale.silent += await page.eval(`document.getElementById('conn').dataset.state === 'silent'`);
  }
  const made = listings - first;
  // every 5 s (before, one a second: 10 in 10 s)
  assert.ok(made >= 1 && made <= 3, `listings in 10 s: ${made}`);
  assert.deepEqual(stale, { table: 0, cards: 0, silent: 0 }, 'called stale between two listings');
  await page.eval(`(() => { const f = document.getElementById('channels-filter'); f.value = 'many/0249'; f.dispatchEvent(new Event('input')); })()`);
  await page.waitFor(`${ROWS} === 100`, { what: 'the rows the filter finds' });
  assert.match(await page.eval(COUNT), /^\(100 of 50003\) · every 5 s$/);
  assert.deepStrictEqual(page.errors, []);
});
