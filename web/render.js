// render.js - how the chat page draws one event or a reply being written (chat.js owns the list).
//
// Design: pure functions from an event (or a pending generation {id, text}) to a fresh DOM node;
// the only HTML written is setMarkdown's (markdown.js). A reply stopped before any text says so
// rather than show an empty bubble.

import { setMarkdown } from './markdown.js';
import { el, shortTime } from './ui.js';
import { attachmentsView } from './uploads.js';

function metaLine(who, ev, extra) {
  return el('div', { class: 'msg-meta small' }, el('span', { class: 'msg-who' }, who),
    el('time', { datetime: ev.created_at || '' }, shortTime(ev.created_at)), extra || '');
}

export function renderEvent(ev) {
  const type = ev.type || '';
  const meta = ev.metadata || {};
  if (type === 'user') {
    const who = meta.source === 'quick_action' ? `You (quick action: ${meta.action})` : 'You';
    return el('article', { class: 'msg msg-user', dataset: { seq: ev.seq } }, metaLine(who, ev),
      el('div', { class: 'msg-body msg-plain' }, ev.message || ''), attachmentsView(ev));
  }
  if (type === 'assistant.final') {
    const body = el('div', { class: 'msg-body markdown' });
    setMarkdown(body, ev.message || '');
    if (!ev.message && meta.status === 'cancelled') body.append(el('p', { class: 'muted' }, '(stopped before any text)'));
    const tags = [];
    if (meta.status === 'cancelled') tags.push(el('span', { class: 'tag tag-warn' }, 'stopped'));
    if (meta.model) tags.push(el('span', { class: 'tag' }, meta.model));
    return el('article', { class: 'msg msg-assistant', dataset: { seq: ev.seq } },
      metaLine('SomaAgent', ev, el('span', { class: 'tags' }, ...tags)), body, attachmentsView(ev));
  }
  if (type === 'assistant.error' || type.endsWith('.error')) {
    const detail = meta.error && (meta.error.detail || meta.error.code);
    return el('article', { class: 'msg msg-error', role: 'note', dataset: { seq: ev.seq } },
      metaLine('Error', ev), el('div', { class: 'msg-body' }, ev.message || 'The reply failed.'),
      detail ? el('div', { class: 'small muted' }, String(detail)) : '');
  }
  if (type === 'tool.start' || type === 'tool.result') {
    const name = meta.tool || meta.name || 'tool', failed = meta.ok === false; // args, result or error shown
    const shown = type === 'tool.start' ? meta.args : failed ? meta.error : meta.result;
    return el('div', { class: 'notice', dataset: { seq: ev.seq } },
      el('details', {}, el('summary', {}, `${type === 'tool.start' ? 'Running' : failed ? 'Failed:' : 'Result of'} ${name}`),
        el('pre', { class: 'small' }, typeof shown === 'string' ? shown : JSON.stringify(shown ?? meta, null, 2))));
  }
  const label = type === 'policy.denied' ? 'Not allowed' : type || ev.role || 'event';
  return el('div', { class: 'notice small', dataset: { seq: ev.seq } }, `${label}: ${ev.message || ''}`);
}

export function renderPending(item) {
  const g = item.gen;
  const body = el('div', { class: 'msg-body markdown' });
  if (g.text) setMarkdown(body, g.text);
  else body.append(el('span', { class: 'thinking' }, 'thinking…'));
  return el('article', { class: 'msg msg-assistant msg-streaming', 'aria-busy': 'true', dataset: { gen: g.id } },
    metaLine('SomaAgent', {}, el('span', { class: 'tags' }, el('span', { class: 'tag' }, 'writing…'))), body);
}
