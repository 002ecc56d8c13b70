// Plot panels: each shows one or more channels (overlaid time series, or the newest array of
// one channel) with its own subscriptions, tools and export. The page keeps a list of them
// and writes the layout into the URL (layout.js).

import { Plotter, describe, reconnectNote } from './plot.js';
import { toCsv, toNpy, download } from './export.js';
import { clock, duration, setText } from './format.js';
import { ChannelNotFound } from './trio_stream.js';
import { NDArray } from './cbor.js';
import { RATES_HZ, snapRate } from './layout.js';

export { RATES_HZ };
// Images are big: a panel takes at most this many bytes per second of them, whatever its
// rate. The server sends at most max_rate frames a second (the newest), so a 4k camera
// (8 MiB a frame at 100 Hz) costs one frame a second here.
export const IMAGE_BYTES_PER_S = 8 * 2 ** 20;
// A panel's subscription holds this long of its rate (seconds): the frames in flight (the
// credit window, which the server makes no larger than `size`) and as many buffered on the
// server. With size 1 the window was one frame: every frame had to wait for the page's
// credit for the one before it, so a page busy for two of the rate's intervals (66 ms at
// 30 Hz: a redraw, a table refresh, a collection) made the server drop a frame and count it
// lost, although the page kept up with the rate. A page that falls behind by more than this
// still loses frames, counted and marked as before.
export const PANEL_DEPTH_S = 0.5;

/**
 * The rate and buffer a panel subscribes with (a large image also gets a server-side view:
 * imageView below, chosen from its first frame). The buffer holds PANEL_DEPTH_S of the rate
 * (2 frames at least), and of an image no more than that long of IMAGE_BYTES_PER_S (1 frame
 * at least).
 * @param {number} rateHz the panel's rate
 * @param {number | null} frameBytes the size of the channel's last frame, once known
 */
// A panel whose frames stopped for five times their usual interval, and at least this long,
// says so (a 10 Hz channel after 3 s, one written every 10 s after 50 s).
const QUIET_AFTER_MS = 3000;

/** A panel's usual time between frames (ms): one long pause moves it by little. */
export function usualGap(typicalMs, gapMs) {
  return typicalMs ? 0.9 * typicalMs + 0.1 * Math.min(gapMs, 4 * typicalMs) : gapMs;
}

/**
 * How long a panel's frames have stopped, as text, once that is much longer than their
 * usual interval (five times it, at least 3 s); '' while they come (or before two came).
 */
export function quietFor(lastFrameAt, typicalGapMs, now) {
  if (!lastFrameAt || !typicalGapMs) return '';
  const silentMs = now - lastFrameAt;
  if (silentMs < Math.max(QUIET_AFTER_MS, 5 * typicalGapMs)) return '';
  return duration(silentMs / 1000);
}

export function subscriptionOptions(rateHz, frameBytes = null) {
  let maxRate = rateHz;
  if (frameBytes && frameBytes * rateHz > IMAGE_BYTES_PER_S) maxRate = Math.max(0.1, IMAGE_BYTES_PER_S / frameBytes);
  maxRate = Number(maxRate.toPrecision(3));
  let size = Math.max(2, Math.ceil(maxRate * PANEL_DEPTH_S));
  if (frameBytes) size = Math.max(1, Math.min(size, Math.floor((IMAGE_BYTES_PER_S * PANEL_DEPTH_S) / frameBytes)));
  return { policy: 'drop_oldest', size, maxRate };
}

/**
 * The options of a panel's first subscription to a channel. With the frame size unknown (no
 * frame of it came here, and the channel table has no rates: nobody reads it, so its
 * writers send nothing to measure) it asks for one frame: at most one frame of a size
 * nobody knows waits on the server, whatever the camera, until that frame tells the size
 * and the panel retunes (Panel.onMessage). Half a second of the rate, blind, was 15 of a
 * camera's 8 MiB frames at 30 Hz; a few such panels took the page's connection over the
 * server's max_buffered_bytes, which ended their subscriptions.
 * @param {number} rateHz the panel's rate
 * @param {number | null} frameBytes the channel's frame size, if known
 */
