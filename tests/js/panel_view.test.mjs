// A dashboard Panel and its Plotter in Node, on a fake DOM and a fake client (fake_dom.mjs):
// what a panel subscribes with, what it marks and what it draws, message by message.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { installFakeDom, fakeClient, FakeElement } from './fake_dom.mjs';

installFakeDom();
const { Panel, subscriptionOptions } = await import('../../trio_stream/web/panels.js');
const { Plotter } = await import('../../trio_stream/web/plot.js');
const { NDArray } = await import('../../trio_stream/web/cbor.js');

const settle = () => new Promise((r) => setImmediate(r));

function makePanel(channels, rate = 10) {
  const client = fakeClient();
  const panel = new Panel({
    client, spec: { channels, rate, y: null }, onChange: () => {}, onFrame: () => {}, metaOf: () => null,
  });
  panel.plotter.resize(); // the fake canvas' size (600 x 300)
  return { client, panel };
}

// A $stats record: 17 numeric fields, some a hundred million times the size of others.
function stats(k) {
  return {
    connections: 2 + (k % 3), channels: 6, frames_in: 365 + 35 * k, frames_out: 270 + 27 * k,
    bytes_in: 1886897 + 9e4 * k, bytes_out: 1053258 + 5e4 * k, frames_in_per_s: 34 + (k % 2),
    frames_out_per_s: 27 - (k % 2), frames_lost: 0, bytes_buffered: 0, memory_bytes: 5.6e8 + 1e6 * (k % 5),
    cpu_percent: 5 + (k % 4), uptime_s: 22 + k, subscriptions: 4, readers: 3, writers: 1, redis_up: 1,
  };
}

const sine = () => Float64Array.from({ length: 1000 }, (_, i) => Math.sin(i / 50));

test('a line overlaid on a time series is not drawn: the panel keeps its first channel\'s view', async () => {
  // A $stats panel with demo/sine overlaid flipped between a time series and a line on every
  // message of either, and the line was drawn in the theme's blue beside its orange chip.
  const { client, panel } = makePanel(['$stats']);
  panel.start();
  await settle();
  panel.add('demo/sine');
  await settle();
  const [statsSub, sineSub] = client.subs.map((s) => s.sub);
  for (let k = 0; k < 6; k++) {
    statsSub.deliver({ seq: k + 1, data: stats(k), time: 1000 + k });
    assert.equal(panel.plotter.view.kind, 'scalar');
    sineSub.deliver({ seq: k + 1, data: sine(), time: 1000 + k });
    assert.equal(panel.plotter.view.kind, 'scalar', 'the sine took the plot');
  }
  assert.match(panel.info.textContent, /^demo\/sine: .*give demo\/sine a panel of its own/);
  assert.equal(panel.text.hidden, true, 'no text shown');
  const ctx = panel.canvas.getContext();
  ctx.strokes.length = 0;
  panel.plotter.draw();
  assert.ok(ctx.strokes.length > 0);
  assert.ok(ctx.strokes.every((s) => s.points.length < 100), 'no 1000-point line drawn');
});

test("a line panel's first channel is drawn in its chip's colour, and keeps its view", () => {
  const plotter = new Plotter(new FakeElement('canvas'));
  plotter.resize();
  plotter.push({ seq: 1, data: sine(), time: 1000 }, 'demo/sine', 0);
  assert.equal(plotter.push({ seq: 1, data: 3, time: 1000 }, 'x', 1).shown, false);
  assert.equal(plotter.view.kind, 'line');
  assert.equal(plotter.series.size, 0, 'a number beside a line is not kept either');
  const ctx = plotter.ctx;
  plotter.draw();
  const line = ctx.strokes.find((s) => s.points.length >= 500);
  assert.equal(line.color, plotter.colorOf(0));
});

