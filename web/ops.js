// ops.js - the operator dashboard (/ops): services, queues, workers, task lookup, dead letters,
// schedules, memory outbox, each from its real endpoint, refreshed live.
//
// Design: every panel is {path, render}; one timer (every REFRESH_MS while the tab is visible
// and auto-refresh is on) reloads them all in parallel. Services come from /v1/health, which is
// public; the rest need credentials, and with auth on an admin key: a 401 or 403 opens the
// sign-in prompt once for all panels. A panel whose endpoint answers 404 says "not available in
// this build" and is not polled again until "Refresh now" (routes do not appear at run time);
// nothing is ever shown that the server did not send. Tables are built with textContent only.

import { api, isMissingRoute, setSignInHandler } from './api.js';
import { troubledServices } from './health.js';
import { el, formatAge, setBadge, shortTime, signInPrompt, toast, toastError, updateSignOut } from './ui.js';

const REFRESH_MS = 3000;
const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

/** A table of rows; columns: [[header, row => cell text or Node]]. */
function table(columns, rows, caption) {
  const head = el('tr', {}, ...columns.map(([h]) => el('th', { scope: 'col' }, h)));
  const body = rows.map((r) => el('tr', {}, ...columns.map(([, f]) => {
    const v = f(r);
    return el('td', {}, v instanceof Node ? v : v === null || v === undefined ? '' : String(v));
  })));
  return el('div', { class: 'table-wrap' },
    el('table', {}, caption ? el('caption', { class: 'visually-hidden' }, caption) : '', el('thead', {}, head), el('tbody', {}, ...body)));
}

const statusTag = (s) => el('span', { class: `tag status-${String(s).toLowerCase()}` }, String(s));
const num = (v) => (Number.isFinite(v) ? v.toLocaleString() : v ?? '');
const cellText = (v) => (v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));

// ---- panels ---------------------------------------------------------------------------------

class Panel {
  constructor(id, path, render) {
    this.section = $(id);
    this.status = this.section.querySelector('.panel-status');
    this.body = this.section.querySelector('.panel-body');
    this.path = path;
    this.render = render;
    this.missing = false;   // the endpoint is not in this build
    this.paused = false;    // the panel holds state a refresh would throw away
  }

  async refresh(force = false) {
    if ((this.missing || this.paused) && !force) return;
    try {
      const data = await api(typeof this.path === 'function' ? this.path() : this.path);
      this.missing = false;
      this.section.dataset.state = 'ok';
      this.status.textContent = '';
      this.render(data, this);
    } catch (e) {
      if (e.status === 404) {
        this.missing = true;
        this.section.dataset.state = 'missing';
        this.status.textContent = 'Not available in this build.';
        this.body.replaceChildren();
      } else {
        this.section.dataset.state = 'error';
        this.status.textContent = e.status === 401 || e.status === 403
          ? 'Sign in with an admin API key to see this.' : `Cannot load: ${e.message}`;
      }
    }
  }
}

function renderServices(h) {
  const s = h.services || {};
  $('services-summary').textContent =
    `Overall ${h.status}; version ${h.version || '?'}; up ${formatAge(h.uptime_s)}.`;
  const rows = Object.entries(s).map(([name, v]) => ({ name, ...v }));
  const outbox = h.components && h.components.memory_outbox;
  if (outbox) {
    rows.push({ name: 'memory outbox', status: outbox.status, critical: false,
      detail: `${outbox.pending ?? '?'} pending; oldest ${formatAge(outbox.oldest_age_s) || '-'}` });
  }
  const body = $('panel-services').querySelector('.panel-body');
  body.replaceChildren(table([
    ['Service', (r) => r.name],
    ['Status', (r) => statusTag(r.status)],
    ['Critical', (r) => (r.critical ? 'yes' : 'no')],
    ['Detail', (r) => r.detail || ''],
    ['Since', (r) => shortTime(r.since)],
  ], rows, 'Services'));
  $('panel-services').dataset.state = 'ok';
  $('panel-services').dataset.troubled = String(troubledServices(h).length);
}

const rate = (v) => (Number.isFinite(v) ? `${v.toFixed(2)}/s` : '');
const scopeNote = (d, p) => { p.status.textContent = d.scope ? `Scope: ${d.scope}.` : ''; };

