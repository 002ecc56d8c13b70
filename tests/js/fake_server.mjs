// An in-process stand-in for a trio_stream server, enough of protocol.md to test the browser
// client without a network: FakeWebSocket plays the browser's WebSocket, FakeServer the broker.

import { encode, decode } from '../../trio_stream/web/cbor.js';

export const CONTROL = 1, PUBLISH = 2, DATA = 3, CREDIT = 4, PUB_ACK = 5;

const tick = () => new Promise((r) => setTimeout(r, 0));

/** Split one WebSocket message into frame bodies. */
export function splitFrames(bytes) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = [];
  for (let off = 0; off < bytes.length;) {
    const len = dv.getUint32(off);
    out.push(bytes.subarray(off + 4, off + 4 + len));
    off += 4 + len;
  }
  return out;
}

export function frameBytes(type, header, payload = new Uint8Array(0)) {
  const body = new Uint8Array(1 + header.length + payload.length);
  body[0] = type;
  body.set(header, 1);
  body.set(payload, 1 + header.length);
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
}

export const controlFrame = (map) => frameBytes(CONTROL, new Uint8Array(0), encode(map));

export class FakeServer {
  limits = {
    max_frame_bytes: 1 << 20, max_channels_per_client: 100, max_subscriptions_per_client: 100,
    max_buffered_bytes: 1 << 24, handshake_timeout_s: 5, idle_timeout_s: 60,
    publish_window_frames: 4, publish_window_bytes: 1 << 20,
  };
  token = null; // when set, hellos must carry it
  refuse = false; // simulate a server that is down
  autoAck = true; // PUB_ACK every PUBLISH at once
  window = 2; // subscribe window granted
  windowBytes = null; // bytes-in-flight bound announced in the subscribe reply (null: not sent)
  conns = new Set();
  history = new Map(); // channel -> value sent to every new subscriber right after the reply
  channels = new Map(); // name -> {subs: Set, pubs: Set}
  messages = []; // every client->server WebSocket message, as frame lists [{type, ...}]
  nextId = 1;
  allPubs = new Map(); // every publisher ever opened, by id (a reopen's resume_pub names one)
  answerTaken = false; // answer a reopen with `taken` (as a server that kept the lease)
  keepsHistory = new Set(); // channels whose open_publisher reply says keeps_history
  delays = new Map(); // op -> ms: requests of that op are answered this late (a slow server)
  failures = new Map(); // op -> [type, message]: requests of that op are answered with this error
  // Channels have epochs (a new one at each creation: deleted and created again, or after
  // restart()), named in the subscribe reply; a subscribe `since_epoch` is answered with its
  // `resume` (protocol.md 8: resumed within the epoch, else reset). Off by default: the
  // tests written before it expect no gap after a reconnect.
  epochs = false;
  #epochCount = 0;
  // The welcome's `run` (protocol.md 2): null sends none (an older server); restart() draws a
  // new one when set.
  run = null;
  // The next welcome's `channels_deleted` (protocol.md 2), then none again: null sends none.
  channelsDeleted = null;
  // A resumed subscribe's `held` (protocol.md 8) answered with this many of those the client
  // said it holds counted in its window (at most those), as a server that kept the
  // subscription does; null: not answered (a new subscription, an older server).
  heldCounted = null;

  constructor() {
    const server = this;
    this.WebSocket = class extends FakeWebSocket {
      constructor(url) {
        super(url, server);
      }
    };
  }

  channel(name) {
    if (!this.channels.has(name)) this.channels.set(name, { subs: new Set(), pubs: new Set(), epoch: `epoch-${++this.#epochCount}` });
    return this.channels.get(name);
  }

  /** Every control message the clients sent, optionally of one op. */
  controls(op) {
    return this.messages.flat().filter((f) => f.type === CONTROL && (!op || f.msg.op === op)).map((f) => f.msg);
  }

  /** Drop every connection as if the network failed. */
  dropAll() {
    for (const c of [...this.conns]) c.ws._peerClose(1006, '');
  }

