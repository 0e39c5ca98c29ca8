// sse.js - one session's event stream: GET /v1/sessions/{id}/events?stream=true read with
// fetch() and parsed here, so that the API key goes in the Authorization header (EventSource
// cannot send headers).
//
// Design: a loop connects, reads frames until the stream ends or fails, then waits and
// reconnects with `Last-Event-ID: <id of the last event handled>`; the server replays what
// followed it, so nothing is missed or repeated (deltas included). The id is updated in the same
// step as the event is handed to onEvent, never before. Waits are full-jitter exponential
// backoff, min(500 ms * 2^attempt, 15 s); a stream the server ended cleanly reconnects almost at
// once (it ends a replay page that way). Any byte (keepalives come every 10 s) proves the
// connection alive; after 12 s without one the state is "stale", after 30 s the connection is
// presumed dead and replaced. The same 30 s bound holds for a connect: one that has no response
// headers by then (accepted, never answered) is abandoned and tried again. 429 and 503 wait at
// least their Retry-After (at most 60 s). 404 (the session is gone) and the other 4xx but 408
// and 429 (400 invalid_cursor, 403) are final: retrying cannot change them, so the stream stops
// and onGone is told; 401 (and 403 on the admin pages) asks for a key first. States: online,
// stale, reconnecting, offline (no network, or several attempts failed).
// Parsing follows the SSE spec for what the server sends: fields data/id/retry/event, comments,
// blank line = dispatch; lines end in LF or CRLF (a lone CR is not treated as an end of line).
// An `id:` sets where a reconnect resumes even in a frame without data. The server's `id: 0`
// with no data is its end marker (the session was deleted): the stream stops and onGone is told
// (a 404 session_deleted), rather than reconnect into a session created again under the id.
// Coming back online (the window's `online` event) replaces a live connection and ends a wait
// between attempts at once (each wait has its own AbortController).

import { ApiError, authHeaders, errorFrom, needsSignIn, requestSignIn } from './api.js';

// The waits, in ms; tests pass shorter ones (constructor option `timing`).
const TIMING = {
  staleMs: 12000,         // quiet this long: the badge says stale
  deadMs: 30000,          // quiet this long, or no response headers this long: the connection is replaced
  backoffBaseMs: 500,
  backoffMaxMs: 15000,
  retryAfterMaxMs: 60000, // a longer Retry-After is cut to this
  steadyMs: 5000,         // a connection that lived this long resets the backoff
};
const OFFLINE_AFTER = 4;  // failed attempts in a row before the badge says offline

/** Resolves after ms, or at once when signal aborts; leaves no listener behind either way. */
const sleep = (ms, signal) => new Promise((resolve) => {
  if (signal.aborted) { resolve(); return; }
  const done = () => { clearTimeout(t); signal.removeEventListener('abort', done); resolve(); };
  const t = setTimeout(done, ms);
  signal.addEventListener('abort', done, { once: true });
});

/** A Retry-After value (seconds or an HTTP-date) in ms, at most max; null when absent or unreadable. */
function retryAfterMs(value, max) {
  const v = (value || '').trim();
  let ms;
  if (/^\d+$/.test(v)) ms = Number(v) * 1000;
  else if (v && !Number.isNaN(Date.parse(v))) ms = Date.parse(v) - Date.now();
  else return null;
  return Math.min(Math.max(ms, 0), max);
}

/** A refusal that a retry cannot change: 404 and the other 4xx but 408 and 429 (401 is asked for a key first). */
const isFinal = (status) => status >= 400 && status < 500 && status !== 408 && status !== 429;

export class EventStream {
  /**
   * url: the stream URL; onEvent(event, id): one parsed event; onState(state): badge updates;
   * onGone(err): the session is gone (404), the request is refused for good (another 4xx), or
   * access was refused and no key given; the stream stops. timing: overrides of TIMING.
   */
  constructor({ url, onEvent, onState, onGone, timing }) {
    this.url = url;
    this.onEvent = onEvent;
    this.onState = onState || (() => {});
    this.onGone = onGone || (() => {});
    this.timing = { ...TIMING, ...timing };
    this.lastId = null;       // the `id:` of the last event handled: where a reconnect resumes
    this.state = '';
    this.stopped = true;
    this.reconnects = 0;      // connections after the first (for tests and the badge title)
  }

  /** Starts reading, resuming after lastId (a cursor string) when given. */
  start(lastId) {
    if (!this.stopped) return;
    this.lastId = lastId === undefined || lastId === null ? null : String(lastId);
    this.stopped = false;
    this.lastData = Date.now();
    this.watchdog = setInterval(() => this.checkAlive(), 1000);
    this.wake = () => {
      if (this.connection) this.connection.abort();
      if (this.nap) this.nap.abort(); // back online: no reason to sit out the backoff
    };
    window.addEventListener('online', this.wake);
    this.run();
  }

