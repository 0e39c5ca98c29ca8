// chat.js - the chat page (/): sessions, history, sending, the live reply, quick actions.
//
// Design: one session is open at a time. Opening it reads the newest HISTORY_PAGE events
// (GET /v1/sessions/{id}/history) and then streams from the last of them
// (GET .../events?stream=true with Last-Event-ID = its seq), so the stream carries exactly what
// followed: the rest of a reply in progress, then everything new. Older events are read on
// demand, page by page (GET .../events?after=&limit=), as the reader scrolls up.
// A reply is shown as a "pending" item per generation (metadata.generation_id): deltas append
// their text in stream_index order (an index already seen is skipped, so a replay after a
// reconnect cannot duplicate text; an assistant.thinking of a generation that has text means
// its task started over, so the text is dropped), and the committed assistant.final (or assistant.error)
// replaces it. Committed events are keyed by event_id, so the user's message, shown as soon as
// the POST answers, is not shown again when the stream delivers it.
// Delta rendering is coalesced to one markdown render per animation frame (render.js draws).
// A session deleted elsewhere (the stream's end marker, or a 404) becomes a new chat, its replies
// and Stop gone with it; one reset elsewhere (a session.reset event) is opened again.

import { api, apiKey, isMissingRoute, requestSignIn, runtimeConfig, setSignInHandler, uuid4 } from './api.js';
import { HealthWatch, renderBanner } from './health.js';
import { setMarkdown } from './markdown.js';
import { MessageList } from './messages.js';
import { renderEvent, renderPending } from './render.js';
import { SessionList, forgetTitle, rememberTitle, sessionTitle } from './sessions.js';
import { EventStream } from './sse.js';
import { setBadge, signInPrompt, toast, toastError, updateSignOut } from './ui.js';
import { Attachments } from './uploads.js';

const HISTORY_PAGE = 200;
const OLDER_PAGE = 200;
const FINISHED_GENS = 64;   // generation ids remembered as finished (late deltas are ignored)
const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

const state = {
  sessionId: null,     // the open session (client-generated for a new chat)
  exists: false,       // the server knows it (opened, or the first message was sent)
  stream: null,        // its EventStream
  gens: new Map(),     // generation_id -> {key, text, next, thinking}
  finished: [],        // recently finished generation ids
  awaiting: false,     // a message was posted and its reply has not started yet
  lastReplySeq: 0,     // seq of the newest assistant.final / error seen (a fast reply can beat the POST's answer)
  sending: false,
  oldestSeq: null,     // seq of the oldest loaded event
  openToken: 0,        // bumps on every open: late answers for another session are dropped
  health: null,
  memory: null,        // {state, reason} of the last reply's metadata
  config: null,        // /v1/runtime-config
};

let list, sessions, attach, health;

// ---- rendering ----------------------------------------------------------------------------

// A streaming reply is updated in place: the conversation is an aria-live log, and a node
// replaced on every delta would be announced again and again (the bubble is aria-busy instead).
function updateItem(item, node) {
  if (item.kind !== 'pending' || !item.gen.text) return false;
  setMarkdown(node.querySelector('.msg-body'), item.gen.text);
  return true;
}

function renderItem(item) {
  return item.kind === 'pending' ? renderPending(item) : renderEvent(item.event);
}

const isHidden = (ev) => ev.type === 'system.keepalive' || ev.type === 'uploads.progress' ||
  ev.type === 'assistant.delta' || ev.type === 'assistant.thinking';
const toItem = (ev) => ({ key: ev.event_id, seq: ev.seq, kind: 'event', event: ev });

// ---- the live reply -------------------------------------------------------------------------

let renderQueued = new Set();
let renderFrame = 0;

function scheduleRender(key) {
  renderQueued.add(key);
  if (renderFrame) return;
  renderFrame = requestAnimationFrame(() => {
    renderFrame = 0;
    const keys = renderQueued;
    renderQueued = new Set();
    for (const k of keys) list.refresh(k);
  });
}

function generation(id) {
  const gid = id || 'current';
  let g = state.gens.get(gid);
  if (!g) {
    g = { id: gid, key: `gen:${gid}`, text: '', next: 0, thinking: true };
    state.gens.set(gid, g);
    list.upsert({ key: g.key, seq: Infinity, kind: 'pending', gen: g });
  }
  return g;
}

function updateGenerating() {
  const busy = state.gens.size > 0 || state.awaiting;
  $('stop').hidden = !busy;
}