  /** The server goes down: every connection dropped, new ones refused (until `refuse` is
   * false again) and `client` seen reconnecting. */
  async goDown(client) {
    this.refuse = true;
    this.dropAll();
    await until(() => client.state === 'reconnecting', 1000, 'reconnecting');
  }

  /**
   * Go down and come back as a restarted server: without `channels` (their owners are not
   * back yet; every channel if none are named), accepting connections again.
   */
  async restart(client, ...channels) {
    await this.goDown(client);
    if (channels.length) for (const name of channels) this.channels.delete(name);
    else this.channels.clear();
    if (this.run !== null) this.run = `${this.run}+`;
    this.refuse = false;
  }

  /** Publish `value` on `channel` from the server side (as another client would). */
  inject(channel, value, { sender = 'other', time = 1.5 } = {}) {
    const ch = this.channel(channel);
    ch.seq = (ch.seq ?? 0) + 1;
    for (const sub of ch.subs) sub.conn.offer(sub, encode(value), ch.seq, sender, time);
  }

  readersChanged(name) {
    const ch = this.channel(name);
    for (const p of ch.pubs) p.conn.send(controlFrame({ op: 'readers', pub: p.id, readers: ch.subs.size }));
  }
}

class Conn {
  subs = new Map();
  pubs = new Map();
  welcomed = false;
  unacked = []; // PUBLISH frames awaiting a manual ack: pub ids

  constructor(server, ws) {
    this.server = server;
    this.ws = ws;
  }

  // Like the real server, frames produced in one go leave as one WebSocket message.
  send(...frames) {
    if (!this.outbox) {
      this.outbox = [];
      queueMicrotask(() => {
        const out = this.outbox;
        this.outbox = null;
        const total = out.reduce((n, f) => n + f.length, 0);
        const msg = new Uint8Array(total);
        let off = 0;
        for (const f of out) { msg.set(f, off); off += f.length; }
        this.ws._deliver(msg.buffer);
      });
    }
    this.outbox.push(...frames);
  }

  reply(id, result) { this.send(controlFrame({ op: 'reply', id, result })); }
  error(id, type, message) { this.send(controlFrame({ op: 'error', id, type, message })); }

  onMessage(bytes) {
    const frames = splitFrames(bytes).map((body) => {
      const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
      switch (body[0]) {
        case CONTROL: return { type: CONTROL, msg: decode(body.subarray(1)) };
        case PUBLISH: return { type: PUBLISH, pub: dv.getUint32(1), time: dv.getFloat64(5), payload: body.slice(13) };
        case CREDIT: return { type: CREDIT, sub: dv.getUint32(1), frames: dv.getUint32(5) };
        default: return { type: body[0] };
      }
    });
    this.server.messages.push(frames);
    for (const f of frames) this.onFrame(f);
  }

  onFrame(f) {
    const s = this.server;
    const delay = f.type === CONTROL ? s.delays.get(f.msg.op) : undefined;
    if (delay !== undefined) {
      setTimeout(() => { if (s.conns.has(this)) this.answer(f); }, delay);
      return;
    }
    this.answer(f);
  }