export function firstSubscriptionOptions(rateHz, frameBytes) {
  const opts = subscriptionOptions(rateHz, frameBytes);
  return frameBytes ? opts : { ...opts, size: 1 };
}

/**
 * A channel's frame size from the server's rates of it (bytes/s over frames/s: the wire's
 * bytes, a few more than the value's), or null while nothing flows.
 * @param {{rate_fps?: unknown, rate_bps?: unknown}} c a row of the `channels` list
 */
export function frameBytesFromRates(c) {
  const fps = Number(c.rate_fps), bps = Number(c.rate_bps);
  return fps > 0 && bps > 0 && Number.isFinite(bps / fps) ? Math.ceil(bps / fps) : null;
}

/** The server's own channels ($clients, $channels, $stats): what a server lists with no other. */
export const SYSTEM_CHANNELS = 3;

/**
 * The channel count the load card shows, as the CLI does (`channels 3 (+3 system)`): the
 * users' channels, and the server's own apart. A `$stats` record's `channels` counts the
 * public channels, system ones included: the card said 6 for 3 channels, 3 for none.
 * @param {unknown} total the record's `channels`
 * @param {{name: string}[] | null} listed the `channels` list, whose `$` names are the system
 *   channels; null before it came (SYSTEM_CHANNELS then)
 * @returns {{user: number, system: number}} user NaN when `total` is not a count
 */
export function channelCount(total, listed) {
  const system = listed ? listed.filter((c) => String(c.name).startsWith('$')).length : SYSTEM_CHANNELS;
  const n = typeof total === 'number' || typeof total === 'bigint' ? Number(total) : NaN;
  return { user: n >= 0 ? Math.max(0, n - system) : NaN, system };
}

/**
 * About the bytes a decoded payload took on the wire: an array's, a text's length, 9 for a
 * number. A panel keeps it as the channel's frame size whatever the kind: only arrays' was
 * kept, so a scalar or dict panel subscribed again blind (size 1) after every restart, and
 * a writer's re-sent backlog cost it more than a frame or two.
 */
export function payloadBytes(data, depth = 0) {
  if (typeof data === 'string') return data.length + 1;
  if (ArrayBuffer.isView(data)) return data.byteLength + 1;
  if (data instanceof NDArray) return payloadBytes(data.data) + 9 * data.shape.length;
  if (!data || typeof data !== 'object' || depth > 8) return 9;
  const items = data instanceof Map ? [...data].flat() : Array.isArray(data) ? data : Object.entries(data).flat();
  return items.reduce((n, x) => n + payloadBytes(x, depth + 1), 1);
}

// An image panel shows at most this many pixels per side: a larger frame is decimated on the
// server (the subscription's array view, docs/protocol.md "Array view"), so a 2048x2048 camera
// costs the browser a 512x512 frame, a sixteenth of the bytes.
export const MAX_IMAGE_SIDE_PX = 512;

/**
 * The server-side view that brings an array of `shape` down to MAX_IMAGE_SIDE_PX per side,
 * or null when it fits. Every dimension gets step ceil(dim / MAX_IMAGE_SIDE_PX): colour
 * planes (3, 4) and unit dimensions keep step 1.
 * @param {number[]} shape the frame's full shape
 */
export function imageView(shape) {
  const steps = shape.map((d) => Math.max(1, Math.ceil(d / MAX_IMAGE_SIDE_PX)));
  return steps.some((s) => s > 1) ? steps.map((s) => [null, null, s]) : null;
}

