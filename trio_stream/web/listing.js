// How the dashboard lists the server's channels and clients: how often (refresh() in
// dashboard.js), how many rows it draws, and what the count beside a table's title says.
//
// A listing costs the server ~4 µs of CPU per record and this page the drawing of every row:
// at 100,000 channels, one a second would take ~40 % of a server core for each open page (a
// control room keeps several open for days), and the first drawing of 25,003 rows froze the
// page, its plots too, for 22 s (headless Chromium, 2 cores; of 100,003, over a minute). So after a listing of many
// records the next one waits longer: a second for each RECORDS_PER_SECOND records (channels
// and clients), never less than REFRESH_MS nor more than REFRESH_MAX_MS; and a table draws
// its first MAX_TABLE_ROWS rows in its order (the filter and the column sorts pick which).
// The load cards and the plots do not wait: they come by subscription (the cards, should
// $stats be silent, by a `stats` request between two listings: refreshStats in dashboard.js).

/** The pace of a server with few channels: a listing a second. */
export const REFRESH_MS = 1000;
/** Records listed per second of the pace (~5 % of a server core for each page). */
export const RECORDS_PER_SECOND = 10000;
/** The slowest pace, whatever the server holds. */
export const REFRESH_MAX_MS = 30000;
/** The rows a table draws at most. */
export const MAX_TABLE_ROWS = 1000;

/**
 * Milliseconds from one listing to the next after one of `records` records.
 * @param {number} records
 * @returns {number}
 */
export function refreshDelayMs(records) {
  const count = Number.isFinite(records) && records > 0 ? records : 0;
  return Math.min(REFRESH_MAX_MS, Math.max(REFRESH_MS, Math.ceil((count / RECORDS_PER_SECOND) * 1000)));
}

/**
 * The count beside a table's title and its tooltip: `all` records listed, `matching` of them
 * through the filter, the first `shown` of those drawn; the pace, if slower than REFRESH_MS.
 * @returns {{text: string, title: string}}
 */
export function countText(all, matching, shown, paceMs = REFRESH_MS) {
  if (!all) return { text: '', title: '' };
  let text = matching === all ? `${all}` : `${matching} of ${all}`;
  const titles = [];
  if (shown < matching) {
    text = `first ${shown} of ${text}`;
    titles.push(`the table shows its first ${shown} rows: type in the filter, or sort by a column, to see others`);
  }
  let pace = '';
  if (paceMs > REFRESH_MS) {
    const seconds = Math.round(paceMs / 1000);
    pace = ` · every ${seconds} s`;
    titles.push(`listed every ${seconds} s rather than every second: a listing of this many channels and clients costs the server and this page time (the load cards and plots stay live)`);
  }
  return { text: `(${text})${pace}`, title: titles.join('\n') };
}
