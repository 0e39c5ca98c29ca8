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
  const llmRow = services.locator('tr').filter({ has: page.locator('td', { hasText: /^llm$/ }) });
  assert.match(await llmRow.textContent(), /fake-model at http/);
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

/** Polls GET /v1/tasks/{id} until pred(task) holds. */
async function waitTask(id, pred, what) {
  const deadline = Date.now() + 15000;
  for (;;) {
    const t = (await stack.api(`/v1/tasks/${id}`)).body;
    if (pred(t)) return t;
    assert.ok(Date.now() < deadline, `task ${id} never became ${what}: ${JSON.stringify(t)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

browserTest('task lookup shows a finished task and its result', getBrowser, async (page, context, t) => {
  if (!(await routeExists('/v1/tasks/x'))) {
    t.skip('the task API is not in this build yet');
    return;
  }
  const { task_id: id } = (await stack.api('/v1/tasks', { method: 'POST', body: { task: 'soma.echo', kwargs: { hello: 'ops' } } })).body;
  await waitTask(id, (x) => x.status === 'SUCCESS', 'SUCCESS');
  await openOps(page);
  await page.locator('#task-id').fill(id);
  await page.getByRole('button', { name: 'Look up' }).click();
  const fields = page.locator('#panel-task dl.fields');
  await fields.waitFor();
  assert.match(await fields.textContent(), /SUCCESS/);
  assert.match(await fields.locator('pre').textContent(), /"hello": "ops"/);
});

browserTest('dead letters can be requeued and dropped from /ops', getBrowser, async (page, context, t) => {
  if (!(await routeExists('/v1/dead-letters'))) {
    t.skip('GET /v1/dead-letters is not in this build yet');
    return;
  }
  const fail = async (message) => (await stack.api('/v1/tasks', { method: 'POST',
    body: { task: 'soma.fail', kwargs: { message, retryable: true }, max_retries: 0 } })).body.task_id;
  const a = await fail('first failure');
  const b = await fail('second failure');
  await waitTask(a, (x) => x.dead_letter === true, 'a dead letter');
  await waitTask(b, (x) => x.dead_letter === true, 'a dead letter');
  await openOps(page);
  const row = (id) => page.locator('#panel-dead tr', { has: page.locator(`[data-task="${id}"]`) });
  await row(a).waitFor();
  assert.match(await row(a).textContent(), /soma\.fail.*first failure/);
  await page.getByRole('button', { name: `Requeue ${a}` }).click();
  await page.locator('.toast', { hasText: `Task ${a} requeued` }).waitFor();
  page.once('dialog', (d) => d.accept());
  await page.getByRole('button', { name: `Drop ${b}` }).click();
  await page.locator('.toast', { hasText: `Task ${b} dropped` }).waitFor();
  await row(b).waitFor({ state: 'detached' });
  const dead = (await stack.api('/v1/dead-letters')).body.items.map((x) => x.task_id);
  assert.ok(!dead.includes(b), 'the dropped task is gone');
});