/** "every 4th pixel" (or "every 4th row, 2nd column") for a view made by imageView(). */
export function viewText(view) {
  const steps = view.map((s) => s[2]).filter((s) => s > 1);
  const nth = (n) => {
    const teen = n % 100 > 10 && n % 100 < 14;
    return `${n}${teen ? 'th' : ['th', 'st', 'nd', 'rd'][n % 10] ?? 'th'}`;
  };
  if (steps.every((s) => s === steps[0])) return `every ${nth(steps[0])} pixel`;
  return `every ${view.map((s) => nth(s[2])).join(' × ')} element`;
}

/**
 * What a reconnection cost a subscription, for its panel's info line: the frames missed
 * across the outage, counted as they arrive. The resume's gap (the first frame's msg.lost)
 * is exact, but covers only what came before that frame: when the server kept the
 * subscription while the page was away, the first frames are the ones it held (in flight,
 * then buffered), and what its policy dropped meanwhile rides on the msg.lost of those
 * (docs/protocol.md 8, "Subscriptions kept"). The gap's `recovered` says how many frames
 * the server held for the page, the first included: their losses are added here.
 * `missed` stays null after a reset (what the old server held is unknown).
 * @param {{kind: string, lost: number | null, recovered?: number,
 *   reconnection?: {at: number}, resetEnd?: {at: number}}} gap the first frame's msg.gap
 * @param {number} at when it came (epoch seconds): the note's time when the gap does not say
 *   when the page reconnected (gap.reconnection.at, the browser client's) or when the server
 *   ended the channel's old life (gap.resetEnd.at: a reset end). The first frame
 *   may come long after the reconnection (a channel whose writer is not back yet): its time
 *   was shown as the reconnection's, 84 s late (an operator).
 */
export function reconnectTally(gap, at) {
  return { gap, at: gap.resetEnd?.at ?? gap.reconnection?.at ?? at, missed: gap.kind === 'reset' ? null : gap.lost ?? 0, held: Math.max(0, (gap.recovered ?? 0) - 1) };
}

/** Count a frame after the first one of a reconnection: one the server held adds its loss. */
export function tallyFrame(tally, msg) {
  if (tally.held <= 0) return;
  tally.held--;
  if (tally.missed !== null) tally.missed += msg.lost ?? 0;
}

/** The info line's note for a tally: reconnectNote with every frame missed across the outage. */
export function tallyNote(tally) {
  return reconnectNote({ ...tally.gap, lost: tally.missed }, tally.at);
}

let nextId = 1;

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  e.append(...children);
  return e;
}

export class Panel {
  /**
   * @param {object} o
   * @param {import('./trio_stream.js').Client} o.client
   * @param {{channels: string[], rate: number, y: number[] | null}} o.spec
   * @param {(panel: Panel, what: string) => void} o.onChange layout changed, or 'activate', 'remove', 'left', 'right'
   * @param {(msg: object) => void} o.onFrame a frame was plotted
   * @param {(name: string) => object | null} o.metaOf a channel's meta
   * @param {(name: string) => number | null} [o.frameBytesOf] a channel's frame size as the
   *   server's rates tell it (bytes/s over frames/s), before a frame of it came here
   */
  constructor({ client, spec, onChange, onFrame, metaOf, frameBytesOf = () => null }) {
    this.id = nextId++;
    this.client = client;
    this.channels = [...spec.channels];
    this.rate = snapRate(spec.rate); // one of the menu's: the menu shows the rate used
    this.onChange = onChange;
    this.onFrame = onFrame;
    this.metaOf = metaOf;
    this.frameBytesOf = frameBytesOf;
    this.subs = new Map(); // channel -> {sub, token, frameBytes, lastTry}
    this.frames = 0;
    this.lastMsg = null;
    this.lastFrameAt = 0; // when the last frame was plotted (Date.now())
    this.typicalGapMs = 0; // the usual time between two frames (0: fewer than two yet)
    this.lastBytes = null; // of the last array plotted: what a frame costs the page
    this.build();
    this.plotter = new Plotter(this.canvas);
    this.plotter.setYRange(spec.y);
    if (spec.y) { this.yAuto.checked = false; [this.yLo.value, this.yHi.value] = spec.y; }
    this.syncYInputs();
    new ResizeObserver(() => this.plotter.resize()).observe(this.area);
    this.plotter.reset(this.channels.length ? 'waiting for data…' : 'Click a channel in the table to plot it here.');
    this.renderTitle();
  }