  answer(f) {
    const s = this.server;
    if (f.type === CREDIT) {
      const sub = this.subs.get(f.sub);
      if (sub) { sub.credit += f.frames; this.drain(sub); }
      return;
    }
    if (f.type === PUBLISH) {
      const pub = this.pubs.get(f.pub);
      pub.published++;
      const ch = s.channel(pub.channel);
      ch.seq = (ch.seq ?? 0) + 1;
      for (const sub of ch.subs) sub.conn.offer(sub, f.payload, ch.seq, this.name, f.time);
      if (s.autoAck) this.ack(f.pub, 1);
      else this.unacked.push(f.pub);
      return;
    }
    const m = f.msg;
    if (!this.welcomed) {
      if (m.op !== 'hello') return this.ws._peerClose(4000, 'expected hello');
      if (s.token !== null && m.token !== s.token) {
        this.error(null, 'AuthError', 'wrong token');
        return this.ws._peerClose(4001, 'auth');
      }
      this.welcomed = true;
      this.clientId = s.nextId++;
      this.name = m.name ?? `client-${this.clientId}`;
      const deleted = s.channelsDeleted;
      s.channelsDeleted = null;
      return this.send(controlFrame({
        op: 'welcome', v: 1, client_id: this.clientId, name: this.name, server: 'fake', limits: s.limits,
        ...(s.run === null ? {} : { run: s.run }),
        ...(deleted === null ? {} : { channels_deleted: deleted }),
      }));
    }
    if (s.failures.has(m.op)) return this.error(m.id, ...s.failures.get(m.op));
    switch (m.op) {
      case 'ping': return this.send(controlFrame({ op: 'pong', data: m.data }));
      case 'goodbye': return undefined;
      case 'create_channel':
        if (s.channels.has(m.channel)) return this.error(m.id, 'ChannelExists', m.channel);
        s.channel(m.channel);
        return this.reply(m.id, null);
      case 'delete_channel':
        if (!s.channels.delete(m.channel)) return this.error(m.id, 'ChannelNotFound', m.channel);
        return this.reply(m.id, null);
      case 'channels':
        return this.reply(m.id, [...s.channels].map(([name, ch]) => ({ name, readers: ch.subs.size })));
      case 'stats': return this.reply(m.id, { connections: s.conns.size });
      case 'open_publisher': {
        if (!s.channels.has(m.channel)) return this.error(m.id, 'ChannelNotFound', m.channel);
        const pub = { id: s.nextId++, channel: m.channel, conn: this, published: 0 };
        this.pubs.set(pub.id, pub);
        s.allPubs.set(pub.id, pub);
        s.channel(m.channel).pubs.add(pub);
        const result = {
          pub: pub.id, readers: s.channel(m.channel).subs.size, keeps_history: s.keepsHistory.has(m.channel),
        };
        const old = s.allPubs.get(m.resume_pub);
        if (s.answerTaken && old) result.taken = old.published;
        return this.reply(m.id, result);
      }
      case 'subscribe': {
        if (!s.channels.has(m.channel)) return this.error(m.id, 'ChannelNotFound', m.channel);
        const window = Math.min(s.window, m.size ?? s.window);
        const sub = { id: s.nextId++, channel: m.channel, conn: this, credit: window, buffer: [], size: m.size, req: m };
        this.subs.set(sub.id, sub);
        s.channel(m.channel).subs.add(sub);
        const result = s.windowBytes === null ? { sub: sub.id, window } : { sub: sub.id, window, window_bytes: s.windowBytes };
        if (s.epochs) {
          const ch = s.channel(m.channel);
          result.epoch = ch.epoch;
          if (m.since_epoch != null) {
            const within = m.since_epoch === ch.epoch && (m.since_seq ?? 0) <= (ch.seq ?? 0);
            result.resume = { kind: within ? 'resumed' : 'reset', recovered: 0 };
            if (s.heldCounted !== null && m.held != null) result.resume.held = Math.min(s.heldCounted, m.held);
          }
        }
        this.reply(m.id, result);
        // history: the channel's latest value follows the reply in the same message
        if (s.history.has(m.channel)) this.offer(sub, encode(s.history.get(m.channel)), 0, 'history', 1);
        return s.readersChanged(m.channel);
      }
      case 'unsubscribe': {
        const sub = this.subs.get(m.sub);
        this.subs.delete(m.sub);
        if (sub) s.channel(sub.channel).subs.delete(sub);
        this.reply(m.id, null);
        if (sub) s.readersChanged(sub.channel);
        return undefined;
      }
      case 'close_publisher': {
        const pub = this.pubs.get(m.pub);
        this.pubs.delete(m.pub);
        if (pub) s.channel(pub.channel).pubs.delete(pub);
        return this.reply(m.id, null);
      }
      case 'restored': return this.reply(m.id, null);
      default: return this.error(m.id, 'ProtocolError', `unknown op ${m.op}`);
    }
  }

