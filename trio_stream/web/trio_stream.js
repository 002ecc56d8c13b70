// trio_stream browser client: the wire protocol of docs/protocol.md (version 1) over WebSocket.
//
//   import { connect } from './trio_stream.js';
//   const client = await connect('ws://host:port/ws', { name: 'dash' });
//   const sub = await client.subscribe('AnalogInput1', { policy: 'drop_oldest', size: 1, maxRate: 10 });
//   for await (const msg of sub) console.log(msg.seq, msg.data);
//
// One WebSocket binary message carries one or more length-prefixed frames; frames queued in the
// same tick go out as one message. Flow control follows protocol.md section 5: a subscription
// returns CREDIT as the application consumes messages, a publisher keeps at most the server's
// window of unacknowledged PUBLISH frames and sends nothing while its channel has no readers
// (unless the channel keeps history). The client reconnects with exponential backoff (equal
// jitter) and resumes what was active: subscriptions continue after the last frame received,
// and the first message after a reconnection carries `gap` ({kind: 'resumed'|'reset', lost,
// recovered, reconnection}; a reset after the old server's goodbye, a graceful stop, has
// afterCleanStop: true; reconnection: {at, sameServer}, see Client.reconnection); publishers send again exactly the frames of their window the server had not
// taken (docs/protocol.md 8).

import { encode, decode, CBORError } from './cbor.js';

// What payloads decode to (numpy arrays: NDArray), and cbor.js's error, without a second import.
export { NDArray, Tag, CBORError } from './cbor.js';

export const PROTOCOL_VERSION = 1;
// The reason of the goodbye a server's graceful stop sends each client (after which it
// lets its readers take what it holds, within its shutdown grace).
const SHUTDOWN_REASON = 'the server is shutting down';
export const POLICIES = Object.freeze(['drop_oldest', 'drop_newest', 'clear', 'unbounded', 'block']);

const CONTROL = 0x01, PUBLISH = 0x02, DATA = 0x03, CREDIT = 0x04, PUB_ACK = 0x05;
const DATA_HEADER = 1 + 4 + 4 + 8 + 8 + 1; // type, sub_id, lost, seq, time, n
const DEFAULT_MAX_FRAME = 16 * 1024 * 1024; // until the welcome tells us the server's limit
const HEARTBEAT_MS = 5000; // ping at least this often (and every third of the idle timeout)
const SILENT_PINGS = 3; // the server is gone after this many pings with nothing from it...
const MIN_SILENCE_MS = 2000; // ...and at least this long
const MAX_BATCH_BYTES = 1024 * 1024; // frames per WebSocket message, unless a frame is bigger
const CONTROL_MAX_DEPTH = 32;
const CONTROL_MAX_LEVELS = 16; // what the server decodes of a client's CONTROL map (protocol.md 3)
const PUBLISH_HEAD_BYTES = 13; // type, pub id, time (protocol.md 4): counted in the byte window
// Client.reconnection objects whose sameServer the welcomes' `run` settled (exact): the
// resubscriptions' evidence is then not needed, and must not overrule it.
const settledByRun = new WeakSet();
const WS_OPEN = 1; // WebSocket.OPEN (a WebSocket given in the options may not have the constant)

// ------------------------------------------------------------------------------------- errors

export class TrioStreamError extends Error {
  constructor(message, type) {
    super(message);
    this.name = this.constructor.name;
    this.type = type ?? this.constructor.name; // the protocol's error type name
  }
}
export class ProtocolError extends TrioStreamError {}
export class ConnectionClosed extends TrioStreamError {}
export class AuthError extends TrioStreamError {}
export class ChannelNotFound extends TrioStreamError {}
export class ChannelExists extends TrioStreamError {}
export class FrameTooLarge extends TrioStreamError {}
export class LimitExceeded extends TrioStreamError {}
export class InvalidArgument extends TrioStreamError {}
export class NameInUse extends TrioStreamError {}
export class RequestTimeout extends TrioStreamError {}
/** A server of several nodes could not reach its Redis for this request: try again. */
export class ClusterUnavailable extends TrioStreamError {}
/** A publisher closed by its user cannot send (a closed client rejects with ConnectionClosed). */
export class ResourceClosed extends TrioStreamError {}
export class RpcError extends TrioStreamError {}
export class RpcTimeout extends RpcError {}
/** An RpcProxy was asked for a method its provider does not expose. */
export class UnknownMethod extends RpcError {}
/** The remote method raised: `typeName`, `message`, `remoteTraceback` describe it. */
export class RemoteError extends RpcError {
  constructor(typeName, message, remoteTraceback = '') {
    super(`${typeName}: ${message}`, 'RemoteError');
    this.typeName = typeName;
    this.remoteMessage = message;
    this.remoteTraceback = remoteTraceback;
  }
}

const ERROR_CLASSES = {
  TrioStreamError, ProtocolError, ConnectionClosed, AuthError, ChannelNotFound, ChannelExists, FrameTooLarge,
  LimitExceeded, InvalidArgument, NameInUse, RequestTimeout, ClusterUnavailable, ResourceClosed,
  RpcError, RpcTimeout, UnknownMethod,
};

// The server words its advice for the trio client; these name this client's spelling instead
// (a page's author reading "wait_channel=True" looked for an option this client spells
// differently). Server settings (ServerConfig, block_timeout_s) stay as they are.
const JS_TERMS = [
  [/subscribe\(\.\.\., wait_channel=True\)/g, 'subscribe(channel, { waitChannel: true })'],
  [/\bcreate_channel\(\)/g, 'createChannel()'],
  [/\bdelete_channel\(\)/g, 'deleteChannel()'],
  [/\bpass (its )?key=\.\.\./g, 'pass $1{ key }'],
  [/\bkeep=True\b/g, '{ keep: true }'],
  [/\bsingle_writer=True\b/g, '{ singleWriter: true }'],
  [/\bsingle_writer\b/g, 'singleWriter'],
  [/\bblock_timeout\b/g, 'blockTimeout'],
  [/\bmax_rate\b/g, 'maxRate'],
];

/** A server's message in this client's terms (JS_TERMS). */
function inJsTerms(message) {
  return JS_TERMS.reduce((text, [python, js]) => text.replace(python, js), message);
}

/** The error for a CONTROL `error` (or `rpc_error`) message: a known class when we have one. */
function remoteError(msg) {
  const text = (x) => (typeof x === 'string' ? x : '');
  if (msg.op === 'rpc_error') return new RemoteError(text(msg.type) || 'Exception', text(msg.message), text(msg.traceback));
  const type = text(msg.type) || 'TrioStreamError';
  const Cls = ERROR_CLASSES[type] ?? TrioStreamError;
  return new Cls(inJsTerms(text(msg.message)) || type, type);
}

// ------------------------------------------------------------------------------------- events

/** A tiny event emitter: `on(type, fn)` returns a function that removes the listener. */
class Emitter {
  #listeners = new Map();

