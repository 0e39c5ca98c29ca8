// The degraded-memory banner against the real binary and the fake SomaBrain: it appears when
// SomaBrain goes down (from /v1/health and the stream's status events) and clears by itself
// when SomaBrain is back, with nothing but the server's own signals.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { browserTest, launchBrowser, startStack } from './harness.mjs';

let stack, browser;
const getBrowser = () => browser;

before(async () => {
  [stack, browser] = await Promise.all([startStack({ somabrain: true }), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

browserTest('the memory banner follows SomaBrain down and back up', getBrowser, async (page) => {
  await page.goto(stack.url + '/');
  await page.locator('body[data-ready="1"]').waitFor();
  // a conversation is open, so its stream can carry status events too
  await page.locator('#composer-input').fill('remember that the sky is green');
  await page.locator('#composer-input').press('Enter');
  await page.locator('#message-items .msg-assistant:not(.msg-streaming)').first().waitFor();
  const banner = page.locator('#health-banner');
  assert.ok(await banner.isHidden(), 'no banner while SomaBrain is healthy');

  await stack.brain({ mode: 'down' });
  await banner.filter({ hasText: /memory/i }).waitFor({ state: 'visible', timeout: 25000 });
  const health = await stack.api('/v1/health');
  assert.equal(health.body.services.memory.status, 'degraded', JSON.stringify(health.body.services.memory));

  await stack.brain({ mode: 'ok' });
  await banner.waitFor({ state: 'hidden', timeout: 25000 });
  assert.equal((await stack.api('/v1/health')).body.services.memory.status, 'ok');
}, { timeout: 90000 });
