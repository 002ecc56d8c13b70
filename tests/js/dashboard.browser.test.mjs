// End-to-end: the dashboard in headless Chromium against `trio-stream demo`.
// Skipped when no Chromium-like browser or no Python with trio_stream is available.
// $CHROMIUM picks the browser, $TS_PYTHON the interpreter, $TS_SCREENSHOT_DIR keeps screenshots.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Browser, findChromium } from './cdp.mjs';
import { ROOT, findPython } from './python.mjs';

const chromium = findChromium();
const python = findPython();
const skip = !chromium ? 'no Chromium found (set $CHROMIUM)' : !python ? 'no Python with trio_stream' : false;

let server, browser, page, dashboardUrl;

async function startDemo(httpPort = 0) {
  const proc = spawn(python, ['-m', 'trio_stream', 'demo', '--host', '127.0.0.1', '--tcp-port', '0', '--http-port', String(httpPort),
    '--name', 'e2e'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`demo server did not start:\n${out}`)), 15000);
    const onData = (chunk) => {
      out += chunk;
      const m = /dashboard:\s+(http\S+)/.exec(out);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`demo server exited (${code}):\n${out}`)); });
  }).finally(() => {
    proc.stdout.resume();
    proc.stderr.resume();
  });
  return { proc, url };
}

before(async () => {
  if (skip) return;
  ({ proc: server, url: dashboardUrl } = await startDemo());
  browser = await Browser.launch(chromium);
  page = await browser.newPage();
  await page.goto(dashboardUrl);
});

async function stopServer() {
  if (!server || server.exitCode !== null) return;
  const exited = new Promise((r) => server.on('exit', r));
  server.kill('SIGINT');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
  if (server.exitCode === null) server.kill('SIGKILL');
}

after(async () => {
  if (page && process.env.TS_SCREENSHOT_DIR && existsSync(process.env.TS_SCREENSHOT_DIR)) {
    writeFileSync(join(process.env.TS_SCREENSHOT_DIR, 'dashboard-final.png'), await page.screenshot());
  }
  await browser?.close();
  await stopServer();
});

async function shot(name) {
  const dir = process.env.TS_SCREENSHOT_DIR;
  if (dir && existsSync(dir)) writeFileSync(join(dir, `${name}.png`), await page.screenshot());
}

test('connects, shows load, channels and clients', { skip }, async () => {
  await page.waitFor('window.__tsDashboard && window.__tsDashboard.connected', { what: 'connected' });
  // the first visit plots every channel someone writes to: the demo's three
  await page.waitFor('window.__tsDashboard.panels.length === 3', { what: 'default panels' });
  await page.waitFor(`document.querySelector('[data-channel="demo/sine"]')`, { what: 'channel rows' });
  await page.waitFor(`document.getElementById('stat-connections').textContent !== '–'`, { what: 'stats' });
  const names = await page.eval(`[...document.querySelectorAll('#channels-body tr')].map((tr) => tr.dataset.channel)`);
  for (const n of ['demo/counter', 'demo/image', 'demo/sine']) assert.ok(names.includes(n), n);
  await page.waitFor(`document.querySelectorAll('#clients-body tr').length >= 2`, { what: 'client rows' });
  assert.match(await page.eval(`document.getElementById('server-name').textContent`), /e2e/);
  assert.equal(await page.eval(`document.getElementById('conn').dataset.state`), 'open');
  // The channels card counts the demo's three, the server's own $ channels apart (as the
  // CLI's "3 (+3 system)"): it said 6 (a soak test).
  await page.waitFor(`document.getElementById('stat-channels').textContent === '3'`, { what: 'user channels' });
  assert.equal(await page.eval(`document.getElementById('stat-channels-system').textContent`), '+3 system');
});

for (const [channel, kind] of [['demo/sine', 'line'], ['demo/image', 'image'], ['demo/counter', 'scalar']]) {
  test(`plots ${channel} (${kind})`, { skip }, async () => {
    const before = await page.eval('window.__tsDashboard.framesPlotted');
    await page.eval(`document.querySelector('[data-channel="${channel}"]').click()`);
    assert.equal(await page.eval('window.__tsDashboard.selected'), channel);
    await page.waitFor(`window.__tsDashboard.framesPlotted >= ${before + 5}`, { what: `frames of ${channel}` });
    assert.equal(await page.eval(`document.querySelector('[data-channel="${channel}"]').classList.contains('selected')`), true);
    assert.equal(await page.eval(`document.querySelector('.plot-box.active .plot-text').hidden`), true, 'drawn, not shown as text');
    // something other than the background was drawn (on the next animation frame: a frame
    // counted as plotted may not be painted yet on a busy machine, so wait for it a while)
    const painted = `(() => {
      const c = document.querySelector('.plot-box.active canvas');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      const bg = [d[0], d[1], d[2]];
      let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] !== bg[0] || d[i + 1] !== bg[1] || d[i + 2] !== bg[2]) n++;
      return n;
    })()`;
    await page.waitFor(`${painted} > 500`, { timeout: 5000, what: `more than 500 painted pixels of ${channel}` });
    await shot(`plot-${kind}`);
  });
}

test('the rate select limits frames per second', { skip }, async () => {
  await page.eval(`(() => { const s = document.querySelector('.plot-box.active select'); s.value = '2'; s.dispatchEvent(new Event('change')); })()`);
  await new Promise((r) => setTimeout(r, 600)); // let the new subscription settle
  const frames = 'window.__tsPanels.find((p) => p.id === window.__tsDashboard.active).frames';
  const a = await page.eval(frames);
  await new Promise((r) => setTimeout(r, 2000));
  const b = await page.eval(frames);
  assert.ok(b - a >= 2 && b - a <= 6, `frames in 2 s at 2 Hz: ${b - a}`);
});

test('no console errors', { skip }, async () => {
  assert.deepStrictEqual(page.errors, []);
});

// Last: a restart makes the browser log failed connection attempts, which is expected here.
test('reconnects after a server restart and resumes plotting', { skip }, async () => {
  const port = new URL(dashboardUrl).port;
  await stopServer();
  await page.waitFor('!window.__tsDashboard.connected', { what: 'disconnected' });
  assert.match(await page.eval(`document.getElementById('conn').dataset.state`), /reconnecting|connecting/);
  ({ proc: server } = await startDemo(port));
  await page.waitFor('window.__tsDashboard.connected', { timeout: 20000, what: 'reconnected' });
  const n = await page.eval('window.__tsDashboard.framesPlotted');
  await page.waitFor(`window.__tsDashboard.framesPlotted >= ${n + 3}`, { timeout: 15000, what: 'plotting again' });
  assert.equal(await page.eval('window.__tsDashboard.selected'), 'demo/counter');
  await shot('after-restart');
});