  on(type, fn) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this.#listeners.get(type)?.delete(fn);
  }

  listenerCount(type) {
    return this.#listeners.get(type)?.size ?? 0;
  }

  emit(type, ...args) {
    for (const fn of [...(this.#listeners.get(type) ?? [])]) {
      try {
        fn(...args);
      } catch (e) {
        // A listener's bug must not break the connection's state machine: report it apart.
        queueMicrotask(() => { throw e; });
      }
    }
  }
}

// ------------------------------------------------------------------------------------- helpers

const textDecoder = new TextDecoder('utf-8', { fatal: true });
const nowSeconds = () => Date.now() / 1000;

/** A publisher's writer key: 32 random hex digits (protocol.md 8). */
function newWriterKey() {
  const bytes = new Uint8Array(16);
  if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
}

/** `ws(s)://<host>/ws` of the page that loaded us, or the given URL made absolute. */
export function defaultUrl(path = '/ws') {
  const loc = globalThis.location;
  if (!loc) throw new TypeError('no URL given and no page location to derive one from');
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}${path}`;
}

function resolveUrl(url) {
  if (!url) return defaultUrl();
  if (/^wss?:\/\//i.test(url)) return url;
  if (/^https?:\/\//i.test(url)) return url.replace(/^http/i, 'ws');
  if (globalThis.location) {
    const u = new URL(url, globalThis.location.href);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    return u.href;
  }
  throw new TypeError(`not a WebSocket URL: ${url}`);
}

// Frames are built with their 4-byte length prefix so that batching is a plain concatenation.
function frame(type, headerBytes, payload) {
  const bodyLen = 1 + headerBytes + (payload ? payload.length : 0);
  const buf = new Uint8Array(4 + bodyLen);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, bodyLen);
  buf[4] = type;
  if (payload) buf.set(payload, 5 + headerBytes);
  return { buf, dv };
}

// --- what the client sends, checked before it goes --------------------------------------------
// The server takes a CONTROL field of the wrong type (a number for a channel name, a string for
// a number) as a broken peer: a protocol error, which closes the whole connection, and every
// subscription of the page starts again. So each field the server checks the type of
// (docs/protocol.md section 3) is checked here first: a TypeError (wrong type) or RangeError
// (a number out of range), as for a bad policy or size, and nothing is sent.

/** A value as an error message shows it: its type and (shortened) value. */
function shown(value) {
  if (value === null || value === undefined) return String(value);
  if (typeof value === 'string') return `string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value)}`;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return `${typeof value} ${value}`;
  return Array.isArray(value) ? 'an array' : (value.constructor?.name ?? typeof value);
}

const isText = (v) => typeof v === 'string';
const isInt = (v) => Number.isSafeInteger(v); // a bigger one goes out as a float
const isNumber = (v) => typeof v === 'number';

/** `value` must be a string (null too with `nullable`). */
function checkText(what, value, nullable = false) {
  if (isText(value) || (nullable && value === null)) return;
  throw new TypeError(`${what} must be a string${nullable ? ' or null' : ''}, not ${shown(value)}`);
}

function checkBool(what, value) {
  if (typeof value !== 'boolean') throw new TypeError(`${what} must be true or false, not ${shown(value)}`);
}

/** An integer >= `min` (and <= `max`; null too with `nullable`). */
function checkInt(what, value, { min = -Infinity, max = Infinity, nullable = false } = {}) {
  if (nullable && value === null) return;
  const range = max < Infinity ? ` from ${min} to ${max}` : min > -Infinity ? ` >= ${min}` : '';
  const wanted = `an integer${range}${nullable ? ' or null' : ''}`;
  if (!isNumber(value)) throw new TypeError(`${what} must be ${wanted}, not ${shown(value)}`);
  if (!isInt(value) || value < min || value > max) throw new RangeError(`${what} must be ${wanted}, not ${value}`);
}

/** A finite number > 0 (null too with `nullable`): seconds, Hz. */
function checkPositive(what, value, { nullable = true } = {}) {
  if (nullable && value === null) return;
  const wanted = `a finite number > 0${nullable ? ' or null' : ''}`;
  if (!isNumber(value)) throw new TypeError(`${what} must be ${wanted}, not ${shown(value)}`);
  if (!Number.isFinite(value) || !(value > 0)) throw new RangeError(`${what} must be ${wanted}, not ${value}`);
}

/**
 * Milliseconds, as every timeout and delay of this client takes them: a finite number, 0 too
 * with `zeroIsNone` (no timeout). A value between 0 and 1 is refused: `{ timeout: 0.5 }`, seconds
 * as the Python client takes them, timed out after half a millisecond (a control-room engineer).
 */
function checkMs(what, value, { zeroIsNone = false, nullable = false } = {}) {
  // (null meant none too where 0 does: `requestTimeout: null` worked before this check)
  if ((nullable || zeroIsNone) && value === null) return;
  const wanted = `milliseconds, a finite number >= 1${zeroIsNone ? ' (or 0 or null: none)' : ''}`;
  if (!isNumber(value)) throw new TypeError(`${what} must be ${wanted}, not ${shown(value)}`);
  if (Number.isFinite(value) && (value >= 1 || (zeroIsNone && value === 0))) return;
  const hint = value > 0 && value < 1 ? `: ${value} ms is ${+(value * 1000).toPrecision(12)} µs; for ${value} s write ${+(value * 1000).toPrecision(12)}` : '';
  throw new RangeError(`${what} must be ${wanted}, not ${value}${hint}`);
}

const isPlainObject = (v) => v !== null && typeof v === 'object'
  && (Object.getPrototypeOf(v) === Object.prototype || Object.getPrototypeOf(v) === null);

/**
 * A value inside a CONTROL message (a channel's `meta`): the server refuses the whole message,
 * and the connection, for any CBOR tag (typed arrays, NDArray, Date, a BigInt past 64 bits),
 * for a map key that is not text, or for nesting past 16 levels (the message's map counted).
 */
function checkControlValue(what, value, level) {
  const t = typeof value;
  if (value === null || value === undefined || t === 'boolean' || t === 'number' || t === 'string') return;
  if (t === 'bigint') {
    if (value >= -(2n ** 64n) && value < 2n ** 64n) return;
    throw new RangeError(`${what}: an integer beyond 64 bits cannot be sent in a request`);
  }
  if (value instanceof Uint8Array || value instanceof ArrayBuffer) return; // a byte string
  const items = Array.isArray(value) ? value
    : value instanceof Map ? [...value]
      : isPlainObject(value) ? Object.entries(value) : null;
  if (items === null) {
    throw new TypeError(`${what}: ${shown(value)} cannot be sent in a request (only null, booleans, numbers, `
      + 'strings, Uint8Array, arrays and objects with text keys)');
  }
  if (items.length === 0) return; // an empty array or map is no level
  if (level > CONTROL_MAX_LEVELS) {
    throw new RangeError(`${what}: nested too deep (a request holds at most ${CONTROL_MAX_LEVELS} levels of `
      + 'non-empty arrays and maps, its own map counted)');
  }
  if (Array.isArray(value)) {
    for (const v of value) checkControlValue(what, v, level + 1);
    return;
  }
  for (const [k, v] of items) {
    if (!isText(k)) throw new TypeError(`${what}: map keys must be strings, not ${shown(k)}`);
    checkControlValue(what, v, level + 1);
  }
}

/** `meta` of createChannel: an object (or Map) with text keys, or null. */
function checkMeta(meta) {
  if (meta === null) return;
  if (!isPlainObject(meta) && !(meta instanceof Map)) {
    throw new TypeError(`createChannel: meta must be an object with text keys or null, not ${shown(meta)}`);
  }
  checkControlValue('createChannel: meta', meta, 2); // the request's map is the first level
}

function u64ToNumber(dv, off) {
  const big = dv.getBigUint64(off);
  return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
}

// ------------------------------------------------------------------------------------- client

/**
 * A connection to a trio_stream server. States: 'idle' -> 'connecting' (retrying until the
 * first welcome) -> 'open' (-> 'reconnecting' -> 'open' ...) -> 'closed'. Events (client.on(type, fn)):
 *   'state' (state, previous)   'open' ({server, name, clientId, limits, reconnected})
 *   'reconnecting' ({attempt, delay}: a retry is scheduled)   'goodbye' (reason)   'error' (Error)   'close' (reason)
 * A goodbye with `reconnect: false` (an admin's kick) closes the client instead of reconnecting.
 */
export class Client extends Emitter {
  state = 'idle';
  clientId = null;
  name = null; // as the server knows us (the welcome's name)
  serverName = null;
  limits = {};
  lastError = null;

  #failure = null; // the error that closed the client when it failed (#fail)
  #url;
  #opts;
  #ws = null;
  #everOpened = false;
  #serverRun = null; // the last welcome's `run` (null: none, an older server)
  #restoredRun = null; // the run whose welcome this client last restored everything after
  #welcomes = 0; // connections welcomed: a restore's late end belongs to the one it began on
  #closing = false;
  #attempt = 0;
  #reconnectTimer = null;
  #resumeToken = null; // from the last welcome: presented in the next hello
  #noReturn = null; // the reason of a goodbye that said reconnect: false (an admin's kick)
  #goodbyeHeard = false; // the server said goodbye on this connection (a clean stop)
  // Whether the last connection that was open ended with the server's goodbye (a graceful
  // stop, which drains what it holds for its readers first) rather than a crash or a cut:
  // a reset gap after it says so (gap.afterCleanStop).
  lastEndWasCleanStop = false;
  // The latest reconnection: {at (epoch seconds of its welcome), sameServer}. sameServer says
  // whether the server is the one from before the cut: from the two welcomes' `run` when the
  // server sends it (exact, at once); from an older server, as its resubscriptions tell: true once
  // one of them resumed in its channel's epoch (a channel a restarted server re-created has a
  // new one), false once the server's own `$` channels came back in a new epoch (they are new
  // only with a new server) or the old one had said goodbye; null while neither is known. A
  // reset gap names it (gap.reconnection), so a page says whether a reset is a channel's new
  // life on the same server or a restart's, at the time it reconnected (its first frame may
  // come long after: a channel whose writer is not back yet). Settled as replies come: a gap
  // delivered before it is settled sees it change.
  reconnection = null;
  #handshakeTimer = null;
  #pingTimer = null;
  #messagesIn = 0; // WebSocket messages received: the heartbeat watches it move
  #openWaiters = [];
  #pending = new Map(); // request id -> {resolve, reject, timer}
  #streams = new Map(); // a streaming call's request id -> its RemoteStream (this connection's)
  #cancelledStreams = new Set(); // ids of streams left early lately (see _cancelStream)
  #nextId = 1;
  #pings = new Map(); // ping data -> resolve
  #outQueue = [];
  #flushScheduled = false;
  #subs = new Set();
  #subsById = new Map();
  #pubs = new Set();
  #pubsById = new Map();
  #owned = new Map(); // channels this client created: their options, to create again
  #recreateTimers = new Map(); // channel -> the timer of its next try (Redis failed the last)
  #autoPubs = new Map(); // channel -> Promise<Publisher> for client.publish()
  #provider = new RpcProvider(this, (map) => this.#sendControl(map)); // what this client exposes

  /**
   * @param {string} [url] ws(s)://host:port/ws; default: /ws on the page's host
   * @param {object} [options]
   * @param {string|null} [options.name] client name (unique on the server)
   * @param {string|null} [options.token] access token, if the server requires one
   * @param {boolean} [options.reconnect=true] reconnect after a lost connection
   * @param {number} [options.reconnectDelay=250] first backoff delay, ms (doubles each time)
   * @param {number} [options.maxReconnectDelay=10000] backoff ceiling, ms
   * @param {number} [options.requestTimeout=10000] ms for each request (0: none)
   * @param {number} [options.connectTimeout=10000] ms for the socket and the handshake
   * @param {number} [options.pingInterval] ms between pings; default a third of the idle timeout, at
 *   most 5000. Nothing at all from the server for three of them (at least 2 s): the connection
 *   is dropped as dead (and reconnected, with `reconnect`).
   * @param {boolean} [options.retryFirstConnect=true] keep trying when the very first attempt fails
   * @param {Function} [options.WebSocket] WebSocket constructor (default: the global one)
   * @param {object} [options.payloadLimits] decode limits for payloads, e.g. `{maxItems: 1e7}`
   *   (cbor.js DEFAULT_LIMITS: maxDepth, maxBignumBytes, maxItems); a payload beyond them is
   *   skipped with an 'error' event naming the limit
   */
  constructor(url, options = {}) {
    super();
    this.#url = resolveUrl(url);
    this.#opts = {
      name: null, token: null, reconnect: true, reconnectDelay: 250, maxReconnectDelay: 10000,
      requestTimeout: 10000, connectTimeout: 10000, pingInterval: null, retryFirstConnect: true,
      WebSocket: globalThis.WebSocket, payloadLimits: {}, ...options,
    };
    checkMs('requestTimeout', this.#opts.requestTimeout, { zeroIsNone: true });
    checkMs('connectTimeout', this.#opts.connectTimeout);
    checkMs('reconnectDelay', this.#opts.reconnectDelay);
    checkMs('maxReconnectDelay', this.#opts.maxReconnectDelay);
    checkMs('pingInterval', this.#opts.pingInterval, { nullable: true });
    if (typeof this.#opts.WebSocket !== 'function') {
      throw new TypeError('no WebSocket implementation available: in Node, run node with '
        + '--experimental-websocket (Node 20.10 to 21; built in from Node 22), or pass a WebSocket '
        + "constructor as the WebSocket option: createClient(url, { WebSocket }) (e.g. the 'ws' package's)");
    }
  }

  get url() { return this.#url; }
  get payloadLimits() { return this.#opts.payloadLimits; }
  // How long a publisher's window waits after a reconnect for the readers its channel had
  // (Publisher.#hold): a reader's client on the same backoff is back within the longest wait,
  // and its resubscription finds a re-created channel within RESTORE_RETRY_MAX_MS more.
  get _readersGraceMs() { return this.#opts.reconnect ? this.#opts.maxReconnectDelay + RESTORE_RETRY_MAX_MS : 0; }
  get connected() { return this.state === 'open'; }
  get subscriptions() { return [...this.#subs]; }
  get publishers() { return [...this.#pubs]; }

  /** Start connecting (does nothing once started). Returns the client. */
  start() {
    if (this.state === 'idle') this.#openSocket();
    return this;
  }

  /**
   * Resolves when the connection is open (now, or after the next handshake). Rejects when the
   * client closes instead: with the error that closed it when it failed (AuthError for a
   * wrong token, as the 'error' event and lastError carry it), else ConnectionClosed.
   */
  ready({ timeout = 0 } = {}) {
    try { checkMs('ready: timeout', timeout, { zeroIsNone: true }); } catch (e) { return Promise.reject(e); }
    return this.#whenOpen(timeout, true);
  }

  // `withCause`: a client that failed rejects with the error that made it fail (ready());
  // else with ConnectionClosed, as a request on a closed client does.
  #whenOpen(timeout, withCause) {
    if (this.state === 'open') return Promise.resolve(this);
    if (this.state === 'closed') {
      return Promise.reject(withCause && this.#failure ? this.#failure : new ConnectionClosed(this.#closedReason()));
    }
    this.start();
    const d = deferred();
    d.withCause = withCause;
    this.#openWaiters.push(d);
    if (!timeout) return d.promise;
    const timer = setTimeout(() => {
      this.#openWaiters = this.#openWaiters.filter((w) => w !== d);
      d.reject(new RequestTimeout(`not connected after ${timeout} ms`));
    }, timeout);
    return d.promise.finally(() => clearTimeout(timer));
  }

  // --- requests ---------------------------------------------------------------------------

  /**
   * Send a request (protocol.md section 3) and resolve with its reply's `result`.
   * `onLate(result)` undoes what a reply that comes after the timeout made (a subscription or
   * a publisher nobody holds would live as long as the connection, a `block` one holding its
   * channel's writers back).
   */
  async request(op, fields = {}, { timeout = this.#opts.requestTimeout, onReply, onLate, cancelOnTimeout = false,
    TimeoutError = RequestTimeout, timeoutMessage = `${op}: no reply after ${timeout} ms`, lostNote = null } = {}) {
    checkMs(`${op}: timeout`, timeout, { zeroIsNone: true });
    const deadline = timeout ? Date.now() + timeout : 0;
    if (this.state !== 'open') await this.#whenOpen(timeout, false);
    const id = this.#nextId++;
    const d = deferred();
    const left = deadline ? Math.max(1, deadline - Date.now()) : 0;
    const timer = left ? setTimeout(() => {
      if (onLate) this.#pending.set(id, { resolve() {}, reject() {}, timer: null, onReply: onLate });
      else this.#pending.delete(id);
      // RPC: tell the server we stopped waiting, so the provider can stop working
      if (cancelOnTimeout && this.state === 'open') this.#sendControl({ op: 'cancel', id });
      d.reject(new TimeoutError(timeoutMessage));
    }, left) : null;
    // onReply runs synchronously with the reply, before any frame that follows it in the
    // same WebSocket message (e.g. the first DATA of a new subscription).
    this.#pending.set(id, { resolve: d.resolve, reject: d.reject, timer, onReply, lostNote });
    this.#sendControl({ ...fields, op, id });
    return d.promise;
  }

  /**
   * Create a channel owned by this client. After a reconnect the client creates it again with
   * the same options if it is gone (a server restart), before its publishers and
   * subscriptions come back; a channel with a `lifetime` is not brought back.
   * @param {object} [o]
   * @param {object|null} [o.meta=null] what readers should know to show it, e.g. {units: 'V',
   *   labels: ['x', 'y'], description: '...'}: text keys, at most 4 KiB encoded
   */
  async createChannel(channel, { public: isPublic = true, key = null, lifetime = null, history = 0,
    singleWriter = false, keep = false, meta = null } = {}) {
    checkText('createChannel: channel', channel);
    checkBool('createChannel: public', isPublic);
    checkText('createChannel: key', key, true);
    checkPositive('createChannel: lifetime', lifetime);
    checkInt('createChannel: history', history, { min: 0 });
    checkBool('createChannel: singleWriter', singleWriter);
    checkBool('createChannel: keep', keep);
    checkMeta(meta);
    const options = { public: isPublic, key, lifetime, history, single_writer: singleWriter, keep, meta };
    const result = await this.request('create_channel', { channel, ...options });
    if (lifetime === null) this.#owned.set(channel, options); // a temporary one ends for good
    return result;
  }

  async deleteChannel(channel, { key = null } = {}) {
    checkText('deleteChannel: channel', channel);
    checkText('deleteChannel: key', key, true);
    const result = await this.request('delete_channel', { channel, key });
    this.#owned.delete(channel);
    return result;
  }

  // After a reconnect: the channels this client created, again if they are gone. Sent before
  // the publishers' and subscriptions' requests, so the server has them first.
  #recreate(channel, retryDelay = RESTORE_RETRY_FIRST_MS) {
    clearTimeout(this.#recreateTimers.get(channel));
    this.#recreateTimers.delete(channel);
    const options = this.#owned.get(channel);
    if (!options) return; // deleted by us since
    this.request('create_channel', { channel, ...options }, { timeout: 0 }).catch((e) => {
      if (e instanceof ChannelExists || e instanceof ConnectionClosed) return; // still ours, or lost again
      if (e.type === 'ClusterUnavailable') {
        this.#recreateTimers.set(channel, retryRestore(this, retryDelay, (next) => this.#recreate(channel, next)));
        return;
      }
      this._reportError(e);
    });
  }

  /** Channel records: {name, owner, public, readers, writers, seq, rate_fps, rate_bps, lost, created}. */
  channels() { return this.request('channels'); }

  /** Client records: {id, name, address, transport, connected_at, subscriptions, publishers, methods}. */
  clients() { return this.request('clients'); }

  /** Server load: {connections, channels, frames_in_per_s, ..., uptime_s, memory_bytes, cpu_percent}. */
  stats() { return this.request('stats'); }

  /** Round trip time of a ping, in ms. */
  async ping({ timeout = this.#opts.requestTimeout } = {}) {
    checkMs('ping: timeout', timeout, { zeroIsNone: true });
    if (this.state !== 'open') await this.#whenOpen(timeout, false);
    const data = this.#nextId++;
    const t0 = Date.now();
    const d = deferred();
    const timer = timeout ? setTimeout(() => {
      this.#pings.delete(data);
      d.reject(new RequestTimeout(`no pong after ${timeout} ms`));
    }, timeout) : null;
    this.#pings.set(data, () => { clearTimeout(timer); d.resolve(Date.now() - t0); });
    this.#sendControl({ op: 'ping', data });
    return d.promise;
  }

  // --- RPC (protocol.md section 6) --------------------------------------------------------

  /**
   * A proxy for the methods the client named `provider` exposes. Resolves after asking the
   * server for their descriptions (rejects with RpcError if there is no such client).
   */
  async rpc(provider, { timeout = this.#opts.requestTimeout } = {}) {
    checkText('rpc: provider', provider);
    // Named as the Python client's: "describe: no reply after 500 ms" named no provider.
    const methods = await this.request('describe', { provider }, {
      timeout,
      timeoutMessage: `no answer to rpc('${provider}') within ${timeout} ms: the provider (or `
        + 'its connection) is slow or stuck; give it a longer timeout: { timeout: ms }',
    });
    return new RpcProxy(this, provider, Array.isArray(methods) ? methods : [], timeout);
  }

  /**
   * Call `method` of the client `provider`: `args` positional, `kwargs` keyword arguments.
   * Resolves with the decoded return value; rejects with RemoteError when it raised,
   * RpcTimeout after `timeout` ms (the call is cancelled on the provider).
   */
  async call(provider, method, args = [], kwargs = {}, { timeout = this.#opts.requestTimeout } = {}) {
    checkText('call: provider', provider);
    checkText('call: method', method);
    const payload = encode([args, kwargs]);
    // Named and advised as the Python client's RpcTimeout: "call: no reply after 500 ms" named
    // neither the provider nor the method.
    const result = await this.request('call', { provider, method, args: payload }, {
      timeout, cancelOnTimeout: true, TimeoutError: RpcTimeout,
      // As the Python client says it: the provider may have run the call before the answer was
      // lost, and a caller that repeats it (a valve's move) may do it twice.
      lostNote: `${provider}.${method}() may have run on the provider: its answer had not come `
        + 'when the connection ended; check before calling it again',
      timeoutMessage: `no answer to ${provider}.${method}() within ${timeout} ms: the provider is slow `
        + 'or stuck, or still runs an earlier call to the same object (a thread=True or SyncClient '
        + 'provider runs them one at a time); give a long call a longer timeout: { timeout: ms }',
    });
    if (!(result instanceof Uint8Array)) throw new ProtocolError('call reply without a payload');
    return decode(result, this.#opts.payloadLimits); // (the client's limits, as for values)
  }

  /**
   * Let other clients (Python or JS) call the functions of `obj` by name: its own enumerable
   * properties that are functions, sync or async (an async or plain generator function
   * streams its values), as `"read"`, or `"motor.read"` with `{ name: 'motor' }`. Returns the
   * names exposed. Exposing the same object again exposes its functions as they are now;
   * another object with a function of a name exposed already is refused (InvalidArgument:
   * give it a `name`). After a reconnect the client exposes them all again.
   *
   * A call runs `fn(...args, options)`: the caller's positional arguments (decoded as values
   * are: numpy arrays as TypedArray or NDArray), then `options` = `{signal, caller, method}`
   * right after them (as socket.io's acknowledgement callback comes after the arguments
   * sent). `signal` is an AbortSignal, aborted when the caller stops waiting (it cancelled,
   * or its timeout passed) or this connection is lost; nothing the method returns after that
   * is sent. Keyword arguments are refused (JS has none). What it returns (or resolves to)
   * goes back to the caller; what it throws arrives as the caller's RemoteError with the
   * error's `name`, `message` and `stack`.
   * @param {object} obj
   * @param {object} [o]
   * @param {string|null} [o.name=null] a sub-service: identifiers joined by dots
   */
  expose(obj, { name = null } = {}) {
    return this.#provider.expose(obj, { name });
  }

  /**
   * Withdraw methods that `expose` exposed (the Python client's unexpose): `target` is the
   * exposed object itself (by identity: all its methods, under every name it was exposed
   * under), or a name as callers call it: a method's full name (`'read'`, `'stage.move'`) or
   * the `name` it was exposed under (`'stage'`: the methods exposed under it; those exposed
   * under `'stage.x'` stay), or, as Python's rule, a method's name up to its last dot (a key
   * with dots, `expose({ 'stage.move': f })`, is withdrawn by `'stage'`). Returns the names withdrawn, sorted. The server gets the new
   * list at once (protocol.md 6: the `expose` op replaces the list); calls of them already
   * running (streams too) run on to their end and are answered; a call from now on is
   * refused as one of a method never exposed (the caller's RpcError `... exposes no method
   * ...`); a reconnect exposes again only what is still exposed. Exposing it again later is
   * allowed. Throws InvalidArgument when nothing exposed is `target` (the message lists what
   * is), and, withdrawing nothing, for `''` and for a name that says two things (a method's
   * full name that is also a `name`: stage's `x` exposed under `'stage'`, and another object
   * exposed under `'stage.x'`: pass the object instead); TypeError for a target that is
   * neither an object nor a string.
   * @param {object|string} target
   */
  unexpose(target) {
    return this.#provider.unexpose(target);
  }

  /** The names of the methods this client exposes, sorted. */
  get exposed() { return this.#provider.names; }

  /**
   * Iterate the values of streaming `method` (a generator) of the client `provider`:
   * `for await (const v of client.stream('daq', 'samples', [10]))`. The call goes out on the
   * first `next()`; at most `window` values (1-1024) are on their way at a time, the
   * provider's generator waiting for credit the loop returns as it takes them. Leaving the
   * loop early stops the generator. The loop throws RemoteError when the generator raised
   * (after the values it yielded before), RpcError when the provider is gone, and
   * ConnectionClosed when this client's connection is lost: a stream is never resumed.
   * No timeout: a stream may run as long as its provider yields.
   */
  stream(provider, method, args = [], kwargs = {}, { window = DEFAULT_STREAM_WINDOW } = {}) {
    checkText('stream: provider', provider);
    checkText('stream: method', method);
    checkInt('stream: window', window, { min: 1, max: MAX_STREAM_WINDOW });
    // Checked here, not by the provider: its refusal would come only once the loop starts.
    if (!Array.isArray(args)) throw new TypeError(`stream: args must be an array, not ${shown(args)}`);
    if (!isPlainObject(kwargs) && !(kwargs instanceof Map)) {
      throw new TypeError(`stream: kwargs must be an object, not ${shown(kwargs)}`);
    }
    const fields = { provider, method, args: encode([args, kwargs]), window };
    return new RemoteStream(this, fields, `${provider}.${method}()`);
  }

  // --- publish / subscribe ----------------------------------------------------------------

  /** Open a publisher on `channel`. */
  async publisher(channel, { key = null } = {}) {
    const pub = new Publisher(this, channel, key);
    this.#pubs.add(pub); // at once, so that a connection lost meanwhile resets it too
    try {
      await pub._open();
    } catch (e) {
      this.#pubs.delete(pub);
      throw e;
    }
    return pub;
  }

  /**
   * One-shot send through a publisher the client keeps open per channel.
   * Resolves true once the frame is on its way, false when the channel has no readers.
   */
  async publish(channel, value, { key = null, time } = {}) {
    if (value === undefined) throw new TypeError('publish: a value is needed, not undefined (null for "no value")');
    let p = this.#autoPubs.get(channel);
    if (!p) {
      p = this.publisher(channel, { key });
      this.#autoPubs.set(channel, p);
      p.catch(() => { if (this.#autoPubs.get(channel) === p) this.#autoPubs.delete(channel); });
    }
    const pub = await p;
    if (pub.closed && this.state !== 'closed') {
      // closed meanwhile (e.g. reopening failed after a reconnect): open a fresh one
      if (this.#autoPubs.get(channel) === p) this.#autoPubs.delete(channel);
      return this.publish(channel, value, { key, time });
    }
    return pub.send(value, { time });
  }

  /**
   * Subscribe to `channel`. The returned Subscription is async-iterable, or drives
   * `onMessage(msg)` (awaited when it returns a promise) when one is given.
   * @param {object} [o]
   * @param {string} [o.policy='drop_oldest'] drop_oldest | drop_newest | clear | unbounded | block
   * @param {number|null} [o.size=100] the server-side buffer, in frames
   * @param {number} [o.every=1] keep every Nth frame
   * @param {number|null} [o.maxRate=null] at most this many frames per second (the newest)
   * @param {number|null} [o.window=null] frames in flight (default: the server's choice)
   * @param {number|null} [o.blockTimeout=null] block only: seconds this reader may hold the
   *   channel's writers back before the server ends it (default: the server's block_timeout_s)
   * @param {string|null} [o.key=null] channel key for private channels
   * @param {string|null} [o.sender=null] only the frames written by the client of this name
   *   (filtered on the server; every and maxRate then count that writer's frames only)
   * @param {Array<Array<number|null>>|null} [o.view=null] of each numpy frame only this
   *   strided sub-array, cut by the server: one [start, stop, step] per dimension (null for
   *   none, as in Python slices), e.g. [[null, null, 4], [null, null, 4]]; other frames whole
   * @param {(msg) => any} [o.onMessage]
   * @param {boolean} [o.waitChannel=false] a channel that does not exist yet is waited for
   *   (until it is created, or the client closes) instead of failing with ChannelNotFound
   */
  async subscribe(channel, o = {}) {
    const sub = new Subscription(this, channel, o);
    this.#subs.add(sub);
    try {
      if (o.waitChannel && !String(channel).startsWith('$')) { // the server's own exist from its start
        await this.#whenCreated(channel, () => sub._subscribe(), () => sub.ended);
      } else {
        await sub._subscribe();
      }
    } catch (e) {
      this.#subs.delete(sub);
      throw e;
    }
    return sub;
  }

  /**
   * Every channel whose name matches the glob `pattern`, now and created later, as one
   * PatternSubscription (`for await (const msg of p)`, `msg.channel` says which; `close()`):
   * the Python client's subscribe_matching. `pattern` as Python's fnmatch, case-sensitive:
   * `*` any characters (dots too), `?` one, `[...]` one of a set (`[!...]` not); system
   * channels (`$...`) match only a pattern that starts with `$`; other clients' private
   * channels are not matched. Resolves once every channel that matches now is subscribed;
   * rejects with ConnectionClosed if the client closes meanwhile.
   * @param {string} pattern
   * @param {object} [o] each channel's subscribe options (policy, size, every, maxRate,
   *   window, blockTimeout, key, sender, view, prefetch; not since, waitChannel), and:
   * @param {number} [o.maxChannels=1000] the most channels subscribed at once: more matching
   *   at the start rejects with LimitExceeded (nothing subscribed); one created later past it
   *   is skipped with a warning ('warning' event, else console.warn), once per name, and
   *   read once a member leaves (the skipped ones take the free slots in name order)
   * @param {(msg) => any} [o.onMessage] drive a callback instead of a loop (awaited)
   */
  async subscribeMatching(pattern, o = {}) {
    const matching = new PatternSubscription(this, pattern, o);
    await matching._start();
    return matching;
  }

  /**
   * `attempt()` until `channel` exists (ChannelNotFound: not yet): at once, again as soon as
   * `$channels` announces a channel of that name, and every CHANNEL_POLL_MS (private channels
   * are not announced; nor, on several nodes, are channels created on another node). The trio
   * client's `_when_created`. `givenUp()`: what it waits for was ended (the client closed).
   */
  async #whenCreated(channel, attempt, givenUp) {
    // Listen for creations before the first attempt, so that one in between is not missed.
    const events = await this.subscribe('$channels', { policy: 'unbounded', size: null });
    let next = null; // a next() the poll timer beat is kept for the next wait, not lost
    const pause = (ms) => new Promise((resolve) => {
      const timer = setTimeout(resolve, ms, null);
      timer.unref?.();
    });
    try {
      for (;;) {
        if (givenUp()) throw new ConnectionClosed(`the client closed while subscribe(${JSON.stringify(channel)}) waited for the channel`);
        try {
          return await attempt();
        } catch (e) {
          if (!(e instanceof ChannelNotFound)) throw e;
        }
        const deadline = Date.now() + CHANNEL_POLL_MS;
        for (let left = CHANNEL_POLL_MS; left > 0 && !this.#closing; left = deadline - Date.now()) {
          if (events.ended) { await pause(left); break; }
          next ??= events.next().catch(() => ({ done: true }));
          const event = await Promise.race([next, pause(left)]);
          if (event === null) break; // the poll
          next = null;
          if (!event.done && event.value?.data?.channel === channel) break;
        }
      }
    } finally {
      await events.close();
    }
  }

  // --- lifecycle ----------------------------------------------------------------------------

  /** Close for good: say goodbye, close the socket, end subscriptions. */
  async close(reason = 'client closing') {
    if (this.state === 'closed') return;
    this.#closing = true;
    const ws = this.#ws;
    if (ws && ws.readyState === 1) {
      this.#sendControl({ op: 'goodbye', reason });
      this.#flush();
    }
    this.#ws = null; // its late events are ignored from here on
    let fallback = null;
    const closed = ws ? new Promise((resolve) => {
      ws.addEventListener('close', () => resolve(), { once: true });
      fallback = setTimeout(resolve, 1000); // never hang on a peer that doesn't answer the close
    }).finally(() => clearTimeout(fallback)) : null;
    this.#teardown(new ConnectionClosed(reason));
    this.#finish(reason);
    if (ws) {
      try { ws.close(1000, reason.slice(0, 100)); } catch { /* already closing */ }
      await closed;
    }
  }

  // --- internals used by Subscription and Publisher -----------------------------------------

  _registerSub(sub, id) {
    this.#subsById.set(id, sub);
  }

  // A sub id no subscription holds any more: frames for it are ignored, the server ends it.
  _dropSubId(id) {
    this.#subsById.delete(id);
    if (this.connected) this.request('unsubscribe', { sub: id }).catch(() => {});
  }

  _forgetSub(sub) {
    if (sub.id !== null) this.#subsById.delete(sub.id);
    this.#subs.delete(sub);
  }

  _registerPub(pub, id) {
    this.#pubsById.set(id, pub);
  }

  _forgetPub(pub) {
    if (pub.id !== null) this.#pubsById.delete(pub.id);
    this.#pubs.delete(pub);
  }

  _sendCredit(subId, frames) {
    const { buf, dv } = frame(CREDIT, 8);
    dv.setUint32(5, subId);
    dv.setUint32(9, frames);
    this.#enqueue(buf);
  }

  _checkFrameSize(bodyBytes) {
    const max = this.limits.max_frame_bytes;
    if (max && bodyBytes > max) {
      throw new FrameTooLarge(`frame of ${bodyBytes} bytes exceeds the server's limit of ${max}: `
        + 'send it in parts or raise max_frame_bytes on the server (serve --max-frame-bytes)');
    }
  }

  _sendPublish(pubId, time, payload) {
    const { buf, dv } = frame(PUBLISH, 12, payload);
    dv.setUint32(5, pubId);
    dv.setFloat64(9, time);
    this.#enqueue(buf);
  }

  _reportError(err) {
    this.lastError = err;
    this.emit('error', err);
  }

  // --- internals used by RemoteStream -------------------------------------------------------

  // Send a streaming call (protocol.md 6.1) once connected; resolves with its request id, or
  // null when the stream was closed while waiting (nothing is sent then). Its items go to
  // stream._item; its end to stream._end: the `reply`, `error` or `rpc_error`, or
  // ConnectionClosed when the connection is lost, as for every pending request (#teardown).
  async _startStream(stream, fields) {
    if (this.state !== 'open') await this.#whenOpen(0, false);
    if (stream.ended) return null;
    const id = this.#nextId++;
    const done = (error) => {
      this.#streams.delete(id);
      stream._end(error);
    };
    this.#streams.set(id, stream);
    this.#pending.set(id, {
      timer: null,
      resolve: (result) => done(result === null || result === undefined ? null
        : new ProtocolError(`${stream.what} answered with one result, not a stream of values`)),
      reject: done,
    });
    this.#sendControl({ ...fields, op: 'call', id });
    return id;
  }

  // Only for a stream still live on this connection: an ended one wants no credit, and the
  // id of one from a lost connection means nothing to the server (or another call, later).
  #liveStream(stream, id) {
    return id !== null && this.#streams.get(id) === stream;
  }

  _streamCredit(stream, id, n) {
    if (this.#liveStream(stream, id)) this.#sendControl({ op: 'credit', id, n });
  }

  // The stream was left early: the server aborts the provider's generator. Its end may cross
  // the cancel (an `error`: the provider left meanwhile); the last few such ids are kept so
  // that it is not reported as the connection's error. Values still coming are dropped.
  _cancelStream(stream, id) {
    if (!this.#liveStream(stream, id)) return;
    this.#streams.delete(id);
    this.#pending.delete(id);
    this.#cancelledStreams.add(id);
    if (this.#cancelledStreams.size > MAX_CANCELLED_REMEMBERED) {
      this.#cancelledStreams.delete(this.#cancelledStreams.values().next().value); // the oldest
    }
    this.#sendControl({ op: 'cancel', id });
  }

  // --- socket -----------------------------------------------------------------------------

  #setState(state) {
    if (state === this.state) return;
    const prev = this.state;
    this.state = state;
    this.emit('state', state, prev);
  }

  #closedReason() {
    return this.lastError ? `connection closed: ${this.lastError.message}` : 'connection closed';
  }

  #openSocket() {
    this.#setState(this.#everOpened ? 'reconnecting' : 'connecting');
    let ws;
    try {
      ws = new this.#opts.WebSocket(this.#url);
    } catch (e) {
      // e.g. a malformed URL or a CSP refusal: nothing to retry
      this.lastError = e;
      this.#fail(new ConnectionClosed(`cannot open ${this.#url}: ${e.message}`), true);
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.#ws = ws;
    this.#handshakeTimer = setTimeout(() => {
      if (this.#ws === ws && this.state !== 'open') {
        this.lastError = new RequestTimeout(`no welcome within ${this.#opts.connectTimeout} ms`);
        this.#dropSocket(ws);
      }
    }, this.#opts.connectTimeout);
    ws.onopen = () => {
      if (this.#ws !== ws) return;
      // resume: the server issues a token that lets the next connection take our name (and
      // channels) back at once, even before it noticed this one is gone (docs/protocol.md).
      // Only a name of our own is sent: a server-given one comes back through the token from
      // the server that gave it, and a restarted server may have given it to someone else.
      this.#sendControl({
        op: 'hello', v: PROTOCOL_VERSION, name: this.#opts.name ?? null, token: this.#opts.token,
        resume: !!this.#opts.reconnect, resume_token: this.#resumeToken,
      });
    };
    ws.onmessage = (ev) => {
      if (this.#ws !== ws) return;
      this.#messagesIn++;
      try {
        this.#onMessage(ws, ev.data);
      } catch (e) {
        if (e instanceof ProtocolError) this.#protocolError(ws, e);
        else throw e;
      }
    };
    ws.onerror = () => {
      if (this.#ws !== ws) return;
      if (!this.lastError) this.lastError = new ConnectionClosed(`WebSocket error on ${this.#url}`);
      // A browser's close event follows with the details it is willing to give. Node 20's
      // WebSocket fires none for a refused connection: an attempt that never opened is over
      // now, not at connectTimeout (whichever comes first is handled, the other ignored).
      if (ws.readyState !== WS_OPEN) setTimeout(() => { if (this.#ws === ws) this.#dropSocket(ws); }, 0);
    };
    ws.onclose = (ev) => {
      if (this.#ws !== ws) return;
      this.#onSocketClosed(ev);
    };
  }

  // Close this socket; the close handling (reconnect, failing pending requests) runs at once.
  #dropSocket(ws, code = 4000, reason = '') {
    try { ws.close(code, reason); } catch { /* not open yet or already closing */ }
    if (this.#ws === ws) this.#onSocketClosed({ code, reason });
  }

  #onSocketClosed(ev) {
    const ws = this.#ws;
    this.#ws = null;
    if (ws) ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    clearTimeout(this.#handshakeTimer);
    clearInterval(this.#pingTimer);
    const wasOpen = this.state === 'open';
    if (wasOpen) this.lastEndWasCleanStop = this.#goodbyeHeard;
    this.#goodbyeHeard = false;
    const why = ev?.reason || this.lastError?.message || `code ${ev?.code ?? '?'}`;
    this.#teardown(new ConnectionClosed(`connection lost (${why})`));
    if (this.#closing) return;
    if (this.#noReturn !== null) { // told not to come back: closed, not reconnecting
      this.#finish(`the server closed the connection: ${this.#noReturn} (the server asked this client not to reconnect)`);
      return;
    }
    if (!this.#opts.reconnect || (!this.#everOpened && !this.#opts.retryFirstConnect)) {
      this.#fail(new ConnectionClosed(`could not connect to ${this.#url} (${why})`));
      return;
    }
    // Back off exponentially (with jitter, so a restarted server is not hit by every client
    // at once); a connection that got as far as open starts again from the shortest delay.
    if (wasOpen) this.#attempt = 0;
    // Equal jitter: half the delay plus a random part of the other half, never zero and
    // never in step with the other clients of a restarted server.
    const base = Math.min(this.#opts.maxReconnectDelay, this.#opts.reconnectDelay * 2 ** this.#attempt);
    const delay = Math.round(base / 2 + (base / 2) * Math.random());
    this.#attempt++;
    // 'connecting' until the first welcome, 'reconnecting' after a connection was lost
    this.#setState(this.#everOpened ? 'reconnecting' : 'connecting');
    this.emit('reconnecting', { attempt: this.#attempt, delay });
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      if (!this.#closing) this.#openSocket();
    }, delay);
  }

  // Everything that depended on the socket is void: pending requests, in-flight windows.
  #teardown(err) {
    this.#outQueue = [];
    for (const timer of this.#recreateTimers.values()) clearTimeout(timer);
    this.#recreateTimers.clear();
    for (const { reject, timer, lostNote } of this.#pending.values()) {
      clearTimeout(timer);
      reject(lostNote && err instanceof ConnectionClosed ? new ConnectionClosed(`${err.message}: ${lostNote}`) : err);
    }
    this.#pending.clear(); // (streams among them ended with `err`: never resumed)
    this.#streams.clear();
    this.#cancelledStreams.clear();
    this.#pings.clear();
    this.#provider.connectionLost(err); // its calls are aborted; what they return is dropped
    this.#subsById.clear();
    this.#pubsById.clear();
    for (const sub of this.#subs) sub._disconnected();
    for (const pub of this.#pubs) pub._disconnected();
  }

  #fail(err, closeNow = false) {
    this.lastError = err;
    this.#failure = err;
    this.emit('error', err);
    if (closeNow && this.#ws) this.#dropSocket(this.#ws);
    this.#teardown(err);
    this.#finish(err.message, err);
  }

  #finish(reason, cause = null) {
    this.#closing = true;
    clearTimeout(this.#reconnectTimer);
    clearTimeout(this.#handshakeTimer);
    clearInterval(this.#pingTimer);
    const err = new ConnectionClosed(reason);
    for (const w of this.#openWaiters) w.reject(w.withCause && cause ? cause : err);
    this.#openWaiters = [];
    // Closed first: a subscription's 'end' handler can tell the client's end from its own.
    this.#setState('closed');
    for (const sub of [...this.#subs]) sub._end(reason);
    for (const pub of [...this.#pubs]) pub._closed();
    this.#autoPubs.clear();
    this.emit('close', reason);
  }

  #protocolError(ws, err) {
    this._reportError(err);
    if (ws.readyState === 1) {
      this.#sendControl({ op: 'goodbye', reason: `protocol error: ${err.message}` });
      this.#flush();
    }
    this.#dropSocket(ws, 4002, 'protocol error');
  }

  // --- outgoing ---------------------------------------------------------------------------

  #sendControl(map) {
    const body = encode(map);
    const { buf } = frame(CONTROL, 0, body);
    this.#enqueue(buf);
  }

  #enqueue(buf) {
    this.#outQueue.push(buf);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(() => this.#flush());
    }
  }

  // Everything queued in this tick goes out as few WebSocket messages as possible.
  #flush() {
    this.#flushScheduled = false;
    const ws = this.#ws;
    const queue = this.#outQueue;
    this.#outQueue = [];
    if (!ws || ws.readyState !== 1 || queue.length === 0) return;
    const limit = MAX_BATCH_BYTES;
    let i = 0;
    while (i < queue.length) {
      let j = i, size = 0;
      while (j < queue.length && (j === i || size + queue[j].length <= limit)) size += queue[j++].length;
      let msg;
      if (j - i === 1) msg = queue[i];
      else {
        msg = new Uint8Array(size);
        let off = 0;
        for (let k = i; k < j; k++) { msg.set(queue[k], off); off += queue[k].length; }
      }
      ws.send(msg);
      i = j;
    }
  }

  // --- incoming ---------------------------------------------------------------------------

  #onMessage(ws, data) {
    if (typeof data === 'string') throw new ProtocolError('text WebSocket message');
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data)
      : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
        : null;
    if (!bytes) throw new ProtocolError('unsupported WebSocket message type');
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    // A DATA frame adds its header and the sender's name to a payload of up to the limit.
    const maxFrame = (this.limits.max_frame_bytes ?? DEFAULT_MAX_FRAME) + DATA_HEADER + 255;
    let off = 0;
    while (off < bytes.length) {
      if (bytes.length - off < 4) throw new ProtocolError('truncated frame length');
      const len = dv.getUint32(off);
      off += 4;
      if (len === 0) throw new ProtocolError('empty frame');
      if (len > maxFrame) throw new ProtocolError(`frame of ${len} bytes exceeds the limit of ${maxFrame}`);
      if (len > bytes.length - off) throw new ProtocolError('frame spans WebSocket messages');
      this.#onFrame(bytes.subarray(off, off + len));
      off += len;
      if (this.#ws !== ws) return; // the frame closed the connection
    }
  }

  #onFrame(body) {
    const type = body[0];
    const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
    if (this.state !== 'open' && type !== CONTROL) throw new ProtocolError(`frame type ${type} before the welcome`);
    switch (type) {
      case CONTROL: {
        let msg;
        try {
          msg = decode(body.subarray(1), { maxDepth: CONTROL_MAX_DEPTH });
        } catch (e) {
          if (e instanceof CBORError) throw new ProtocolError(`bad CONTROL body: ${e.message}`);
          throw e;
        }
        if (msg === null || typeof msg !== 'object' || msg instanceof Map || Array.isArray(msg) || typeof msg.op !== 'string') {
          throw new ProtocolError('CONTROL body is not a map with an op');
        }
        this.#onControl(msg);
        return;
      }
      case DATA: {
        if (body.length < DATA_HEADER) throw new ProtocolError('truncated DATA header');
        const n = body[DATA_HEADER - 1];
        if (body.length < DATA_HEADER + n) throw new ProtocolError('truncated DATA sender');
        const sub = this.#subsById.get(dv.getUint32(1));
        if (!sub) return; // unsubscribed while this frame was on its way
        let sender;
        try {
          sender = textDecoder.decode(body.subarray(DATA_HEADER, DATA_HEADER + n));
        } catch {
          throw new ProtocolError('DATA sender is not UTF-8');
        }
        sub._deliver({
          lost: dv.getUint32(5),
          seq: u64ToNumber(dv, 9),
          time: dv.getFloat64(17),
          sender,
          payload: body.subarray(DATA_HEADER + n),
          nbytes: body.length, // the frame after its length prefix: what credit counts
        });
        return;
      }
      case PUB_ACK: {
        if (body.length < 9) throw new ProtocolError('truncated PUB_ACK');
        this.#pubsById.get(dv.getUint32(1))?._ack(dv.getUint32(5));
        return;
      }
      default:
        throw new ProtocolError(`unexpected frame type ${type}`);
    }
  }

  #onControl(msg) {
    if (this.state !== 'open') {
      if (msg.op === 'welcome') return this.#onWelcome(msg);
      if (msg.op === 'error') return this.#onHandshakeError(msg);
      if (msg.op === 'goodbye') return this.#onGoodbye(msg);
      throw new ProtocolError(`"${msg.op}" before the welcome`);
    }
    switch (msg.op) {
      case 'reply':
      case 'error':
      case 'rpc_error': {
        const p = this.#pending.get(msg.id);
        if (!p) {
          if (this.#cancelledStreams.delete(msg.id)) return; // crossed the cancel of a stream
          if (msg.op === 'error') this._reportError(remoteError(msg)); // a connection-level error
          return;
        }
        this.#pending.delete(msg.id);
        clearTimeout(p.timer);
        if (msg.op !== 'reply') {
          p.reject(remoteError(msg));
          return;
        }
        try {
          p.onReply?.(msg.result);
          p.resolve(msg.result);
        } catch (e) {
          p.reject(e);
        }
        return;
      }
      case 'item': // a value of a streaming call; none left for a stream left early
        this.#streams.get(msg.id)?._item(msg.value);
        return;
      // Calls of what this client exposes (protocol.md 6): every introspect and invoke is
      // answered, also when it exposes nothing.
      case 'introspect':
        return this.#provider.onIntrospect(msg);
      case 'invoke':
        return this.#provider.onInvoke(msg);
      case 'abort':
        return this.#provider.onAbort(msg);
      case 'demand':
        return this.#provider.onDemand(msg);
      case 'readers':
        this.#pubsById.get(msg.pub)?._setReaders(msg.readers);
        return;
      case 'lost': // frames dropped that no DATA frame will report (docs/protocol.md 5)
        this.#subsById.get(msg.sub)?._lostNotice(msg.lost, msg.seq);
        return;
      case 'sub_end': {
        const sub = this.#subsById.get(msg.sub);
        if (sub) {
          this.#subsById.delete(msg.sub);
          const reason = typeof msg.reason === 'string' ? inJsTerms(msg.reason) : 'ended by the server';
          // Ended by the server for a fault (LimitExceeded: block_timeout, max_buffered_bytes):
          // the loop throws it, as the Python client raises it; a channel's end just ends it.
          const error = typeof msg.error === 'string' && msg.error
            ? remoteError({ op: 'error', type: msg.error, message: reason })
            : null;
          // A reset end (`again`: a cluster's Redis restarted empty, the channel created anew
          // on another node): the channel lives on at a new epoch, and the subscription reads
          // on there, as after a reconnect (protocol.md 8, "Reset ends").
          if (msg.again === true && !error && sub._resetByServer(reason)) return;
          sub._end(reason, error);
        }
        return;
      }
      case 'pong': {
        const done = this.#pings.get(msg.data);
        if (done) { this.#pings.delete(msg.data); done(); }
        return;
      }
      case 'goodbye':
        return this.#onGoodbye(msg);
      case 'channel_deleted': // another client deleted a channel of ours: not created again
        if (typeof msg.channel === 'string') this.#forgetOwned(msg.channel);
        return;
      default:
        return; // newer servers may add notifications: ignore what we don't know
    }
  }

  #forgetOwned(channel) {
    this.#owned.delete(channel);
    clearTimeout(this.#recreateTimers.get(channel));
    this.#recreateTimers.delete(channel);
  }

  #onWelcome(msg) {
    if (msg.v !== PROTOCOL_VERSION) throw new ProtocolError(`server speaks protocol version ${msg.v}`);
    clearTimeout(this.#handshakeTimer);
    const reconnected = this.#everOpened;
    this.#everOpened = true;
    // The welcome's `run` is new at each start of a server (each node's own): two known runs
    // settle sameServer exactly; without them (an older server) the resubscriptions tell.
    // Compared with the run this client last restored its state on (the first connection's,
    // or one whose resubscriptions were all answered): a connection welcomed by a restarted
    // server and cut before its resubscriptions were answered is not "the server before".
    const run = typeof msg.run === 'string' && msg.run ? msg.run : null;
    if (reconnected) {
      const byRun = run !== null && this.#restoredRun !== null;
      this.reconnection = {
        at: Date.now() / 1000,
        sameServer: byRun ? run === this.#restoredRun : this.lastEndWasCleanStop ? false : null,
      };
      if (byRun) settledByRun.add(this.reconnection);
    } else {
      this.#restoredRun = run;
    }
    this.#serverRun = run;
    this.clientId = msg.client_id ?? null;
    this.name = msg.name ?? null;
    this.serverName = msg.server ?? null;
    this.limits = msg.limits && typeof msg.limits === 'object' ? msg.limits : {};
    this.#resumeToken = typeof msg.resume_token === 'string' ? msg.resume_token : null;
    // After a resume: channels of ours that another client deleted while we were away are
    // not created again by the restore.
    if (msg.channels_deleted && typeof msg.channels_deleted === 'object') {
      for (const channel of Object.keys(msg.channels_deleted)) this.#forgetOwned(channel);
    }
    this.lastError = null;
    this.#setState('open');
    this.#startPings();
    for (const w of this.#openWaiters) w.resolve(this);
    this.#openWaiters = [];
    // Bring back what was active before the connection was lost (those whose request is
    // in flight already, e.g. made while reconnecting or from an 'open' listener, go their way).
    for (const channel of this.#owned.keys()) this.#recreate(channel);
    this.#provider.reexpose(); // the server forgot what the lost connection exposed
    for (const pub of this.#pubs) pub._reopen();
    const resubscribed = [...this.#subs].map((sub) => sub._resubscribe());
    if (reconnected) this.#sayRestored(resubscribed);
    this.emit('open', { server: this.serverName, name: this.name, clientId: this.clientId, limits: this.limits, reconnected });
  }

  // Once every resubscription is answered at its first try, `restored` (protocol.md 8): the
  // server ends the subscriptions it kept for this client that none took back (one given up on
  // just before the cut would wait out the grace period, a `block` one holding its writers).
  // Not after a retry, whose kept subscription it may still take back. An older server does
  // not know the op: its error does not matter.
  #sayRestored(resubscribed) {
    const welcome = ++this.#welcomes;
    const run = this.#serverRun;
    Promise.all(resubscribed).then((answered) => {
      if (welcome !== this.#welcomes || this.state !== 'open') return;
      this.#restoredRun = run; // every resubscription answered on this connection
      if (!answered.every(Boolean)) return;
      this.request('restored', {}, { timeout: 0 }).catch(() => {});
    });
  }

  #onHandshakeError(msg) {
    const err = remoteError(msg);
    this.lastError = err;
    // A wrong token or protocol version won't get better by retrying; "name in use" might
    // (the server may not have noticed our previous connection is gone yet).
    const hopeless = err instanceof AuthError || err instanceof InvalidArgument
      || (!this.#everOpened && (err instanceof ProtocolError || !this.#opts.retryFirstConnect));
    if (hopeless) {
      this.#closing = true;
      this.#fail(err, true);
      return;
    }
    this.emit('error', err);
    this.#dropSocket(this.#ws, 4001, 'handshake refused');
  }

  #onGoodbye(msg) {
    const reason = typeof msg.reason === 'string' ? msg.reason : 'server said goodbye';
    this.lastError = new ConnectionClosed(reason);
    // reconnect: false (an admin's kick) is final; absent (a shutdown) lets us come back.
    if (msg.reconnect === false) this.#noReturn = reason;
    // A graceful stop's goodbye (it drains what it holds first); an idle or protocol-error
    // goodbye does not drain (docs/protocol.md: "the server is shutting down").
    this.#goodbyeHeard = reason === SHUTDOWN_REASON;
    this.emit('goodbye', reason);
  }

  // Liveness, as the Python client (docs/protocol.md section 2): a ping every `every` ms, and
  // the server is gone once nothing at all has come from it for SILENT_PINGS of them (at
  // least MIN_SILENCE_MS). Silence is counted per tick, each adding at most one interval: a
  // tab whose timers the browser throttled, or a page busy for seconds, wakes up late, and
  // that is not the server's silence.
  #startPings() {
    clearInterval(this.#pingTimer);
    const idle = Number(this.limits.idle_timeout_s);
    const interval = this.#opts.pingInterval ?? (idle > 0 ? Math.min(HEARTBEAT_MS, (idle * 1000) / 3) : HEARTBEAT_MS);
    const every = Math.max(200, interval);
    const deadAfter = Math.max(SILENT_PINGS * every, MIN_SILENCE_MS);
    let heard = this.#messagesIn;
    let last = Date.now();
    let silent = 0;
    this.#pingTimer = setInterval(() => {
      const ws = this.#ws;
      if (!ws || this.state !== 'open') return;
      const now = Date.now();
      if (this.#messagesIn !== heard) {
        heard = this.#messagesIn;
        silent = 0;
      } else {
        silent += Math.min(now - last, every);
      }
      last = now;
      if (silent >= deadAfter) {
        this.lastError = new ConnectionClosed(`the server was silent for ${(silent / 1000).toFixed(1)} s `
          + `(nothing, not even an answer to a ping; pings every ${every} ms)`);
        this.#dropSocket(ws, 4003, 'server silent');
        return;
      }
      this.#sendControl({ op: 'ping', data: null });
    }, every);
  }
}

// ------------------------------------------------------------------------------------- subscription

/**
 * A subscription: `for await (const msg of sub)`, or `onMessage`. Messages are
 * `{data, seq, channel, sender, time, lost, gap}` (time: seconds since the epoch, lost: frames
 * this subscription lost to overflow since its previous message; gap: null, or `{kind, lost,
 * recovered}` on the first message after a reconnection, as ts.Gap: kind 'resumed' (lost exact)
 * or 'reset' (lost null)). After a reconnect the subscription resumes from its last frame
 * (`position`: {epoch, seq}; `since` option to start from a saved one). Leaving a `for await`
 * loop early (break/return/throw) unsubscribes. Events: 'message' (msg), 'gap' (gap, msg),
 * 'end' (reason), 'error' (Error), 'waiting' (why, error: its channel is missing after a reconnect;
 * it asks again until the channel is back), 'restored' (after 'waiting': the channel is back and
 * the subscription made again; its frames follow when its writers send); the client also emits
 * 'gap' ({channel, ...gap}). A gap after a reconnection has `reconnection` ({at, sameServer}:
 * Client.reconnection).
 */
function checkTuning(o) {
  if (!POLICIES.includes(o.policy)) throw new TypeError(`unknown policy ${JSON.stringify(o.policy)}`);
  checkInt('every', o.every, { min: 1 });
  checkInt('size', o.size, { min: 1, nullable: true });
  checkPositive('maxRate', o.maxRate);
  checkPositive('blockTimeout', o.blockTimeout);
}

/**
 * What `sub.retune(o)` makes of the tuning `sub` has (`{policy, size, every, maxRate,
 * blockTimeout}`): options left out stay; `maxRate: null` removes the limit. Checked.
 */
/**
 * Refuse what `retune(o)` cannot take: not an object of options, or options it does not change
 * (a typo, or `window`/`view`, which are fixed when a channel is subscribed), which were
 * ignored without a word (Python's retune takes keywords: an unknown one is a TypeError).
 */
function checkRetuneKeys(o) {
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new TypeError(`retune takes an object of options, not ${shown(o)}`);
  const unknown = Object.keys(o).filter((key) => !RETUNE_OPTIONS.includes(key));
  if (unknown.length) {
    throw new TypeError(`retune takes ${RETUNE_OPTIONS.filter((key) => !key.includes('_')).join(', ')}, not `
      + `${unknown.map((key) => pyRepr(key)).join(', ')} (the others are fixed when a channel is subscribed)`);
  }
}

function retuned(sub, o) {
  const next = {
    policy: o.policy ?? sub.policy,
    size: o.size === undefined ? sub.size : o.size,
    every: o.every ?? sub.every,
    maxRate: o.maxRate === undefined ? (o.max_rate === undefined ? sub.maxRate : o.max_rate) : o.maxRate,
    blockTimeout: o.blockTimeout ?? o.block_timeout ?? sub.blockTimeout,
  };
  checkTuning(next);
  return next;
}

// A subscription or publisher whose channel is missing after a reconnect asks again this long
// after (ms), doubling up to the maximum (the trio client's RETRY_INITIAL_S and RETRY_MAX_S).
const RESTORE_RETRY_FIRST_MS = 50;
// A publisher closed while its client reconnects waits this long (ms) for the connection, so
// that what send() took goes out first (as the trio client's CLOSE_DELIVER_S).
const CLOSE_DELIVER_MS = 10000;
// A publisher's close waits this long for the server's answer (the Python client's
// LEAVE_TIMEOUT_S): a stalled connection held it for the request timeout.
const LEAVE_MS = 1000;
const RESTORE_RETRY_MAX_MS = 1000;
// A subscription the server ended with `again` (its channel lives on at a new epoch) waits at
// most this long (ms) for the channel's new life, then ends with the server's reason (the
// Python client's RESET_BACK_S).
const RESET_BACK_MS = 30000;
// subscribe({waitChannel: true}) asks again this often (ms) without news from $channels.
const CHANNEL_POLL_MS = 1000;

/** A restore that failed for now: the channel is not back yet, or Redis failed the request. */
function missingForNow(err) {
  return err instanceof ChannelNotFound || err.type === 'ClusterUnavailable';
}

/** Call `again(nextDelay)` after `delay` ms if the client is still connected; the timer. */
function retryRestore(client, delay, again) {
  const timer = setTimeout(() => {
    if (client.connected) again(Math.min(delay * 2, RESTORE_RETRY_MAX_MS));
  }, delay);
  timer.unref?.(); // Node: a retry alone does not keep the process alive
  return timer;
}

/** A view as the server takes it: [[start, stop, step], ...], integers or null, step not 0. */
function checkView(view) {
  const bound = (x) => x === null || Number.isInteger(x);
  if (!Array.isArray(view) || !view.every((s) => Array.isArray(s) && s.length === 3 && s.every(bound))) {
    throw new TypeError('view is a list of [start, stop, step] (null for none), e.g. [[null, null, 4]]');
  }
  if (view.some((s) => s[2] === 0)) throw new RangeError('a view slice step cannot be zero');
}

export class Subscription extends Emitter {
  id = null; // the server's sub id on the current connection
  window = 0;
  windowBytes = 8 * 2 ** 20; // the server's bytes-in-flight bound (the subscribe reply says)
  lost = 0; // running total
  received = 0;
  ended = false;
  endReason = null;
  error = null;
  // {at, reason} while it waits for its channel's new life after a reset end (a `sub_end`
  // marked `again`: see _resetByServer); null otherwise.
  resetEnd = null;
  // A pattern subscription's member: what its next frame or end calls (PatternSubscription),
  // and whether a reset end ends it (a newer member of its name reads the new life).
  _onReady = null;
  _endAtReset = false;

  #client;
  #queue = []; // [{msg, gen}]
  #waiters = [];
  #gen = 0; // bumped on every (re)subscribe: credit for older messages is void (unless counted: #countHeld)
  #unacked = 0;
  #unackedBytes = 0;
  #onMessage;
  #pumping = false;
  #requesting = false; // a subscribe request is in flight
  #retryTimer = null; // the next resubscribe to a channel missing after a reconnect
  #epoch = null; // the channel's epoch (subscribe reply)
  #lastSeq = 0; // of the last frame received: a resume continues after it
  #resumeFrom = null; // {epoch, seq} to send with the next subscribe
  #resumeSub = null; // its id on the connection that broke, sent with the next subscribe
  #pendingGap = null; // {kind, recovered} for the next message
  #carried = 0; // lost frames a `lost` notice reported: added to the next message's lost
  #waitingSaid = false; // 'waiting' was emitted: 'restored' follows once the channel is back
  #resetUntil = 0; // while resetEnd: Date.now() after which it ends with the server's reason
  #unthrown = null; // the error that ended it, for the next() after its last message
  // Until its first subscribe is answered, client.subscribe() makes (and retries) it: a
  // welcome's resubscription must not make another (waitChannel waits before it asks).
  #firstPending = true;
  #respecs = 0; // _respec calls: a subscribe asked before the last one asked the old options

  constructor(client, channel, o) {
    super();
    this.#client = client;
    this.channel = channel;
    this.policy = o.policy ?? 'drop_oldest';
    this.size = o.size === undefined ? 100 : o.size;
    this.every = o.every ?? 1;
    this.maxRate = o.maxRate ?? o.max_rate ?? null;
    this.requestedWindow = o.window ?? null;
    this.blockTimeout = o.blockTimeout ?? o.block_timeout ?? null;
    this.key = o.key ?? null;
    this.sender = o.sender ?? null;
    this.view = o.view ?? null;
    this.#onMessage = o.onMessage ?? null;
    // false: credit goes back when the page asks for a message and none is here (next(), the
    // end of an onMessage run), so that what comes is the newest the server holds then, not
    // what came while the page worked (the Python client's prefetch=False).
    this.prefetch = o.prefetch ?? true;
    if (o.since) {
      const seq = Number(o.since.seq);
      checkInt('since.seq', seq, { min: 0 });
      this.#resumeFrom = { epoch: String(o.since.epoch), seq };
    }
    checkText('subscribe: channel', channel);
    checkText('key', this.key, true);
    checkInt('window', this.requestedWindow, { min: 1, nullable: true });
    checkBool('prefetch', this.prefetch);
    checkTuning(this);
    if (this.sender !== null && (typeof this.sender !== 'string' || !this.sender)) throw new TypeError('sender must be a client name');
    if (this.view !== null) checkView(this.view);
  }

  /**
   * Change this subscription on the server, between two frames: no gap, no duplicate.
   * Options left out stay as they are; `maxRate: null` removes the rate limit. A smaller size
   * keeps the newest frames (drop_newest: the oldest) and counts the others in `lost`.
   * @param {object} o policy, size, every, maxRate, blockTimeout (as in subscribe)
   */
  async retune(o = {}) {
    checkRetuneKeys(o);
    if (this.ended) throw new InvalidArgument(`this subscription has ended (${this.endReason})`);
    if (this.id === null) {
      throw new ConnectionClosed(this.resetEnd
        ? 'its channel is being registered again (a reset end): retune once resubscribed'
        : 'not connected: retune once resubscribed');
    }
    const next = retuned(this, o);
    const fields = { sub: this.id };
    if (o.policy !== undefined) fields.policy = next.policy;
    if (o.size !== undefined && o.size !== null) fields.size = next.size;
    if (o.every !== undefined) fields.every = next.every;
    if (o.maxRate !== undefined || o.max_rate !== undefined) fields.max_rate = next.maxRate ?? 0; // 0: no limit
    if (o.blockTimeout != null || o.block_timeout != null) fields.block_timeout = next.blockTimeout;
    const gen = this.#gen;
    await this.#client.request('retune', fields, {
      onReply: (reply) => {
        // In order with the frames around it: credit goes back by the new window from here.
        if (gen !== this.#gen || !reply) return;
        if (Number.isInteger(reply.window) && reply.window > 0) this.window = reply.window;
        if (Number.isInteger(reply.window_bytes) && reply.window_bytes > 0) this.windowBytes = reply.window_bytes;
        if (this.#creditDue()) this.#returnCredit();
      },
    });
    // A resubscription after a reconnect asks for the retuned subscription.
    Object.assign(this, next);
  }

  /**
   * For a PatternSubscription's retune of a member waiting to resume (no id on this
   * connection: after a reconnect, or a reset end): `o` (retune's options, checked) is what
   * its next resubscribe asks for, and the server sets them as it takes a kept subscription
   * back (the Python client's `_respec`). A resubscribe on its way asked with the old ones:
   * retuned once it is answered (_subscribe).
   */
  _respec(o) {
    Object.assign(this, retuned(this, o));
    this.#respecs++;
  }

  // `restore`: after a reconnect; such a request waits for its answer however long it takes (as
  // the trio client's do: a slow cluster must not end it; a dead connection fails it anyway).
  async _subscribe({ restore = false } = {}) {
    const respecs = this.#respecs;
    this.#requesting = true;
    try {
      await this.#client.request('subscribe', {
        channel: this.channel, key: this.key, policy: this.policy, size: this.size,
        every: this.every, max_rate: this.maxRate, window: this.requestedWindow,
        block_timeout: this.blockTimeout,
        ...(this.sender !== null && { sender: this.sender }),
        ...(this.view !== null && { view: this.view }),
        since_epoch: this.#resumeFrom?.epoch ?? null, since_seq: this.#resumeFrom?.seq ?? null,
        // `held`: the frames got and not credited (taken since the last credit, or queued):
        // continued, the subscription counts them in its window (#countHeld). Not counted,
        // they came on top of a whole window, and this client held both.
        ...(this.#resumeFrom !== null && this.#resumeSub !== null && {
          resume_sub: this.#resumeSub, held: this.#unacked + this.#queuedOf(this.#gen),
        }),
      }, {
        onReply: (reply) => this.#attach(reply, restore),
        onLate: (reply) => {
          if (Number.isInteger(reply?.sub)) this.#client.request('unsubscribe', { sub: reply.sub }).catch(() => {});
        },
        ...(restore && { timeout: 0 }),
      });
    } finally {
      this.#requesting = false;
    }
    if (respecs !== this.#respecs && this.id !== null && !this.ended && this.#client.state === 'open') {
      // Respecified (_respec) while this request was on its way with the options before: the
      // server has those; retuned to these (not awaited: a restore waits for no retune). Lost
      // again meanwhile, the next resubscribe asks for these anyway.
      this.retune({
        policy: this.policy, size: this.size, every: this.every, maxRate: this.maxRate, blockTimeout: this.blockTimeout,
      }).catch(() => {});
    }
  }

  #attach(reply, restore = false) {
    if (!reply || !Number.isInteger(reply.sub)) throw new ProtocolError('subscribe reply without a sub id');
    if (this.ended) {
      // closed while the request was in flight: undo it on the server
      this.#client.request('unsubscribe', { sub: reply.sub }).catch(() => {});
      return;
    }
    if (this.id !== null && this.id !== reply.sub) {
      // Subscribed twice on this connection (never meant to happen): keep the newer one, close
      // the older on the server, or it would live on there, taking frames and credit.
      this.#client._dropSubId(this.id);
    }
    this.#firstPending = false;
    this.id = reply.sub;
    this.window = Number.isInteger(reply.window) && reply.window > 0 ? reply.window : 1;
    if (Number.isInteger(reply.window_bytes) && reply.window_bytes > 0) this.windowBytes = reply.window_bytes;
    const held = Number.isInteger(reply.resume?.held) ? reply.resume.held : null;
    this.#gen++;
    if (held === null) {
      // A new subscription (or an older server's): the frames still queued return it no
      // credit (their gen is the old one), nor does what was taken before.
      this.#unacked = 0;
      this.#unackedBytes = 0;
    } else {
      this.#countHeld(held);
    }
    if (typeof reply.epoch === 'string') this.#epoch = reply.epoch;
    // After a reset end, this resubscription reads the channel's new life: its gap says so
    // (`resetEnd`), and it belongs to no reconnection (one made while it waited tells of its
    // server nothing: the reset is the channel's).
    const resetEnd = this.resetEnd ?? this.#pendingGap?.resetEnd ?? null;
    this.resetEnd = null;
    if (reply.resume && typeof reply.resume === 'object') {
      const kind = this.#pendingGap?.kind === 'reset' ? 'reset' : String(reply.resume.kind);
      const recovered = (this.#pendingGap?.recovered ?? 0) + (Number(reply.resume.recovered) || 0);
      // A resubscription after a reconnect belongs to it, and tells of its server (see
      // Client.reconnection); a subscribe `since` a saved position does not.
      const reconnection = restore && !resetEnd ? this.#client.reconnection : this.#pendingGap?.reconnection ?? null;
      if (restore && !resetEnd && reconnection && !settledByRun.has(reconnection)) {
        const system = this.channel.startsWith('$');
        if (String(reply.resume.kind) === 'resumed' && (system || reconnection.sameServer === null)) reconnection.sameServer = true;
        else if (system && String(reply.resume.kind) !== 'resumed') reconnection.sameServer = false;
      }
      this.#pendingGap = { kind, recovered, reconnection, resetEnd };
    }
    this.#client._registerSub(this, this.id);
  }

  /** Where this reader stands: {epoch, seq} of the last frame received. */
  get position() {
    return { epoch: this.#epoch, seq: this.#lastSeq };
  }

  /**
   * The server ended this subscription with `again` (protocol.md 8, "Reset ends"): its
   * channel lives on at a new epoch (a cluster's Redis restarted empty, the channel created
   * anew on another node). Unless it has ended, it subscribes again since its position, as
   * after a reconnect but naming no subscription of the old life (no resume_sub), retried
   * while the channel is missing (its node registers it again), at most RESET_BACK_MS, after
   * which it ends with the server's `reason`; its first message of the new life has a reset
   * gap (with `resetEnd`). Messages here stay readable. True: it waits.
   */
  _resetByServer(reason) {
    // (no epoch: no position to go on from; _endAtReset: a pattern subscription reads the
    // channel's new life through a newer member already, PatternSubscription.#ensure)
    if (this.ended || this.#epoch === null || this._endAtReset) return false;
    this.id = null;
    this.#resumeSub = null; // over: named, it would be answered with this end again
    this.#resumeFrom = { epoch: this.#epoch, seq: this.#lastSeq };
    this.resetEnd = { at: Date.now() / 1000, reason };
    this.#resetUntil = Date.now() + RESET_BACK_MS;
    clearTimeout(this.#retryTimer);
    // Not at once: a `sub_end` read with the subscribe reply before it (one WebSocket message)
    // comes while that request is still settling (#requesting), and _resubscribe would pass.
    this.#retryTimer = retryRestore(this.#client, 0, () => this._resubscribe());
    return true;
  }

  /** Subscribe again after a reconnect (or a reset end: _resetByServer); resolves true if
   * answered (or nothing to do), false if it failed or is retried. */
  _resubscribe(retryDelay = RESTORE_RETRY_FIRST_MS) {
    clearTimeout(this.#retryTimer); // one retry loop at most, whoever calls
    if (this.ended || this.#requesting || this.id !== null) return Promise.resolve(true);
    // Never subscribed yet: client.subscribe() is making its first request (or waiting for
    // its channel, waitChannel) and makes it on the new connection itself.
    if (this.#firstPending) return Promise.resolve(true);
    if (this.resetEnd && Date.now() >= this.#resetUntil) {
      // Its channel did not come back in time (its node died with Redis, say): it ends as
      // the server said, the messages here still readable.
      this._end(this.resetEnd.reason);
      return Promise.resolve(true);
    }
    return this._subscribe({ restore: true }).then(() => {
      // Its channel is back: a page that said it was waiting says so (no frame may come for
      // long, its writer not back yet: "waiting" stood for 84 s beside a channel listed again).
      if (this.#waitingSaid) this.emit('restored');
      this.#waitingSaid = false;
      return true;
    }, (e) => {
      if (e instanceof ConnectionClosed) return false; // lost again: the next welcome retries
      if (missingForNow(e)) {
        // Its owner has not re-created the channel yet (the server restarted), or the
        // cluster's Redis failed the request: asked again, further apart each time; the
        // subscription resumes from where it stood once the channel is back.
        this.#retryTimer = retryRestore(this.#client, retryDelay, (next) => this._resubscribe(next));
        if (retryDelay === RESTORE_RETRY_FIRST_MS) { // once per reconnect
          this.#waitingSaid = true;
          this.emit('waiting', e.message, e);
        }
        return false;
      }
      this.error = e;
      this.#client._reportError(e);
      this._end(`resubscribe failed: ${e.message}`);
      return true; // answered: ended for good
    });
  }

  _disconnected() {
    // The server may keep this subscription for the resume (its grace period): the next
    // subscribe names it, and continues it under a new id with nothing lost.
    if (this.id !== null) this.#resumeSub = this.id;
    this.id = null;
    clearTimeout(this.#retryTimer); // the next welcome resubscribes
    // The next subscribe resumes after the last frame received (queued ones included).
    if (this.#epoch !== null) this.#resumeFrom = { epoch: this.#epoch, seq: this.#lastSeq };
  }

  // A `lost` notice: counted now, and in the next message's `lost`, which says what was
  // missed since the message before it; a resume continues after the notice's seq (what it
  // counted must not be replayed, or counted again).
  _lostNotice(count, seq) {
    if (!(count > 0)) return;
    this.lost += count;
    this.#carried += count;
    if (typeof seq === 'number' && seq > this.#lastSeq) this.#lastSeq = seq;
  }

  _deliver({ lost: wireLost, seq, time, sender, payload, nbytes = payload.byteLength }) {
    this.#lastSeq = seq;
    this.lost += wireLost;
    const lost = wireLost + this.#carried;
    this.#carried = 0;
    let data;
    try {
      data = decode(payload, this.#client.payloadLimits);
    } catch (e) {
      // A writer's bad payload must not cost us the connection: skip it, but say so. It is a
      // frame the reader misses: counted lost, on the next message with the drops before it
      // (they were in no message's `lost`, so a page adding those up missed them).
      this.lost += 1;
      this.#carried = lost + 1;
      const err = new ProtocolError(`${this.channel} seq ${seq}: undecodable payload: ${e.message}`);
      this.emit('error', err);
      this.#client._reportError(err);
      this.#consumed(this.#gen, nbytes);
      return;
    }
    this.received++;
    let gap = null;
    if (this.#pendingGap) {
      const { kind, recovered, reconnection, resetEnd } = this.#pendingGap;
      gap = { kind, lost: kind === 'resumed' ? lost : null, recovered };
      if (reconnection) gap.reconnection = reconnection;
      if (resetEnd) gap.resetEnd = resetEnd; // the channel's new life after a reset end
      else if (kind === 'reset' && this.#client.lastEndWasCleanStop) gap.afterCleanStop = true;
      this.#pendingGap = null;
    }
    const msg = { data, seq, channel: this.channel, sender, time, lost, gap };
    if (gap) {
      this.emit('gap', gap, msg);
      this.#client.emit('gap', { channel: this.channel, ...gap });
    }
    this.emit('message', msg);
    const waiter = this.#waiters.shift();
    if (waiter) {
      this.#consumed(this.#gen, nbytes);
      waiter.resolve({ value: msg, done: false });
      return;
    }
    this.#queue.push({ msg, gen: this.#gen, nbytes });
    if (this.#onMessage) this.#pump();
    this._onReady?.();
  }

  // Return credit once a quarter of the window has been consumed, in frames or in bytes,
  // so the server can keep the pipe full without ever having more than `window` frames in
  // flight for us. The server also stops at `windowBytes` in flight: with large frames the
  // byte bound comes first, and counting frames alone would leave both sides waiting. The
  // bytes are each DATA frame's after its length prefix, as the server judges them: it
  // sends past `windowBytes` only while no credit is due (docs/protocol.md section 5).
  #consumed(gen, nbytes) {
    if (gen !== this.#gen || this.ended) return;
    this.#unacked++;
    this.#unackedBytes += nbytes;
    if (this.id !== null && this.#creditDue()) this.#returnCredit();
  }

  #queuedOf(gen) {
    return this.#queue.reduce((n, entry) => n + (entry.gen === gen), 0);
  }

  // Continued with `held` of the frames this said it holds (the newest) counted in its window
  // (protocol.md section 8): credit goes back for those as they are taken (some may have been
  // since the resubscription went out), not for the older ones. `#gen` is the new one here.
  #countHeld(held) {
    const old = this.#gen - 1;
    let uncounted = this.#unacked + this.#queuedOf(old) - held;
    const taken = Math.min(Math.max(uncounted, 0), this.#unacked);
    this.#unacked -= taken;
    if (this.#unacked === 0) this.#unackedBytes = 0;
    uncounted -= taken;
    for (const entry of this.#queue) {
      if (entry.gen !== old) continue;
      if (uncounted > 0) uncounted--; // the oldest: not counted, no credit
      else entry.gen = this.#gen;
    }
    // Taken while this waited: with nothing queued, no later take would return their credit,
    // and the server, counting them in flight, might have none left to send with.
    if (this.#unacked > 0 && (this.#creditDue() || this.#queue.length === 0)) this.#returnCredit();
  }

  // A quarter of the window consumed, in frames or in bytes (also after a retune's new one).
  #creditDue() {
    return this.prefetch && (
      this.#unacked >= Math.max(1, Math.ceil(this.window / 4)) ||
      this.#unackedBytes >= this.windowBytes / 4
    );
  }

  #returnCredit() {
    // Waiting to resume: kept for the next connection, which counts them (`held`).
    if (this.id === null) return;
    if (this.#unacked > 0 && !this.ended) {
      this.#client._sendCredit(this.id, this.#unacked);
    }
    this.#unacked = 0;
    this.#unackedBytes = 0;
  }

  async #pump() {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (this.#queue.length && !this.ended) {
        const { msg, gen, nbytes } = this.#queue.shift();
        try {
          await this.#onMessage(msg);
        } catch (e) {
          this.emit('error', e);
          if (this.listenerCount('error') === 0) queueMicrotask(() => { throw e; });
        }
        this.#consumed(gen, nbytes);
      }
    } finally {
      this.#pumping = false;
    }
    if (!this.prefetch) this.#returnCredit(); // the callback is done: it asks for the next
  }

  /**
   * Next message: `{value, done}` as the async iterator protocol wants. A subscription the
   * server ended for a fault (`error` set: LimitExceeded...) rejects with it once its
   * messages are taken, then is done.
   */
  next() {
    const entry = this.#queue.shift();
    if (entry) {
      this.#consumed(entry.gen, entry.nbytes);
      return Promise.resolve({ value: entry.msg, done: false });
    }
    if (this.ended) {
      const error = this.#unthrown;
      this.#unthrown = null;
      return error ? Promise.reject(error) : Promise.resolve({ value: undefined, done: true });
    }
    if (!this.prefetch) this.#returnCredit(); // asked with none here: only now the next
    const d = deferred();
    this.#waiters.push(d);
    return d.promise;
  }

  async return() {
    await this.close();
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  // For a PatternSubscription, which reads its members without waiting: `{msg}` (taken, as
  // next() takes it), `{end: true, error}` once it has ended and its messages are taken (the
  // error that ended it, once), or null: nothing here now (the next frame, or the end, calls
  // `_onReady`).
  _takeNow() {
    const entry = this.#queue.shift();
    if (entry) {
      this.#consumed(entry.gen, entry.nbytes);
      return { msg: entry.msg };
    }
    if (this.ended) {
      const error = this.#unthrown;
      this.#unthrown = null;
      return { end: true, error };
    }
    if (!this.prefetch) this.#returnCredit(); // asked with none here, as next() asks
    return null;
  }

  get _hasQueued() { return this.#queue.length > 0; }

  /** Unsubscribe. Messages not yet consumed are dropped. */
  async close() {
    if (this.ended) return;
    const id = this.id;
    this.#queue = [];
    this._end('closed');
    if (id !== null && this.#client.connected) {
      try {
        await this.#client.request('unsubscribe', { sub: id });
      } catch {
        // The connection went away or the server already ended it: nothing left to undo.
      }
    }
  }

  // Ends the subscription; messages already received stay readable until drained, then
  // `error` (the server's reason for ending it, if a fault) is thrown by the next `next()`.
  _end(reason, error = null) {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.#retryTimer);
    this.resetEnd = null;
    this.endReason = reason;
    this.error = error;
    this.#client._forgetSub(this);
    this.id = null;
    const waiters = this.#waiters;
    this.#waiters = [];
    if (error && waiters.length) {
      waiters[0].reject(error); // (nothing queued: a waiter means the queue is empty)
      for (const w of waiters.slice(1)) w.resolve({ value: undefined, done: true });
    } else {
      this.#unthrown = error;
      for (const w of waiters) w.resolve({ value: undefined, done: true });
    }
    this.emit('end', reason);
    if (error) this.emit('error', error);
    this._onReady?.();
  }
}

// ------------------------------------------------------------------------------- pattern subscription

// As the Python client's (trio_stream/_matching.py), in milliseconds.
const DEFAULT_MAX_CHANNELS = 1000; // what maxChannels is unless given
const SUBSCRIBES_IN_FLIGHT = 32; // subscribe (and retune) requests at once when many channels match
// What PatternSubscription.retune takes (sub.retune's options, with their Python spellings).
const RETUNE_OPTIONS = ['policy', 'size', 'every', 'maxRate', 'blockTimeout', 'max_rate', 'block_timeout'];
const GLOB_CHARACTERS = '*?[';
// A failed listing (or $channels that could not be followed again) is tried again after
// this, doubling up to PATTERN_RETRY_MAX_MS; at once when the client's state changes.
const PATTERN_RETRY_FIRST_MS = 100;
const PATTERN_RETRY_MAX_MS = 5000;
// A member the server ended (LimitExceeded...) is subscribed again at once the first time;
// ended again within AGAIN_QUIET_MS of the last, after a delay doubling from AGAIN_FIRST_MS.
const AGAIN_FIRST_MS = 250;
const AGAIN_MAX_MS = 30000;
const AGAIN_QUIET_MS = 60000;
// A member waiting to resume whose channel listings have not shown for this long leaves (a
// server restart's channels come back within their owners' reconnect, or not at all).
const LEAVE_UNLISTED_MS = 10000;
const KNOWN_NAMES_KEPT = 10000; // names read before: one that comes back has a reset gap
// Channels skipped for maxChannels, remembered (names only) to take a slot that frees, at most
// this many (the Python client's SKIPPED_NAMES_KEPT); past it a name is not remembered, and a
// listing finds the rest once the remembered ones are used up (#fillFreeSlots).
const SKIPPED_NAMES_KEPT = 10000;

/** Drop from `names` (name -> listing number) those `listing` did not show, stamped before it
 * began (the Python client's _forget_unlisted). */
function forgetUnlisted(names, listed, listing) {
  for (const [name, seen] of [...names]) if (seen < listing && !listed.has(name)) names.delete(name);
}

/**
 * `pattern` if `subscribeMatching` takes it (the Python client's check_pattern): a glob, or a
 * name without glob characters (which follows that one channel across its lives).
 */
function checkPattern(pattern) {
  if (typeof pattern !== 'string') throw new TypeError(`a pattern is a string, not ${shown(pattern)}`);
  if (!pattern) throw new InvalidArgument("a pattern is not empty: '*' matches every channel");
  if (pattern.includes('>') && ![...GLOB_CHARACTERS].some((c) => pattern.includes(c))) {
    throw new InvalidArgument(`${pyRepr(pattern.slice(0, 100))} has no glob character (*, ?, [...]): NATS's '>' `
      + "is '*' here (it matches dots too); a channel named with '>' itself is read with subscribe()");
  }
  return pattern;
}

const REGEXP_SPECIAL = /[\\^$.*+?()[\]{}|/]/g; // (and '-' in a class: escaped there)

/**
 * Python's fnmatch.translate (3.12), as a RegExp: `*` any characters (dots and slashes too),
 * `?` one, `[abc]`, `[a-z]`, `[!a]` one of a set or not; an unclosed `[` is itself.
 */
export function globToRegExp(pattern) {
  const chars = [...pattern]; // code points
  const n = chars.length;
  const lit = (c) => c.replace(REGEXP_SPECIAL, '\\$&');
  const inSet = (c) => (c === '-' ? '\\-' : lit(c));
  let out = '';
  let i = 0;
  while (i < n) {
    const c = chars[i++];
    if (c === '*') {
      out += '.*';
      while (chars[i] === '*') i++;
    } else if (c === '?') {
      out += '.';
    } else if (c === '[') {
      let j = i;
      if (j < n && chars[j] === '!') j++;
      if (j < n && chars[j] === ']') j++;
      while (j < n && chars[j] !== ']') j++;
      if (j >= n) {
        out += '\\[';
        continue;
      }
      const negate = chars[i] === '!';
      const body = chars.slice(negate ? i + 1 : i, j);
      i = j + 1;
      // Ranges: split at each '-' that has a character on both sides (as fnmatch does), and
      // drop the empty ones (z-a), which fnmatch removes.
      const chunks = [];
      let start = 0;
      for (let k = 1; k < body.length - 1; k++) {
        if (body[k] === '-') {
          chunks.push(body.slice(start, k));
          start = k + 1;
          k += 2; // (fnmatch: a '-' right after a range's end is itself)
        }
      }
      chunks.push(body.slice(start));
      for (let k = chunks.length - 1; k > 0; k--) {
        const before = chunks[k - 1];
        if (before.length && chunks[k].length && before.at(-1).codePointAt(0) > chunks[k][0].codePointAt(0)) {
          chunks[k - 1] = [...before.slice(0, -1), ...chunks[k].slice(1)];
          chunks.splice(k, 1);
        }
      }
      const set = chunks.map((chunk) => chunk.map(inSet).join('')).join('-');
      if (!set) out += negate ? '.' : '(?!)';
      else out += `[${negate ? '^' : ''}${set}]`;
    } else {
      out += lit(c);
    }
  }
  return new RegExp(`^(?:${out})$`, 'su');
}

/**
 * Whether `channel` matches the glob `pattern` (fnmatch.fnmatchcase: case-sensitive, `*`
 * matches dots too). A system channel (`$...`) matches only a pattern that starts with `$`.
 */
export function matchesPattern(pattern, channel, regexp = globToRegExp(pattern)) {
  if (channel.startsWith('$') && !pattern.startsWith('$')) return false;
  return regexp.test(channel);
}

const pause = (ms) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  timer.unref?.();
});

/** A failure a pattern subscription tries again later (a listing covers it): not its end. */
function isTransient(e) {
  return e instanceof ConnectionClosed || e instanceof ClusterUnavailable || e instanceof RequestTimeout;
}

/**
 * Every channel whose name matches a glob, now and created later, read as one:
 * `client.subscribeMatching('sensors.*', options)` (the Python client's subscribe_matching,
 * trio_stream/_matching.py: the same design, in this client's terms).
 *
 * One ordinary Subscription per matching channel (its own server-side buffer, policy, `lost`
 * and resume after a reconnect), `$channels` to hear of channels created later (followed
 * before the channels are listed: nothing is missed in between; a listing and an
 * announcement of the same channel dedupe by name and epoch), and a round robin over the
 * members: a flooded channel does not starve a quiet one, and nothing is taken from a member
 * before the page asks (the rest waits in each channel's buffer under its policy). Each
 * message says its channel (`msg.channel`).
 *
 * A channel that ends delivers what was published before its end, then leaves the set; one of
 * that name created again joins it (a new member: its first message has a `reset` gap); one
 * created after the start had `seq - 1` frames before its first message here, counted in that
 * message's `lost` with a `resumed` gap. After a reconnection the client resumes every member
 * (and `$channels`) itself; the channels are listed again once it is open, so that those
 * created meanwhile join and those gone for good (not listed for 10 s) leave. Failures are
 * gaps, never the end: a listing that fails is tried again; a channel refused (past
 * `maxChannels`, a server limit) is skipped with one warning (one past `maxChannels` is
 * remembered, and takes the slot a member that leaves frees); a member the server ended for a
 * fault (`LimitExceeded`) emits 'error' and is subscribed again. Only `close()`, the client's
 * end (the loop ends after the messages here are taken), or an error that is not a gap (a
 * listing refused for good: 'error' with the channel null, then as `close()`) ends it;
 * `endReason` says why.
 *
 * Events: 'join' (channel), 'leave' (channel: its member's end was read; none on `close()`;
 * on the client's end one per channel as its last message is read), 'warning' (message,
 * channel: `console.warn` when nobody listens), 'error' (error, channel: null for the
 * pattern's own), 'end' (reason: at once, also on the client's end).
 */
export class PatternSubscription extends Emitter {
  ended = false;
  endReason = null;

  #client;
  #regexp;
  #options; // each member's subscribe options
  #every;
  #subs = new Set(); // every member, ended ones until their end is read
  #ready = []; // the members that may have something to read, in round robin order
  #queued = new Set(); // the members in #ready
  #active = new Map(); // name -> the newest member of that name
  #leaving = new Set(); // gone (a restart): closed once read out
  #unlisted = new Map(); // member waiting to resume that listings did not show -> since (ms)
  #relistTimer = null;
  #first = new Map(); // member -> 'late' | 'rejoined': its first message says so (#firstMessage)
  #known = new Map(); // names a member was added for (the newest KNOWN_NAMES_KEPT)
  #joinedLost = 0;
  #joinedLostOf = new Map();
  #goneLost = 0;
  #goneReceived = 0;
  #entered = false;
  #events = null; // $channels
  #nameChains = new Map(); // name -> the promise of its last change (one at a time per name)
  // Names not read (refused, past maxChannels), said once: each with the number of the listing
  // that last saw it refused (see #resync). It only serves to say a name once, so it is bounded
  // as #skipped is (SKIPPED_NAMES_KEPT): past that, a name refused is said but not remembered
  // (a listing may say it again), and said once in all (#refusedPastBound) while the names
  // remembered fill the bound (the Python client's _refused).
  #refused = new Map();
  #refusedPastBound = false;
  #announced = new Set(); // announced since the last listing began
  // Listings begun: what a name skipped or refused is stamped with. A listing forgets the
  // names it does not show only if they were stamped before it began: its answer may predate
  // a channel skipped or refused while it was on its way (the Python client's _listings).
  #listingsBegun = 0;
  // Members the server ended with an error, to subscribe again: name -> [delay ms, ended at].
  // Kept only while a member of that name is subscribed (its next end backs off): a member's
  // end is read after its channel's 'deleted' (an end is queued behind its frames), so kept
  // longer it grew by one per channel ever read (#subscribeAgain, #leaveNow).
  #again = new Map();
  // Matching channels skipped for maxChannels, subscribed in name order as members leave
  // (#fillFreeSlots), each with the listing number it was skipped under (see #listingsBegun);
  // and whether one was skipped but not remembered (SKIPPED_NAMES_KEPT).
  #skipped = new Map();
  #skippedForgotten = false;
  // Subscribes on their way (#ensure): each holds a slot of maxChannels until it lands or
  // fails, or a channel announced meanwhile took that slot too (two members with maxChannels 1).
  #subscribing = 0;
  // Fills of free slots running (#fillFreeSlots), and whether one is queued (#slotBack).
  #filling = 0;
  #fillQueued = false;
  #timers = new Set();
  #waiters = [];
  #listingWanted = false;
  #listing = false;
  #offs = [];
  #onMessage;
  #closed = false; // by close(): what is here is dropped (the client's end: read first)
  // retune(): one at a time; a member subscribed under an older generation of the options is
  // retuned before it joins (#ensure).
  #retuning = Promise.resolve();
  #generation = 0;

  constructor(client, pattern, o = {}) {
    super();
    checkPattern(pattern);
    if (o.since != null) {
      throw new InvalidArgument('since is a position in one channel (its epoch and seq); a pattern subscription reads '
        + 'each matching channel as a new subscribe does (its history, if it keeps one, then its new frames): resume '
        + 'one channel with subscribe(channel, { since: sub.position })');
    }
    if (o.waitChannel) {
      throw new InvalidArgument('waitChannel waits for one channel; subscribeMatching() waits for matching channels '
        + 'already (those created later are subscribed as they come)');
    }
    const { maxChannels = DEFAULT_MAX_CHANNELS, onMessage = null, ...options } = o;
    checkInt('maxChannels', maxChannels, { min: 1 });
    if (onMessage !== null && typeof onMessage !== 'function') throw new TypeError(`onMessage must be a function, not ${shown(onMessage)}`);
    new Subscription(client, pattern, options); // checks the options before anything is subscribed
    this.#client = client;
    this.pattern = pattern;
    this.maxChannels = maxChannels;
    this.#regexp = globToRegExp(pattern);
    this.#options = options;
    this.#every = options.every ?? 1;
    this.#onMessage = onMessage;
  }

  // --- what the page reads ----------------------------------------------------------------

  /** The names of the matching channels subscribed now, sorted (an ended one until its last message is read). */
  get channels() {
    const names = [];
    for (const [name, sub] of this.#active) {
      if ((!sub.ended || sub._hasQueued) && !this.#leaving.has(sub)) names.push(name);
    }
    return names.sort();
  }

  /** Frames lost in total: the members' `lost`, and those before a late member's first message. */
  get lost() {
    let lost = this.#goneLost + this.#joinedLost;
    for (const sub of this.#subs) lost += sub.lost;
    return lost;
  }

  /**
   * `{received, lost, channels}`: in total, and per channel subscribed now (`channels[name]`:
   * `{received, lost, position, waiting}`; `waiting`: it waits to resume, its channel missing).
   */
  statistics() {
    let received = this.#goneReceived;
    const channels = {};
    const named = new Set(this.channels);
    for (const sub of this.#subs) {
      received += sub.received;
      if (named.has(sub.channel) && this.#active.get(sub.channel) === sub) {
        channels[sub.channel] = {
          received: sub.received, lost: sub.lost + (this.#joinedLostOf.get(sub) ?? 0),
          position: sub.position, waiting: sub.id === null && !sub.ended,
        };
      }
    }
    const sorted = Object.fromEntries(Object.keys(channels).sort().map((name) => [name, channels[name]]));
    return { received, lost: this.lost, channels: sorted };
  }

  /**
   * Change every channel's subscription on the server, as `sub.retune` changes one (between
   * two frames: no gap, no duplicate), and the options of the channels that join later (the
   * Python client's PatternSubscription.retune). Options left out stay as they are; `maxRate:
   * null` removes the rate limit; a `policy` given without `size` takes the size the channels
   * were subscribed with. Resolves once every channel subscribed now has been retuned, a few
   * requests at a time (SUBSCRIBES_IN_FLIGHT). A channel that ended meanwhile is passed over
   * (one of that name created again joins with the new options); one waiting to resume (the
   * client reconnecting, its channel missing after a restart, a reset end) comes back with
   * them, without a request now; one being subscribed meanwhile is retuned as it joins. One
   * retune at a time: a second waits for the first.
   * @param {object} [o] policy, size, every, maxRate, blockTimeout (as `sub.retune`)
   * @throws {TypeError|RangeError} a bad value, as `sub.retune` says it (nothing is changed),
   *   or an option `sub.retune` does not take
   * @throws {InvalidArgument} the pattern subscription has ended; a policy other than
   *   'unbounded' with no size to keep
   */
  async retune(o = {}) {
    this.#retuneOptions(o); // refused before it waits for another retune
    const run = () => this.#retune(o);
    const done = this.#retuning.then(run, run);
    this.#retuning = done.catch(() => {});
    return done;
  }

  /**
   * `[changed, options]` for `retune(o)`: the options each member's `sub.retune` takes, and
   * the subscribe options of the channels that join from then on. Throws what retune refuses.
   */
  #retuneOptions(o) {
    if (this.ended) throw new InvalidArgument(`this pattern subscription has ended (${this.endReason})`);
    checkRetuneKeys(o);
    const next = retuned(new Subscription(this.#client, this.pattern, this.#options), o); // sub.retune's checks
    if (next.policy !== 'unbounded' && next.size === null) {
      throw new InvalidArgument(`policy ${pyRepr(next.policy)} needs size >= 1 (frames)`);
    }
    const changed = {};
    if (o.policy != null) changed.policy = next.policy;
    // A policy given alone takes the size the channels were subscribed with: one leaving
    // 'unbounded' has none on the server to keep ("needs a size").
    if (o.size != null || (o.policy != null && next.size !== null)) changed.size = next.size;
    if (o.every != null) changed.every = next.every;
    if (o.maxRate !== undefined || o.max_rate !== undefined) changed.maxRate = next.maxRate;
    if (o.blockTimeout != null || o.block_timeout != null) changed.blockTimeout = next.blockTimeout;
    const { max_rate: _rate, block_timeout: _timeout, ...kept } = this.#options;
    const options = { ...kept, ...next };
    new Subscription(this.#client, this.pattern, options); // as a later channel is subscribed
    return [changed, options];
  }

  async #retune(o) {
    const [changed, options] = this.#retuneOptions(o); // (against the options of a retune before)
    // From here a channel subscribed joins with the new options (#ensure).
    this.#options = options;
    this.#every = options.every;
    this.#generation++;
    const members = [...this.#subs].filter((sub) => !sub.ended);
    const errors = [];
    let next = 0;
    const worker = async () => {
      while (next < members.length) {
        const sub = members[next++];
        try {
          await this.#retuneMember(sub, changed);
        } catch (e) {
          errors.push(e);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(SUBSCRIBES_IN_FLIGHT, members.length) }, worker));
    if (errors.length) throw errors[0];
  }

  /**
   * Retune one member with `changed` (sub.retune's options): passed over if it ended; told to
   * resume with them if it waits to resume. Rejects with another error of the server's (a
   * request timeout, a memory limit).
   */
  async #retuneMember(sub, changed) {
    if (sub.ended) return;
    if (sub.id === null) {
      sub._respec(changed);
      return;
    }
    try {
      await sub.retune(changed);
    } catch (e) {
      if (sub.ended) return; // ended, closed meanwhile
      if (sub.id === null) { // the connection lost as the request went out: it resumes with them
        sub._respec(changed);
        return;
      }
      // The values were checked as sub.retune checks them: what the server refuses is its
      // "no subscription": it ended there, its end still on its way behind its frames.
      if (e instanceof InvalidArgument) return;
      throw e;
    }
  }

  /** The options a retune sets, as the members are subscribed with now (sub.retune's form). */
  #retunable() {
    const { policy, size, every, maxRate, blockTimeout } = this.#options;
    return { policy, size, every, maxRate, blockTimeout };
  }

  /** The next message of any matching channel: `{value, done}`, as the async iterator protocol wants. */
  next() {
    const taken = this.#takeNow();
    if (taken) return Promise.resolve(taken);
    const d = deferred();
    this.#waiters.push(d);
    return d.promise;
  }

  async return() {
    await this.close();
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /** Unsubscribe from every channel (messages not taken yet are dropped). Idempotent. */
  async close() {
    await this.#closeWith('this pattern subscription was closed');
  }

  async #closeWith(reason) {
    if (this.#closed) return;
    this.#closed = true;
    this.#end(reason);
    const subs = [...this.#subs];
    for (const sub of subs) this.#drop(sub, { quiet: true }); // (no 'leave': the whole set ends)
    if (this.#events) subs.push(this.#events);
    this.#events = null;
    await Promise.all(subs.map((sub) => sub.close().catch(() => {})));
  }

  // --- start and life -----------------------------------------------------------------------

  async _start() {
    const client = this.#client;
    // Before $channels is followed: a reconnection during the start lists again too.
    this.#offs.push(client.on('open', ({ reconnected }) => { if (reconnected) this.#requestListing(); }));
    this.#offs.push(client.on('close', (reason) => this.#end(reason)));
    try {
      await this.#followEvents();
      // The client closed during the start: rejected, as a subscribe on it is (not an ended
      // pattern subscription that resolves).
      if (this.ended) throw new ConnectionClosed(this.endReason);
      const names = (await this.#list()).filter((name) => !this.#active.has(name));
      if (names.length > this.maxChannels) throw this.#tooMany(names.length); // before any is opened
      await this.#subscribeAll(names, true);
      if (this.ended) throw new ConnectionClosed(this.endReason);
      this.#entered = true;
    } catch (e) {
      await this.close();
      throw e;
    }
    if (this.#onMessage) this.#pump();
  }

  async #pump() {
    for await (const msg of this) {
      try {
        await this.#onMessage(msg);
      } catch (e) {
        this.emit('error', e, msg.channel);
        if (this.listenerCount('error') === 0) queueMicrotask(() => { throw e; });
      }
    }
  }

  #end(reason) {
    if (!this.ended) {
      this.ended = true;
      this.endReason = reason;
      for (const off of this.#offs) off();
      this.#offs = [];
      for (const timer of this.#timers) clearTimeout(timer);
      this.#timers.clear();
      clearTimeout(this.#relistTimer);
      this.emit('end', reason);
    }
    this.#serve();
  }

  #later(ms, fn) {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      if (!this.ended) fn();
    }, ms);
    timer.unref?.();
    this.#timers.add(timer);
  }

  // Until the client's state changes, or `ms`; then until it is open (rejects once it is closed).
  async #pause(ms) {
    const client = this.#client;
    await new Promise((resolve) => {
      const off = client.on('state', () => done());
      const timer = setTimeout(() => done(), ms);
      timer.unref?.();
      function done() { off(); clearTimeout(timer); resolve(); }
    });
    await client.ready();
  }

  /** Follow `$channels` (again, after its end): what it announces is subscribed. */
  async #followEvents() {
    const events = await this.#client.subscribe('$channels', {
      policy: 'unbounded', size: null, onMessage: (msg) => this.#onEvent(msg),
    });
    if (this.ended) {
      events.close().catch(() => {});
      return;
    }
    this.#events = events;
    events.on('end', (reason) => {
      if (this.#events !== events) return;
      this.#events = null;
      if (this.ended || this.#client.state === 'closed') return;
      this.#warn(`pattern ${pyRepr(this.pattern)}: the $channels subscription ended (${reason}): followed again, and the channels listed`, null);
      this.#refollow(PATTERN_RETRY_FIRST_MS);
    });
  }

  async #refollow(delay) {
    try {
      await this.#pause(delay);
      if (this.ended) return;
      await this.#followEvents();
      this.#requestListing(); // what it announced meanwhile is gone
    } catch (e) {
      if (this.ended || this.#client.state === 'closed') return;
      this.#refollow(Math.min(delay * 2, PATTERN_RETRY_MAX_MS));
    }
  }

  #onEvent(event) {
    if (this.ended) return;
    if (event.lost) this.#requestListing(); // announcements were missed
    const data = event.data;
    if (data === null || typeof data !== 'object') return;
    const name = data.channel;
    if (typeof name !== 'string' || !matchesPattern(this.pattern, name, this.#regexp)) return;
    if (data.event === 'deleted') {
      this.#refused.delete(name);
      this.#skipped.delete(name);
      this.#again.delete(name);
    } else if (data.event === 'created') {
      this.#ensure(name, { announced: true }).catch((e) => this.#transient(e));
    }
  }

  /** A step failed for now (the connection, the cluster's Redis): the next listing covers it;
   * another error ends the pattern subscription (#fail). */
  #transient(e) {
    if (this.ended || this.#client.state === 'closed') return;
    if (!isTransient(e)) {
      this.#fail(e);
      return;
    }
    this.#requestListing();
  }

  /**
   * What is not a gap (the server refused a listing for good, a bug here): said ('error' with
   * the channel null, else console.warn), and the end of the pattern subscription, as the
   * Python client's (its `_guarded`: `receive` raises "pattern subscription failed"). Every
   * member is closed (messages not taken are dropped, as by close()); `endReason` says why.
   */
  #fail(e) {
    if (this.ended) return;
    this.#error(e, null);
    this.#closeWith(`pattern subscription failed: ${e?.message ?? e}`).catch(() => {});
  }

  #requestListing() {
    if (this.ended) return;
    this.#listingWanted = true;
    if (!this.#listing) this.#listings();
  }

  async #listings() {
    this.#listing = true;
    let delay = PATTERN_RETRY_FIRST_MS;
    try {
      while (this.#listingWanted && !this.ended) {
        this.#listingWanted = false;
        try {
          await this.#client.ready();
          if (this.ended) return;
          await this.#resync();
          delay = PATTERN_RETRY_FIRST_MS;
        } catch (e) {
          if (this.ended || this.#client.state === 'closed') return;
          if (!isTransient(e)) { // not tried again for ever in silence
            this.#fail(e);
            return;
          }
          this.#listingWanted = true;
          await this.#pause(delay).catch(() => {});
          delay = Math.min(delay * 2, PATTERN_RETRY_MAX_MS);
        }
      }
    } finally {
      this.#listing = false;
    }
  }

  /** The names of the channels visible to this client that match, sorted. */
  async #list() {
    const records = await this.#client.channels();
    return (Array.isArray(records) ? records : [])
      .map((record) => record?.name)
      .filter((name) => typeof name === 'string' && matchesPattern(this.pattern, name, this.#regexp))
      .sort();
  }

  /** List the channels again: the matching ones not subscribed join; members waiting to resume
   * whose channel listings have not shown for LEAVE_UNLISTED_MS leave. */
  async #resync() {
    this.#announced = new Set();
    // A name skipped or refused from here on (a channel created, announced and skipped while
    // the answer is on its way) is stamped with this listing's number: the answer may not
    // show it, and it is not forgotten for that (see #listingsBegun).
    const listing = ++this.#listingsBegun;
    const began = Date.now();
    const forgotten = this.#skippedForgotten;
    this.#skippedForgotten = false;
    let names;
    try {
      names = await this.#list();
    } catch (e) {
      this.#skippedForgotten ||= forgotten; // (not found by this listing after all)
      throw e;
    }
    if (this.ended) return;
    const listed = new Set(names);
    // Skipped again if no slot is free (the listed names not remembered, whose skip was
    // forgotten, among them): the ones remembered are those still there.
    forgetUnlisted(this.#skipped, listed, listing);
    await this.#subscribeAll(names);
    if (this.ended) return; // (no relist timer once it ended)
    const now = Date.now();
    let relistAt = Infinity;
    for (const sub of [...this.#subs]) {
      const name = sub.channel;
      if (sub.id !== null || sub.ended || listed.has(name) || this.#announced.has(name)) {
        this.#unlisted.delete(sub);
        continue;
      }
      const since = this.#unlisted.get(sub) ?? now;
      this.#unlisted.set(sub, since);
      if (now - since < LEAVE_UNLISTED_MS) {
        relistAt = Math.min(relistAt, since + LEAVE_UNLISTED_MS);
        continue;
      }
      if (sub._hasQueued) this.#leaving.add(sub); // its messages first
      else this.#leaveNow(sub);
    }
    clearTimeout(this.#relistTimer);
    if (relistAt < Infinity) {
      this.#relistTimer = setTimeout(() => this.#requestListing(), relistAt - now + 10);
      this.#relistTimer.unref?.();
    }
    // Said once per name, for the names that still exist: the rest are forgotten.
    forgetUnlisted(this.#refused, listed, listing);
    if (this.#refused.size < SKIPPED_NAMES_KEPT) this.#refusedPastBound = false;
    for (const [name, [, endedAt]] of [...this.#again]) {
      if (!listed.has(name) && endedAt < began) this.#again.delete(name);
    }
  }

  async #subscribeAll(names, atEntry = false) {
    let next = 0;
    let error = null;
    const worker = async () => {
      while (next < names.length && error === null) {
        const name = names[next++];
        try {
          await this.#ensure(name, { atEntry });
        } catch (e) {
          error ??= e;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(SUBSCRIBES_IN_FLIGHT, names.length) }, worker));
    if (error !== null) throw error;
  }

  // One change per name at a time.
  #withName(name, fn) {
    const before = this.#nameChains.get(name) ?? Promise.resolve();
    const run = before.then(fn, fn);
    const tail = run.catch(() => {});
    this.#nameChains.set(name, tail);
    tail.then(() => { if (this.#nameChains.get(name) === tail) this.#nameChains.delete(name); });
    return run;
  }

  /**
   * Have `name` subscribed; `announced`: a `created` event named it (perhaps a new channel of
   * a name whose old member has not ended yet). A channel this client may not read, or one
   * past maxChannels after the start, is skipped (said once; one past maxChannels is
   * remembered for a slot that frees). A subscribe on its way holds its slot (#subscribing)
   * until it lands, fails or is refused. Resolves with what became of it: 'added' (a new
   * member), 'present' (a member reads it already), 'absent' (no such channel now),
   * 'skipped' (refused, or past maxChannels), 'ended'. Rejects with what the caller tries
   * again later (ConnectionClosed, ClusterUnavailable, RequestTimeout), and only `atEntry`
   * with another error.
   */
  #ensure(name, { announced = false, atEntry = false } = {}) {
    return this.#withName(name, async () => {
      if (this.ended) return 'ended';
      const old = this.#active.get(name);
      if (old && !old.ended && (!announced || old.id === null)) {
        // Subscribed; or waiting to resume after a reconnect, which follows the channel of
        // that name by itself (with a reset gap if it is a new one). (One in #leaving that
        // is read out before it comes back looks for the channel again: #leaveNow.)
        if (announced) this.#announced.add(name);
        return 'present';
      }
      if (this.#countedAtLeast(this.maxChannels)) {
        if (atEntry) throw this.#tooMany(this.#active.size + 1);
        this.#skip(name);
        const subscribed = this.maxChannels === 1 ? '1 channel is' : `${this.maxChannels} channels are`;
        this.#refuse(name, `${subscribed} subscribed (maxChannels): it is read once one of them ends; `
          + 'give subscribeMatching(pattern, { maxChannels: N }) a larger N to read more at once');
        return 'skipped';
      }
      this.#subscribing++; // its slot, until it lands or fails (#countedAtLeast)
      let outcome = 'failed';
      try {
        outcome = await this.#join(name, old, atEntry);
        return outcome;
      } catch (e) {
        // (the listing that #transient asks for covers a transient failure: no fill here,
        // which would subscribe again at once, without a backoff, while it lasts)
        if (isTransient(e)) outcome = 'transient';
        throw e;
      } finally {
        this.#subscribing--;
        if (outcome !== 'added' && outcome !== 'transient') this.#slotBack();
      }
    });
  }

  /** #ensure's subscribe, under its name's turn and with a slot held (see there). */
  async #join(name, old, atEntry) {
    let generation = this.#generation;
    const sub = await this.#subscribe(name, atEntry);
    if (typeof sub === 'string') return sub;
    if (this.ended) {
      sub.close().catch(() => {});
      return 'ended';
    }
    if (old && !old.ended && old.position.epoch === sub.position.epoch) {
      sub.close().catch(() => {}); // the same channel, listed and announced: one is enough
      return 'present';
    }
    while (generation !== this.#generation && !this.ended) {
      // Subscribed with the options from before a retune() that did not see it (not a
      // member yet): retuned to the options now, before it joins.
      generation = this.#generation;
      try {
        await this.#retuneMember(sub, this.#retunable());
      } catch (e) {
        sub.close().catch(() => {});
        if (isTransient(e) || atEntry || !(e instanceof TrioStreamError)) throw e;
        this.#refuse(name, e.message);
        return 'skipped';
      }
    }
    if (this.ended) {
      sub.close().catch(() => {});
      return 'ended';
    }
    if (old && !old.ended) {
      if (old.position.epoch === sub.position.epoch) {
        sub.close().catch(() => {}); // it rode its reset end into this life meanwhile
        return 'present';
      }
      // The new member reads the channel's new life: the old one delivers what it has and
      // ends, and must not ride a reset end into that life too.
      old._endAtReset = true;
    }
    this.#add(sub);
    return 'added';
  }

  /** The new member, or why there is none: 'absent' (ChannelNotFound), 'skipped' (refused). */
  async #subscribe(name, atEntry) {
    try {
      return await this.#client.subscribe(name, this.#options);
    } catch (e) {
      if (e instanceof ChannelNotFound) return 'absent'; // ended since it was listed or announced
      if (isTransient(e)) throw e;
      if (!(e instanceof TrioStreamError)) throw e;
      if (atEntry && !(e instanceof AuthError)) throw e;
      this.#refuse(name, e.message);
      return 'skipped';
    }
  }

  /**
   * A slot held for a subscribe that did not land (the channel gone meanwhile, refused) is
   * free again: a channel skipped for it meanwhile takes it now, not at the next member's end
   * (which may never come). One fill at a time from here: a fill running looks again after
   * each of its subscribes, and one queued is enough (as the Python client's _slot_back).
   */
  #slotBack() {
    if (this.ended || this.#filling || this.#fillQueued) return;
    if (!this.#skipped.size && !this.#skippedForgotten) return;
    this.#fillQueued = true;
    queueMicrotask(() => {
      this.#fillQueued = false;
      this.#fillFreeSlots();
    });
  }

  /** `name` is not read for maxChannels: remembered for a slot that frees. */
  #skip(name) {
    if (this.#skipped.has(name) || this.#skipped.size < SKIPPED_NAMES_KEPT) this.#skipped.set(name, this.#listingsBegun);
    else this.#skippedForgotten = true;
  }

  /**
   * A member left: the channels skipped for maxChannels take the free slots, in name order
   * (as a listing would subscribe them), passing over those gone meanwhile; those not
   * remembered (SKIPPED_NAMES_KEPT) are found by a listing. Never rejects.
   */
  async #fillFreeSlots() {
    this.#filling++;
    try {
      await this.#fillingFreeSlots();
    } finally {
      this.#filling--;
    }
  }

  async #fillingFreeSlots() {
    while (!this.ended && !this.#countedAtLeast(this.maxChannels)) {
      if (!this.#skipped.size) {
        if (this.#skippedForgotten) {
          this.#skippedForgotten = false; // (a listing remembers them again)
          this.#requestListing();
        }
        return;
      }
      let name = null;
      for (const skipped of this.#skipped.keys()) if (name === null || skipped < name) name = skipped;
      const listing = this.#skipped.get(name);
      this.#skipped.delete(name);
      try {
        await this.#ensure(name); // skipped again if none is free
      } catch (e) {
        // (the listing this asks for covers it)
        if (isTransient(e) && !this.#skipped.has(name)) this.#skipped.set(name, listing);
        this.#transient(e);
        return;
      }
    }
  }

  /** Whether `limit` count against maxChannels: the members subscribed now, not ended, and live
   * (one waiting to resume after a reconnect may never come back), and the subscribes on their
   * way (#subscribing). */
  #countedAtLeast(limit) {
    const pending = this.#subscribing;
    if (this.#active.size + pending < limit) return false; // (the common case, without walking them)
    let n = pending;
    for (const sub of this.#subs) if (sub.id !== null && !sub.ended) n++;
    return n >= limit;
  }

  #tooMany(more) {
    return new LimitExceeded(`pattern ${pyRepr(this.pattern.slice(0, 100))} matches more than maxChannels=`
      + `${this.maxChannels} channels (${more} would be subscribed): each is a subscription with its own buffer `
      + 'on the server; narrow the pattern, or give subscribeMatching(pattern, { maxChannels: N }) a larger N');
  }

  /** Say once that `name` is not read (see #refused). */
  #refuse(name, why) {
    const refused = this.#refused;
    if (refused.has(name)) {
      refused.set(name, this.#listingsBegun); // (refused again: a listing keeps it)
      return;
    }
    if (refused.size < SKIPPED_NAMES_KEPT) {
      refused.set(name, this.#listingsBegun);
    } else if (this.#refusedPastBound) {
      return; // (said once past the bound: not name by name)
    } else {
      this.#refusedPastBound = true;
      why += ` (and more: past ${SKIPPED_NAMES_KEPT} channels not read, they are not said one by one)`;
    }
    this.#warn(`pattern ${pyRepr(this.pattern)}: channel ${pyRepr(name)} is not read: ${why}`, name);
  }

  #error(error, channel) {
    if (this.listenerCount('error')) this.emit('error', error, channel);
    else if (channel === null) console.warn(`pattern ${pyRepr(this.pattern)}: ${error?.message ?? error}`);
    else console.warn(`pattern ${pyRepr(this.pattern)}: channel ${pyRepr(String(channel))}: ${error.message}`);
  }

  #warn(message, channel) {
    if (this.listenerCount('warning')) this.emit('warning', message, channel);
    else console.warn(message);
  }

  // --- the set of members -------------------------------------------------------------------

  #add(sub) {
    const name = sub.channel;
    if (this.#known.has(name)) this.#first.set(sub, 'rejoined');
    else if (this.#entered) this.#first.set(sub, 'late');
    this.#known.delete(name);
    this.#skipped.delete(name); // (subscribed by a listing, say)
    this.#known.set(name, true); // (the newest last)
    if (this.#known.size > KNOWN_NAMES_KEPT) this.#known.delete(this.#known.keys().next().value);
    this.#subs.add(sub);
    this.#active.set(name, sub);
    sub._onReady = () => this.#markReady(sub);
    this.emit('join', name);
    this.#markReady(sub); // what came before this (its first frames) is read
  }

  // `quiet`: no 'leave' (close(): the whole pattern subscription ends).
  #drop(sub, { quiet = false } = {}) {
    if (!this.#subs.delete(sub)) return;
    sub._onReady = null;
    this.#leaving.delete(sub);
    this.#unlisted.delete(sub);
    this.#first.delete(sub);
    this.#joinedLostOf.delete(sub);
    this.#goneLost += sub.lost;
    this.#goneReceived += sub.received;
    if (this.#active.get(sub.channel) === sub) {
      this.#active.delete(sub.channel);
      if (!quiet) this.emit('leave', sub.channel);
    }
  }

  /**
   * A member whose channel is gone, read out: closed and out of the set (unless it came back).
   * Its channel is looked for again (one created anew while it was leaving: its 'created'
   * was taken for this member, which would have resumed on it), then the slot it frees goes
   * to a channel skipped for maxChannels.
   */
  #leaveNow(sub) {
    this.#leaving.delete(sub);
    if (sub.id !== null) return;
    this.#drop(sub);
    sub.close().catch(() => {});
    const name = sub.channel;
    if (!this.#active.has(name)) this.#again.delete(name); // (no member of that name to back off)
    if (this.ended) return;
    this.#ensure(name).then(() => this.#fillFreeSlots(), (e) => this.#transient(e));
  }

  #markReady(sub) {
    if (this.#subs.has(sub) && !this.#queued.has(sub)) {
      this.#queued.add(sub);
      this.#ready.push(sub);
    }
    this.#serve();
  }

  #serve() {
    while (this.#waiters.length) {
      const taken = this.#takeNow();
      if (!taken) return;
      this.#waiters.shift().resolve(taken);
    }
  }

  #unready() {
    this.#queued.delete(this.#ready.shift());
  }

  #takeNow() {
    if (this.#closed) return { value: undefined, done: true };
    const ready = this.#ready;
    while (ready.length) {
      const sub = ready[0];
      if (!this.#subs.has(sub)) { // dropped meanwhile
        this.#unready();
        continue;
      }
      const taken = sub._takeNow();
      if (taken === null) {
        this.#unready();
        if (this.#leaving.has(sub)) this.#leaveNow(sub);
        continue;
      }
      if (taken.end) {
        this.#unready();
        this.#drop(sub);
        if (this.ended || this.#client.state === 'closed') continue;
        if (taken.error) this.#error(taken.error, sub.channel); // said once, then subscribed again
        // Looked for again: a channel the server ended but kept is read on (from its new
        // life); one that is gone is not found.
        this.#subscribeAgain(sub.channel);
        continue;
      }
      ready.push(ready.shift()); // round robin: asked again after the others
      const msg = this.#first.has(sub) ? this.#firstMessage(sub, taken.msg) : taken.msg;
      return { value: msg, done: false };
    }
    if (this.ended) return { value: undefined, done: true };
    return null;
  }

  /**
   * The first message of a member that joined late (a channel created after the start: the
   * frames before it were published for this pattern too, counted lost) or that took the
   * place of one whose channel ended (its new life: a reset gap).
   */
  #firstMessage(sub, msg) {
    const kind = this.#first.get(sub);
    this.#first.delete(sub);
    if (msg.gap) return msg; // the member's own account (a resume) says it already
    if (kind === 'rejoined') return { ...msg, gap: { kind: 'reset', lost: null, recovered: 0 } };
    let before = Math.max(msg.seq - 1 - msg.lost, 0);
    if (Number.isInteger(this.#every) && this.#every > 1) before = Math.floor(before / this.#every);
    if (!before) return msg;
    this.#joinedLost += before;
    this.#joinedLostOf.set(sub, before);
    const lost = msg.lost + before;
    return { ...msg, lost, gap: { kind: 'resumed', lost, recovered: 0 } };
  }

  /**
   * The server ended `name`'s member, now read: subscribe again (with a backoff if it ended a
   * moment ago too); then the slot, if it is free still, goes to a channel skipped for
   * maxChannels. A name left with no member is forgotten (its channel not found: its
   * 'deleted' came before its end was read, as it usually does; refused; skipped for
   * maxChannels), and so is one quiet for AGAIN_QUIET_MS: the map holds the names of members
   * that ended within that time at most.
   */
  #subscribeAgain(name) {
    const now = Date.now();
    let [delay, endedAt] = this.#again.get(name) ?? [0, -Infinity];
    if (now - endedAt > AGAIN_QUIET_MS) delay = 0;
    for (const [other, [, at]] of this.#again) if (now - at > AGAIN_QUIET_MS) this.#again.delete(other);
    this.#again.set(name, [Math.min(Math.max(delay * 2, AGAIN_FIRST_MS), AGAIN_MAX_MS), now]);
    this.#later(delay, () => this.#ensure(name).then(() => {
      // No member of that name (its channel gone, the usual end; refused; skipped for
      // maxChannels): no next end to back off from. Kept, the entry stayed for the page's
      // life, one per channel that ever ended (see #again).
      if (!this.#active.has(name)) this.#again.delete(name);
      // Its slot first (the channel lives on); if it is gone, a skipped channel's.
      return this.#fillFreeSlots();
    }).catch((e) => this.#transient(e)));
  }

  /**
   * Internal, for tests (not part of the API; may change): the sizes of the maps kept per
   * channel name, which must stay bounded by the channels alive, not grow with those that
   * ever ended.
   */
  get _sizes() {
    return {
      subs: this.#subs.size, active: this.#active.size, again: this.#again.size, refused: this.#refused.size,
      skipped: this.#skipped.size, known: this.#known.size, nameChains: this.#nameChains.size,
    };
  }
}

// ------------------------------------------------------------------------------------- publisher

/**
 * A publisher on one channel. `readers` follows the server's count; `send()` resolves false
 * without touching the wire while there are none (and the channel keeps no history), true once
 * the frame is in the publisher's window: on the wire, or, while the client reconnects, kept
 * for the new connection. At most the server's publish window is unacknowledged at a time;
 * sends beyond it wait, in order. Events: 'readers' (count).
 */
export class Publisher extends Emitter {
  id = null;
  readers = 0;
  closed = false;

  #client;
  // Frames sent and not yet acknowledged, oldest first ({payload, time}): kept until the server
  // acknowledges them, so that after a reconnect exactly those it had not taken go out again.
  #window = [];
  #windowBytes = 0;
  #ackedHere = 0; // frames acknowledged under the current id
  #ackedTotal = 0; // frames let go of since the publisher was opened, on every connection
  #lastId = null; // the id of the last connection that answered an open (resume_pub)
  #writerKey = newWriterKey(); // the same on every connection (protocol.md 8)
  #claims = 0; // reopens sent: each names its number
  #keepsHistory = false; // the channel keeps history: frames are wanted without readers
  #queue = []; // sends waiting for window room: {payload, time, resolve, reject}
  #readerWaiters = [];
  #requesting = false; // an open_publisher request is in flight
  #retryTimer = null; // the next reopen of a channel missing after a reconnect
  #readersAtCut = 0; // the channel's readers when the connection was lost
  #holding = false; // the window waits for those readers after a reconnect (#hold)
  #holdTimer = null;
  #holdWaiters = []; // close() calls waiting for the hold's end
  #deliverWaiters = []; // close() calls waiting for the window to go out on a new connection
  #closedByUser = false; // close() was called: send() throws ResourceClosed (else ConnectionClosed)

  constructor(client, channel, key) {
    super();
    checkText('publisher: channel', channel);
    checkText('publisher: key', key, true);
    this.#client = client;
    this.channel = channel;
    this.key = key;
  }

  // What send() throws once closed: ResourceClosed after the user's close(), as the Python
  // client; ConnectionClosed when the client closed (or failed to bring the publisher back).
  #closedError() {
    return this.#closedByUser
      ? new ResourceClosed(`the publisher on ${JSON.stringify(this.channel)} is closed (by its close())`)
      : new ConnectionClosed('publisher is closed');
  }

  /** Whether the channel wants frames now: it has readers, or it keeps history. */
  get wanted() {
    // Disconnected or holding (#hold) with readers before the cut: sends wait for them.
    const awaitingReaders = (this.id === null || this.#holding) && this.#readersAtCut > 0;
    return this.readers > 0 || this.#keepsHistory || awaitingReaders;
  }

  async _open() {
    this.#requesting = true;
    try {
      await this.#request();
    } finally {
      this.#requesting = false;
    }
  }

  #request() {
    const fields = { channel: this.channel, key: this.key, writer: this.#writerKey };
    const resumePub = this.#lastId;
    if (resumePub !== null) {
      fields.resume_pub = resumePub;
      fields.claim = ++this.#claims;
    }
    return this.#client.request('open_publisher', fields, {
      ...(resumePub !== null && { timeout: 0 }), // a reopen waits, as a resubscribe does
      onLate: (reply) => {
        if (Number.isInteger(reply?.pub)) this.#client.request('close_publisher', { pub: reply.pub }).catch(() => {});
      },
      onReply: (reply) => {
        if (!reply || !Number.isInteger(reply.pub)) throw new ProtocolError('open_publisher reply without a pub id');
        if (this.closed) {
          this.#client.request('close_publisher', { pub: reply.pub }).catch(() => {});
          return;
        }
        if (resumePub !== null) this.#letGoTaken(reply);
        this.id = reply.pub;
        this.#lastId = reply.pub;
        this.#ackedHere = 0;
        this.#keepsHistory = reply.keeps_history === true;
        this.#client._registerPub(this, this.id);
        const readers = Number(reply.readers) || 0;
        if (readers < this.#readersAtCut) this.#hold();
        else this.#release();
        this._setReaders(readers);
      },
    });
  }

  // A reopen's answer says how many of the window the server has already (protocol.md 8):
  // `taken` (this server's count under the previous id) or, on a node of several, `published`
  // (Redis's count of this writer's frames, every connection and node together).
  #letGoTaken(reply) {
    if (Number.isInteger(reply.taken)) {
      this.#letGo(Math.min(Math.max(0, reply.taken - this.#ackedHere), this.#window.length));
    } else if (Number.isInteger(reply.published)) {
      this.#letGo(Math.min(Math.max(0, reply.published - this.#ackedTotal), this.#window.length));
      this.#ackedTotal = reply.published;
    }
    // Neither (a restarted server, an expired lease): the whole window goes out again.
  }

  // After a server restart a writer's client is often back before its readers' clients (or
  // before their resubscriptions find the channel it re-created): frames sent into a channel
  // without readers go nowhere, so the window, filled while disconnected, would be lost
  // without a count. It waits (and what send adds to it) until the readers the channel had
  // are back, or the client's grace has passed; as the trio client's publishers do.
  #hold() {
    const grace = this.#client._readersGraceMs;
    if (!(grace > 0)) { this.#release(); return; }
    this.#holding = true;
    clearTimeout(this.#holdTimer);
    this.#holdTimer = setTimeout(() => { if (this.#holding && this.id !== null) this.#release(); }, grace);
  }

  // The frames the server did not take go out again, in order, under the new id (before
  // anything sent after them).
  #release() {
    this.#endHold();
    for (const f of this.#window) this.#client._sendPublish(this.id, f.time, f.payload);
    this.#pump();
    this.#delivered();
  }

  #delivered() {
    for (const resolve of this.#deliverWaiters) resolve();
    this.#deliverWaiters = [];
  }

  #endHold() {
    this.#holding = false;
    clearTimeout(this.#holdTimer);
    for (const resolve of this.#holdWaiters) resolve();
    this.#holdWaiters = [];
  }

  #letGo(frames) {
    for (let i = 0; i < frames && this.#window.length; i++) {
      this.#windowBytes -= PUBLISH_HEAD_BYTES + this.#window.shift().payload.length;
    }
    this.#ackedHere += frames;
    this.#ackedTotal += frames;
  }

  _reopen(retryDelay = RESTORE_RETRY_FIRST_MS) {
    clearTimeout(this.#retryTimer); // one retry loop at most, whoever calls
    if (this.closed || this.#requesting || this.id !== null) return;
    this._open().catch((e) => {
      if (e instanceof ConnectionClosed) return; // lost again: the next welcome reopens
      if (missingForNow(e)) {
        // As a subscription's: asked again while the window waits (as the trio client does).
        this.#retryTimer = retryRestore(this.#client, retryDelay, (next) => this._reopen(next));
        return;
      }
      this.#client._reportError(e);
      this._closed(e);
    });
  }

  // The connection is lost: the window and the waiting sends stay for the next one (the
  // client reconnects, or closes and then _closed rejects what waits).
  _disconnected() {
    // Only a cut of a live publisher counts its readers: a failed reconnect attempt comes
    // here too, and a hold keeps the count from before the first cut.
    if (this.id !== null && !this.#holding) this.#readersAtCut = this.readers;
    this.id = null;
    clearTimeout(this.#retryTimer); // the next welcome reopens
    this.#endHold();
  }

  _closed(err) {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.#retryTimer);
    this.#endHold();
    const e = err ?? new ConnectionClosed('publisher closed');
    for (const q of this.#queue) q.reject(e);
    this.#queue = [];
    for (const w of this.#readerWaiters) w.reject(e);
    this.#readerWaiters = [];
    this.#delivered();
    this.#client._forgetPub(this);
  }

  _setReaders(n) {
    const readers = Number(n) || 0;
    const changed = readers !== this.readers;
    this.readers = readers;
    if (readers > 0) {
      for (const w of this.#readerWaiters) w.resolve(readers);
      this.#readerWaiters = [];
    }
    if (changed) this.emit('readers', readers);
    if (this.#holding && readers >= this.#readersAtCut) this.#release();
    else this.#pump();
  }

  _ack(frames) {
    this.#letGo(frames);
    this.#pump();
  }

  // `size`: the PUBLISH body's bytes, head included, as the server counts the window.
  #hasRoom(size) {
    const lim = this.#client.limits;
    const maxFrames = lim.publish_window_frames > 0 ? lim.publish_window_frames : 16;
    const maxBytes = lim.publish_window_bytes > 0 ? lim.publish_window_bytes : Infinity;
    if (this.#window.length >= maxFrames) return false;
    // The byte window always lets one frame through, however big.
    return this.#window.length === 0 || this.#windowBytes + size <= maxBytes;
  }

  #pump() {
    while (this.#queue.length) {
      if (!this.wanted && this.id !== null) {
        // Readers left while these waited: they are not sent, as if sent to nobody.
        for (const q of this.#queue) q.resolve(false);
        this.#queue = [];
        return;
      }
      const q = this.#queue[0];
      if (!this.#hasRoom(PUBLISH_HEAD_BYTES + q.payload.length)) return;
      this.#queue.shift();
      this.#transmit(q.payload, q.time);
      q.resolve(true);
    }
  }

  // Into the window, and on the wire if connected (else it goes with the reopen).
  #transmit(payload, time) {
    this.#window.push({ payload, time });
    this.#windowBytes += PUBLISH_HEAD_BYTES + payload.length;
    if (this.id !== null && !this.#holding) this.#client._sendPublish(this.id, time, payload);
  }

  /**
   * Send one value. Resolves true when it is on its way, false when nobody reads the channel
   * and it keeps no history (nothing is encoded or sent then). While the client reconnects,
   * values wait in the publisher's window and go out on the new connection (exactly those the
   * server had not taken: nothing lost, nothing twice); once the window is full, send waits.
   */
  async send(value, { time } = {}) {
    if (this.closed) throw this.#closedError();
    if (value === undefined) {
      // CBOR's `undefined`, which a Python reader gets as cbor2's `undefined` object, not
      // None: a missing argument (`send()`, a typo'd field) went out as a value.
      throw new TypeError('send: a value is needed, not undefined (null for "no value")');
    }
    if (time !== undefined && time !== null && !(isNumber(time) && Number.isFinite(time))) {
      throw new TypeError(`send: time must be a finite number (seconds since the epoch), not ${shown(time)}`);
    }
    if (!this.wanted) return false;
    const payload = encode(value);
    this.#client._checkFrameSize(PUBLISH_HEAD_BYTES + payload.length);
    const t = time ?? nowSeconds();
    if (this.#queue.length === 0 && this.#hasRoom(PUBLISH_HEAD_BYTES + payload.length)) {
      this.#transmit(payload, t);
      return true;
    }
    const d = deferred();
    this.#queue.push({ payload, time: t, resolve: d.resolve, reject: d.reject });
    return d.promise;
  }

  /** Resolves with the reader count once the channel has at least one reader. */
  waitForReaders({ timeout = 0 } = {}) {
    try { checkMs('waitForReaders: timeout', timeout, { zeroIsNone: true }); } catch (e) { return Promise.reject(e); }
    if (this.readers > 0) return Promise.resolve(this.readers);
    if (this.closed) return Promise.reject(this.#closedError());
    const d = deferred();
    this.#readerWaiters.push(d);
    if (!timeout) return d.promise;
    const timer = setTimeout(() => {
      this.#readerWaiters = this.#readerWaiters.filter((w) => w !== d);
      d.reject(new RequestTimeout(`no reader on ${this.channel} after ${timeout} ms`));
    }, timeout);
    return d.promise.finally(() => clearTimeout(timer));
  }

  /** Unacknowledged frames (the server has not placed them in every reader's buffer yet). */
  get inFlight() {
    return this.#window.length;
  }

  /**
   * Close the publisher. While its client reconnects, what send() took waits in the window:
   * close waits up to 10 s for the connection so that it goes out first; still down then, it
   * closes and rejects with ConnectionClosed saying how many values it drops.
   */
  async close() {
    if (this.closed) return;
    this.#closedByUser = true;
    // Holding for readers after a reconnect: wait for them (at most the rest of the grace),
    // or a writer ending right after a restart would send its last frames to nobody.
    if (this.#holding) await new Promise((resolve) => this.#holdWaiters.push(resolve));
    if (this.closed) return;
    if (this.id === null && this.#window.length && this.#client.state !== 'closed') {
      let timer;
      await new Promise((resolve) => {
        this.#deliverWaiters.push(resolve);
        timer = setTimeout(resolve, CLOSE_DELIVER_MS);
      });
      clearTimeout(timer);
      if (this.#holding) await new Promise((resolve) => this.#holdWaiters.push(resolve));
      if (this.closed) return;
      if (this.id === null) {
        const dropped = this.#window.length;
        this._closed();
        throw new ConnectionClosed(
          `${dropped} values sent to ${JSON.stringify(this.channel)} were not delivered: the ` +
          `connection was lost and did not come back before the publisher closed (a close waits ` +
          `${CLOSE_DELIVER_MS / 1000} s for it); they are dropped`);
      }
    }
    const id = this.id;
    // Written, not acknowledged: the close's answer comes after their acknowledgements (one
    // ordered stream), so without it they are not known taken.
    const unacked = this.#window.length;
    this._closed();
    if (id !== null && this.#client.connected) {
      let answered = false;
      try {
        await this.#client.request('close_publisher', { pub: id }, { timeout: LEAVE_MS });
        answered = true;
      } catch {
        // a stalled connection, or one lost just now: said below if values were in flight
      }
      if (!answered && unacked) {
        // Not silently (a control-room engineer: a stalled link's 40 values, and a cut's 80,
        // went with a close that returned normally). Said, not thrown: they may be on their
        // way, as the Python client says it.
        console.warn(
          `trio_stream: ${unacked} values sent to ${JSON.stringify(this.channel)} were not ` +
          `acknowledged: the server did not answer the publisher's close within ` +
          `${LEAVE_MS / 1000} s (a stalled or lost connection?); some may have reached readers, ` +
          'none are sent again');
      }
    }
  }
}

// ------------------------------------------------------------------------------------- rpc

const POSITIONAL = new Set(['positional_only', 'positional_or_keyword']);
const MAX_LISTED_METHODS = 50; // an UnknownMethod names at most these (as the Python proxy)
const MAX_STREAM_WINDOW = 1024; // a streaming call's window (protocol.md 6): 1-1024 values
const DEFAULT_STREAM_WINDOW = 16; // as the Python client's
// Streams left early whose ids the client remembers (Client._cancelStream): an answer that
// crossed the cancel comes within a round trip, so only the latest few matter.
const MAX_CANCELLED_REMEMBERED = 64;

/**
 * The methods of one provider, as described by the server: `proxy.methods` (descriptions),
 * `proxy.call(name, args, kwargs, {timeout})`, and for a generator (`stream: true` in its
 * description) `proxy.stream(name, args, kwargs, {window})`, a RemoteStream to iterate.
 * Arguments are checked against the description before anything is sent (a TypeError, as a
 * Python caller would get, also for `call` of a generator or `stream` of a plain method; a
 * method the provider does not expose: UnknownMethod, an RpcError).
 */
export class RpcProxy {
  constructor(client, provider, methods, timeout) {
    this.client = client;
    this.provider = provider;
    this.methods = methods;
    this.timeout = timeout;
    this.byName = new Map(methods.filter((m) => m && typeof m.name === 'string').map((m) => [m.name, m]));
  }

  async call(method, args = [], kwargs = {}, { timeout = this.timeout } = {}) {
    const desc = this.#described(method, args, kwargs);
    if (desc.stream === true) {
      // Its provider would refuse the plain call; say what to do instead.
      throw new TypeError(`${this.#named(method)} streams its values: iterate `
        + `proxy.stream(${JSON.stringify(method)}, args, kwargs) with for await, not proxy.call`);
    }
    return this.client.call(this.provider, method, args, kwargs, { timeout });
  }

  /** The values of streaming `method`: a RemoteStream (see Client.stream), nothing sent yet. */
  stream(method, args = [], kwargs = {}, { window = DEFAULT_STREAM_WINDOW } = {}) {
    const desc = this.#described(method, args, kwargs);
    if (desc.stream !== true) {
      throw new TypeError(`${this.#named(method)} returns one result, not a stream: `
        + `await proxy.call(${JSON.stringify(method)}, args, kwargs) instead of proxy.stream`);
    }
    return this.client.stream(this.provider, method, args, kwargs, { window });
  }

  #named(method) {
    return `${this.provider}.${method}()`;
  }

  // The description of `method`, once `args` and `kwargs` fit it (nothing sent otherwise).
  #described(method, args, kwargs) {
    const desc = this.byName.get(method);
    if (!desc) {
      // As the Python proxy's: an RpcError (nothing sent), naming what it does expose.
      const known = [...this.byName.keys()].sort();
      let listed = known.slice(0, MAX_LISTED_METHODS).join(', ') || 'none';
      if (known.length > MAX_LISTED_METHODS) listed += ` and ${known.length - MAX_LISTED_METHODS} more`;
      throw new UnknownMethod(`${JSON.stringify(this.provider)} exposes no method ${JSON.stringify(method)} (it has: ${listed})`);
    }
    checkArguments(desc, args, kwargs);
    return desc;
  }
}

const STREAM_DONE = Object.freeze({ value: undefined, done: true });

/**
 * The values of one streaming call (protocol.md 6.1), made by `client.stream()` or
 * `proxy.stream()`: `for await (const v of stream)`, or `next()` / `return()` as the async
 * iterator protocol wants. The call goes out on the first `next()` (as the Python client's
 * RemoteStream: a stream made and never iterated costs the provider nothing). Each value is
 * decoded with the client's payloadLimits as it is taken; credit goes back to the provider
 * once half a window has been taken. Leaving the loop early (`break`, `return()`, `close()`)
 * sends `cancel`: the provider's generator is closed and the values not taken are dropped.
 * A value that does not decode ends the stream (its loop throws a ProtocolError, the
 * provider is cancelled); the connection and other streams go on.
 */
export class RemoteStream {
  ended = false; // no more values will arrive (those queued may still be taken)

  #client;
  #fields; // the `call` request's fields but `id`
  #id = null; // the call's request id, once sent
  #started = false;
  #queue = []; // payloads arrived and not taken yet
  #waiters = []; // next() calls waiting for a value
  #taken = 0; // values taken since credit last went back
  #unthrown = null; // the error that ended it, for the next() after its last value

  constructor(client, fields, what) {
    this.#client = client;
    this.#fields = fields;
    this.provider = fields.provider;
    this.method = fields.method;
    this.window = fields.window;
    this.what = what; // `provider.method()`, for messages
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /** The next value: `{value, done}`; rejects with what ended the stream, after its values. */
  async next() {
    if (this.#queue.length) return this.#take(this.#queue.shift());
    if (this.ended) {
      const error = this.#unthrown;
      this.#unthrown = null;
      if (error) throw error;
      return STREAM_DONE;
    }
    if (!this.#started) this.#start();
    const d = deferred();
    this.#waiters.push(d);
    return d.promise;
  }

  async return() {
    this.close();
    return STREAM_DONE;
  }

  /** Stop the stream: the provider's generator is closed; values not taken are dropped. */
  close() {
    this.#queue = [];
    this.#unthrown = null; // left before the end: what ended it is nobody's concern now
    this.#client._cancelStream(this, this.#id); // (nothing if it ended, or never started)
    this._end(null);
  }

  async #start() {
    this.#started = true;
    try {
      this.#id = await this.#client._startStream(this, this.#fields);
    } catch (e) {
      this._end(e); // the client closed before it was connected (ConnectionClosed)
      return;
    }
    // Closed between the call going out and its id coming back here: cancel it now.
    if (this.ended) this.#client._cancelStream(this, this.#id);
  }

  // One value's payload arrived: to a waiting next(), else queued (at most a window of them).
  _item(payload) {
    if (this.ended) return;
    const waiter = this.#waiters.shift();
    if (!waiter) {
      this.#queue.push(payload);
      return;
    }
    try {
      waiter.resolve(this.#take(payload));
    } catch (e) {
      waiter.reject(e);
    }
  }

  // A value taken by the application: decoded (a failure ends the stream, not the connection),
  // and counted for the credit that lets the provider make more.
  #take(payload) {
    let value;
    try {
      if (!(payload instanceof Uint8Array)) throw new TypeError('an item without a payload');
      value = decode(payload, this.#client.payloadLimits);
    } catch (e) {
      this.close();
      const error = new ProtocolError(`${this.what}: a streamed value could not be decoded: ${e.message}`);
      error.cause = e;
      throw error;
    }
    if (!this.ended && ++this.#taken * 2 >= this.window) {
      this.#client._streamCredit(this, this.#id, this.#taken);
      this.#taken = 0;
    }
    return { value, done: false };
  }

  // No more values arrive: the stream finished (error null), failed (RemoteError, RpcError,
  // ProtocolError, ConnectionClosed), or was closed. Values queued stay readable, then the
  // error is thrown by the next `next()` (at once by a waiting one: nothing is queued then).
  _end(error) {
    if (this.ended) return;
    this.ended = true;
    const waiters = this.#waiters;
    this.#waiters = [];
    if (error && waiters.length) {
      waiters[0].reject(error);
      for (const w of waiters.slice(1)) w.resolve(STREAM_DONE);
      return;
    }
    this.#unthrown = error;
    for (const w of waiters) w.resolve(STREAM_DONE);
  }
}

function checkArguments(desc, args, kwargs) {
  const params = Array.isArray(desc.params) ? desc.params : [];
  const positional = params.filter((p) => POSITIONAL.has(p.kind));
  const varPos = params.some((p) => p.kind === 'var_positional');
  const varKw = params.some((p) => p.kind === 'var_keyword');
  const where = `${desc.name}()`;
  if (args.length > positional.length && !varPos) {
    throw new TypeError(`${where} takes ${positional.length} positional argument(s) but ${args.length} were given`);
  }
  const names = new Set(params.filter((p) => p.kind !== 'positional_only').map((p) => p.name));
  for (const k of Object.keys(kwargs)) {
    if (!names.has(k) && !varKw) throw new TypeError(`${where} got an unexpected keyword argument ${JSON.stringify(k)}`);
  }
  params.forEach((p) => {
    if (p.default !== null && p.default !== undefined) return; // has a default
    if (p.kind === 'var_positional' || p.kind === 'var_keyword') return;
    const byPosition = POSITIONAL.has(p.kind) && positional.indexOf(p) < args.length;
    if (!byPosition && !(p.kind !== 'positional_only' && p.name in kwargs)) {
      throw new TypeError(`${where} missing required argument ${JSON.stringify(p.name)}`);
    }
  });
}

// ------------------------------------------------------------------------------------- rpc: provider

// As the Python provider's (trio_stream/_rpc.py) and the server's (protocol.md 6).
const MAX_METHODS = 1000; // a client exposes at most this many
const MAX_METHOD_NAME = 200; // characters of a method's full name
const CALL_OVERHEAD_BYTES = 1024; // room for a call's answer around its value
const DESCRIBE_OVERHEAD_BYTES = 64; // what the server's reply adds to a `methods` answer
const FAIL_MESSAGE_MAX_BYTES = 16 * 1024; // a `fail` sends at most this of its message's start...
const FAIL_TRACEBACK_MAX_BYTES = 64 * 1024; // ...and of its traceback's end
const IDENTIFIER = /^[\p{ID_Start}_$][\p{ID_Continue}$\u200c\u200d]*$/u;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
// What describes a JS method to its callers: positional arguments, any number (JS has no
// keyword parameters, and a function's own names are not known to it).
const JS_PARAMS = Object.freeze([{ name: 'args', kind: 'var_positional', default: null, annotation: null }]);
const utf8 = new TextEncoder();
const utf8Lenient = new TextDecoder('utf-8'); // (a character cut in two becomes U+FFFD: dropped)

// Throws FrameTooLarge when `data` (what `what` encodes to) leaves no room for its call's
// envelope, said against the server's own setting (a user who set max_frame_bytes 4096 read
// "the server's limit of 3072" as a wrong figure), as _rpc.py's check_fits says it.
function checkFits(data, maxFrameBytes, what, advice) {
  const room = maxFrameBytes - CALL_OVERHEAD_BYTES;
  if (data.length > room) {
    throw new FrameTooLarge(`${what} ${data.length} bytes, over the ${room} that fit a call (the `
      + `server's max_frame_bytes, ${maxFrameBytes}, less ${CALL_OVERHEAD_BYTES} for the call's envelope); ${advice}`);
  }
}

/** `text` as Python's repr() shows a str: how the Python provider names things in refusals. */
function pyRepr(text) {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = '';
  for (const ch of text) {
    const c = ch.codePointAt(0);
    if (ch === '\\' || ch === quote) out += `\\${ch}`;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || (c >= 0x7f && c < 0xa0)) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return quote + out + quote;
}

/** The Python provider's no_such_method(): what a call of a method not exposed is told. */
function noSuchMethod(provider, method, names) {
  return `${pyRepr(String(provider))} exposes no method ${pyRepr(method)} (it has: ${listedNames(names)})`;
}

/** `names` sorted, at most MAX_LISTED_METHODS of them, for a message (the Python provider's _listed). */
function listedNames(names) {
  const ordered = [...names].sort();
  let listed = ordered.slice(0, MAX_LISTED_METHODS).join(', ') || 'none';
  if (ordered.length > MAX_LISTED_METHODS) listed += ` and ${ordered.length - MAX_LISTED_METHODS} more`;
  return listed;
}

/** `text` in at most `maxBytes` of UTF-8: its start (or its end), saying how much was cut. */
function clipText(text, maxBytes, keep = 'start') {
  const data = utf8.encode(text);
  if (data.length <= maxBytes) return text;
  const note = ` [... ${data.length - maxBytes} bytes cut]`;
  const cut = Math.max(maxBytes - note.length - 1, 0);
  if (keep === 'start') return utf8Lenient.decode(data.subarray(0, cut)).replace(/\ufffd$/, '') + note;
  return `${note.trimStart()}\n${utf8Lenient.decode(data.subarray(data.length - cut)).replace(/^\ufffd/, '')}`;
}

/** What a caller learns of what an exposed method threw: a `fail` within `room` bytes. */
function failOf(call, error, room) {
  let isError = false;
  let kind = 'Error';
  let message, trace;
  try {
    // Inside the try: an error whose `name` getter throws (or a revoked Proxy) made this
    // throw, which killed Node (an unhandled rejection) or left the caller to its timeout.
    isError = error instanceof Error;
    kind = clipText(String((isError && (error.name || error.constructor?.name)) || 'Error'), 200);
    message = isError ? String(error.message) : String(error);
    if (error instanceof AggregateError && Array.isArray(error.errors)) {
      const said = error.errors.slice(0, 3).map((e) => (e instanceof Error ? `${e.name}: ${e.message}` : String(e)));
      const more = error.errors.length - said.length;
      message += `: ${said.join('; ')}${more > 0 ? `; and ${more} more` : ''}`;
    }
    trace = isError && typeof error.stack === 'string' ? error.stack : '';
    for (let cause = isError ? error.cause : undefined, n = 0; cause !== undefined && n < 8; cause = cause?.cause, n++) {
      trace += `\nCaused by: ${cause instanceof Error ? cause.stack ?? `${cause.name}: ${cause.message}` : String(cause)}`;
    }
  } catch {
    message ??= '<the error could not be made a string>';
    trace ??= '';
  }
  const budget = Math.max(room - utf8.encode(kind).length - 64, 0); // 64: the map, its keys, the id
  message = clipText(message, Math.min(FAIL_MESSAGE_MAX_BYTES, Math.floor(budget / 2)));
  const left = budget - utf8.encode(message).length;
  return { op: 'fail', call, type: kind, message, traceback: clipText(trace, Math.min(FAIL_TRACEBACK_MAX_BYTES, left), 'end') };
}

const functionKind = (fn) => fn.constructor?.name; // AsyncFunction, GeneratorFunction, ...

/**
 * The provider side of RPC (protocol.md 6) for a Client: what it exposes, and the calls of it
 * that run now. It answers every `introspect` (an empty list when nothing is exposed) and every
 * `invoke` (`refuse` for a method it does not expose), as the Python provider does: a page that
 * exposes nothing tells its callers so at once instead of leaving them to their timeout.
 */
class RpcProvider {
  #client;
  #send; // (map) => void: a CONTROL message on the current connection
  #methods = new Map(); // full name -> {fn, owner, stream, description}
  // The calls running now, by the server's call id: a new table for each connection (a
  // restarted server numbers its calls from 1 again; what a call of the lost one returns
  // must not answer the new one's call of the same number).
  #running = new Map();

  constructor(client, send) {
    this.#client = client;
    this.#send = send;
  }

  get names() { return [...this.#methods.keys()].sort(); }
  get running() { return this.#running.size; }

  expose(obj, { name = null } = {}) {
    if (this.#client.state === 'closed') {
      throw new ConnectionClosed('the client is closed: nothing can be exposed through it');
    }
    if (obj === null || (typeof obj !== 'object' && typeof obj !== 'function')) {
      throw new TypeError(`expose: an object whose properties are the methods, not ${shown(obj)}`);
    }
    checkText('expose: name', name, true);
    if (name !== null && (!name || name.length > MAX_METHOD_NAME / 2 || !name.split('.').every((p) => IDENTIFIER.test(p)))) {
      throw new InvalidArgument(`service name ${pyRepr(name)}: use identifiers joined by dots, e.g. 'motor' or 'stage.x'`);
    }
    const prefix = name ? `${name}.` : '';
    const found = new Map();
    for (const key of Object.keys(obj)) {
      const fn = Object.getOwnPropertyDescriptor(obj, key)?.value; // (a getter is not called)
      if (typeof fn !== 'function') continue;
      const method = prefix + key;
      if (!key || method.length > MAX_METHOD_NAME) {
        throw new InvalidArgument(`method name ${pyRepr(method.slice(0, 60))}${method.length > 60 ? '...' : ''} has `
          + `${method.length} characters: the server takes 1 to ${MAX_METHOD_NAME}; rename it`);
      }
      if (LONE_SURROGATE.test(method)) throw new InvalidArgument(`method name ${pyRepr(method)} is not valid text (a lone surrogate): rename it`);
      const kind = functionKind(fn);
      const stream = kind === 'GeneratorFunction' || kind === 'AsyncGeneratorFunction';
      found.set(method, {
        fn, owner: obj, service: name, stream,
        description: {
          name: method, params: JS_PARAMS, returns: null, doc: null,
          async: kind === 'AsyncFunction' || kind === 'AsyncGeneratorFunction', stream,
        },
      });
    }
    if (!found.size) {
      const what = obj.constructor && obj.constructor !== Object ? `a ${obj.constructor.name}` : 'the object';
      throw new InvalidArgument(`${what} has no functions of its own to expose: expose a plain object whose `
        + 'properties are the methods, e.g. expose({ read: (n) => dev.read(n) }) (the methods of a class live '
        + 'on its prototype: expose({ read: dev.read.bind(dev) }))');
    }
    for (const method of found.keys()) {
      const held = this.#methods.get(method)?.owner;
      if (held !== undefined && held !== obj) { // the same object again: its methods as they are now
        throw new InvalidArgument(`a method ${pyRepr(method)} is exposed already, by another object: expose this `
          + "one under a name of its own (expose(obj, { name: '...' }) makes its methods 'name." + method + "')");
      }
    }
    const names = [...new Set([...this.#methods.keys(), ...found.keys()])].sort();
    if (names.length > MAX_METHODS) throw new LimitExceeded(`a client may expose at most ${MAX_METHODS} methods`);
    // The server closes a connection whose expose is over its frame limit, and the client
    // would send it again on each reconnect: refused here, before anything is exposed.
    const size = encode({ op: 'expose', methods: names }).length;
    const max = this.#client.limits.max_frame_bytes;
    if (max && size > max) {
      throw new LimitExceeded(`the names of the ${names.length} methods exposed take ${size} bytes, over the `
        + `server's max_frame_bytes of ${max}: expose fewer methods, or shorter names`);
    }
    for (const [method, entry] of found) this.#methods.set(method, entry);
    // Exposed while (re)connecting: the welcome exposes them all (reexpose).
    if (this.#client.state === 'open') this.#send({ op: 'expose', methods: names });
    return [...found.keys()].sort();
  }

  unexpose(target) {
    let removed, what;
    if (typeof target === 'string') {
      removed = this.#named(target);
      what = `no method and no name ${pyRepr(target.slice(0, 100))} is exposed`;
    } else if (target !== null && (typeof target === 'object' || typeof target === 'function')) {
      removed = [...this.#methods].filter(([, entry]) => entry.owner === target); // by identity
      what = `this ${target.constructor && target.constructor !== Object ? target.constructor.name : 'object'} is not exposed`;
    } else {
      throw new TypeError(`unexpose: an exposed object, a method's name or the name it was exposed under, not ${shown(target)}`);
    }
    if (!removed.length) {
      throw new InvalidArgument(`${what}: unexpose takes an exposed object, a method's name or the name it was `
        + `exposed under (exposed now: ${listedNames(this.#methods.keys())})`);
    }
    // Calls of them running now hold their entry: they finish and are answered; a call from
    // now on is refused as one of a method never exposed (onInvoke).
    for (const [method] of removed) this.#methods.delete(method);
    // The full list replaces the server's (protocol.md 6), an empty one too; while
    // (re)connecting, the welcome exposes what is left (reexpose).
    if (this.#client.state === 'open') this.#send({ op: 'expose', methods: this.names });
    return removed.map(([method]) => method).sort();
  }

  /**
   * The [method, entry] pairs a name withdraws, as callers call them (the Python provider's
   * _named): a method's full name, or the `name` of an expose (the methods exposed under it;
   * those under a longer name, 'stage.x', stay), or, as the Python client's rule (its method
   * name up to the last dot), the part before the last dot of a key that has dots itself
   * (expose({ 'stage.move': f }): unexpose('stage') withdraws it). '' and a name that is both
   * a method's full name and such a name are refused (InvalidArgument): nothing is withdrawn.
   */
  #named(target) {
    if (!target) {
      // Every method exposed without a name is "right under" '': one typo (an empty variable)
      // would withdraw them all.
      throw new InvalidArgument("unexpose('') names nothing: pass the exposed object, a method's full name "
        + `('read', 'stage.move') or the name it was exposed under ('stage') (exposed now: `
        + `${listedNames(this.#methods.keys())})`);
    }
    const lastDot = (method) => method.slice(0, Math.max(method.lastIndexOf('.'), 0)); // (rpartition)
    const method = this.#methods.has(target) ? [[target, this.#methods.get(target)]] : [];
    const under = [...this.#methods].filter(([name, entry]) => name !== target
      && (entry.service === target || lastDot(name) === target));
    if (method.length && under.length) {
      // 'stage.x': stage's x exposed under 'stage', and another object exposed under
      // 'stage.x': both went, where the one meant was one of them.
      const typeName = (o) => (typeof o === 'function' ? 'Function' : o.constructor?.name ?? 'Object');
      const owner = typeName(method[0][1].owner);
      const owners = [...new Set(under.map(([, entry]) => typeName(entry.owner)))].sort().join(', ');
      throw new InvalidArgument(`${pyRepr(target.slice(0, 100))} names both a method (of ${owner}) and the name `
        + `methods of ${owners} were exposed under (${listedNames(under.map(([name]) => name))}): pass the object `
        + 'to withdraw instead, unexpose(obj)');
    }
    return method.length ? method : under;
  }

  /** After each welcome: expose every method again (the server forgot them with the connection). */
  reexpose() {
    if (this.#methods.size) this.#send({ op: 'expose', methods: this.names });
  }

  /** The connection is gone: its calls have nobody to answer (the server failed them). */
  connectionLost(reason) {
    const lost = this.#running;
    this.#running = new Map();
    for (const invocation of lost.values()) invocation.abort(reason);
  }

  onIntrospect(msg) {
    if (!isInt(msg.call)) throw new ProtocolError('introspect without a call id');
    // Over max_frame_bytes the server would close this connection: the descriptions that fit.
    const room = (this.#client.limits.max_frame_bytes ?? DEFAULT_MAX_FRAME) - DESCRIBE_OVERHEAD_BYTES;
    const methods = [];
    let size = encode({ op: 'methods', call: msg.call, methods: [] }).length + 8;
    for (const entry of this.#methods.values()) {
      size += encode(entry.description).length;
      if (size > room) break;
      methods.push(entry.description);
    }
    this.#send({ op: 'methods', call: msg.call, methods });
  }

  onInvoke(msg) {
    const { call } = msg;
    if (!isInt(call)) throw new ProtocolError('invoke without a call id');
    const method = isText(msg.method) ? msg.method : String(msg.method);
    const refuse = (message) => this.#send({ op: 'refuse', call, message });
    const entry = this.#methods.get(method);
    if (!entry) return refuse(noSuchMethod(this.#client.name, method, this.#methods.keys()));
    const window = msg.window ?? null;
    if (entry.stream !== (window !== null)) {
      return refuse(entry.stream ? `${method} streams its values: iterate it (async for) instead`
        : `${method} returns one result: await it instead of iterating`);
    }
    if (window !== null && (!isInt(window) || window < 1)) throw new ProtocolError('invoke with a bad window');
    let args, kwargs;
    try {
      const value = decode(msg.args, this.#client.payloadLimits);
      if (!Array.isArray(value) || value.length !== 2 || !Array.isArray(value[0])
        || value[1] === null || typeof value[1] !== 'object' || Array.isArray(value[1]) || ArrayBuffer.isView(value[1])) {
        throw new ProtocolError('arguments must be [list, map with text keys]');
      }
      [args, kwargs] = value;
    } catch (e) {
      return refuse(`malformed arguments: ${e.message}`);
    }
    const keywords = kwargs instanceof Map ? [...kwargs.keys()] : Object.keys(kwargs);
    if (keywords.length) {
      return refuse(`${method} is a JavaScript method: it takes positional arguments only, not keyword `
        + `arguments (${keywords.map((k) => pyRepr(String(k))).join(', ')})`);
    }
    const controller = new AbortController();
    const running = this.#running;
    const invocation = {
      credit: window ?? 0,
      wake: null, // a stream waiting for credit
      abort(reason) {
        controller.abort(reason);
        this.wake?.();
      },
    };
    running.set(call, invocation);
    const options = Object.freeze({ signal: controller.signal, caller: isText(msg.caller) ? msg.caller : null, method });
    const argv = [...args, options]; // right after the caller's arguments (see Client.expose)
    // Answered only while the call is still this connection's (not aborted, not lost).
    const live = () => this.#running === running && running.get(call) === invocation;
    const answer = (map) => {
      if (!live()) return;
      running.delete(call);
      this.#send(map);
    };
    const maxFrame = () => this.#client.limits.max_frame_bytes ?? DEFAULT_MAX_FRAME;
    const room = () => maxFrame() - CALL_OVERHEAD_BYTES;
    const run = entry.stream ? this.#stream : this.#run;
    run.call(this, { call, method, entry, argv, invocation, live, answer, maxFrame, signal: controller.signal })
      .catch((e) => answer(failOf(call, e, room())))
      // A call is always answered: were the answer itself to throw, a plain one still goes.
      .catch(() => answer({ op: 'fail', call, type: 'Error', message: '<the error could not be described>', traceback: '' }));
  }

  onAbort(msg) {
    const invocation = this.#running.get(msg.call);
    if (!invocation) return; // answered already (the answer crossed the abort)
    this.#running.delete(msg.call);
    invocation.abort(new DOMException('the caller stopped waiting (cancelled, or its timeout)', 'AbortError'));
  }

  onDemand(msg) {
    const invocation = this.#running.get(msg.call);
    if (!invocation || !isInt(msg.n) || msg.n < 1) return; // ended while the credit was on its way
    invocation.credit += msg.n;
    invocation.wake?.();
  }

  async #run({ call, method, entry, argv, answer, maxFrame }) {
    await null; // the method starts after the frames that came with its invoke
    const value = await entry.fn.apply(entry.owner, argv);
    const data = encode(value === undefined ? null : value);
    checkFits(data, maxFrame(), `the result of ${method} encodes to`, 'stream large data through a channel');
    answer({ op: 'result', call, value: data });
  }

  // A generator's values: one `yield` per unit of credit, then `end` (protocol.md 6.1).
  async #stream({ call, method, entry, argv, invocation, live, answer, maxFrame, signal }) {
    await null;
    const values = entry.fn.apply(entry.owner, argv);
    try {
      for (;;) {
        while (invocation.credit < 1 && !signal.aborted) {
          await new Promise((resolve) => { invocation.wake = resolve; });
          invocation.wake = null;
        }
        if (signal.aborted) return;
        const step = await values.next();
        if (!live()) return;
        if (step.done) {
          answer({ op: 'end', call });
          return;
        }
        const data = encode(step.value === undefined ? null : step.value);
        checkFits(data, maxFrame(), `a value of ${method} encodes to`, 'yield smaller pieces');
        invocation.credit--;
        this.#send({ op: 'yield', call, value: data });
      }
    } finally {
      // Left early (aborted, the connection lost, a value too large): its `finally` blocks
      // run (a generator that ended already is not disturbed).
      await Promise.resolve(values.return?.()).catch(() => {});
    }
  }
}

// ------------------------------------------------------------------------------------- entry points

/** A client that starts connecting at once and keeps (re)connecting until closed. */
export function createClient(url, options = {}) {
  return new Client(url, options).start();
}

/**
 * Connect and resolve once the handshake is done. Rejects if the first attempt fails
 * (wrong URL, server down, handshake refused); later losses reconnect automatically.
 */
export async function connect(url, options = {}) {
  const client = new Client(url, { retryFirstConnect: false, ...options });
  try {
    return await client.start().ready({ timeout: options.connectTimeout ?? 10000 });
  } catch (e) {
    await client.close();
    throw e.message?.startsWith('not connected') ? new ConnectionClosed(e.message) : (client.lastError ?? e);
  }
}