  ack(pubId, n) {
    const h = new Uint8Array(8);
    new DataView(h.buffer).setUint32(0, pubId);
    new DataView(h.buffer).setUint32(4, n);
    this.send(frameBytes(PUB_ACK, h));
  }

  // drop_oldest buffer of `size` frames in front of the credit window
  offer(sub, payload, seq, sender, time) {
    sub.buffer.push({ payload, seq, sender, time, lost: 0 });
    while (sub.buffer.length > (sub.size ?? Infinity)) {
      const dropped = sub.buffer.shift();
      sub.buffer[0].lost += dropped.lost + 1; // the loss is reported with the next frame
    }
    this.drain(sub);
  }

  drain(sub) {
    const frames = [];
    while (sub.credit > 0 && sub.buffer.length) {
      const f = sub.buffer.shift();
      sub.credit--;
      const name = new TextEncoder().encode(f.sender ?? '');
      const h = new Uint8Array(4 + 4 + 8 + 8 + 1 + name.length);
      const dv = new DataView(h.buffer);
      dv.setUint32(0, sub.id);
      dv.setUint32(4, f.lost);
      dv.setBigUint64(8, BigInt(f.seq));
      dv.setFloat64(16, f.time);
      h[24] = name.length;
      h.set(name, 25);
      frames.push(frameBytes(DATA, h, f.payload));
    }
    if (frames.length) this.send(...frames);
  }

  closed() {
    this.server.conns.delete(this);
    for (const sub of this.subs.values()) {
      this.server.channel(sub.channel).subs.delete(sub);
      this.server.readersChanged(sub.channel);
    }
    for (const pub of this.pubs.values()) this.server.channel(pub.channel).pubs.delete(pub);
  }
}

/** Just enough of the browser's WebSocket: async open/message/close events, send, close. */
export class FakeWebSocket {
  binaryType = 'blob';
  readyState = 0;
  onopen = null;
  onmessage = null;
  onerror = null;
  onclose = null;
  #closeListeners = [];

  constructor(url, server) {
    this.url = url;
    this.server = server;
    setTimeout(() => {
      if (this.readyState !== 0) return;
      if (server.refuse) {
        this.onerror?.({});
        this._fireClose(1006, '');
        return;
      }
      this.readyState = 1;
      this.conn = new Conn(server, this);
      server.conns.add(this.conn);
      this.onopen?.({});
    }, 0);
  }

  send(data) {
    if (this.readyState !== 1) throw new Error('send on a socket that is not open');
    if (!(data instanceof Uint8Array)) throw new Error('the client must send Uint8Array messages');
    const copy = data.slice();
    // what was sent before close() still reaches the server, as with a real close handshake
    setTimeout(() => { if (!this.conn.gone) this.conn.onMessage(copy); }, 0);
  }

  close(code = 1000, reason = '') {
    if (code !== 1000 && (code < 3000 || code > 4999)) throw new Error(`InvalidAccessError: close code ${code}`);
    if (this.readyState >= 2) return;
    this.readyState = 2;
    setTimeout(() => this._fireClose(code, reason), 0);
  }

  addEventListener(type, fn) {
    if (type === 'close') this.#closeListeners.push(fn);
  }

  // server side
  _deliver(buffer) {
    setTimeout(() => { if (this.readyState === 1) this.onmessage?.({ data: buffer }); }, 0);
  }

  // The browser learns of a server-side close only after the messages sent before it.
  _peerClose(code, reason) {
    if (this.readyState >= 2 || this.conn?.gone) return;
    this.conn.gone = true;
    // after the frames the server queued before closing (they leave in a microtask)
    queueMicrotask(() => setTimeout(() => this._fireClose(code, reason), 0));
  }

  _fireClose(code, reason) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    if (this.conn) {
      this.conn.gone = true;
      this.conn.closed();
    }
    this.onclose?.({ code, reason });
    for (const fn of this.#closeListeners) fn({ code, reason });
  }
}

export { tick };

/** Wait until `cond()` is truthy (polling every few ms), or fail after `ms`. */
export async function until(cond, ms = 2000, what = 'condition') {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