  build() {
    const b = (text, title, fn, cls = '') => {
      const btn = el('button', { type: 'button', textContent: text, title, className: cls });
      btn.addEventListener('click', (ev) => { ev.stopPropagation(); fn(); });
      return btn;
    };
    this.title = el('h3', { className: 'plot-channel' });
    this.rateSel = el('select', { title: 'max rate: the server sends at most this many frames per second' });
    for (const r of RATES_HZ) this.rateSel.append(el('option', { value: String(r), textContent: `${r} Hz` }));
    this.rateSel.value = String(this.rate);
    this.rateSel.addEventListener('change', () => { this.rate = Number(this.rateSel.value); this.resubscribeAll(); this.onChange(this, 'layout'); });
    this.pauseBtn = b('Pause', 'freeze the plot (data keeps coming)', () => this.togglePause(), 'pause');
    this.yAuto = el('input', { type: 'checkbox', checked: true, title: 'auto-scale the y axis' });
    this.yLo = el('input', { type: 'number', step: 'any', className: 'y', title: 'y from', placeholder: 'min' });
    this.yHi = el('input', { type: 'number', step: 'any', className: 'y', title: 'y to', placeholder: 'max' });
    const applyY = () => {
      const range = this.yAuto.checked ? null : [Number(this.yLo.value), Number(this.yHi.value)];
      this.plotter.setYRange(range && Number.isFinite(range[0]) && Number.isFinite(range[1]) ? range : null);
      this.syncYInputs();
      this.onChange(this, 'layout');
    };
    for (const i of [this.yAuto, this.yLo, this.yHi]) i.addEventListener('change', applyY);
    this.tools = el('div', { className: 'plot-tools' },
      el('label', { className: 'rate' }, 'rate ', this.rateSel),
      this.pauseBtn,
      b('Reset zoom', 'back to the whole window, following the data', () => this.plotter.resetZoom(), 'reset-zoom'),
      el('label', { className: 'yauto' }, this.yAuto, ' auto y'), this.yLo, this.yHi,
      b('CSV', 'save the plotted window as CSV', () => this.export('csv'), 'export-csv'),
      b('.npy', 'save the plotted array as a NumPy .npy file', () => this.export('npy'), 'export-npy'),
      b('◀', 'move left', () => this.onChange(this, 'left'), 'move-left'),
      b('▶', 'move right', () => this.onChange(this, 'right'), 'move-right'),
      b('✕', 'remove this panel', () => this.onChange(this, 'remove'), 'remove'));
    this.chips = el('div', { className: 'chips' });
    this.canvas = el('canvas', { className: 'plot', ariaLabel: 'live plot' });
    this.text = el('pre', { className: 'plot-text', hidden: true });
    this.area = el('div', { className: 'plot-area' }, this.canvas, this.text);
    this.info = el('p', { className: 'plot-info' });
    this.desc = el('p', { className: 'plot-desc' });
    this.root = el('div', { className: 'plot-box' }, el('div', { className: 'plot-head' }, this.title, this.tools),
      this.chips, this.desc, this.area, this.info);
    this.root.dataset.panel = String(this.id);
    this.root.addEventListener('pointerdown', () => this.onChange(this, 'activate'));
    this.wireCanvas();
  }

