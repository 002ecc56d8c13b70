// The live dashboard served at "/": server load, channels, clients, and a live plot of one
// channel. Talks to the server through the browser client over ws(s)://<this host>/ws.

import { createClient, ConnectionClosed, AuthError, RpcTimeout, RequestTimeout } from './trio_stream.js';
import { decode } from './cbor.js';
import { Panel, frameBytesFromRates, channelCount } from './panels.js';
import { parseLayout, formatLayout, DEFAULT_RATE_HZ } from './layout.js';
import { isFlat } from './plot.js';
import * as fmt from './format.js';
import { REFRESH_MS, MAX_TABLE_ROWS, refreshDelayMs, countText } from './listing.js';

const $ = (id) => document.getElementById(id);

// Read by automated browser tests; updated in place.
const state = { framesPlotted: 0, selected: null, connected: false, admin: false, panels: [] };
window.__tsDashboard = state;

const STATS_STALE_MS = 2500; // no $stats message for this long: ask with a `stats` request
const PLOT_RETRY_MS = 3000;

// A server started with a token refuses clients without it, this page included: the page asks
// for it (see the token form below) and keeps it for this tab only (sessionStorage), never in
// the URL, where it would end up in the browser's history.
const TOKEN_KEY = 'trio_stream.token';
// Set once the stored token got this tab connected: one refused later is a restart's, and
// is tried again (askForToken), across the reloads that try it.
const TOKEN_WORKED_KEY = 'trio_stream.token.worked';

function session(key, value) {
  try {
    if (value === undefined) return sessionStorage.getItem(key);
    if (value === null) sessionStorage.removeItem(key);
    else sessionStorage.setItem(key, value);
  } catch { /* storage switched off */ }
  return null;
}

function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null; // storage switched off: ask again after each reload
  }
}

const client = createClient(undefined, { name: null, token: storedToken() });
let tokenRefused = false;

// A page that goes away (closed, reloaded, sent elsewhere) says goodbye. Its resume token dies
// with it, so nothing could take its subscriptions back, yet without the goodbye the server
// would keep them for resume_grace_s, losing frames on their channels' counts: every reload
// added to the losses this page shows. A page the browser keeps for the back button says
// goodbye too (frozen there, it could not read), and loads afresh when it is shown again.
addEventListener('pagehide', () => client.close('the page was closed'));
addEventListener('pageshow', (event) => {
  if (event.persisted) location.reload();
});

// ------------------------------------------------------------------------------ helpers

const { setText } = fmt;

// What the notice says now, if a failed refresh put it there: the next refresh that succeeds
// takes it away (any other notice stays until something replaces it).
let refreshNotice = null;

function notice(message) {
  const el = $('notice');
  el.hidden = !message;
  setText(el, message ?? '');
  refreshNotice = null;
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
  // A refresh's failure is about the connection that is gone: the pill says what is wrong
  // now (reconnecting…), and the notice stayed beside it until the page was back.
  if (s !== 'open' && refreshNotice !== null && $('notice').textContent === refreshNotice) notice(null);
  if (s === 'open') openedAt = Date.now(); // before markStale: no answer is due yet
  $('conn').dataset.state = s;
  setText($('conn-text'), STATE_TEXT[s] ?? s);
  markStale();
});

// The load cards and the channel table show the server's rates as they were when they came:
// while the page is not connected, or once they have not been refreshed for STALE_MS (a
// frozen link, a stopped server), they are dimmed (class "stale") and say since when,
// rather than pass an old rate off as live.
const STALE_MS = 3500;
let statsShownAt = 0; // the cards' numbers came then ($stats or a `stats` request)
let channelsShownAt = 0; // the channel table's, from a `channels` request
let clientsShownAt = 0; // the client table's, from a `clients` request
let openedAt = 0; // the connection opened then (no answer is due before its first refresh)
let refreshEveryMs = REFRESH_MS; // the listings' pace now (listing.js)

/** Whether the server answered lately (within STALE_MS) on an open connection. */
function linkLive(now = Date.now()) {
  return client.connected && now - Math.max(statsShownAt, channelsShownAt, openedAt) <= STALE_MS;
}

