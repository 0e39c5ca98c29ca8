// health.js - /v1/health, polled, and the banner that says what is degraded.
//
// Design: the health endpoint is public and cheap (the server renders it on its own timer), so
// both pages poll it (every 10 s on the chat, faster on the dashboard, paused while the tab is
// hidden, refreshed at once when it becomes visible again or the stream reports a status). The
// banner lists exactly the services the server reports as not ok, with the server's own detail
// sentence (e.g. llm "unconfigured: no API key: set llm.api_key ..."), plus the memory state
// the last reply carried (metadata.somabrain_state) when it was not normal; it hides itself
// when everything is ok again. Nothing is shown that the server did not say.

import { el } from './ui.js';

export class HealthWatch {
  /** onHealth(health | null, error): every poll result; health is the parsed body. */
  constructor(onHealth, intervalMs = 10000) {
    this.onHealth = onHealth;
    this.intervalMs = intervalMs;
    this.timer = 0;
    this.inflight = null;
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') this.refresh();
    });
  }

  start() { this.refresh(); }

  /** Polls now (coalescing concurrent requests) and re-arms the timer. */
  refresh() {
    if (this.inflight) return this.inflight;
    clearTimeout(this.timer);
    this.inflight = this.poll().finally(() => {
      this.inflight = null;
      this.timer = setTimeout(() => {
        if (document.visibilityState === 'hidden') this.timer = setTimeout(() => this.refresh(), this.intervalMs);
        else this.refresh();
      }, this.intervalMs);
    });
    return this.inflight;
  }

  async poll() {
    try {
      const res = await fetch('/v1/health', { cache: 'no-store' });
      const body = await res.json();
      this.onHealth(body, null);
    } catch (e) {
      this.onHealth(null, e);
    }
  }
}

/** The services of a health body that are not ok: [{name, status, detail, critical, since}]. */
export function troubledServices(health) {
  const out = [];
  for (const [name, s] of Object.entries((health && health.services) || {})) {
    if (s && s.status !== 'ok') out.push({ name, ...s });
  }
  const outbox = health && health.components && health.components.memory_outbox;
  if (outbox && outbox.status && outbox.status !== 'ok') {
    const parts = [];
    if (Number.isFinite(outbox.pending)) parts.push(`${outbox.pending} write(s) pending`);
    if (Number.isFinite(outbox.oldest_age_s)) parts.push(`oldest ${Math.round(outbox.oldest_age_s)} s`);
    out.push({ name: 'memory outbox', status: outbox.status, detail: parts.join(', '), critical: false });
  }
  return out;
}

/**
 * Fills the banner element: health (null = unreachable), memory: {state, reason} from the last
 * reply's metadata, or null. Hides it when there is nothing to say.
 */
export function renderBanner(banner, health, memory) {
  const items = [];
  let level = 'warn';
  let title = '';
  if (!health) {
    title = 'Cannot reach the server; retrying.';
    level = 'down';
  } else {
    for (const s of troubledServices(health)) {
      items.push(el('li', {}, el('strong', {}, s.name), `: ${s.status}`, s.detail ? ` (${s.detail})` : ''));
    }
    if (memory && memory.state && memory.state !== 'normal') {
      items.push(el('li', {}, el('strong', {}, 'memory'), `: ${memory.state}`,
        memory.reason ? ` (${memory.reason})` : '',
        memory.state === 'down' ? ': answers use the chat history only' : ''));
    }
    if (health.status === 'down') level = 'down';
    if (items.length) {
      title = health.status === 'down' ? 'The server is down: ' : 'Degraded: some features are unavailable.';
      if (health.status === 'down') title += 'a critical service is not working.';
    }
  }
  // unchanged content is left alone: the banner is an alert, re-rendering would re-announce it
  const sig = `${level}|${title}|${items.map((i) => i.textContent).join('|')}`;
  if (banner.dataset.sig === sig) return;
  banner.dataset.sig = sig;
  if (!title) {
    banner.hidden = true;
    banner.replaceChildren();
    delete banner.dataset.level;
    return;
  }
  banner.dataset.level = level;
  banner.replaceChildren(el('p', { class: 'banner-title' }, title), items.length ? el('ul', {}, ...items) : '');
  banner.hidden = false;
}