  wireCanvas() {
    const c = this.canvas;
    let drag = null;
    const pos = (ev) => { const r = c.getBoundingClientRect(); return { x: ev.clientX - r.left, y: ev.clientY - r.top }; };
    c.addEventListener('wheel', (ev) => {
      ev.preventDefault();
      this.plotter.zoomAt(pos(ev).x, ev.deltaY < 0 ? 0.8 : 1.25);
    }, { passive: false });
    c.addEventListener('pointerdown', (ev) => { drag = pos(ev).x; c.setPointerCapture?.(ev.pointerId); });
    c.addEventListener('pointermove', (ev) => {
      const p = pos(ev);
      if (drag !== null && ev.buttons) { this.plotter.panBy(p.x - drag); drag = p.x; }
      this.plotter.setCursor(p);
    });
    c.addEventListener('pointerup', () => { drag = null; });
    c.addEventListener('pointerleave', () => { drag = null; this.plotter.setCursor(null); });
    c.addEventListener('dblclick', () => this.plotter.resetZoom());
  }

  syncYInputs() {
    this.yLo.disabled = this.yHi.disabled = this.yAuto.checked;
  }

  spec() {
    return { channels: [...this.channels], rate: this.rate, y: this.plotter.yRange };
  }

  togglePause() {
    const paused = this.plotter.pause();
    setText(this.pauseBtn, paused ? 'Resume' : 'Pause');
    this.root.classList.toggle('paused', paused);
  }

  renderTitle() {
    setText(this.title, this.channels.length ? this.channels.join(' + ') : 'empty panel');
    this.chips.replaceChildren(...this.channels.map((name, k) => {
      const chip = el('span', { className: 'chip' }, el('i', { style: `background:${this.plotter.colorOf(k)}` }), name);
      const x = el('button', { type: 'button', textContent: '×', title: `take ${name} off this panel` });
      x.addEventListener('click', (ev) => { ev.stopPropagation(); this.removeChannel(name); });
      chip.append(x);
      return chip;
    }));
    this.applyMeta();
  }

  /** Units, labels and descriptions from the channels' meta. */
  applyMeta() {
    const descs = [];
    for (const name of this.channels) {
      const meta = this.metaOf(name);
      if (!meta) continue;
      if (typeof meta.units === 'string') {
        this.plotter.units[name] = meta.units;
        if (this.channels.length === 1) this.plotter.units[''] = meta.units; // its series is unnamed
      }
      const labels = Array.isArray(meta.labels) ? ` [${meta.labels.slice(0, 8).join(', ')}]` : '';
      if (meta.description || labels) descs.push(`${name}: ${String(meta.description ?? '').slice(0, 200)}${labels}`);
    }
    setText(this.desc, descs.join(' · '));
  }

  /** Show only `name` (a click in the channel table). */
  show(name) {
    this.closeAll();
    this.channels = [name];
    this.forgetPace();
    this.plotter.reset('waiting for data…');
    this.renderTitle();
    this.subscribe(name);
  }

  /** Overlay `name` on what the panel shows. */
  add(name) {
    if (this.channels.includes(name)) return;
    this.channels.push(name);
    this.renderTitle();
    this.subscribe(name);
  }

  removeChannel(name) {
    this.channels = this.channels.filter((c) => c !== name);
    const entry = this.subs.get(name);
    this.subs.delete(name); // first: the closed subscription's end says nothing on this panel
    entry?.sub?.close();
    this.forgetPace();
    this.plotter.reset(this.channels.length ? 'waiting for data…' : '');
    this.renderTitle();
    this.onChange(this, 'layout');
  }

  start() { for (const name of this.channels) this.subscribe(name); }

  /** Another channel shown: its pace is learnt anew (the old one's would call a setpoint
   * with one frame quiet, or an empty panel silent since the old one's last frame). */
  forgetPace() {
    this.lastFrameAt = 0;
    this.typicalGapMs = 0;
  }

  closeAll() {
    const entries = [...this.subs.values()];
    this.subs.clear(); // first: the closed subscriptions' ends say nothing on this panel
    for (const s of entries) s.sub?.close();
  }