function applyEvent(ev) {
  const type = ev.type || '';
  const meta = ev.metadata || {};
  if (type === 'system.keepalive' || type === 'uploads.progress') return;
  if (type === 'status' || type.startsWith('status.') || type === 'system.status') { health.refresh(); return; }
  if (type === 'session.reset') { // reset elsewhere (the API, another tab): what is shown is gone
    toast('This session was reset elsewhere; its messages were removed.', 'info');
    openSession(state.sessionId);
    return;
  }
  if (type === 'assistant.thinking' || type === 'assistant.delta') {
    if (state.finished.includes(meta.generation_id)) return;
    const g = generation(meta.generation_id);
    if (type === 'assistant.thinking' && (g.text || g.next)) {
      // the reply starts over (its task ran again: a restart, a retry): its deltas count from 0
      g.text = '';
      g.next = 0;
    }
    if (type === 'assistant.delta') {
      const idx = Number.isInteger(meta.stream_index) ? meta.stream_index : g.next;
      if (idx < g.next) return; // seen already: a replay after a reconnect
      g.next = idx + 1;
      g.text += ev.message || '';
    }
    state.awaiting = false;
    updateGenerating();
    scheduleRender(g.key);
    return;
  }
  if (!ev.event_id || list.has(ev.event_id)) return;
  if (type === 'assistant.final' || type.endsWith('.error')) {
    const gid = meta.generation_id || 'current';
    const g = state.gens.get(gid);
    if (g) { list.remove(g.key); state.gens.delete(gid); }
    state.finished.push(gid);
    state.lastReplySeq = Math.max(state.lastReplySeq, ev.seq || 0);
    if (state.finished.length > FINISHED_GENS) state.finished.shift();
    state.awaiting = false;
    if (meta.somabrain_state) {
      state.memory = { state: meta.somabrain_state, reason: meta.somabrain_reason || '' };
      renderBanner($('health-banner'), state.health, state.memory);
    }
  }
  if (type === 'user' && state.oldestSeq === null) state.oldestSeq = ev.seq;
  if (type === 'user' && ev.seq === 1) rememberTitle(state.sessionId, ev.message);
  list.upsert(toItem(ev));
  $('empty-chat').hidden = true;
  updateGenerating();
}

// ---- sessions -------------------------------------------------------------------------------

function stopStream() {
  if (state.stream) state.stream.stop();
  state.stream = null;
  setBadge(state.health ? 'online' : 'offline');
}

function startStream(lastId) {
  stopStream();
  const id = state.sessionId;
  const s = new EventStream({
    url: `/v1/sessions/${enc(id)}/events?stream=true`,
    onEvent: (ev) => { if (state.stream === s) applyEvent(ev); },
    onState: (st) => { if (state.stream === s) setBadge(st); },
    onGone: (err) => {
      if (state.stream !== s) return;
      state.stream = null;
      setBadge(state.health ? 'online' : 'offline');
      if (err.status === 404) sessionGone(id, 'This session was deleted (elsewhere or in another tab); starting a new chat.');
      else toastError(err, 'The live stream stopped');
    },
  });
  state.stream = s;
  s.start(lastId);
}

/** The session is gone (deleted here or elsewhere): its replies end, it leaves the list and the
 * title store, and an open view of it becomes a new chat (whose messages can never mix with it). */
function sessionGone(id, message, kind = 'info') {
  sessions.remove(id);
  forgetTitle(id);
  toast(message, kind);
  if (state.sessionId === id) newChat();
}

function resetView(id, exists) {
  state.openToken++;
  stopStream();
  state.sessionId = id;
  state.exists = exists;
  state.gens.clear();
  state.finished = [];
  state.awaiting = false;
  state.lastReplySeq = 0;
  state.oldestSeq = null;
  list.reset([], false);
  $('older-status').hidden = true;
  $('empty-chat').hidden = false;
  $('reset-session').disabled = !exists;
  $('delete-session').disabled = !exists;
  $('chat-title').textContent = exists ? sessionTitle(id) || `Chat ${id.slice(0, 8)}` : 'New chat';
  sessions.setActive(exists ? id : null);
  updateGenerating();
  closeSidebar();
}

function newChat() {
  resetView(uuid4(), false);
  if (location.hash) history.replaceState(null, '', location.pathname);
  $('composer-input').focus();
}

async function openSession(id) {
  resetView(id, true);
  const token = state.openToken;
  if (location.hash !== `#/s/${id}`) history.replaceState(null, '', `#/s/${id}`);
  let h;
  try {
    h = await api(`/v1/sessions/${enc(id)}/history?limit=${HISTORY_PAGE}`);
  } catch (e) {
    if (token !== state.openToken) return;
    if (e.status === 404) {
      sessionGone(id, 'That session does not exist (it may have been deleted); starting a new chat.');
    } else {
      toastError(e, 'Cannot open the session');
    }
    return;
  }
  if (token !== state.openToken) return;
  const events = h.events || [];
  state.oldestSeq = events.length ? events[0].seq : null;
  list.reset(events.filter((e) => !isHidden(e)).map(toItem), events.length === HISTORY_PAGE && events[0].seq > 1);
  $('empty-chat').hidden = events.length > 0;
  const first = events.find((e) => e.type === 'user');
  if (first && first.seq === 1) {
    rememberTitle(id, first.message);
    $('chat-title').textContent = sessionTitle(id);
  }
  startStream(String(events.length ? events[events.length - 1].seq : 0));
}

