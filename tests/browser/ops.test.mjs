// The operator dashboard (/ops) against a server with one conversation worker and a slow fake
// model, so that messages wait in the queue long enough to be seen.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { browserTest, launchBrowser, startStack } from './harness.mjs';

let stack, browser;
const getBrowser = () => browser;

before(async () => {
  [stack, browser] = await Promise.all([
    startStack({ sets: ['queue.conversation.concurrency=1'] }),
    launchBrowser(),
  ]);
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

async function openOps(page) {
  await page.goto(stack.url + '/ops');
  await page.locator('body[data-ready="1"]').waitFor();
}

/** True when this build has the route (a 404 that says "no route" means it does not). */
async function routeExists(path) {
  const r = await stack.api(path, { allowStatus: [404] });
  return !(r.status === 404 && /^no route/.test(r.body.error.message));
}

browserTest('services come from /v1/health', getBrowser, async (page) => {
  await openOps(page);
  const services = page.locator('#panel-services');
  for (const name of ['store', 'bus', 'auth', 'disk', 'llm', 'workers', 'http']) {
    await services.locator('td', { hasText: new RegExp(`^${name}$`) }).waitFor();
  }
  assert.match(await page.locator('#services-summary').textContent(), /Overall ok; version \d+\.\d+\.\d+/);
  assert.match(await services.locator('tr', { hasText: 'llm' }).textContent(), /fake-model at http/);
  assert.equal(await page.locator('#conn-badge').getAttribute('data-state'), 'online');
});

browserTest('each panel shows its endpoint, or says the build lacks it', getBrowser, async (page) => {
  await openOps(page);
  const panels = { '#panel-queues': '/v1/queues', '#panel-workers': '/v1/workers',
    '#panel-dead': '/v1/dead-letters', '#panel-schedules': '/v1/schedules', '#panel-outbox': '/v1/memory/outbox' };
  for (const [sel, path] of Object.entries(panels)) {
    const exists = await routeExists(path);
    await page.locator(`${sel}[data-state="${exists ? 'ok' : 'missing'}"]`).waitFor();
    const text = await page.locator(sel).textContent();
    assert.equal(/Not available in this build/.test(text), !exists, `${sel} (${path}): ${text}`);
  }
  // the task lookup: an unknown id, or a build without the endpoint
  await page.locator('#task-id').fill('no-such-task');
  await page.locator('#task-id').press('Enter');
  const expect = (await routeExists('/v1/tasks/no-such-task')) ? 'No task no-such-task.' : 'Not available in this build.';
  await page.locator('#panel-task .panel-status', { hasText: expect }).waitFor();
});

browserTest('/ops shows the depth of the conversation queue change', getBrowser, async (page, context, t) => {
  if (!(await routeExists('/v1/queues'))) {
    t.skip('GET /v1/queues is not in this build yet');
    return;
  }
  await stack.llm({ chunks: 10, delay_ms: 120 }); // over a second per reply, one worker: 6 replies outlast 2 refreshes
  await openOps(page);
  const depth = page.locator('#panel-queues .queue-depth[data-queue="conversation"]');
  await depth.waitFor();
  assert.equal(await depth.textContent(), '0');
  for (let i = 0; i < 6; i++) {
    await stack.api('/v1/session/message', { method: 'POST', body: { session_id: 'ops-depth', message: `queued ${i}` } });
  }
  await page.waitForFunction(() => Number(document.querySelector(
    '#panel-queues .queue-depth[data-queue="conversation"]').textContent) >= 1, null, { timeout: 10000 });
  await page.waitForFunction(() => document.querySelector(
    '#panel-queues .queue-depth[data-queue="conversation"]').textContent === '0', null, { timeout: 20000 });
  await stack.llmReset();
}, { timeout: 40000 });