  resubscribeAll() { for (const name of this.channels) this.subscribe(name); }

  /** Subscribe again to channels whose subscription ended (the channel came back). */
  retry(existing) {
    for (const name of this.channels) {
      const s = this.subs.get(name);
      if (existing.has(name) && (!s || (!s.sub && !s.pending && Date.now() - s.lastTry > 3000))) this.subscribe(name);
    }
  }

  async subscribe(name) {
    const old = this.subs.get(name);
    const token = (old?.token ?? 0) + 1;
    // Until a frame of it came, the size the channel's rates tell, or none: then the first
    // subscription asks for one frame (firstSubscriptionOptions), and the first frame tunes it.
    const entry = {
      sub: null, token, frameBytes: old?.frameBytes ?? this.frameBytesOf(name), view: old?.view ?? null, lastTry: Date.now(), pending: true,
      subscribedAt: Date.now() / 1000, // a seam's note says when it subscribed again, not when a frame came
      // Made again after the last one ended with frames seen (retry: the channel was deleted
      // and created again, its seq restarting at 1, or the server ended it): the new first
      // frame is a seam, marked as a reset as a restarted server's is (onMessage). A panel's
      // own resubscription (rate, image view) continues the same frames: no mark.
      seam: old ? (old.seen ? Boolean(old.ended) : Boolean(old.seam)) : false,
    };
    this.subs.set(name, entry);
    old?.sub?.close();
    const opts = firstSubscriptionOptions(this.rate, entry.frameBytes);
    entry.maxRate = opts.maxRate;
    entry.sizedBlind = !entry.frameBytes;
    let sub = null;
    try {
      sub = await this.client.subscribe(name, {
        ...opts, ...(entry.view && { view: entry.view }), onMessage: (msg) => this.onMessage(name, entry, msg, sub),
      });
    } catch (e) {
      if (this.subs.get(name) !== entry) return;
      // A name from a link or a saved layout whose channel is not there (yet): the panel
      // subscribes when it appears (retry), so that is what it says; the client's message
      // tells a program what to call, which a dashboard user cannot.
      setText(this.info, e instanceof ChannelNotFound
        ? `${name}: no channel of this name (yet); shown as soon as it is created`
        : `cannot subscribe to ${name}: ${e.message}`);
      return;
    } finally {
      entry.pending = false;
    }
    if (this.subs.get(name) !== entry) { sub.close(); return; }
    entry.sub = sub;
    if (entry.tuneWhenAttached) this.tune(name, entry, sub);
    sub.on('end', (reason) => {
      if (entry.sub !== sub || this.subs.get(name) !== entry) return; // closed by the panel
      entry.sub = null;
      entry.ended = true;
      // retry() subscribes again whenever the channel is listed (a deleted one once it is
      // created again; one still there within seconds): say so, or the panel reads as dead
      // for good. One wording for every end: the reason alone does not tell which it is.
      // The page's connection ended for good (a refused token after a server restart): the
      // reason is the client library's advice to a program, and the notice above says it.
      setText(this.info, this.client.state === 'closed'
        ? `${name}: not connected (see the notice above)`
        : `${name}: subscription ended: ${reason}; shown again as soon as the channel is there`);
    });
    sub.on('restored', () => {
      if (entry.sub !== sub) return;
      // Its channel is listed again (its owner re-created it) and the subscription is back,
      // but no writer has sent to it yet: "waiting for the channel" was false for as long as
      // that took (84 s beside a table row reading readers 1, writers 0: an operator).
      setText(this.info, `${name}: the channel is back; no frame yet (no writer has sent to it since)`);
    });
    sub.on('waiting', (why, error) => {
      if (entry.sub !== sub) return;
      // A reset end (sub.resetEnd): the server ended the channel's old life and its node
      // registers it again; the subscription reads on once it has (at most 30 s), no writer
      // needed. As above: the client's words for a missing channel are a program's to act on.
      if (sub.resetEnd) {
        setText(this.info, `${name}: the channel is being registered again (its cluster's Redis restarted empty, or it was created anew); shown again as soon as it is`);
        return;
      }
      setText(this.info, error instanceof ChannelNotFound
        ? `${name}: waiting for the channel to come back (its writer is not back yet); shown again as soon as it is`
        : `${name}: waiting for the channel to come back (${why})`);
    });
  }