function markStale() {
  const now = Date.now();
  staleIf(document.querySelector('section.cards'), statsShownAt, now);
  // (Listed at a slower pace when they are many: listing.js.)
  staleIf($('channels-table'), channelsShownAt, now, refreshEveryMs - REFRESH_MS);
  staleIf($('clients-table'), clientsShownAt, now, refreshEveryMs - REFRESH_MS);
  // The plots too: a plot whose frames stopped coming looks like a quiet channel, so while
  // the link is down or frozen (no answer from the server for STALE_MS) each says so.
  const answered = Math.max(statsShownAt, channelsShownAt, openedAt);
  const live = linkLive(now);
  for (const p of panels) p.markLive(live, now);
  // And the connection's pill: "connected" for as long as a frozen link is not given up on
  // (up to the client's liveness timeout) read as all well while everything was dimmed.
  const shown = client.connected && !live ? 'silent' : client.state;
  if ($('conn').dataset.state !== shown) {
    $('conn').dataset.state = shown;
    setText($('conn-text'), shown === 'silent' ? 'not answering' : STATE_TEXT[shown] ?? shown);
  }
  const title = shown === 'silent'
    ? `no answer from the server since ${new Date(answered).toLocaleTimeString('en-GB')}: a frozen link or a stopped server; the page reconnects once it is given up on`
    : '';
  if ($('conn').title !== title) $('conn').title = title;
}

function staleIf(el, shownAt, now, slackMs = 0) {
  const stale = !client.connected || now - shownAt > STALE_MS + slackMs;
  el.classList.toggle('stale', stale);
  const title = !stale ? '' : shownAt
    ? `not live: these numbers are from ${new Date(shownAt).toLocaleTimeString('en-GB')}` : 'not live';
  if (el.title !== title) el.title = title;
}

client.on('open', (info) => {
  if (storedToken() !== null) session(TOKEN_WORKED_KEY, '1');
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

// A token that worked, then refused: the server was restarted with another one, maybe for a
// moment (a control room's wall screen nobody types at). The page tries it again this often
// (a reload: the layout is in its URL) while nobody is typing another.
const TOKEN_RETRY_MS = 10_000;

function askForToken() {
  const hadOne = storedToken() !== null;
  const again = hadOne && session(TOKEN_WORKED_KEY) === '1';
  notice(!hadOne ? null : again
    ? `The server refused this token, which it took before (restarted with another?); trying it again every ${TOKEN_RETRY_MS / 1000} s.`
    : 'The server refused this token.');
  setText($('token-label'), hadOne ? 'Try another token:' : 'This server needs its token.');
  $('token-form').hidden = false;
  if (!again) $('token-input').focus();
  else {
    setTimeout(function retry() {
      if ($('token-input').value) setTimeout(retry, TOKEN_RETRY_MS); // someone types one
      else location.reload();
    }, TOKEN_RETRY_MS);
  }
}

$('token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  try {
    sessionStorage.setItem(TOKEN_KEY, $('token-input').value);
    sessionStorage.removeItem(TOKEN_WORKED_KEY); // a new one: not known to work yet
  } catch {
    notice('this browser keeps no session storage for this page: the token cannot be kept');
    return;
  }
  location.reload(); // a fresh connection with the token (and the channel in the URL, if any)
});

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
        (this.columns[c]?.wrap ? setBreakable : setText)(td, text);
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

// A list's names may break after a '/', '_', '-' or '.', as in the CLI's tables, but only when
// whole names do not fit: the <wbr>s count only in a .tight table (fitNames). A client exposing
// read_temperature beside a long-named one widened the Clients table out of an 800 px window.
// <wbr> adds no text: the cell's textContent, and a copy, are the names.
const BREAK_AFTER = /(?<=[/_.-])(?=[^\s,])/;

function showCount(el, { text, title }) {
  setText(el, text);
  if (el.title !== title) el.title = title;
}

function setBreakable(td, text) {
  if (td.textContent === text) return;
  td.replaceChildren(...text.split(BREAK_AFTER).flatMap((part, i) => (i ? [document.createElement('wbr'), part] : [part])));
}

/** Marks `table` .tight when, its names whole, it is wider than its box (and not otherwise). */
function fitNames(table) {
  table.classList.remove('tight');
  if (table.scrollWidth > table.parentElement.clientWidth + 1) table.classList.add('tight');
}

// Long names are cut in the middle, never at the end: names of a facility share their start
// ("facility-east/beamline-7/...") and differ at the end, which must stay. The full name goes
// into the cell's title.
const NAME_CHARS = 30;
const LIST_NAME_CHARS = 22;
// The owner beside a channel's name: the CLI's writers are "trio-stream-generate-<pid>",
// and at 22 characters the channels table overflowed an 800 px window by 56 px.
const OWNER_CHARS = 15;

function middle(name, max = NAME_CHARS) {
  const s = String(name);
  if (s.length <= max) return s;
  const tail = Math.ceil((max - 1) * 0.6);
  return `${s.slice(0, max - 1 - tail)}…${s.slice(s.length - tail)}`;
}

