// The live dashboard served at "/": server load, channels, clients, and a live plot of one
// channel. Talks to the server through the browser client over ws(s)://<this host>/ws.

import { createClient, ConnectionClosed, AuthError } from './trio_stream.js';
import { Plotter, describe } from './plot.js';
import * as fmt from './format.js';

const $ = (id) => document.getElementById(id);

// Read by automated browser tests; updated in place.
const state = { framesPlotted: 0, selected: null, connected: false };
window.__tsDashboard = state;

const REFRESH_MS = 1000;
const STATS_STALE_MS = 2500; // no $stats message for this long: ask with a `stats` request
const PLOT_RETRY_MS = 3000;

// A server started with a token refuses clients without it, this page included: the page asks
// for it (see the token form below) and keeps it for this tab only (sessionStorage), never in
// the URL, where it would end up in the browser's history.
const TOKEN_KEY = 'trio_stream.token';

function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null; // storage switched off: ask again after each reload
  }
}

const client = createClient(undefined, { name: null, token: storedToken() });
let tokenRefused = false;

// ------------------------------------------------------------------------------ helpers

function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

function notice(message) {
  const el = $('notice');
  el.hidden = !message;
  setText(el, message ?? '');
}

const isRecord = (x) => x !== null && typeof x === 'object' && !Array.isArray(x) && !(x instanceof Map);
const str = (x) => (x === null || x === undefined || x === '' ? fmt.DASH : String(x));

function epochSeconds(t) {
  if (typeof t === 'number') return t;
  if (t instanceof Date) return t.getTime() / 1000;
  if (typeof t === 'string') return Date.parse(t) / 1000;
  return NaN;
}

// ------------------------------------------------------------------------------ connection

const STATE_TEXT = {
  idle: 'idle', connecting: 'connecting…', open: 'connected', reconnecting: 'reconnecting…', closed: 'disconnected',
};

client.on('state', (s) => {
  state.connected = s === 'open';
  $('conn').dataset.state = s;
  setText($('conn-text'), STATE_TEXT[s] ?? s);
});

client.on('open', (info) => {
  // The welcome says "<name> trio_stream/<version>": the name in bold, all of it on hover.
  const server = str(info.server);
  setText($('server-name'), /^(.*\S)\s+trio_stream\/\S+$/.exec(server)?.[1] ?? server);
  $('server-name').title = server;
  setText($('client-name'), str(info.name));
  notice(null);
  if (!statsSub) startStats();
  refresh();
});

client.on('error', (e) => {
  if (e instanceof AuthError) {
    tokenRefused = true;
    askForToken();
  } else if (!(e instanceof ConnectionClosed)) {
    notice(e.message);
  }
});
client.on('goodbye', (reason) => notice(`server closed the connection: ${reason}`));
client.on('close', (reason) => {
  if (!tokenRefused) notice(`disconnected: ${reason}`);
});

function askForToken() {
  const hadOne = storedToken() !== null;
  notice(hadOne ? 'The server refused this token.' : null);
  setText($('token-label'), hadOne ? 'Try another token:' : 'This server needs its token.');
  $('token-form').hidden = false;
  $('token-input').focus();
}

$('token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  try {
    sessionStorage.setItem(TOKEN_KEY, $('token-input').value);
  } catch {
    notice('this browser keeps no session storage for this page: the token cannot be kept');
    return;
  }
  location.reload(); // a fresh connection with the token (and the channel in the URL, if any)
});

// ------------------------------------------------------------------------------ server load

let statsSub = null;
let statsStarting = false;
let statsTriedAt = 0;
let statsAt = 0;

async function startStats() {
  statsStarting = true;
  statsTriedAt = Date.now();
  try {
    const sub = await client.subscribe('$stats', {
      policy: 'drop_oldest', size: 1,
      onMessage: (msg) => { statsAt = Date.now(); renderStats(msg.data); },
    });
    statsSub = sub;
    sub.on('end', () => { if (statsSub === sub) statsSub = null; });
  } catch {
    statsSub = null; // no $stats on this server: the refresh loop polls `stats` instead
  } finally {
    statsStarting = false;
  }
}

function renderStats(s) {
  const r = isRecord(s) ? s : {};
  setText($('stat-connections'), fmt.count(r.connections));
  setText($('stat-channels'), fmt.count(r.channels));
  setText($('stat-frames-in'), fmt.rate(r.frames_in_per_s));
  setText($('stat-frames-out'), fmt.rate(r.frames_out_per_s));
  setText($('stat-bytes-in'), fmt.byteRate(r.bytes_in_per_s));
  setText($('stat-bytes-out'), fmt.byteRate(r.bytes_out_per_s));
  setText($('stat-lost'), fmt.count(r.frames_lost));
  setText($('stat-buffered'), fmt.bytes(r.buffered_bytes));
  setText($('stat-memory'), fmt.bytes(r.memory_bytes));
  setText($('stat-cpu'), fmt.percent(r.cpu_percent));
  setText($('stat-uptime'), fmt.duration(r.uptime_s));
}