  onMessage(name, entry, msg, sub) {
    if (this.subs.get(name) !== entry) return;
    if (!entry.seen) {
      entry.seen = true;
      // The first frame of a subscription made again (subscribe: seam): a reset, on the time
      // axis and in the info line. It went on the same plot with no mark, seq back at 1.
      if (entry.seam && !msg.gap) msg = { ...msg, gap: { kind: 'reset', lost: null, resubscribed: true } };
    }
    // The panel shows what its first channel is; another of another kind is not drawn
    // (Plotter.push): the info line tells it to take a panel of its own.
    const view = this.plotter.push(msg, this.channels.length > 1 ? name : '', Math.max(0, this.channels.indexOf(name)));
    const shown = view.shown !== false;
    if (msg.gap) entry.reconnected = reconnectTally(msg.gap, msg.gap.resubscribed ? entry.subscribedAt : Date.now() / 1000);
    else if (entry.reconnected) tallyFrame(entry.reconnected, msg);
    this.frames++;
    this.lastMsg = msg;
    const now = Date.now();
    if (this.lastFrameAt) this.typicalGapMs = usualGap(this.typicalGapMs, now - this.lastFrameAt);
    this.lastFrameAt = now;
    this.lastBytes = view.values?.byteLength ?? null;
    // A large image: ask the server for a decimated view of it instead. The shape is known
    // only now, from this first frame; frames through the view that still exceed the side
    // (the camera's frame grew) get a new view from their full shape (shape times step).
    let resubscribed = false;
    if (view.kind === 'image' && (view.width > MAX_IMAGE_SIDE_PX || view.height > MAX_IMAGE_SIDE_PX)) {
      const full = msg.data.shape.map((d, i) => d * (entry.view?.[i]?.[2] ?? 1));
      const cut = imageView(full);
      if (cut) {
        const reduction = cut.reduce((n, s) => n * s[2], 1) / (entry.view ?? []).reduce((n, s) => n * s[2], 1);
        entry.view = cut;
        entry.frameBytes = Math.ceil(view.values.byteLength / reduction);
        this.subscribe(name);
        resubscribed = true;
      }
    }
    // The first frame of a channel of unknown size: the panel's own size now. An image
    // bigger than the panel's byte budget at its rate: ask for fewer of them. A retune: the
    // same subscription, no gap.
    const bytes = view.values?.byteLength;
    const sized = bytes && (view.kind === 'image' || view.kind === 'line');
    if (sized) entry.frameBytes = bytes;
    else if (!entry.frameBytes) entry.frameBytes = payloadBytes(msg.data); // see payloadBytes
    if (!resubscribed && (entry.sizedBlind || (sized && subscriptionOptions(this.rate, bytes).maxRate < entry.maxRate * 0.9))) {
      // Frames can come before subscribe() has its subscription back (they follow the
      // reply in the same read): then it tunes as soon as it has.
      if (sub) this.tune(name, entry, sub);
      else entry.tuneWhenAttached = true;
    }
    if (!this.plotter.paused) {
      if (shown) {
        this.text.hidden = view.kind !== 'text';
        if (view.kind === 'text') setText(this.text, view.text);
      }
      const cut = entry.view ? ` · ${viewText(entry.view)} (server view)` : '';
      // Only numbers share a time axis: a channel of another kind than the panel's first is
      // not drawn, so the panel says where it belongs instead.
      const alone = !shown ? ` · only numbers share a panel: give ${name} a panel of its own (+ panel)` : '';
      setText(this.info, `${this.channels.length > 1 ? `${name}: ` : ''}${describe(msg, view, sub)}${cut}${entry.maxRate < this.rate ? ` · decimated to ${entry.maxRate} Hz` : ''}${entry.reconnected ? ` · ${tallyNote(entry.reconnected)}` : ''}${alone}`);
    }
    this.onFrame(msg);
  }

