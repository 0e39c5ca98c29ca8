// web/sse.js against a scripted server: the page's own EventStream, its requests answered by
// page.route (a frame list, an error status, or no answer at all). A connect that is never
// answered is abandoned and retried; `id:` without data moves the cursor, and `id: 0` (the end
// marker of a deleted session) stops the stream; 4xx but 408/429 stop the stream; Retry-After is
// waited for, but coming back online ends a wait; no wait's controller outlives it.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { browserTest, launchBrowser, startStack } from './harness.mjs';

let stack, browser;
const getBrowser = () => browser;

before(async () => {
  [stack, browser] = await Promise.all([startStack({ llm: false }), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

const FAST = { deadMs: 1500, backoffBaseMs: 50, backoffMaxMs: 200, retryAfterMaxMs: 60000 };

/**
 * Answers the stream's requests in turn with answers[i] (the last one repeats): a string is an
 * event-stream body, a number an error status, {status, headers} an error with headers, null no
 * answer ever. Returns the requests seen: {at, lastEventId}.
 */
async function scriptServer(page, answers) {
  const seen = [];
  await page.route('**/v1/sessions/sse-test/events**', (route, request) => {
    const i = seen.length;
    seen.push({ at: Date.now(), lastEventId: request.headers()['last-event-id'] ?? null });
    const a = answers[Math.min(i, answers.length - 1)];
    if (a === null) return; // accepted, never answered
    if (typeof a === 'string') {
      route.fulfill({ status: 200, headers: { 'content-type': 'text/event-stream' }, body: a }).catch(() => {});
      return;
    }
    const { status, headers = {} } = typeof a === 'number' ? { status: a } : a;
    route.fulfill({ status, headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ error: { code: `code_${status}`, message: `refused with ${status}`, request_id: '' } }) })
      .catch(() => {});
  });
  return seen;
}

/** Opens the page and starts an EventStream on the scripted URL; window.__sse records what it does. */
async function openStream(page, timing = FAST) {
  await page.goto(stack.url + '/');
  await page.locator('body[data-ready="1"]').waitFor();
  await page.evaluate(async (timing) => {
    const { EventStream } = await import('/assets/sse.js');
    window.__sse = { events: [], states: [], gone: null };
    const s = new EventStream({
      url: '/v1/sessions/sse-test/events?stream=true',
      timing,
      onEvent: (ev, id) => window.__sse.events.push([ev, id]),
      onState: (st) => window.__sse.states.push(st),
      onGone: (err) => { window.__sse.gone = { status: err.status, code: err.code }; },
    });
    window.__stream = s;
    s.start(null);
  }, timing);
}

const sse = (page) => page.evaluate(() => window.__sse);
const stopStream = (page) => page.evaluate(() => window.__stream.stop());

browserTest('a reconnect that is accepted but never answered is abandoned and retried', getBrowser, async (page) => {
  const seen = await scriptServer(page, ['id: c1\ndata: {"n":1}\n\n', null, 'id: c2\ndata: {"n":2}\n\n', null]);
  await openStream(page);
  await page.waitForFunction(() => window.__sse.events.length === 2, null, { timeout: 10000 });
  assert.deepEqual((await sse(page)).events, [[{ n: 1 }, 'c1'], [{ n: 2 }, 'c2']]);
  assert.equal(seen[1].lastEventId, 'c1');
  assert.equal(seen[2].lastEventId, 'c1', 'the retry resumes where the stream was');
  assert.ok(seen[2].at - seen[1].at >= FAST.deadMs - 100, 'the hung connect was given deadMs');
  await stopStream(page);
});

browserTest('an id: without data is where the next connect resumes', getBrowser, async (page) => {
  const seen = await scriptServer(page, ['id: 7\ndata: {"n":7}\n\nid: c9\n\n', 404]);
  await openStream(page);
  await page.waitForFunction(() => window.__sse.gone !== null, null, { timeout: 10000 });
  assert.deepEqual((await sse(page)).events, [[{ n: 7 }, '7']]);
  assert.deepEqual(seen.map((r) => r.lastEventId), [null, 'c9']);
});

browserTest('the server\'s end marker (id: 0, no data) stops the stream: the session was deleted', getBrowser, async (page) => {
  const seen = await scriptServer(page, ['id: 7\ndata: {"n":7}\n\nid: 0\n\n', 'id: 1\ndata: {"n":1}\n\n']);
  await openStream(page);
  await page.waitForFunction(() => window.__sse.gone !== null, null, { timeout: 10000 });
  assert.deepEqual((await sse(page)).gone, { status: 404, code: 'session_deleted' });
  await page.waitForTimeout(500);
  assert.deepEqual((await sse(page)).events, [[{ n: 7 }, '7']], 'nothing of a session created again under the id');
  assert.equal(seen.length, 1, 'no reconnect after the end marker');
});

browserTest('coming back online ends the wait between attempts at once', getBrowser, async (page, context) => {
  // the first answer asks for a 30 s wait; the `online` event must cut it short
  const seen = await scriptServer(page, [{ status: 503, headers: { 'retry-after': '30' } }, 'id: a\ndata: {"n":1}\n\n', null]);
  await openStream(page);
  await page.waitForFunction(() => window.__sse.states.includes('reconnecting'), null, { timeout: 5000 });
  await context.setOffline(true);
  await page.waitForTimeout(300);
  const back = Date.now();
  await context.setOffline(false);
  await page.waitForFunction(() => window.__sse.events.length === 1, null, { timeout: 5000 });
  assert.ok(seen[1].at - back < 3000, `reconnected ${seen[1].at - back} ms after the network came back`);
  await stopStream(page);
});

for (const status of [400, 403]) {
  browserTest(`a ${status} stops the stream instead of retrying it forever`, getBrowser, async (page) => {
    const seen = await scriptServer(page, [status]);
    await openStream(page);
    await page.waitForFunction(() => window.__sse.gone !== null, null, { timeout: 5000 });
    assert.deepEqual((await sse(page)).gone, { status, code: `code_${status}` });
    await page.waitForTimeout(1000);
    assert.equal(seen.length, 1, 'one request, no retry');
  });
}

browserTest('Retry-After of a 503 or 429 is waited for, up to the ceiling; a 500 is retried soon', getBrowser, async (page) => {
  const seen = await scriptServer(page, [
    { status: 503, headers: { 'retry-after': '1' } },
    { status: 429, headers: { 'retry-after': '100000' } }, // cut to retryAfterMaxMs
    500,
    404,
  ]);
  await openStream(page, { ...FAST, retryAfterMaxMs: 2500 });
  await page.waitForFunction(() => window.__sse.gone !== null, null, { timeout: 15000 });
  const gaps = seen.slice(1).map((r, i) => r.at - seen[i].at);
  assert.ok(gaps[0] >= 900, `waited ${gaps[0]} ms after Retry-After: 1`);
  assert.ok(gaps[1] >= 2400 && gaps[1] < 6000, `waited ${gaps[1]} ms after Retry-After: 100000 (cut to 2.5 s)`);
  assert.ok(gaps[2] < 1000, `waited ${gaps[2]} ms after a 500`);
  assert.equal((await sse(page)).gone.status, 404);
});

browserTest('each wait between connections has its own controller, gone when the wait ends', getBrowser, async (page) => {
  const frames = Array.from({ length: 8 }, (_, i) => `id: c${i}\ndata: {"n":${i}}\n\n`);
  await scriptServer(page, [...frames, null]);
  await openStream(page);
  await page.waitForFunction(() => window.__sse.events.length === 8, null, { timeout: 15000 });
  // each wait has its own controller, dropped when the wait ends: none outlives it
  await page.waitForFunction(() => window.__stream.connection, null, { timeout: 5000 }); // the 9th connect, never answered
  assert.equal(await page.evaluate(() => window.__stream.nap), null, 'a wait\'s controller outlived the wait');
  await stopStream(page);
});