// ------------------------------------------------------------------------------ tables

/** Keeps one <tr> per key and updates cells in place, so rows don't flicker or lose focus. */
class KeyedTable {
  constructor(tbody, columns, { onCreate } = {}) {
    this.tbody = tbody;
    this.columns = columns; // [{cls}]
    this.onCreate = onCreate;
    this.rows = new Map();
  }

  update(entries) {
    const keep = new Set();
    entries.forEach(({ key, cells, titles = [], classes = {} }, i) => {
      keep.add(key);
      let tr = this.rows.get(key);
      if (!tr) {
        tr = document.createElement('tr');
        for (const col of this.columns) {
          const td = document.createElement('td');
          if (col.cls) td.className = col.cls;
          tr.append(td);
        }
        this.onCreate?.(tr, key);
        this.rows.set(key, tr);
      }
      cells.forEach((text, c) => {
        const td = tr.children[c];
        setText(td, text);
        const title = titles[c] ?? '';
        if (td.title !== title) td.title = title;
      });
      for (const [cls, on] of Object.entries(classes)) tr.classList.toggle(cls, !!on);
      if (this.tbody.children[i] !== tr) this.tbody.insertBefore(tr, this.tbody.children[i] ?? null);
    });
    for (const [key, tr] of this.rows) {
      if (!keep.has(key)) { tr.remove(); this.rows.delete(key); }
    }
  }
}

const channelTable = new KeyedTable($('channels-body'), [
  { cls: 'name' }, {}, { cls: 'num' }, { cls: 'num' }, { cls: 'num' }, { cls: 'num' }, { cls: 'num lost' },
], {
  onCreate(tr, name) {
    tr.dataset.channel = name;
    tr.tabIndex = 0;
    tr.addEventListener('click', () => select(name));
    tr.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); select(name); }
    });
    tr.classList.toggle('selected', name === state.selected);
  },
});

let channelNames = new Set();

function renderChannels(list) {
  const chans = (Array.isArray(list) ? list : []).filter((c) => isRecord(c) && typeof c.name === 'string');
  // the server's own channels ($stats, ...) after the users' ones
  chans.sort((a, b) => (a.name.startsWith('$') - b.name.startsWith('$')) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  channelNames = new Set(chans.map((c) => c.name));
  channelTable.update(chans.map((c) => ({
    key: c.name,
    cells: [
      c.name, c.owner === null ? 'server' : str(c.owner), fmt.count(c.readers), fmt.count(c.writers),
      fmt.rate(c.rate_fps), fmt.byteRate(c.rate_bps), fmt.count(c.lost),
    ],
    titles: [
      `${c.name}${c.public === false ? ' (private)' : ''}${typeof c.seq === 'number' ? ` · seq ${c.seq}` : ''}`,
    ],
    classes: { system: c.name.startsWith('$'), lossy: Number(c.lost) > 0, selected: c.name === state.selected },
  })));
  $('channels-empty').hidden = chans.length > 0;
  setText($('channels-count'), chans.length ? `(${chans.length})` : '');
  // the plotted channel came (back): subscribe again
  if (state.selected && channelNames.has(state.selected) && !plotSub && !plotSubscribing
      && Date.now() - plotTriedAt > PLOT_RETRY_MS) {
    subscribePlot();
  }
}

const clientTable = new KeyedTable($('clients-body'), [
  { cls: 'name' }, { cls: 'num' }, {}, {}, {}, {}, {}, {},
]);

function listText(items, max = 3) {
  if (!items.length) return fmt.DASH;
  const head = items.slice(0, max).join(', ');
  return items.length > max ? `${head} +${items.length - max}` : head;
}

function renderClients(list) {
  const recs = (Array.isArray(list) ? list : []).filter(isRecord);
  recs.sort((a, b) => Number(a.id) - Number(b.id));
  const now = Date.now() / 1000;
  clientTable.update(recs.map((c) => {
    const subs = (Array.isArray(c.subscriptions) ? c.subscriptions : []).filter(isRecord);
    const pubs = (Array.isArray(c.publishers) ? c.publishers : []).map(String);
    const methods = (Array.isArray(c.methods) ? c.methods : []).map(String);
    const subTitle = subs.map((s) => {
      const opts = [s.policy, s.size != null ? `size ${s.size}` : null, s.every > 1 ? `every ${s.every}` : null,
        s.max_rate != null ? `${s.max_rate} Hz` : null].filter(Boolean).join(', ');
      return `${s.channel} (${opts}) queued ${fmt.count(s.queued)} lost ${fmt.count(s.lost)}`;
    }).join('\n');
    const connected = epochSeconds(c.connected_at);
    return {
      key: String(c.id ?? c.name),
      cells: [
        str(c.name), str(c.id), str(c.address), str(c.transport),
        Number.isFinite(connected) ? fmt.duration(now - connected) : fmt.DASH,
        listText(subs.map((s) => String(s.channel))), listText(pubs), listText(methods),
      ],
      titles: [
        '', '', '', '', Number.isFinite(connected) ? new Date(connected * 1000).toLocaleString() : '',
        subTitle, pubs.join('\n'), methods.join('\n'),
      ],
      classes: { self: c.id === client.clientId },
    };
  }));
  setText($('clients-count'), recs.length ? `(${recs.length})` : '');
}

// ------------------------------------------------------------------------------ refresh loop

let refreshing = false;

async function refresh() {
  if (refreshing || !client.connected) return;
  refreshing = true;
  try {
    const wantStats = Date.now() - statsAt > STATS_STALE_MS;
    const [chans, clients, stats] = await Promise.allSettled([
      client.channels(), client.clients(), wantStats ? client.stats() : Promise.resolve(null),
    ]);
    if (chans.status === 'fulfilled') renderChannels(chans.value);
    if (clients.status === 'fulfilled') renderClients(clients.value);
    if (wantStats && stats.status === 'fulfilled') renderStats(stats.value);
    const failed = [chans, clients, stats].find((r) => r.status === 'rejected');
    if (failed && !(failed.reason instanceof ConnectionClosed)) notice(`refresh failed: ${failed.reason.message}`);
    if (!statsSub && !statsStarting && Date.now() - statsTriedAt > 10000) startStats();
  } finally {
    refreshing = false;
  }
}

setInterval(refresh, REFRESH_MS);

// ------------------------------------------------------------------------------ plot

const plotter = new Plotter($('plot'));
new ResizeObserver(() => plotter.resize()).observe($('plot-area'));
matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => {
  plotter.refreshColors();
  plotter.draw();
});