test("overlaid numbers take their chips' colours, whichever channel's frame came first", async () => {
  const { client, panel } = makePanel(['a', 'b']);
  panel.start();
  await settle();
  const [a, b] = client.subs.map((s) => s.sub);
  b.deliver({ seq: 1, data: 10, time: 1000 }); // b's first: it took the first colour
  a.deliver({ seq: 1, data: 1, time: 1000 });
  b.deliver({ seq: 2, data: 11, time: 1001 });
  a.deliver({ seq: 2, data: 2, time: 1001 });
  const ctx = panel.canvas.getContext();
  panel.plotter.draw();
  const colorOf = (name) => ctx.texts.find((t) => t.text.startsWith(`${name} = `)).color;
  assert.equal(colorOf('a'), panel.plotter.colorOf(0));
  assert.equal(colorOf('b'), panel.plotter.colorOf(1));
  // the chips say the same
  assert.deepEqual(panel.chips.children.map((c) => c.children[0].style), [0, 1].map((k) => `background:${panel.plotter.colorOf(k)}`));
});

test('a $stats panel: each series on its own scale, distinct colours, a legend that says what it leaves out', async () => {
  const { client, panel } = makePanel(['$stats']);
  panel.start();
  await settle();
  const [sub] = client.subs.map((s) => s.sub);
  for (let k = 0; k < 20; k++) sub.deliver({ seq: k + 1, data: stats(k), time: 1000 + k });
  const { plotter } = panel;
  const ctx = plotter.ctx;
  ctx.strokes.length = ctx.texts.length = 0;
  plotter.draw();
  const series = ctx.strokes.filter((s) => s.points.length >= 20 && s.color !== plotter.colors.grid);
  assert.equal(series.length, 17);
  assert.equal(new Set(series.map((s) => s.color)).size, 17, 'colours repeated');
  // cpu_percent (5..8) beside memory_bytes (~5.6e8): drawn over most of the plot's height,
  // not as a flat line at 0
  const cpu = series[Object.keys(stats(0)).indexOf('cpu_percent')];
  const ys = cpu.points.map(([, y]) => y);
  assert.ok(Math.max(...ys) - Math.min(...ys) > 150, `cpu_percent spans ${Math.max(...ys) - Math.min(...ys)} px`);
  const texts = ctx.texts.map((t) => t.text);
  assert.ok(texts.includes("% of each series' range"), texts.join(' | '));
  assert.ok(texts.includes('+10 more'), texts.join(' | '));
  assert.ok(texts.includes('connections = 3  (2 … 4)'), texts.join(' | '));
  // a fixed y range is the operator's: one scale
  plotter.setYRange([0, 10]);
  ctx.texts.length = 0;
  plotter.draw();
  assert.ok(!ctx.texts.some((t) => t.text.includes('% of each')));
});