async function loadOlder() {
  const token = state.openToken;
  const id = state.sessionId;
  const first = state.oldestSeq;
  if (!first || first <= 1) { list.prependOlder([], false); return; }
  const status = $('older-status');
  status.textContent = 'Loading earlier messages…';
  status.hidden = false;
  let after = Math.max(0, first - 1 - OLDER_PAGE);
  try {
    for (;;) {
      const r = await api(`/v1/sessions/${enc(id)}/events?after=${after}&limit=${OLDER_PAGE}`);
      if (token !== state.openToken) return;
      const evs = (r.events || []).filter((e) => e.seq < first);
      if (evs.length || after === 0) {
        if (evs.length) state.oldestSeq = evs[0].seq;
        list.prependOlder(evs.filter((e) => !isHidden(e)).map(toItem), after > 0);
        status.textContent = after > 0 ? '' : 'Beginning of the conversation.';
        status.hidden = after > 0;
        return;
      }
      after = Math.max(0, after - OLDER_PAGE); // a gap in seq (a reset): look further back
    }
  } catch (e) {
    if (token !== state.openToken) return;
    status.hidden = true;
    list.prependOlder([], true);
    toastError(e, 'Cannot load earlier messages');
  }
}

// ---- sending --------------------------------------------------------------------------------

async function send(action) {
  if (state.sending) return;
  const input = $('composer-input');
  let text = input.value;
  let files = [];
  if (!action) {
    if (!text.trim() && !attach.count) return;
    if (attach.busy) toast('Waiting for the uploads to finish…', 'info');
    files = await attach.finished();
    if (files.length < attach.count) {
      toast('Some files did not upload: remove them (or add them again) and send.');
      return;
    }
    if (!text.trim()) text = `Attached: ${files.map((f) => f.filename).join(', ')}`;
  }
  const id = state.sessionId;
  const body = action ? { session_id: id, action } : { session_id: id, message: text };
  if (files.length) {
    body.attachments = files.map((f) => f.id);
    body.metadata = { attachments: files };
  }
  state.sending = true;
  $('send').disabled = true;
  try {
    const r = await api(action ? '/v1/session/action' : '/v1/session/message', { method: 'POST', body });
    if (state.sessionId !== id) return;
    if (!action) {
      input.value = '';
      autosize();
      attach.clear();
      list.upsert(toItem({
        event_id: r.event_id, session_id: id, seq: r.seq, role: 'user', type: 'user', message: text,
        attachments: body.attachments || [], metadata: body.metadata || {}, created_at: new Date().toISOString(),
      }));
      $('empty-chat').hidden = true;
      if (state.oldestSeq === null) state.oldestSeq = r.seq;
      if (r.seq === 1) rememberTitle(id, text);
    }
    state.awaiting = state.lastReplySeq < r.seq; // unless the reply already came on the stream
    updateGenerating();
    if (!state.exists) {
      state.exists = true;
      history.replaceState(null, '', `#/s/${id}`);
      $('reset-session').disabled = false;
      $('delete-session').disabled = false;
    }
    $('chat-title').textContent = sessionTitle(id) || `Chat ${id.slice(0, 8)}`;
    sessions.touch(id);
    sessions.setActive(id);
    // a quick action's text is the server's: let the stream bring the user event too
    if (!state.stream) startStream(String(action ? r.seq - 1 : r.seq));
  } catch (e) {
    toastError(e, 'Not sent');
  } finally {
    state.sending = false;
    $('send').disabled = false;
  }
}

async function stopReply() {
  try {
    await api(`/v1/sessions/${enc(state.sessionId)}/cancel`, { method: 'POST' });
  } catch (e) {
    if (isMissingRoute(e)) toast('Stopping a reply is not available in this build of the server.');
    else toastError(e, 'Cannot stop the reply');
  }
}

async function resetSession() {
  const id = state.sessionId;
  if (!confirm('Reset this session? Its messages are removed; the session stays.')) return;
  if (state.sessionId === id) stopStream(); // its session.reset notice is ours: not told again
  try {
    await api(`/v1/sessions/${enc(id)}/reset`, { method: 'POST' });
    toast('Session reset.', 'ok');
  } catch (e) {
    toastError(e, 'Cannot reset');
  }
  if (state.sessionId === id) openSession(id);
}