function listText(items, max = 3) {
  if (!items.length) return fmt.DASH;
  const head = items.slice(0, max).map((x) => middle(x, LIST_NAME_CHARS)).join(', ');
  return items.length > max ? `${head} +${items.length - max}` : head;
}

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
      onMessage: (msg) => { statsAt = statsShownAt = Date.now(); renderStats(msg.data); markStale(); },
    });
    statsSub = sub;
    sub.on('end', () => { if (statsSub === sub) statsSub = null; });
  } catch {
    statsSub = null; // no $stats on this server: the refresh loop polls `stats` instead
  } finally {
    statsStarting = false;
  }
}

// The load of the last minutes, kept here (the server keeps no history): one sample a second.
const SPARK_SAMPLES = 300;
const sparkData = new Map(); // $stats key -> number[]

// The CHANNELS card's line under its sparkline: the system channels, said apart.
function channelsSubLine() {
  let sub = $('stat-channels-system');
  if (!sub) {
    sub = document.createElement('span');
    sub.className = 'sub';
    sub.id = 'stat-channels-system';
    $('stat-channels').parentElement.append(sub);
  }
  return sub;
}

function renderStats(s) {
  const record = isRecord(s) ? s : {};
  // The users' channels, the server's own apart (as the CLI's "3 (+3 system)"); the sparkline
  // follows the card.
  const { user, system } = channelCount(record.channels, lastChannelsCame ? lastChannels : null);
  const r = { ...record, channels: user };
  setText($('stat-connections'), fmt.count(r.connections));
  setText($('stat-channels'), fmt.count(r.channels));
  setText(channelsSubLine(), Number.isFinite(user) && system ? `+${system} system` : '');
  setText($('stat-frames-in'), fmt.rate(r.frames_in_per_s));
  setText($('stat-frames-out'), fmt.rate(r.frames_out_per_s));
  setText($('stat-bytes-in'), fmt.byteRate(r.bytes_in_per_s));
  setText($('stat-bytes-out'), fmt.byteRate(r.bytes_out_per_s));
  setText($('stat-lost'), fmt.count(r.frames_lost));
  setText($('stat-buffered'), fmt.bytes(r.buffered_bytes));
  setText($('stat-memory'), fmt.bytes(r.memory_bytes));
  setText($('stat-cpu'), fmt.percent(r.cpu_percent));
  setText($('stat-uptime'), fmt.duration(r.uptime_s));
  for (const canvas of document.querySelectorAll('canvas.spark')) {
    const key = canvas.dataset.key;
    const v = Number(r[key]);
    if (!Number.isFinite(v)) continue;
    let data = sparkData.get(key);
    if (!data) sparkData.set(key, (data = []));
    data.push(v);
    if (data.length > SPARK_SAMPLES) data.splice(0, data.length - SPARK_SAMPLES);
    drawSpark(canvas, data);
  }
}

function drawSpark(canvas, data) {
  const dpr = globalThis.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  let lo = Math.min(...data), hi = Math.max(...data);
  // Flat (equal, or apart by rounding only: isFlat): along the bottom when positive (a count
  // that stays), across the middle otherwise. (hi + 1 was hi itself from 2 ** 53 on: a
  // division by 0, no line; rounding noise was drawn at full height.)
  if (isFlat(lo, hi)) {
    const d = Math.max(1, Math.abs(lo) * 0.1);
    [lo, hi] = lo > 0 ? [lo, lo + d] : [lo - d, lo + d];
  }
  const x = (i) => w - (data.length - 1 - i) * (w / (SPARK_SAMPLES - 1));
  const y = (v) => h - 1 - ((v - lo) / (hi - lo)) * (h - 2);
  const css = getComputedStyle(document.documentElement);
  ctx.beginPath();
  data.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
  ctx.strokeStyle = css.getPropertyValue('--accent').trim() || '#1f6feb';
  ctx.lineWidth = 1.2;
  ctx.stroke();
  ctx.lineTo(x(data.length - 1), h);
  ctx.lineTo(x(0), h);
  ctx.fillStyle = css.getPropertyValue('--plot-fill').trim() || 'rgba(31,111,235,.1)';
  ctx.fill();
  canvas.title = `last ${Math.round(data.length)} s: ${fmt.compact(Math.min(...data))} – ${fmt.compact(Math.max(...data))}`;
}

// ------------------------------------------------------------------------------ find: filter, sort

const sorting = { channels: { key: null, dir: 1 }, clients: { key: 'id', dir: 1 } };
let lastChannels = [];
let lastChannelsCame = false; // a `channels` answer came (its `$` rows: the system channels)
let lastClients = [];

function sortBy(list, { key, dir }) {
  if (!key) return list;
  return [...list].sort((a, b) => {
    const x = a[key], y = b[key];
    const c = typeof x === 'number' && typeof y === 'number' ? x - y : String(x ?? '').localeCompare(String(y ?? ''));
    return c * dir;
  });
}

