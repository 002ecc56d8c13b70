// Just enough of a browser for a dashboard Panel and its Plotter in Node: elements that hold
// their properties and children, a <select> that shows only a value it has an option for
// (as a browser's does: blank otherwise), and a 2-D context that records what is drawn.

class ClassList {
  constructor() { this.names = new Set(); }
  toggle(name, on = !this.names.has(name)) { if (on) this.names.add(name); else this.names.delete(name); return on; }
  add(name) { this.names.add(name); }
  remove(name) { this.names.delete(name); }
  contains(name) { return this.names.has(name); }
}

/**
 * A 2-D context that records its drawing: `texts` ({text, color}: fillText with its fill
 * style) and `strokes` ({color, points}: each stroke() with its path's points).
 */
export function recordingContext() {
  const rec = { texts: [], strokes: [], path: [], fillStyle: '', strokeStyle: '' };
  const methods = {
    measureText: (text) => ({ width: 7 * String(text).length }),
    beginPath: () => { rec.path = []; },
    moveTo: (x, y) => rec.path.push([x, y]),
    lineTo: (x, y) => rec.path.push([x, y]),
    stroke: () => rec.strokes.push({ color: rec.strokeStyle, points: rec.path }),
    fillText: (text) => rec.texts.push({ text, color: rec.fillStyle }),
  };
  return new Proxy(rec, {
    get: (t, k) => methods[k] ?? (k in t ? t[k] : () => {}),
    set: (t, k, v) => { t[k] = v; return true; },
  });
}

export class FakeElement {
  constructor(tag) {
    this.tagName = tag.toUpperCase();
    this.children = [];
    this.classList = new ClassList();
    this.dataset = {};
    this.style = {};
    this.textContent = '';
    this.hidden = false;
    this.listeners = {};
    this._value = '';
  }

  get value() { return this._value; }
  set value(v) {
    // a select shows a value it has an option for, or nothing
    this._value = this.tagName !== 'SELECT' || this.children.some((o) => o.value === String(v)) ? String(v) : '';
  }

  append(...nodes) { this.children.push(...nodes.filter((n) => typeof n === 'object')); }
  replaceChildren(...nodes) { this.children = []; this.append(...nodes); }
  remove() {}
  addEventListener(type, fn) { (this.listeners[type] ??= []).push(fn); }
  dispatch(type, ev = {}) { for (const fn of this.listeners[type] ?? []) fn({ stopPropagation() {}, preventDefault() {}, ...ev }); }
  getBoundingClientRect() { return { left: 0, top: 0, width: 600, height: 300 }; }
  getContext() { return (this.ctx ??= recordingContext()); }
}

/** Install the fakes as the globals the dashboard's modules use. */
export function installFakeDom() {
  globalThis.document = { createElement: (tag) => new FakeElement(tag) };
  const theme = { '--plot-bg': '#ffffff', '--plot-grid': '#e8ecf2', '--plot-axis': '#98a2b3', '--plot-text': '#475467', '--plot-line': '#1f6feb' };
  globalThis.getComputedStyle = () => ({ getPropertyValue: (name) => theme[name] ?? '' });
  globalThis.ResizeObserver = class { observe() {} };
}

/**
 * A client whose subscriptions the test drives: `subs` lists each subscribe() call
 * ({name, opts, sub}); `sub.deliver(msg)` hands the panel a message, `sub.end(reason)` ends it.
 */
export function fakeClient() {
  const subs = [];
  const client = {
    state: 'open',
    subs,
    async subscribe(name, opts) {
      const handlers = {};
      const sub = {
        id: subs.length + 1, ended: false, retunes: [],
        on(event, fn) { handlers[event] = fn; },
        close() { this.ended = true; },
        retune(o) { this.retunes.push(o); return Promise.resolve(); },
        deliver(msg) { opts.onMessage({ lost: 0, gap: null, sender: 'w', time: Date.now() / 1000, ...msg }); },
        end(reason) { this.ended = true; handlers.end?.(reason); },
        emit(event, ...args) { handlers[event]?.(...args); }, // as the client's ('waiting', 'restored')
      };
      subs.push({ name, opts, sub });
      return sub;
    },
  };
  return client;
}