async function deleteSession() {
  const id = state.sessionId;
  if (!confirm('Delete this session, its messages and attachments? This cannot be undone.')) return;
  try {
    await api(`/v1/sessions/${enc(id)}`, { method: 'DELETE' });
    sessionGone(id, 'Session deleted.', 'ok');
  } catch (e) {
    toastError(e, 'Cannot delete');
  }
}

// ---- page wiring ----------------------------------------------------------------------------

function autosize() {
  const t = $('composer-input');
  if (!t.value) { t.style.height = ''; return; } // back to one row (an empty box would measure its placeholder)
  t.style.height = 'auto';
  t.style.height = `${Math.min(t.scrollHeight, 240)}px`;
}

function closeSidebar() {
  document.body.classList.remove('sidebar-open');
  $('sidebar-toggle').setAttribute('aria-expanded', 'false');
}

function route() {
  const m = /^#\/s\/([A-Za-z0-9_-]{1,64})$/.exec(location.hash);
  if (m && m[1] !== state.sessionId) openSession(m[1]);
  else if (!m && !state.sessionId) newChat();
}

function uploadLimits() {
  const u = (state.config && state.config.uploads) || {};
  // until the server reports its limits, its documented defaults (uploads.max_mb, max_files)
  const maxMb = Number(u.max_mb ?? u.uploads_max_mb ?? 25);
  const maxFiles = Number(u.max_files ?? u.uploads_max_files ?? 10);
  let types = u.allowed_types ?? null;
  if (typeof types === 'string') types = types.split(',').map((s) => s.trim()).filter(Boolean);
  return { maxBytes: maxMb * 1024 * 1024, maxFiles, types: Array.isArray(types) ? types : null };
}

function wire() {
  list = new MessageList($('messages'), $('message-items'), {
    render: renderItem,
    update: updateItem,
    onNeedOlder: loadOlder,
    onJump: (show) => { $('jump-latest').hidden = !show; },
  });
  sessions = new SessionList({ list: $('session-list'), more: $('sessions-more'), empty: $('sessions-empty'), onOpen: openSession });
  attach = new Attachments($('attachment-tray'), {
    limits: uploadLimits,
    sessionId: () => state.sessionId,
    onChange: () => { $('attachment-tray').hidden = attach.count === 0; },
  });
  const input = $('composer-input');
  $('composer').addEventListener('submit', (e) => { e.preventDefault(); send(); });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
  });
  input.addEventListener('input', autosize);
  input.addEventListener('paste', (e) => { if (e.clipboardData.files.length) attach.add(e.clipboardData.files); });
  $('file-input').addEventListener('change', (e) => { attach.add(e.target.files); e.target.value = ''; });
  const zone = $('chat');
  zone.addEventListener('dragover', (e) => {
    if ([...e.dataTransfer.types].includes('Files')) { e.preventDefault(); zone.classList.add('dragging'); }
  });
  zone.addEventListener('dragleave', (e) => { if (e.target === zone) zone.classList.remove('dragging'); });
  zone.addEventListener('drop', (e) => {
    zone.classList.remove('dragging');
    if (!e.dataTransfer.files.length) return;
    e.preventDefault();
    attach.add(e.dataTransfer.files);
  });
  for (const b of document.querySelectorAll('.quick-actions button')) b.addEventListener('click', () => send(b.dataset.action));
  $('stop').addEventListener('click', stopReply);
  $('new-chat').addEventListener('click', newChat);
  $('reset-session').addEventListener('click', resetSession);
  $('delete-session').addEventListener('click', deleteSession);
  $('jump-latest').addEventListener('click', () => list.jumpToLatest());
  $('sidebar-toggle').addEventListener('click', () => {
    const open = document.body.classList.toggle('sidebar-open');
    $('sidebar-toggle').setAttribute('aria-expanded', String(open));
    if (open) $('new-chat').focus();
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && document.body.classList.contains('sidebar-open')) { closeSidebar(); $('sidebar-toggle').focus(); }
  });
  window.addEventListener('hashchange', route);
}

async function boot() {
  setSignInHandler(signInPrompt);
  updateSignOut();
  wire();
  health = new HealthWatch((h) => {
    state.health = h;
    renderBanner($('health-banner'), h, state.memory);
    if (!state.stream) setBadge(h ? 'online' : 'offline');
  }, 10000);
  health.start();
  route(); // a new chat can be typed into while the rest loads
  state.config = await runtimeConfig();
  if (state.config && state.config.auth && state.config.auth.required && !apiKey()) {
    await requestSignIn({ status: 401, message: '' });
  }
  updateSignOut();
  await sessions.load();
  document.body.dataset.ready = '1';
}

boot();
