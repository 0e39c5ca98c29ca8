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
// presumed dead and replaced. States: online, stale, reconnecting, offline (no network, or
// several attempts failed).
// Parsing follows the SSE spec for what the server sends: fields data/id/retry/event, comments,
// blank line = dispatch; lines end in LF or CRLF (a lone CR is not treated as an end of line).

import { ApiError, authHeaders, errorFrom, needsSignIn, requestSignIn } from './api.js';

const STALE_MS = 12000;
const DEAD_MS = 30000;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 15000;
const OFFLINE_AFTER = 4;      // failed attempts in a row before the badge says offline
const STEADY_MS = 5000;       // a connection that lived this long resets the backoff

const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

export class EventStream {
  /**
   * url: the stream URL; onEvent(event, id): one parsed event; onState(state): badge updates;
   * onGone(err): the session is gone (404) or access was refused for good; the stream stops.
   */
  constructor({ url, onEvent, onState, onGone }) {
    this.url = url;
    this.onEvent = onEvent;
    this.onState = onState || (() => {});
    this.onGone = onGone || (() => {});
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
    this.stopper = new AbortController();
    this.lastData = Date.now();
    this.watchdog = setInterval(() => this.checkAlive(), 1000);
    this.wake = () => this.connection && this.connection.abort();
    window.addEventListener('online', this.wake);
    this.run();
  }

  stop() {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.watchdog);
    window.removeEventListener('online', this.wake);
    this.stopper.abort();
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

  checkAlive() {
    if (!this.connection || this.state === 'reconnecting' || this.state === 'offline') return;
    const quiet = Date.now() - this.lastData;
    if (quiet > DEAD_MS) this.connection.abort();
    else if (quiet > STALE_MS) this.setState('stale');
  }

  async run() {
    let attempt = 0;
    while (!this.stopped) {
      const connectedAt = Date.now();
      let endedCleanly = false;
      try {
        endedCleanly = await this.connectOnce();
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) { this.stop(); this.onGone(e); return; }
        if (e instanceof ApiError && needsSignIn(e.status)) {
          if (!(await requestSignIn({ status: e.status, message: e.message }))) {
            this.stop(); this.onGone(e); return;
          }
          continue;
        }
      }
      if (this.stopped) return;
      attempt = endedCleanly || Date.now() - connectedAt > STEADY_MS ? 0 : attempt + 1;
      this.setState(!navigator.onLine || attempt >= OFFLINE_AFTER ? 'offline' : 'reconnecting');
      const ceiling = Math.min(BACKOFF_BASE_MS * 2 ** attempt, BACKOFF_MAX_MS);
      await sleep(endedCleanly ? 50 + Math.random() * 200 : Math.random() * ceiling, this.stopper.signal);
      this.reconnects++;
    }
  }

  /** One connection, read to its end; true when the server ended it cleanly. */
  async connectOnce() {
    const ctl = new AbortController();
    this.connection = ctl;
    try {
      const headers = authHeaders({ Accept: 'text/event-stream' });
      if (this.lastId !== null) headers['Last-Event-ID'] = this.lastId;
      const res = await fetch(this.url, { headers, signal: ctl.signal, cache: 'no-store' });
      if (!res.ok) throw await errorFrom(res);
      this.lastData = Date.now();
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
    if (!data.length) return;
    let event;
    try { event = JSON.parse(data.join('\n')); } catch { return; }
    if (id !== null) this.lastId = id;
    try { this.onEvent(event, id); } catch (e) { console.error('event handler failed', e); }
  }
}
