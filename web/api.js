// api.js - every call the UI makes to the somaagent API goes through here.
//
// Design: one fetch wrapper adds the API key (kept in sessionStorage, so it lives as long as the
// tab and never in a cookie the browser would send by itself), turns the JSON error envelope
// {"error":{"code","message","request_id"}} into an ApiError whose message is the server's own
// sentence, and on 401 (and, where a page asks for it, 403) waits for the sign-in dialog and
// retries the call. Concurrent calls that hit 401 together share one dialog.

const KEY_NAME = 'soma.apiKey';

export class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(message);
    this.name = 'ApiError';
    this.status = status;        // HTTP status, 0 when the server could not be reached
    this.code = code;            // the envelope's snake_case code
    this.requestId = requestId;  // X-Request-Id, for the server's logs
  }
}

export function apiKey() {
  try { return sessionStorage.getItem(KEY_NAME) || ''; } catch { return ''; }
}

export function setApiKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_NAME, key); else sessionStorage.removeItem(KEY_NAME);
  } catch { /* storage disabled: the key lasts until the page reloads */ }
}

/** Headers with the Authorization of the stored key (if any) added to extra. */
export function authHeaders(extra = {}) {
  const h = { ...extra };
  const key = apiKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

let signInHandler = null;   // async ({status, message}) => true when a key was entered
let signInPending = null;   // the dialog currently open, shared by every waiting call
let promptOn403 = false;    // the dashboard: 403 means "this key is not an admin key"
let declined = false;       // the user cancelled the dialog: no more prompts until they ask"

/** Installs the sign-in prompt; forbidden: also prompt on 403 (admin pages). */
export function setSignInHandler(fn, { forbidden = false } = {}) {
  signInHandler = fn;
  promptOn403 = forbidden;
}

/**
 * Opens the sign-in prompt (once, however many callers ask); resolves true when signed in.
 * After a cancel, calls resolve false at once (the page offers a "Sign in" button instead of
 * prompting on every refused call); force: the user asked for the prompt.
 */
export function requestSignIn(reason, { force = false } = {}) {
  if (!signInHandler || (declined && !force)) return Promise.resolve(false);
  if (!signInPending) {
    signInPending = Promise.resolve(signInHandler(reason))
      .then((ok) => { declined = !ok; return ok; })
      .finally(() => { signInPending = null; });
  }
  return signInPending;
}

export function signInDeclined() {
  return declined;
}

/** True for a 401, or a 403 on a page that prompts for an admin key. */
export function needsSignIn(status) {
  return status === 401 || (status === 403 && promptOn403);
}

/** The ApiError of a failed response, from its JSON envelope when it has one. */
export async function errorFrom(res) {
  let code = `http_${res.status}`;
  let message = `The server answered ${res.status} ${res.statusText}.`;
  let requestId = res.headers.get('X-Request-Id') || '';
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
      requestId = body.error.request_id || requestId;
    }
  } catch { /* not JSON: keep the generic sentence */ }
  return new ApiError(res.status, code, message, requestId);
}

/** True when a 404 means the route does not exist in this build (not a missing object). */
export function isMissingRoute(err) {
  return err instanceof ApiError && err.status === 404 && /^no route for /.test(err.message);
}

function networkError() {
  return new ApiError(0, 'network',
    'Cannot reach the server: check that somaagent is running and the network is up, then retry.', '');
}

/**
 * Calls the API. body: an object (sent as JSON), a string or FormData. Returns the parsed JSON
 * (null for an empty body), or the Response itself with raw: true. Throws ApiError.
 */
export async function api(path, { method = 'GET', body, headers = {}, signal, raw = false } = {}) {
  for (;;) {
    const h = authHeaders(headers);
    let payload = body;
    if (body !== undefined && typeof body !== 'string' && !(body instanceof FormData)) {
      h['Content-Type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, { method, headers: h, body: payload, signal, cache: 'no-store' });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw networkError();
    }
    if (needsSignIn(res.status) && signInHandler) {
      const err = await errorFrom(res);
      if (await requestSignIn({ status: res.status, message: err.message })) continue;
      throw err;
    }
    if (!res.ok) throw await errorFrom(res);
    if (raw) return res;
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }
}

/** The server's runtime configuration (auth mode, limits), or null when it cannot be read. */
export async function runtimeConfig() {
  try { return await api('/v1/runtime-config'); } catch { return null; }
}

/** A random (version 4) UUID; crypto.randomUUID needs a secure context, this does not. */
export function uuid4() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