  stop() {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.watchdog);
    window.removeEventListener('online', this.wake);
    if (this.nap) this.nap.abort();
    if (this.connection) this.connection.abort();
  }

  /** Drops the current connection (the loop reconnects and resumes). */
  reconnectNow() {
    if (this.connection) this.connection.abort();
  }

  setState(s) {
    if (s === this.state) return;
    this.state = s;
    this.onState(s);
  }

  /** Every second: replaces a connection (or a connect) quiet for deadMs; marks a quiet one stale. */
  checkAlive() {
    if (!this.connection) return; // waiting between attempts
    const quiet = Date.now() - this.lastData;
    if (quiet > this.timing.deadMs) this.connection.abort();
    else if (quiet > this.timing.staleMs && this.state !== 'reconnecting' && this.state !== 'offline') {
      this.setState('stale');
    }
  }

  async run() {
    const t = this.timing;
    let attempt = 0;
    while (!this.stopped) {
      const connectedAt = Date.now();
      let endedCleanly = false;
      let atLeast = 0; // the server's Retry-After
      try {
        endedCleanly = await this.connectOnce();
      } catch (e) {
        if (this.stopped) return;
        if (e instanceof ApiError && needsSignIn(e.status)) {
          if (!(await requestSignIn({ status: e.status, message: e.message }))) {
            this.stop(); this.onGone(e); return;
          }
          continue;
        }
        if (e instanceof ApiError && isFinal(e.status)) { this.stop(); this.onGone(e); return; }
        if (e instanceof ApiError && typeof e.retryAfterMs === 'number') atLeast = e.retryAfterMs;
      }
      if (this.stopped) return;
      attempt = endedCleanly || Date.now() - connectedAt > t.steadyMs ? 0 : attempt + 1;
      this.setState(!navigator.onLine || attempt >= OFFLINE_AFTER ? 'offline' : 'reconnecting');
      const ceiling = Math.min(t.backoffBaseMs * 2 ** attempt, t.backoffMaxMs);
      const backoff = endedCleanly ? 50 + Math.random() * 200 : Math.random() * ceiling;
      this.nap = new AbortController();
      if (!this.stopped) await sleep(Math.max(backoff, atLeast), this.nap.signal);
      this.nap = null;
      this.reconnects++;
    }
  }

  /**
   * One connection, read to its end; true when the server ended it cleanly. Throws ApiError (with
   * retryAfterMs: the Retry-After in ms, or null) for an error status, else what fetch throws.
   */
  async connectOnce() {
    const ctl = new AbortController();
    this.connection = ctl;
    this.lastData = Date.now(); // checkAlive: no headers within deadMs from now aborts the connect
    try {
      const headers = authHeaders({ Accept: 'text/event-stream' });
      if (this.lastId !== null) headers['Last-Event-ID'] = this.lastId;
      const res = await fetch(this.url, { headers, signal: ctl.signal, cache: 'no-store' });
      this.lastData = Date.now();
      if (!res.ok) {
        const err = await errorFrom(res);
        err.retryAfterMs = retryAfterMs(res.headers.get('Retry-After'), this.timing.retryAfterMaxMs);
        throw err;
      }
      this.setState('online');
      await this.read(res.body.getReader());
      return true;
    } finally {
      this.connection = null;
    }
  }

  async read(reader) {
    const decoder = new TextDecoder();
    let buf = '';
    const frame = { data: [], id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      this.lastData = Date.now();
      if (this.state !== 'online') this.setState('online');
      buf += decoder.decode(value, { stream: true });
      let pos = 0;
      for (let nl = buf.indexOf('\n', pos); nl >= 0; nl = buf.indexOf('\n', pos)) {
        const end = nl > pos && buf.charCodeAt(nl - 1) === 13 ? nl - 1 : nl;
        this.line(buf.slice(pos, end), frame);
        pos = nl + 1;
        if (this.stopped) return;
      }
      buf = buf.slice(pos);
    }
  }

  line(line, frame) {
    if (line === '') { this.dispatch(frame); return; }
    if (line[0] === ':') return; // comment
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value[0] === ' ') value = value.slice(1);
    if (field === 'data') frame.data.push(value);
    else if (field === 'id' && !value.includes('\u0000')) frame.id = value;
    // `retry` and `event` are ignored: our backoff is our own, and the server names no events
  }

  dispatch(frame) {
    const { data, id } = frame;
    frame.data = [];
    frame.id = null;
    // as the spec says, the id is taken whether or not the frame has data (or data we can read):
    // the server's `id: 0` after a delete has none; an empty id means "no id" again
    if (id !== null) this.lastId = id === '' ? null : id;
    if (id === '0' && !data.length) { // the end marker: the session was deleted
      this.stop();
      this.onGone(new ApiError(404, 'session_deleted', 'The session was deleted.', ''));
      return;
    }
    if (!data.length) return;
    let event;
    try { event = JSON.parse(data.join('\n')); } catch { return; }
    try { this.onEvent(event, id); } catch (e) { console.error('event handler failed', e); }
  }
}
