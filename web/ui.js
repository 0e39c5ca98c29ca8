// ui.js - small pieces both pages share: building elements, toasts, the sign-in dialog, the
// connection badge and formatting.
//
// Design: elements are built with createElement and textContent only, so no text from the
// server is ever parsed as HTML here (markdown.js is the one place that produces HTML, behind a
// Trusted Types policy). The sign-in dialog is the native <dialog>, which traps focus, closes on
// Escape and returns focus where it was.

import { apiKey, requestSignIn, setApiKey, signInDeclined } from './api.js';

/** el('button', {class: 'x', onclick: fn, 'aria-label': 'y'}, 'text', child...) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (k === 'class') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

const TOAST_MS = 7000;
const MAX_TOASTS = 4;

/** Shows a short message; kind 'error' (announced at once), 'info' or 'ok'. */
export function toast(message, kind = 'error') {
  const box = document.getElementById('toasts');
  if (!box) return;
  while (box.children.length >= MAX_TOASTS) box.firstElementChild.remove();
  const close = el('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss' }, '×');
  const t = el('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    el('span', { class: 'toast-text' }, message), close);
  const timer = setTimeout(() => t.remove(), TOAST_MS);
  close.addEventListener('click', () => { clearTimeout(timer); t.remove(); });
  box.append(t);
}

/** Toast for a failed call: the server's sentence, plus what to do when it gave none. */
export function toastError(err, what) {
  if (err && err.name === 'AbortError') return;
  const msg = err && err.message ? err.message : String(err);
  toast(what ? `${what}: ${msg}` : msg, 'error');
}

/**
 * The sign-in prompt: resolves true once a key was entered (and stored), false on cancel.
 * reason: {status, message} of the refused call, shown to the user.
 */
export function signInPrompt(reason) {
  const dlg = document.getElementById('signin-dialog');
  const form = document.getElementById('signin-form');
  const input = document.getElementById('signin-key');
  const why = document.getElementById('signin-reason');
  if (!dlg || !form || !input) return Promise.resolve(false);
  const hadKey = !!apiKey();
  if (reason && reason.status === 403) {
    why.textContent = `This page needs an API key with scope admin. ${reason.message || ''}`;
  } else if (hadKey) {
    why.textContent = `The server refused the key: ${reason && reason.message ? reason.message : 'sign in again.'}`;
  } else {
    why.textContent = 'This server needs an API key.';
  }
  input.value = '';
  return new Promise((resolve) => {
    const done = () => {
      dlg.removeEventListener('close', done);
      const key = input.value.trim();
      input.value = '';
      const ok = dlg.returnValue === 'ok' && !!key;
      if (ok) setApiKey(key);
      resolve(ok);
      queueMicrotask(updateSignOut); // after requestSignIn has recorded a cancel
    };
    dlg.returnValue = '';
    dlg.addEventListener('close', done);
    dlg.showModal();
    input.focus();
  });
}

/**
 * The header's account button: "Sign out" while a key is stored, "Sign in" after the prompt
 * was cancelled, hidden otherwise (no key needed so far). Signing in or out reloads the page;
 * signing out also forgets the session titles (sessions.js keeps them in localStorage soma.titles).
 */
export function updateSignOut() {
  const b = document.getElementById('sign-out');
  if (!b) return;
  const signedIn = !!apiKey();
  b.hidden = !signedIn && !signInDeclined();
  b.textContent = signedIn ? 'Sign out' : 'Sign in';
  if (!b.dataset.wired) {
    b.dataset.wired = '1';
    b.addEventListener('click', async () => {
      if (apiKey()) { // the titles are first lines of this account's messages: not left behind
        setApiKey('');
        try { localStorage.removeItem('soma.titles'); } catch { /* disabled */ }
        location.reload();
        return;
      }
      if (await requestSignIn({ status: 401, message: '' }, { force: true })) location.reload();
    });
  }
}

const BADGE_TEXT = { online: 'online', stale: 'stale', reconnecting: 'reconnecting', offline: 'offline' };
const BADGE_TITLE = {
  online: 'Connected: events arrive live.',
  stale: 'No data from the server for 12 s: the connection may be stuck.',
  reconnecting: 'The connection dropped; reconnecting and resuming where it stopped.',
  offline: 'Cannot reach the server.',
};

export function setBadge(state) {
  const b = document.getElementById('conn-badge');
  if (!b || b.dataset.state === state) return;
  b.dataset.state = state;
  b.textContent = BADGE_TEXT[state] || state;
  b.title = BADGE_TITLE[state] || '';
}

/** "14:05" today, else "3 Mar 14:05"; '' for a missing time. */
export function shortTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const now = new Date();
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  if (d.toDateString() === now.toDateString()) return time;
  return `${d.toLocaleDateString([], { day: 'numeric', month: 'short' })} ${time}`;
}

/** 1536 -> "1.5 KB" */
export function formatBytes(n) {
  if (!Number.isFinite(n)) return '';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MB`;
}

/** "42 s", "5 min", "3 h" */
export function formatAge(seconds) {
  if (!Number.isFinite(seconds)) return '';
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}