function wireSorting(tableId, which, rerender) {
  for (const th of document.querySelectorAll(`#${tableId} th[data-sort]`)) {
    th.tabIndex = 0;
    th.classList.add('sortable');
    const go = () => {
      const s = sorting[which];
      s.dir = s.key === th.dataset.sort ? -s.dir : 1;
      s.key = th.dataset.sort;
      for (const o of document.querySelectorAll(`#${tableId} th`)) o.removeAttribute('aria-sort');
      th.setAttribute('aria-sort', s.dir > 0 ? 'ascending' : 'descending');
      rerender();
    };
    th.addEventListener('click', go);
    th.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') go(); });
  }
}

const matches = (filterId, name) => {
  const f = $(filterId).value.trim().toLowerCase();
  return !f || String(name).toLowerCase().includes(f);
};

// ------------------------------------------------------------------------------ channels

const channelTable = new KeyedTable($('channels-body'), [
  { cls: 'name' }, {}, { cls: 'num' }, { cls: 'num' }, { cls: 'num' }, { cls: 'num' }, { cls: 'num lost' }, { cls: 'units' }, { cls: 'row-actions' },
], {
  onCreate(tr, name) {
    tr.dataset.channel = name;
    tr.tabIndex = 0;
    tr.addEventListener('click', () => showInActive(name));
    tr.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); showInActive(name); }
    });
    const add = document.createElement('button');
    add.type = 'button';
    add.className = 'overlay';
    add.textContent = '+';
    add.title = 'overlay on the active panel';
    add.addEventListener('click', (ev) => { ev.stopPropagation(); overlayInActive(name); });
    tr.lastElementChild.append(add);
  },
});

let channelNames = new Set();
const channelMeta = new Map();
const channelFrameBytes = new Map(); // name -> bytes a frame, from the server's rates