let plotSub = null;
let plotToken = 0;
let plotSubscribing = false;
let plotTriedAt = 0;

function select(name) {
  if (name === state.selected) return;
  state.selected = name;
  for (const [n, tr] of channelTable.rows) tr.classList.toggle('selected', n === name);
  setText($('plot-channel'), name ?? 'no channel selected');
  history.replaceState(null, '', name ? `#${encodeURIComponent(name)}` : location.pathname + location.search);
  plotter.reset(name ? 'waiting for data…' : '');
  showText(null);
  setText($('plot-info'), name ? 'subscribing…' : 'Select a channel in the table.');
  subscribePlot();
}

async function subscribePlot() {
  const token = ++plotToken;
  const old = plotSub;
  plotSub = null;
  if (old) old.close();
  const name = state.selected;
  if (!name) return;
  plotSubscribing = true;
  plotTriedAt = Date.now();
  let sub = null;
  try {
    // size 1 with drop_oldest: the server keeps only the newest frame for us, at most maxRate/s
    sub = await client.subscribe(name, {
      policy: 'drop_oldest', size: 1, maxRate: Number($('rate').value),
      onMessage: (msg) => onPlotMessage(token, msg, sub),
    });
  } catch (e) {
    if (token === plotToken) setText($('plot-info'), `cannot subscribe to ${name}: ${e.message}`);
    return;
  } finally {
    if (token === plotToken) plotSubscribing = false;
  }
  if (token !== plotToken) {
    sub.close(); // another channel or rate was picked meanwhile
    return;
  }
  plotSub = sub;
  sub.on('end', (reason) => {
    if (plotSub !== sub) return;
    plotSub = null;
    setText($('plot-info'), `subscription ended: ${reason}`);
  });
}

function onPlotMessage(token, msg, sub) {
  if (token !== plotToken) return;
  const view = plotter.push(msg);
  showText(view.kind === 'text' ? view.text : null);
  setText($('plot-info'), describe(msg, view, sub));
  state.framesPlotted++;
}

function showText(text) {
  const pre = $('plot-text');
  pre.hidden = text === null;
  if (text !== null) setText(pre, text);
}

$('rate').addEventListener('change', () => {
  if (state.selected) subscribePlot();
});

// A link like /#AnalogInput1 opens with that channel plotted.
const initial = decodeURIComponent(location.hash.slice(1));
if (initial) select(initial);
plotter.resize();