const queues = new Panel('panel-queues', '/v1/queues', (d, p) => {
  const rows = d.queues || [];
  scopeNote(d, p);
  p.body.replaceChildren(rows.length ? table([
    ['Queue', (r) => r.name],
    ['Depth', (r) => el('span', { class: 'queue-depth', dataset: { queue: r.name } }, String(num(r.depth)))],
    ['Delayed', (r) => num(r.delayed)],
    ['Reserved', (r) => num(r.reserved)],
    ['Dead', (r) => num(r.dead)],
    ['Consumers', (r) => num(r.consumers)],
    ['Busy', (r) => num(r.busy)],
    ['Done (1 min avg)', (r) => rate(r.rate_1m)],
  ], rows, 'Queues') : el('p', { class: 'muted' }, 'No queues.'));
});

const workers = new Panel('panel-workers', '/v1/workers', (d, p) => {
  const rows = d.workers || [];
  scopeNote(d, p);
  p.body.replaceChildren(rows.length ? table([
    ['Worker', (r) => r.id],
    ['Queue', (r) => r.queue],
    ['State', (r) => statusTag(r.state)],
    ['Task', (r) => [r.task, r.task_id].filter(Boolean).join(' ')],
  ], rows, 'Workers') : el('p', { class: 'muted' }, 'No workers on this node.'));
});

// dead letters: the first page is refreshed live; once "Load more" was used, it holds still
let deadCursor = null;
const dead = new Panel('panel-dead', '/v1/dead-letters?limit=50', (d, p) => renderDead(d, p, false));

function renderDead(d, p, append) {
  const rows = d.items || [];
  deadCursor = d.next_cursor || null;
  $('dead-more').hidden = !deadCursor;
  const t = table([
    ['Task id', (r) => r.task_id],
    ['Task', (r) => r.task],
    ['Queue', (r) => r.queue],
    ['Tenant', (r) => r.tenant],
    ['Error', (r) => cellText(r.error)],
    ['Retries', (r) => num(r.retries)],
    ['Failed', (r) => shortTime(r.failed_at)],
    ['', (r) => el('span', { class: 'row-actions', dataset: { task: r.task_id } },
      el('button', { type: 'button', onclick: () => deadAction(r.task_id, 'requeue'), 'aria-label': `Requeue ${r.task_id}` }, 'Requeue'),
      el('button', { type: 'button', class: 'danger', onclick: () => deadAction(r.task_id, 'drop'), 'aria-label': `Drop ${r.task_id}` }, 'Drop'))],
  ], rows, 'Dead letters');
  if (!append) p.body.replaceChildren(rows.length ? t : el('p', { class: 'muted' }, 'No dead letters.'));
  else if (rows.length) p.body.append(t);
}

/** Requeue (POST .../requeue: fresh attempts) or drop (DELETE) a dead letter. */
async function deadAction(taskId, what) {
  if (what === 'drop' && !confirm(`Drop dead letter ${taskId}? The task will not run again.`)) return;
  try {
    if (what === 'requeue') await api(`/v1/dead-letters/${enc(taskId)}/requeue`, { method: 'POST' });
    else await api(`/v1/dead-letters/${enc(taskId)}`, { method: 'DELETE' });
    toast(`Task ${taskId} ${what === 'requeue' ? 'requeued' : 'dropped'}.`, 'ok');
    dead.paused = false;
    refreshAll(true);
  } catch (e) {
    toastError(e, `Cannot ${what} ${taskId}`);
  }
}

/** The first array in a body ({schedules: [...]}, {items: [...]}) as a generic table. */
function genericList(d, p, name) {
  const rows = Array.isArray(d) ? d : Object.values(d || {}).find(Array.isArray) || [];
  if (!rows.length) { p.body.replaceChildren(el('p', { class: 'muted' }, `No ${name}.`)); return; }
  const keys = [...new Set(rows.slice(0, 20).flatMap((r) => Object.keys(r || {})))].slice(0, 8);
  p.body.replaceChildren(table(keys.map((k) => [k, (r) => cellText(r[k])]), rows, name));
}

const schedules = new Panel('panel-schedules', '/v1/schedules', (d, p) => genericList(d, p, 'schedules'));

// memory outbox: counts, and the failed items with retry / drop (paths as in docs/api.md)
const outbox = new Panel('panel-outbox', '/v1/memory/outbox', (d, p) => {
  const items = d.items || [];
  const summary = el('p', {}, `${num(d.pending ?? 0)} pending, ${num(d.failed ?? 0)} failed`,
    Number.isFinite(d.oldest_age_s) ? `; oldest ${formatAge(d.oldest_age_s)}` : '', '.');
  const keys = [...new Set(items.slice(0, 20).flatMap((r) => Object.keys(r || {})))].filter((k) => k !== 'value').slice(0, 6);
  const cols = keys.map((k) => [k, (r) => cellText(r[k])]);
  cols.push(['', (r) => (r.id === undefined ? '' : el('span', { class: 'row-actions' },
    el('button', { type: 'button', onclick: () => outboxAction(r.id, 'retry') }, 'Retry'),
    el('button', { type: 'button', class: 'danger', onclick: () => outboxAction(r.id, 'drop') }, 'Drop')))]);
  p.body.replaceChildren(summary, items.length ? table(cols, items, 'Outbox items') : '');
});