function renderChannels(list) {
  const all = (Array.isArray(list) ? list : []).filter((c) => isRecord(c) && typeof c.name === 'string');
  lastChannels = all;
  channelNames = new Set(all.map((c) => c.name));
  // The meta of the channels there are now: a deleted channel's is forgotten (and a channel
  // created again under its name brings its own).
  for (const name of channelMeta.keys()) if (!channelNames.has(name)) channelMeta.delete(name);
  for (const c of all) channelMeta.set(c.name, isRecord(c.meta) ? c.meta : null);
  channelFrameBytes.clear();
  for (const c of all) {
    const bytes = frameBytesFromRates(c);
    if (bytes !== null) channelFrameBytes.set(c.name, bytes);
  }
  let chans = all.filter((c) => matches('channels-filter', c.name));
  // the server's own channels ($stats, ...) after the users' ones, unless sorted by a column
  chans.sort((a, b) => (a.name.startsWith('$') - b.name.startsWith('$')) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  chans = sortBy(chans, sorting.channels);
  const shown = new Set(activePanel()?.channels ?? []);
  const matching = chans.length;
  chans = chans.slice(0, MAX_TABLE_ROWS);
  channelTable.update(chans.map((c) => {
    const meta = isRecord(c.meta) ? c.meta : {};
    // No readers, no frames: the demo's writers (and good writers) send only when read.
    const idle = Number(c.readers) === 0 && Number(c.writers) > 0;
    // block readers that hold this channel's writers (and so its other readers) back
    const held = Array.isArray(c.held_by) ? c.held_by.filter(isRecord) : [];
    const heldText = held.map((h) => `${str(h.client)} (sub ${str(h.sub)}) for ${Number(h.held_s).toFixed(1)} s`).join(', ');
    return {
      key: c.name,
      cells: [
        middle(c.name), c.owner === null ? 'server' : middle(str(c.owner), OWNER_CHARS),
        held.length ? `${fmt.count(c.readers)} ⏸` : fmt.count(c.readers), fmt.count(c.writers),
        idle ? 'idle' : fmt.rate(c.rate_fps), idle ? fmt.DASH : fmt.byteRate(c.rate_bps), fmt.count(c.lost),
        typeof meta.units === 'string' ? meta.units : '',
      ], // the last cell holds the overlay button: not text
      titles: [
        `${c.name}${c.public === false ? ' (private)' : ''}${typeof c.seq === 'number' ? ` · seq ${c.seq}` : ''}${meta.description ? `\n${String(meta.description).slice(0, 300)}` : ''}`,
        c.owner === null ? '' : str(c.owner), held.length ? `held back by ${heldText}: a block reader that does not read stops the writers` : '',
        '', idle ? 'no readers, so its writers send nothing: plot it to wake it' : '', '', '',
        typeof meta.units === 'string' ? meta.units : '',
      ],
      classes: { system: c.name.startsWith('$'), lossy: Number(c.lost) > 0, held: held.length > 0, selected: shown.has(c.name) },
    };
  }));
  $('channels-empty').hidden = chans.length > 0;
  showCount($('channels-count'), countText(all.length, matching, chans.length, refreshEveryMs));
  for (const p of panels) { p.retry(channelNames); p.applyMeta(); }
  startLayoutPanels();
  if (!layoutChosen && panels.length === 0) defaultLayout(all);
  renderActChannels(all);
}

// ------------------------------------------------------------------------------ clients

const clientTable = new KeyedTable($('clients-body'), [
  { cls: 'name' }, { cls: 'num' }, { cls: 'address' }, { cls: 'transport' }, { cls: 'connected' }, { cls: 'list', wrap: true }, { cls: 'list', wrap: true },
  { cls: 'list methods', wrap: true }, { cls: 'row-actions' },
], {
  onCreate(tr, key) {
    tr.dataset.client = key;
    const kick = document.createElement('button');
    kick.type = 'button';
    kick.className = 'disconnect danger';
    kick.textContent = '✕';
    kick.title = 'disconnect this client';
    kick.ariaLabel = 'disconnect this client';
    kick.addEventListener('click', () => adminDisconnect(Number(key), tr.firstElementChild.title.split('\n')[0] || tr.firstElementChild.textContent));
    tr.lastElementChild.append(kick);
  },
});

function renderClients(list) {
  const all = (Array.isArray(list) ? list : []).filter(isRecord);
  lastClients = all;
  let recs = all.filter((c) => matches('clients-filter', c.name));
  recs.sort((a, b) => Number(a.id) - Number(b.id));
  recs = sortBy(recs, sorting.clients);
  const matching = recs.length;
  recs = recs.slice(0, MAX_TABLE_ROWS);
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
    // one name per channel: a page with two panels on $stats holds two subscriptions to it
    const subNames = [...new Set(subs.map((s) => String(s.channel)))];
    return {
      key: String(c.id ?? c.name),
      cells: [
        middle(str(c.name), LIST_NAME_CHARS), str(c.id), str(c.address), str(c.transport),
        Number.isFinite(connected) ? fmt.duration(now - connected) : fmt.DASH,
        listText(subNames), listText(pubs), listText(methods),
      ], // the last cell holds the disconnect button
      titles: [
        `${str(c.name)}\n${str(c.address)} over ${str(c.transport)}`, '', '', '', Number.isFinite(connected) ? new Date(connected * 1000).toLocaleString() : '',
        subTitle, pubs.join('\n'), methods.join('\n'),
      ],
      classes: { self: c.id === client.clientId },
    };
  }));
  showCount($('clients-count'), countText(all.length, matching, recs.length, refreshEveryMs));
  fitNames($('clients-table'));
  renderRpcProviders(all);
}
// (A resize, not a ResizeObserver: .tight changes the panel's height, which would notify again.)
addEventListener('resize', () => fitNames($('clients-table')));

wireSorting('channels-table', 'channels', () => renderChannels(lastChannels));
wireSorting('clients-table', 'clients', () => renderClients(lastClients));
$('channels-filter').addEventListener('input', () => renderChannels(lastChannels));
$('clients-filter').addEventListener('input', () => renderClients(lastClients));

// ------------------------------------------------------------------------------ refresh loop

let refreshing = false;
let refreshedAt = 0; // the last listing was asked for then

async function refresh() {
  if (refreshing || !client.connected) return;
  refreshing = true;
  refreshedAt = Date.now();
  try {
    const wantStats = Date.now() - statsAt > STATS_STALE_MS;
    const [chans, clients, stats] = await Promise.allSettled([
      client.channels(), client.clients(), wantStats ? client.stats() : Promise.resolve(null),
    ]);
    const listed = [chans, clients].reduce((n, r) => n + (r.status === 'fulfilled' && Array.isArray(r.value) ? r.value.length : 0), 0);
    if (chans.status === 'fulfilled' || clients.status === 'fulfilled') refreshEveryMs = refreshDelayMs(listed);
    if (chans.status === 'fulfilled') { channelsShownAt = Date.now(); lastChannelsCame = true; renderChannels(chans.value); }
    if (clients.status === 'fulfilled') { clientsShownAt = Date.now(); renderClients(clients.value); }
    if (wantStats && stats.status === 'fulfilled') { statsShownAt = Date.now(); renderStats(stats.value); }
    markStale();
    const failed = [chans, clients, stats].find((r) => r.status === 'rejected');
    if (failed && !(failed.reason instanceof ConnectionClosed) && !linkLive()) {
      // Nothing answers (a frozen link, a stopped server): the pill says "not answering",
      // with what the page does about it, and then "reconnecting…". A notice beside it,
      // "refresh failed: channels: no reply after 10000 ms", told an operator nothing more
      // and stayed through the reconnecting.
      if (refreshNotice !== null && $('notice').textContent === refreshNotice) notice(null);
    } else if (failed && !(failed.reason instanceof ConnectionClosed)) {
      // The server answers other things, not this: slow (a node waiting for its Redis) or
      // failing this request. Said, with what the page does about it.
      const slow = failed.reason instanceof RequestTimeout ? ' (the server is slow to answer; the page keeps asking every second)' : '';
      notice(`refresh failed: ${failed.reason.message}${slow}`);
      refreshNotice = $('notice').textContent;
    } else if (!failed && refreshNotice !== null && $('notice').textContent === refreshNotice) {
      notice(null); // recovered: the failure is over
    }
    if (!statsSub && !statsStarting && Date.now() - statsTriedAt > 10000) startStats();
  } finally {
    refreshing = false;
  }
}

