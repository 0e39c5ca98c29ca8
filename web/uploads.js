// uploads.js - attachments: choosing files (picker, drag and drop), uploading them with
// per-file progress, and showing attachments in the conversation.
//
// Design: each file is checked against the limits from /v1/runtime-config before any byte is
// sent, then uploaded on its own XMLHttpRequest (fetch cannot report upload progress) as
// POST /v1/uploads with the multipart field `files` and the session id, so every file has its
// own progress bar and can be removed (aborted) on its own. The message is sent with the ids
// of the finished uploads, and their names and types in metadata.attachments so the
// conversation can show an image preview or a download link without asking again.
// Attachment bytes need the API key when auth is on, and an <img src> cannot send a header:
// then they are fetched with the header and shown from a blob: URL (a bounded cache, the
// oldest revoked first). Without a key the plain URL is used and the browser caches it.

import { apiKey, authHeaders, errorFrom, needsSignIn, requestSignIn } from './api.js';
import { el, formatBytes, toast } from './ui.js';

const BLOB_CACHE = 100;

export class Attachments {
  /** tray: <ul> of pending files; limits(): {maxBytes, maxFiles, types}; sessionId(): current id. */
  constructor(tray, { limits, sessionId, onChange }) {
    this.tray = tray;
    this.limits = limits;
    this.sessionId = sessionId;
    this.onChange = onChange || (() => {});
    this.files = [];   // {file, row, progress, status, xhr, promise, result, error}
  }

  get busy() { return this.files.some((f) => !f.result && !f.error); }
  get count() { return this.files.length; }

  /** Checks and starts uploading the files of a FileList or array. */
  add(list) {
    const { maxBytes, maxFiles, types } = this.limits();
    for (const file of list) {
      if (this.files.length >= maxFiles) {
        toast(`At most ${maxFiles} files per message (uploads.max_files): ${file.name} was not added.`);
        continue;
      }
      if (file.size > maxBytes) {
        toast(`${file.name} is ${formatBytes(file.size)}; the largest file the server accepts is ` +
          `${formatBytes(maxBytes)} (uploads.max_mb).`);
        continue;
      }
      if (types && !typeAllowed(file.type, types)) {
        toast(`${file.name}: files of type ${file.type || 'unknown'} are not accepted (uploads.allowed_types).`);
        continue;
      }
      this.start(file);
    }
    this.onChange();
  }

  start(file) {
    const entry = { file, result: null, error: null };
    const progress = el('progress', { max: '100', value: '0', 'aria-label': `Upload of ${file.name}` });
    const status = el('span', { class: 'tray-status small muted' }, 'uploading…');
    const remove = el('button', { type: 'button', class: 'link-button', 'aria-label': `Remove ${file.name}` }, 'Remove');
    const thumb = file.type.startsWith('image/') ? el('img', { class: 'tray-thumb', alt: '' }) : null;
    if (thumb) {
      thumb.src = URL.createObjectURL(file);
      thumb.addEventListener('load', () => URL.revokeObjectURL(thumb.src), { once: true });
    }
    entry.row = el('li', { class: 'tray-item' }, thumb,
      el('span', { class: 'tray-name' }, file.name), el('span', { class: 'small muted' }, formatBytes(file.size)),
      progress, status, remove);
    remove.addEventListener('click', () => {
      if (entry.xhr) entry.xhr.abort();
      this.files = this.files.filter((f) => f !== entry);
      entry.row.remove();
      this.onChange();
    });
    entry.progress = progress;
    entry.status = status;
    this.files.push(entry);
    this.tray.append(entry.row);
    entry.promise = this.upload(entry).then((r) => {
      entry.result = r;
      progress.value = 100;
      status.textContent = 'ready';
    }, (e) => {
      entry.error = e;
      status.textContent = `failed: ${e.message}`;
      entry.row.classList.add('tray-failed');
      if (e.name !== 'AbortError') toast(`Upload of ${file.name} failed: ${e.message}`);
    }).finally(() => this.onChange());
  }

  /** One XHR (retried once after a sign-in on 401); resolves to the attachment record. */
  async upload(entry) {
    for (;;) {
      const res = await xhrUpload(entry, this.sessionId());
      if (res.ok) return (await res.json())[0];
      const err = await errorFrom(res);
      if (needsSignIn(res.status) && await requestSignIn({ status: res.status, message: err.message })) continue;
      throw err;
    }
  }

  /** Waits for uploads in flight; the finished ones as [{id, filename, mime, size}]. */
  async finished() {
    await Promise.all(this.files.map((f) => f.promise));
    return this.files.filter((f) => f.result).map((f) => ({
      id: f.result.id, filename: f.result.filename, mime: f.result.mime, size: f.result.size,
    }));
  }

  clear() {
    for (const f of this.files) if (f.xhr && !f.result) f.xhr.abort();
    this.files = [];
    this.tray.replaceChildren();
    this.onChange();
  }
}