test('a channel deleted and created again is marked where it starts again, as a reset', async () => {
  const { client, panel } = makePanel(['lab/x']);
  panel.start();
  await settle();
  const first = client.subs[0].sub;
  for (let k = 1; k <= 5; k++) first.deliver({ seq: k, data: k, time: 1000 + k });
  // a rate change resubscribes: the same frames go on, no mark
  panel.rateSel.value = '5';
  panel.rateSel.dispatch('change');
  await settle();
  client.subs[1].sub.deliver({ seq: 6, data: 6, time: 1006 });
  assert.deepEqual(panel.plotter.markers, []);
  client.subs[1].sub.end("channel 'lab/x' was deleted");
  assert.match(panel.info.textContent, /subscription ended/);
  // not there yet: the retry fails, and the next one finds it created again (seq from 1)
  const subscribe = client.subscribe;
  client.subscribe = async () => { throw new Error('no such channel'); };
  panel.subs.get('lab/x').lastTry = 0;
  panel.retry(new Set(['lab/x']));
  await settle();
  client.subscribe = subscribe;
  panel.subs.get('lab/x').lastTry = 0;
  panel.retry(new Set(['lab/x']));
  await settle();
  const again = client.subs.at(-1).sub;
  again.deliver({ seq: 1, data: 100, time: 1010 });
  again.deliver({ seq: 2, data: 101, time: 1011 });
  assert.deepEqual(panel.plotter.markers.map((m) => [m.kind, m.t, m.label]), [['gap', 1010, 'reset']]);
  assert.match(panel.info.textContent, /subscribed again \d\d:\d\d:\d\d\.\d{3}: reset \(the subscription had ended/);
});

test('a scalar or dict panel remembers its frame size: subscribed again, it asks the normal size', async () => {
  for (const data of [21.5, stats(0), 'status: ok']) {
    const { client, panel } = makePanel(['lab/x']);
    panel.start();
    await settle();
    assert.equal(client.subs[0].opts.size, 1, 'blind: one frame');
    client.subs[0].sub.deliver({ seq: 1, data, time: 1000 });
    assert.deepEqual(client.subs[0].sub.retunes, [{ size: 5, maxRate: 10 }]);
    // a server restart the subscription did not survive: made again, not blind
    client.subs[0].sub.end('the server restarted');
    panel.subs.get('lab/x').lastTry = 0;
    panel.retry(new Set(['lab/x']));
    await settle();
    const { size, maxRate } = client.subs[1].opts;
    assert.deepEqual({ size, maxRate }, { size: subscriptionOptions(10).size, maxRate: 10 }, JSON.stringify(data));
  }
});

test("a rate in the URL is one of the menu's, and the menu shows it", async () => {
  for (const [asked, used] of [[1000, 30], [7, 5], [0.2, 1], [2, 2]]) {
    const { client, panel } = makePanel(['demo/sine'], asked);
    assert.equal(panel.rateSel.value, String(used));
    assert.equal(panel.spec().rate, used);
    panel.start();
    await settle();
    assert.equal(client.subs[0].opts.maxRate, used);
  }
});

test('an image panel is unaffected: its frame size is its bytes', async () => {
  const { client, panel } = makePanel(['cam']);
  panel.start();
  await settle();
  client.subs[0].sub.deliver({ seq: 1, data: new NDArray([64, 64], new Uint16Array(64 * 64)), time: 1000 });
  assert.equal(panel.subs.get('cam').frameBytes, 64 * 64 * 2);
});

// A dict whose fields change (a device list: a new key every second, the old one stops), at
// 10 Hz, its frames' times from 1000 s: frame i at 1000 + i / 10.
function rotatingDict(plotter, from, to) {
  for (let i = from; i <= to; i++) {
    plotter.push({ seq: i, data: { temp: 20 + (i % 5), [`dev${Math.floor(i / 10)}`]: i }, time: 1000 + i / 10 }, '', 0);
  }
}

test('a dict whose fields change: the fields that stopped leave the plot, the live ones lead its legend', () => {
  // A soak test's legend read "temp = 20, dev0 = 9, dev1 = 19, ..., +105 more" after 110 s:
  // dev0, gone for 110 s, listed as if current, the live device hidden, and every field
  // ever seen kept, without bound, on a page left open for days.
  const plotter = new Plotter(new FakeElement('canvas'));
  plotter.resize();
  const ctx = plotter.ctx;
  rotatingDict(plotter, 1, 1105); // 110.5 s; nothing drawn (a page in a background tab)
  // dev50..dev110 (their newest points within the minute before the last frame) and temp,
  // give or take the few that stopped since the last look
  assert.ok(plotter.series.size < 70, `${plotter.series.size} series kept`);
  assert.ok(plotter._slots.length < 70, `${plotter._slots.length} colour places kept`);
  ctx.texts.length = 0;
  plotter.draw();
  assert.deepEqual([...plotter.series.keys()].filter((k) => k !== 'temp').sort(),
    Array.from({ length: 61 }, (_, k) => `dev${50 + k}`).sort());
  const legend = (texts) => texts.map((t) => t.text).filter((t) => / = |^\+\d+ more$/.test(t));
  const rows = legend(ctx.texts);
  // still coming: temp, dev110 and dev109 (0.6 s since its last point, within a line's
  // break); then the stopped ones, the latest first, saying since when; then the count
  assert.deepEqual(rows.slice(0, 3).map((t) => t.split(' = ')[0]).sort(), ['dev109', 'dev110', 'temp']);
  assert.deepEqual(rows.slice(3), ['dev108 = 1089  (1s ago)', 'dev107 = 1079  (2s ago)', 'dev106 = 1069  (3s ago)',
    'dev105 = 1059  (4s ago)', '+55 more']);
  // The live series keep their colours as the ones before them are forgotten (dev50 and
  // dev51 here): each newcomer takes a forgotten one's.
  const colours = (texts) => new Map(texts.filter((t) => t.text.includes(' = ')).map((t) => [t.text.split(' = ')[0], t.color]));
  const before = colours(ctx.texts);
  rotatingDict(plotter, 1106, 1125);
  ctx.texts.length = 0;
  plotter.draw();
  assert.ok(!plotter.series.has('dev51') && plotter.series.has('dev112'));
  const after = colours(ctx.texts);
  const both = [...after.keys()].filter((name) => before.has(name));
  assert.deepEqual(both.sort(), ['dev107', 'dev108', 'dev109', 'dev110', 'temp']);
  for (const name of both) assert.equal(after.get(name), before.get(name), `${name}'s colour changed`);
  assert.equal(new Set(after.values()).size, after.size, 'two series of one colour');
});

test("a channel's series are timed by its own frames: a writer's clock behind, or a channel that stopped, is kept", () => {
  const plotter = new Plotter(new FakeElement('canvas'));
  plotter.resize();
  // b's writer's clock is 10 minutes behind a's; a stops after 30 s, b goes on for 2 minutes
  for (let k = 0; k < 1200; k++) {
    if (k < 300) plotter.push({ seq: k + 1, data: k, time: 1000 + k / 10 }, 'a', 0);
    plotter.push({ seq: k + 1, data: -k, time: 400 + k / 10 }, 'b', 1);
  }
  const ctx = plotter.ctx;
  plotter.draw();
  assert.deepEqual([...plotter.series.keys()], ['a', 'b']);
  const texts = ctx.texts.map((t) => t.text);
  assert.ok(texts.includes('a = 299') && texts.includes('b = -1199'), texts.join(' | '));
  assert.equal(ctx.texts.find((t) => t.text.startsWith('a = ')).color, plotter.colorOf(0));
  assert.equal(ctx.texts.find((t) => t.text.startsWith('b = ')).color, plotter.colorOf(1));
});

test('a panel whose channel is back after a restart says so before its first frame', async () => {
  // "waiting for the channel to come back (its writer is not back yet)" stood for 84 s beside
  // a table row of the channel (readers 1, writers 0): it was back, its writer was not.
  const { ChannelNotFound } = await import('../../trio_stream/web/trio_stream.js');
  const { client, panel } = makePanel(['lab/x']);
  panel.start();
  await settle();
  const { sub } = client.subs[0];
  sub.deliver({ seq: 1, data: 1, time: 1000 });
  sub.emit('waiting', "no channel 'lab/x'", new ChannelNotFound("no channel 'lab/x'"));
  assert.match(panel.info.textContent, /^lab\/x: waiting for the channel to come back/);
  sub.emit('restored');
  assert.equal(panel.info.textContent, 'lab/x: the channel is back; no frame yet (no writer has sent to it since)');
  sub.deliver({ seq: 1, data: 2, time: 1090, gap: { kind: 'reset', lost: null, recovered: 0 } });
  assert.match(panel.info.textContent, /reconnected \d\d:\d\d:\d\d\.\d{3}: reset/);
});