// The load cards' numbers, asked for between two listings when $stats is silent: at the slow
// pace of a server of many channels they would otherwise be as old as the listings, and the
// link called not answering in between.
let statsAsking = false;

async function refreshStats() {
  if (statsAsking || refreshing || !client.connected) return;
  statsAsking = true;
  try {
    const stats = await client.stats();
    statsShownAt = Date.now();
    renderStats(stats);
    markStale();
  } catch {
    // the next listing's refresh() says what fails
  } finally {
    statsAsking = false;
  }
}

setInterval(() => {
  markStale();
  if (Date.now() - refreshedAt >= refreshEveryMs - REFRESH_MS / 2) refresh();
  else if (Date.now() - statsAt > STATS_STALE_MS) refreshStats();
}, REFRESH_MS);

// ------------------------------------------------------------------------------ panels

const panels = [];
window.__tsPanels = panels; // read by automated browser tests
let active = null;
// The URL names the layout, or the user changed it: no default layout then.
let layoutChosen = false;

function activePanel() { return active && panels.includes(active) ? active : panels[0] ?? null; }

function publishState() {
  state.panels = panels.map((p) => ({ id: p.id, channels: [...p.channels], frames: p.frames, rate: p.rate }));
  state.selected = activePanel()?.channels[0] ?? null;
  state.active = activePanel()?.id ?? null;
}

function saveLayout() {
  const hash = formatLayout(panels.map((p) => p.spec()));
  history.replaceState(null, '', hash || location.pathname + location.search);
  publishState();
}

function setActive(panel) {
  active = panel;
  for (const p of panels) p.root.classList.toggle('active', p === panel);
  const shown = new Set(panel?.channels ?? []);
  for (const [n, tr] of channelTable.rows) tr.classList.toggle('selected', shown.has(n));
  publishState();
}

function addPanel(spec = { channels: [], rate: DEFAULT_RATE_HZ, y: null }, { start = true } = {}) {
  const panel = new Panel({
    client, spec, metaOf: (n) => channelMeta.get(n) ?? null, frameBytesOf: (n) => channelFrameBytes.get(n) ?? null,
    onFrame: () => {
      state.framesPlotted++;
      const entry = state.panels.find((x) => x.id === panel.id);
      if (entry) entry.frames = panel.frames;
    },
    onChange: (p, what) => {
      const i = panels.indexOf(p);
      if (what === 'activate') { if (active !== p) setActive(p); return; }
      layoutChosen = true;
      if (what === 'remove') {
        panels.splice(i, 1);
        p.destroy();
        if (active === p) active = null;
        setActive(activePanel());
      } else if (what === 'left' && i > 0) {
        [panels[i - 1], panels[i]] = [panels[i], panels[i - 1]];
      } else if (what === 'right' && i < panels.length - 1) {
        [panels[i + 1], panels[i]] = [panels[i], panels[i + 1]];
      }
      $('plots').replaceChildren(...panels.map((x) => x.root));
      for (const x of panels) x.plotter.resize();
      saveLayout();
    },
  });
  panels.push(panel);
  $('plots').append(panel.root);
  panel.plotter.refreshColors(); // the theme's colours reach the canvas once it is in the page
  panel.renderTitle();
  panel.plotter.resize();
  if (start) panel.start();
  setActive(panel);
  saveLayout();
  return panel;
}

function showInActive(name) {
  layoutChosen = true;
  const p = activePanel() ?? addPanel();
  p.show(name);
  setActive(p);
  saveLayout();
}

function overlayInActive(name) {
  layoutChosen = true;
  const p = activePanel() ?? addPanel();
  p.add(name);
  setActive(p);
  saveLayout();
}

