// sessions.js - the sessions sidebar: GET /v1/sessions (newest first) paged with next_cursor
// behind a "Load more" button, the active session marked, and a title per session.
//
// Design: the server keeps no title for a session, so the sidebar shows the first line of the
// session's first message as seen by this browser (kept in localStorage, at most MAX_TITLES
// entries, oldest dropped) and otherwise the time of the session's last activity. The list is
// data (this.items) re-rendered as a whole: it holds one page of a few dozen entries at a time.

import { api } from './api.js';
import { el, shortTime, toastError } from './ui.js';

const PAGE = 30;
const MAX_TITLES = 500;
const TITLES_KEY = 'soma.titles';

function loadTitles() {
  try { return JSON.parse(localStorage.getItem(TITLES_KEY) || '{}') || {}; } catch { return {}; }
}

export function sessionTitle(id) {
  return loadTitles()[id] || '';
}

/** Remembers the title of a session (first line of its first message, 60 characters). */
export function rememberTitle(id, text) {
  const line = String(text || '').split('\n').find((l) => l.trim()) || '';
  if (!line) return;
  const titles = loadTitles();
  if (titles[id]) return;
  titles[id] = line.trim().slice(0, 60);
  const keys = Object.keys(titles);
  for (const k of keys.slice(0, Math.max(0, keys.length - MAX_TITLES))) delete titles[k];
  try { localStorage.setItem(TITLES_KEY, JSON.stringify(titles)); } catch { /* full or disabled */ }
}

export function forgetTitle(id) {
  const titles = loadTitles();
  delete titles[id];
  try { localStorage.setItem(TITLES_KEY, JSON.stringify(titles)); } catch { /* ignore */ }
}

export class SessionList {
  /** list: the <ul>; more: "Load more" button; empty: the "no sessions" note; onOpen(id). */
  constructor({ list, more, empty, onOpen }) {
    this.list = list;
    this.more = more;
    this.empty = empty;
    this.onOpen = onOpen;
    this.items = [];
    this.cursor = null;
    this.active = null;
    this.loading = false;
    more.addEventListener('click', () => this.load(true));
  }

  async load(more = false) {
    if (this.loading) return;
    this.loading = true;
    this.more.disabled = true;
    try {
      const q = more && this.cursor ? `&cursor=${encodeURIComponent(this.cursor)}` : '';
      const r = await api(`/v1/sessions?limit=${PAGE}${q}`);
      if (!more) this.items = [];
      for (const s of r.sessions || []) {
        if (!this.items.some((x) => x.session_id === s.session_id)) this.items.push(s);
      }
      this.cursor = r.next_cursor || null;
      this.render();
    } catch (e) {
      toastError(e, 'Cannot list sessions');
    } finally {
      this.loading = false;
      this.more.disabled = false;
    }
  }

  setActive(id) {
    this.active = id;
    for (const b of this.list.querySelectorAll('button[data-id]')) {
      if (b.dataset.id === id) b.setAttribute('aria-current', 'true'); else b.removeAttribute('aria-current');
    }
  }

  /** A session just written to: first in the list (newest first). */
  touch(id) {
    const i = this.items.findIndex((s) => s.session_id === id);
    const s = i >= 0 ? this.items.splice(i, 1)[0] : { session_id: id };
    s.updated_at = new Date().toISOString();
    this.items.unshift(s);
    this.render();
  }

  remove(id) {
    this.items = this.items.filter((s) => s.session_id !== id);
    this.render();
  }

  render() {
    const rows = this.items.map((s) => {
      const title = sessionTitle(s.session_id) || `Chat ${s.session_id.slice(0, 8)}`;
      const b = el('button', { type: 'button', class: 'session-button', dataset: { id: s.session_id } },
        el('span', { class: 'session-title' }, title),
        el('span', { class: 'session-time small muted' }, shortTime(s.updated_at || s.created_at)));
      if (s.session_id === this.active) b.setAttribute('aria-current', 'true');
      b.addEventListener('click', () => this.onOpen(s.session_id));
      return el('li', {}, b);
    });
    this.list.replaceChildren(...rows);
    this.empty.hidden = this.items.length > 0;
    this.more.hidden = !this.cursor;
  }
}
