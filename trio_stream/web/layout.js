// The dashboard's panel layout in the URL's fragment, so that a link reproduces the screen.
// Pure (tested in Node). Format: panels separated by ';', each a comma-separated list of
// channel names (URI-encoded) with optional settings after '~': r=<max rate Hz, one of RATES_HZ>,
// y=<lo>:<hi> (a fixed y range). "#AnalogInput1" (the first dashboard's links) is one panel.

export const DEFAULT_RATE_HZ = 10;
// The rates a panel's menu offers (Hz). A link's rate is snapped to one of them: r=1000 was
// taken as is, so the panel asked the server for 1000 Hz with a 500-frame buffer, and its
// menu, which had no such entry, showed nothing.
export const RATES_HZ = [1, 2, 5, 10, 30];

/** The menu's rate nearest `hz` by ratio (7 -> 5, 1000 -> 30, 0.2 -> 1); the default for
 * anything but a positive number. */
export function snapRate(hz) {
  if (!(Number(hz) > 0)) return DEFAULT_RATE_HZ;
  const r = Math.min(Number(hz), RATES_HZ[RATES_HZ.length - 1]); // Infinity is nearest nothing by ratio
  let best = RATES_HZ[0];
  for (const x of RATES_HZ) if (Math.abs(Math.log(x / r)) < Math.abs(Math.log(best / r))) best = x;
  return best;
}

/** [{channels: [name], rate, y: [lo, hi] | null}] from a location.hash. */
export function parseLayout(hash) {
  const text = hash.startsWith('#') ? hash.slice(1) : hash;
  if (!text) return [];
  return text.split(';').filter(Boolean).map((part) => {
    const [names, opts = ''] = part.split('~');
    const panel = { channels: names.split(',').filter(Boolean).map(safeDecode), rate: DEFAULT_RATE_HZ, y: null };
    for (const opt of opts.split('&').filter(Boolean)) {
      const [k, v = ''] = opt.split('=');
      if (k === 'r' && Number(v) > 0) panel.rate = snapRate(v);
      if (k === 'y') {
        const [lo, hi] = v.split(':').map(Number);
        if (Number.isFinite(lo) && Number.isFinite(hi) && hi > lo) panel.y = [lo, hi];
      }
    }
    return panel;
  });
}

function safeDecode(s) {
  try { return decodeURIComponent(s); } catch { return s; }
}

/** The fragment (with '#', or '' for no panels) for a layout. */
export function formatLayout(panels) {
  const parts = panels.map((p) => {
    const opts = [];
    if (p.rate !== DEFAULT_RATE_HZ) opts.push(`r=${p.rate}`);
    if (p.y) opts.push(`y=${p.y[0]}:${p.y[1]}`);
    const names = p.channels.map((c) => encodeURIComponent(c)).join(',');
    return opts.length ? `${names}~${opts.join('&')}` : names;
  });
  return parts.length ? `#${parts.join(';')}` : '';
}