// First visit with no layout in the URL: one panel for each channel someone writes to (up to
// three), so the page is live at once. Those are real readers: the writers send because of
// them, and the channel table's rates are the server's measurements of that traffic.
function defaultLayout(chans) {
  const live = chans.filter((c) => !c.name.startsWith('$') && Number(c.writers) > 0)
    .sort((a, b) => (a.name < b.name ? -1 : 1)).slice(0, 3);
  if (!live.length) return;
  layoutChosen = true;
  for (const c of live) addPanel({ channels: [c.name], rate: DEFAULT_RATE_HZ, y: null });
  setActive(panels[0]);
}

$('add-panel').addEventListener('click', () => { layoutChosen = true; addPanel(); });

matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => {
  for (const p of panels) { p.plotter.refreshColors(); p.plotter.draw(); }
});

// A link like /#AnalogInput1 or /#a,b;c~r=2 opens with those panels. They subscribe once the
// first channel list is in (retry() above takes the channels there are, each sized by its
// rates: Panel's frameBytesOf), or after LAYOUT_START_MS without one; subscribed at once, a
// reload of a page of camera panels asked for half a second of their rate blind.
const LAYOUT_START_MS = 3000;
let layoutPanels = [];
for (const spec of parseLayout(location.hash)) {
  layoutChosen = true;
  layoutPanels.push(addPanel(spec, { start: false }));
}
if (panels.length) setActive(panels[0]);
setTimeout(startLayoutPanels, LAYOUT_START_MS);

/** The URL's panels subscribe to what retry() left (channels not there: to say so). */
function startLayoutPanels() {
  for (const p of layoutPanels) {
    if (!panels.includes(p)) continue;
    for (const name of p.channels) if (!p.subs.has(name)) p.subscribe(name);
  }
  layoutPanels = [];
}

// ------------------------------------------------------------------------------ act (admin)

// The admin token, like the connection token, stays in this tab's session storage, never in
// the URL. It goes with each admin request; the server checks it every time.
const ADMIN_KEY = 'trio_stream.admin_token';
let adminToken = null;
try { adminToken = sessionStorage.getItem(ADMIN_KEY); } catch { /* no storage: ask each time */ }

async function admin(action, fields = {}, opts = {}) {
  if (!adminToken) throw new AuthError('unlock admin actions first (the Admin button)');
  return client.request('admin', { token: adminToken, action, ...fields }, opts);
}

function actResult(text, bad = false) {
  const pre = $('act-result');
  pre.classList.toggle('bad', bad);
  setText(pre, text);
}

async function unlock(token) {
  adminToken = token;
  try {
    await admin('check');
  } catch (e) {
    adminToken = null;
    state.admin = false;
    document.body.classList.remove('admin');
    $('admin-panel').hidden = true;
    $('admin-form').hidden = false;
    setText($('admin-label'), `${e.message}. Admin token:`);
    return false;
  }
  try { sessionStorage.setItem(ADMIN_KEY, token); } catch { /* kept in memory only */ }
  state.admin = true;
  document.body.classList.add('admin');
  fitNames($('clients-table')); // its disconnect buttons widen the table
  $('admin-panel').hidden = false;
  $('admin-form').hidden = true;
  setText($('admin-button'), 'Admin ✓');
  return true;
}

$('admin-button').addEventListener('click', () => {
  if (state.admin) {
    adminToken = null;
    state.admin = false;
    try { sessionStorage.removeItem(ADMIN_KEY); } catch { /* nothing kept */ }
    document.body.classList.remove('admin');
    $('admin-panel').hidden = true;
    setText($('admin-button'), 'Admin');
    return;
  }
  $('admin-form').hidden = !$('admin-form').hidden;
  if (!$('admin-form').hidden) $('admin-input').focus();
});

$('admin-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  unlock($('admin-input').value);
});

client.on('open', () => { if (adminToken && !state.admin) unlock(adminToken); });

function renderActChannels(all) {
  const sel = $('act-channel');
  const names = all.map((c) => c.name).filter((n) => !n.startsWith('$'));
  const have = [...sel.options].map((o) => o.value);
  if (have.join('\n') === names.join('\n')) return;
  const keep = sel.value;
  // Cut in the middle as in the tables (the whole name is the value and the title): a long
  // name made the select, and so the page, wider than an 800 px window.
  sel.replaceChildren(...names.map((n) => Object.assign(document.createElement('option'), { value: n, textContent: middle(n), title: n })));
  if (names.includes(keep)) sel.value = keep;
}

/** A JSON value, or failing that a plain number, or the text itself. */
function parseValue(text) {
  try { return JSON.parse(text); } catch { /* not JSON */ }
  const n = Number(text);
  return text.trim() !== '' && Number.isFinite(n) ? n : text;
}