  /**
   * Mark the plot as live or not: dimmed, with "not live" in its corner and since when on
   * hover, while the page's link is down or frozen (the page's markStale decides, once a
   * second); dimmed too, saying for how long, while its own frames have stopped for much
   * longer than their usual interval (a writer stopped, hung or gone: its last value must
   * not pass for a steady one). The time axis goes on meanwhile, the line stopping short.
   * @param {boolean} live
   */
  markLive(live, now = Date.now()) {
    const quiet = live && quietFor(this.lastFrameAt, this.typicalGapMs, now);
    const said = !live ? 'not live' : quiet ? `no new frame for ${quiet}` : '';
    this.area.classList.toggle('stale', !live || Boolean(quiet));
    if (this.area.dataset.stale !== said) this.area.dataset.stale = said;
    const since = this.lastFrameAt ? `the last frame came at ${clock(this.lastFrameAt / 1000)}` : '';
    const title = !live ? (since ? `not live: ${since}` : 'not live')
      : quiet ? `${since}; its writer is quiet, stopped or gone` : '';
    if (this.area.title !== title) this.area.title = title;
    if (quiet && !this.plotter.paused) this.plotter.requestDraw(); // the time axis goes on
  }

  /** Retune `entry`'s subscription to the panel's rate and the frame size it knows now. */
  tune(name, entry, sub) {
    entry.sizedBlind = entry.tuneWhenAttached = false;
    const opts = subscriptionOptions(this.rate, entry.frameBytes);
    entry.maxRate = opts.maxRate;
    sub.retune({ size: opts.size, maxRate: opts.maxRate }).catch((e) => {
      if (this.subs.get(name) !== entry || entry.sub !== sub || sub.ended) return; // its end says why
      // Cut meanwhile: it resubscribes as it was, and its next frame tunes it again.
      if (sub.id === null) entry.sizedBlind = true;
      else setText(this.info, `${name}: cannot retune: ${e.message}`);
    });
  }

  // A reconnection needs no call here: each subscription resumes, and its first frame after
  // the cut carries the exact gap (msg.gap), which the plotter marks (plot.js push()); the
  // info line keeps saying it, with what the frames the server held for the page carried
  // (reconnectTally).

  export(kind) {
    const snap = this.plotter.snapshot();
    if (!snap) { setText(this.info, 'nothing plotted to export'); return; }
    // An image through a server view is the decimated one: the file name says so.
    const view = snap.kind === 'image' ? this.subs.get(this.channels[0])?.view : null;
    const cut = view ? `.view-${view.map((v) => v[2]).join('x')}` : '';
    const base = (this.channels.join('+') || 'plot').replace(/[^\w.+-]+/g, '_') + cut;
    if (view) setText(this.info, `saved the server's decimated view: ${viewText(view)} of ${this.channels[0]}`);
    if (kind === 'csv') download(`${base}.csv`, toCsv(snap), 'text/csv');
    else if (snap.kind === 'series') {
      // time series as an (n, 3) array of time, series index, value
      const flat = new Float64Array(snap.rows.length * 3);
      snap.rows.forEach((r, i) => flat.set(r, i * 3));
      download(`${base}.npy`, toNpy(flat, [snap.rows.length, 3]), 'application/octet-stream');
    } else download(`${base}.npy`, toNpy(snap.values, snap.shape, snap.dtype), 'application/octet-stream');
  }

  destroy() {
    this.closeAll();
    this.root.remove();
  }
}