function typeAllowed(mime, patterns) {
  if (!mime) return true; // the server types files by content; let it decide
  return patterns.some((p) => p === '*/*' || p === mime || (p.endsWith('/*') && mime.startsWith(p.slice(0, -1))));
}

/** Resolves to a Response-like object ({ok, status, json(), headers}) for errorFrom(). */
function xhrUpload(entry, sessionId) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    entry.xhr = xhr;
    const form = new FormData();
    if (sessionId) form.append('session_id', sessionId);
    form.append('files', entry.file, entry.file.name);
    xhr.open('POST', '/v1/uploads');
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable) entry.progress.value = Math.min(99, Math.round((e.loaded / e.total) * 100));
    });
    xhr.addEventListener('load', () => resolve({
      ok: xhr.status >= 200 && xhr.status < 300,
      status: xhr.status,
      statusText: xhr.statusText,
      headers: { get: (n) => xhr.getResponseHeader(n) },
      json: async () => JSON.parse(xhr.responseText),
    }));
    xhr.addEventListener('error', () => reject(new Error('the connection failed; check the server and retry')));
    xhr.addEventListener('abort', () => { const e = new Error('cancelled'); e.name = 'AbortError'; reject(e); });
    xhr.send(form);
  });
}

// ---- attachments in the conversation --------------------------------------------------------

const blobUrls = new Map();   // id -> Promise<blob: URL>, oldest first

/** A URL the page can load the attachment from (a blob: URL when a key must be sent). */
export function attachmentUrl(id) {
  const direct = `/v1/attachments/${encodeURIComponent(id)}`;
  if (!apiKey()) return Promise.resolve(direct);
  if (blobUrls.has(id)) {
    const p = blobUrls.get(id);
    blobUrls.delete(id);
    blobUrls.set(id, p); // most recently used last
    return p;
  }
  const p = fetch(direct, { headers: authHeaders() }).then(async (res) => {
    if (!res.ok) throw await errorFrom(res);
    return URL.createObjectURL(await res.blob());
  });
  p.catch(() => blobUrls.delete(id));
  blobUrls.set(id, p);
  while (blobUrls.size > BLOB_CACHE) {
    const [oldId, oldP] = blobUrls.entries().next().value;
    blobUrls.delete(oldId);
    oldP.then((u) => URL.revokeObjectURL(u), () => {});
  }
  return p;
}

const headCache = new Map();  // id -> Promise<{filename, mime}>, for attachments sent elsewhere

/** Name and type of an attachment the event did not describe (HEAD on the attachment). */
function describe(id) {
  if (!headCache.has(id)) {
    headCache.set(id, fetch(`/v1/attachments/${encodeURIComponent(id)}`, { method: 'HEAD', headers: authHeaders() })
      .then((res) => {
        const cd = res.headers.get('Content-Disposition') || '';
        const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(cd);
        let filename = id;
        if (m) {
          try { filename = decodeURIComponent(m[1]); } catch { filename = m[1]; } // a plain '%' in the name
        }
        return { filename, mime: res.ok ? res.headers.get('Content-Type') || '' : '' };
      }, () => ({ filename: id, mime: '' })));
  }
  return headCache.get(id);
}

/** The attachments of an event: image previews and download links. */
export function attachmentsView(event) {
  const ids = Array.isArray(event.attachments) ? event.attachments : [];
  if (!ids.length) return null;
  const known = new Map(((event.metadata && event.metadata.attachments) || [])
    .filter((a) => a && typeof a.id === 'string').map((a) => [a.id, a]));
  const box = el('div', { class: 'attachments' });
  for (const id of ids) {
    const slot = el('div', { class: 'attachment' });
    box.append(slot);
    const info = known.get(id);
    Promise.resolve(info || describe(id)).then((a) => fillAttachment(slot, id, a));
  }
  return box;
}

function fillAttachment(slot, id, info) {
  const name = info.filename || id;
  const link = el('a', { href: `/v1/attachments/${encodeURIComponent(id)}`, download: name, class: 'attachment-link' },
    `Download ${name}`);
  if (apiKey()) {
    link.addEventListener('click', async (e) => {
      e.preventDefault();
      try {
        const url = await attachmentUrl(id);
        const a = el('a', { href: url, download: name });
        document.body.append(a);
        a.click();
        a.remove();
      } catch (err) {
        toast(`Cannot download ${name}: ${err.message}`);
      }
    });
  }
  if ((info.mime || '').startsWith('image/')) {
    const img = el('img', { class: 'attachment-image', alt: name, loading: 'lazy', decoding: 'async' });
    attachmentUrl(id).then((u) => { img.src = u; }, () => { img.alt = `${name} (cannot be loaded)`; });
    slot.append(img);
  }
  slot.append(link);
}