$('publish-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const channel = $('act-channel').value;
  try {
    const r = await admin('publish', { channel, value: parseValue($('act-value').value) });
    actResult(`published to ${channel}: seq ${r.seq}, ${r.readers} reader(s)`);
  } catch (e) { actResult(`publish failed: ${e.message}`, true); }
});

$('act-delete').addEventListener('click', async () => {
  const channel = $('act-channel').value;
  if (!channel || !confirm(`Delete channel ${channel}? Its readers' subscriptions end.`)) return;
  try {
    await admin('delete_channel', { channel });
    actResult(`deleted ${channel}`);
    refresh();
  } catch (e) { actResult(`delete failed: ${e.message}`, true); }
});

async function adminDisconnect(id, name) {
  if (!confirm(`Disconnect ${name} (client ${id})?`)) return;
  try {
    await admin('disconnect', { client: id });
    actResult(`disconnected ${name} (client ${id})`);
    refresh();
  } catch (e) { actResult(`disconnect failed: ${e.message}`, true); }
}

// RPC: a form generated from the method's signature, as its provider describes it.
let rpcMethods = [];

function renderRpcProviders(all) {
  const sel = $('rpc-provider');
  const names = all.filter((c) => Array.isArray(c.methods) && c.methods.length).map((c) => String(c.name));
  const have = [...sel.options].map((o) => o.value);
  if (have.join('\n') === names.join('\n')) return;
  const keep = sel.value;
  // Cut in the middle as in the tables (the whole name is the value and the title): a long
  // name made the select, and so the page, wider than an 800 px window.
  sel.replaceChildren(...names.map((n) => Object.assign(document.createElement('option'), { value: n, textContent: middle(n), title: n })));
  if (names.includes(keep)) sel.value = keep;
  if (sel.value !== keep || !rpcMethods.length) describeProvider();
}

async function describeProvider() {
  const provider = $('rpc-provider').value;
  rpcMethods = [];
  $('rpc-method').replaceChildren();
  $('rpc-params').replaceChildren();
  if (!provider) return;
  try {
    const methods = await client.request('describe', { provider });
    rpcMethods = Array.isArray(methods) ? methods.filter(isRecord) : [];
  } catch (e) { actResult(`cannot describe ${provider}: ${e.message}`, true); return; }
  $('rpc-method').replaceChildren(...rpcMethods.map((m) => Object.assign(document.createElement('option'), {
    value: m.name, textContent: m.name, title: String(m.doc ?? ''),
  })));
  renderParams();
}

function renderParams() {
  const m = rpcMethods.find((x) => x.name === $('rpc-method').value);
  const params = (m?.params ?? []).filter((p) => isRecord(p) && p.kind !== 'var_keyword' && p.name !== 'self');
  $('rpc-params').replaceChildren(...params.map((p) => {
    const label = document.createElement('label');
    const input = document.createElement('input');
    input.name = p.name;
    input.dataset.kind = p.kind;
    input.placeholder = p.default ?? (p.kind === 'var_positional' ? 'JSON list' : 'required');
    input.required = p.default == null && p.kind !== 'var_positional';
    label.append(`${p.name}${p.annotation ? `: ${p.annotation}` : ''} `, input);
    return label;
  }));
  $('rpc-call').title = m ? `${m.name}(${(m.params ?? []).map((p) => p.name).join(', ')})${m.returns ? ` -> ${m.returns}` : ''}\n${m.doc ?? ''}` : '';
}

$('rpc-provider').addEventListener('change', describeProvider);
$('rpc-method').addEventListener('change', renderParams);

$('rpc-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const provider = $('rpc-provider').value, method = $('rpc-method').value;
  const args = [], kwargs = {};
  for (const input of $('rpc-params').querySelectorAll('input')) {
    if (input.value === '') continue; // the default applies
    const v = parseValue(input.value);
    if (input.dataset.kind === 'var_positional') args.push(...(Array.isArray(v) ? v : [v]));
    else if (input.dataset.kind === 'positional_only') args.push(v);
    else kwargs[input.name] = v;
  }
  try {
    // Through the admin op, not a plain `call`: the server checks the admin token and logs
    // the call with this page's client; the provider answers it like any call (a payload).
    const reply = await admin('call', { value: { provider, method, args, kwargs } },
      { cancelOnTimeout: true, TimeoutError: RpcTimeout });
    if (!(reply instanceof Uint8Array)) throw new Error('the call\'s reply carries no payload');
    const result = decode(reply);
    actResult(`${provider}.${method} → ${fmt.valueText(result, 4000)}`);
  } catch (e) { actResult(`${provider}.${method} failed: ${e.message}`, true); }
});