async function outboxAction(id, what) {
  if (what === 'drop' && !confirm(`Drop memory write ${id}? It will not be delivered.`)) return;
  try {
    // retry is POST .../{id}/retry; a drop is DELETE .../{id} (docs/api.md, Memory)
    if (what === 'retry') await api(`/v1/memory/outbox/${enc(id)}/retry`, { method: 'POST' });
    else await api(`/v1/memory/outbox/${enc(id)}`, { method: 'DELETE' });
    toast(`Outbox item ${id}: ${what === 'retry' ? 'retrying' : 'dropped'}.`, 'ok');
    outbox.refresh(true);
  } catch (e) {
    if (isMissingRoute(e)) toast(`${what} of outbox items is not available in this build.`);
    else toastError(e, `Cannot ${what} ${id}`);
  }
}

// ---- task lookup ----------------------------------------------------------------------------

async function lookupTask(e) {
  e.preventDefault();
  const id = $('task-id').value.trim();
  const panel = $('panel-task');
  const status = panel.querySelector('.panel-status');
  const body = panel.querySelector('.panel-body');
  if (!id) return;
  status.textContent = 'Looking up…';
  body.replaceChildren();
  try {
    const t = await api(`/v1/tasks/${enc(id)}`);
    status.textContent = '';
    const fields = ['task_id', 'task', 'queue', 'status', 'retries', 'started_at', 'completed_at', 'error',
      'dead_letter'];
    const dl = el('dl', { class: 'fields' });
    for (const f of fields) {
      if (t[f] === undefined || t[f] === null) continue;
      dl.append(el('dt', {}, f), el('dd', {}, f === 'status' ? statusTag(t[f]) : cellText(t[f])));
    }
    if (t.result !== undefined && t.result !== null) {
      dl.append(el('dt', {}, 'result'), el('dd', {}, el('pre', { class: 'small' }, JSON.stringify(t.result, null, 2))));
    }
    body.replaceChildren(dl);
  } catch (err) {
    if (isMissingRoute(err)) status.textContent = 'Not available in this build.';
    else if (err.status === 404) status.textContent = `No task ${id}.`;
    else status.textContent = `Cannot look it up: ${err.message}`;
  }
}

// ---- refresh loop ---------------------------------------------------------------------------

const panels = [queues, workers, dead, schedules, outbox];
let timer = 0;
let refreshing = null;

async function refreshHealth() {
  try {
    const res = await fetch('/v1/health', { cache: 'no-store' });
    renderServices(await res.json());
    setBadge('online');
  } catch {
    setBadge('offline');
    $('services-summary').textContent = 'Cannot reach the server; retrying.';
  }
}

function refreshAll(force = false) {
  if (refreshing) return refreshing;
  clearTimeout(timer);
  refreshing = Promise.all([refreshHealth(), ...panels.map((p) => p.refresh(force))]).finally(() => {
    refreshing = null;
    $('updated-at').textContent = `Updated ${new Date().toLocaleTimeString()}`;
    schedule();
  });
  return refreshing;
}

function schedule() {
  clearTimeout(timer);
  if (!$('auto-refresh').checked) return;
  timer = setTimeout(() => {
    if (document.visibilityState === 'hidden') schedule(); else refreshAll();
  }, REFRESH_MS);
}

function boot() {
  setSignInHandler(signInPrompt, { forbidden: true });
  updateSignOut();
  $('refresh-now').addEventListener('click', () => { dead.paused = false; refreshAll(true); });
  $('auto-refresh').addEventListener('change', schedule);
  $('task-form').addEventListener('submit', lookupTask);
  $('dead-more').addEventListener('click', async () => {
    if (!deadCursor) return;
    dead.paused = true; // keep the pages the operator asked for
    try {
      renderDead(await api(`/v1/dead-letters?limit=50&cursor=${enc(deadCursor)}`), dead, true);
    } catch (e) {
      toastError(e, 'Cannot load more dead letters');
    }
  });
  document.addEventListener('visibilitychange', () => { if (document.visibilityState === 'visible') refreshAll(); });
  refreshAll(true).then(() => { document.body.dataset.ready = '1'; });
}

boot();
